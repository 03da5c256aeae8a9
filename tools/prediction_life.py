"""Can the device tell whether a prediction sent a few ms later would hold longer than one sent now?

    python tools/prediction_life.py --train A.mcap B.mcap --test C.mcap D.mcap [--delta 0.1] [--wait-ms 3,10]

``tools/oracle_gap.py`` finds the oracle's lead over the trigger in *where* each prediction starts. A causal
sender could only take that lead by foreseeing it: at sample i, whether the prediction it would send at i + w
lives longer than the one it would send now (life: samples until the prediction's RMS error over joints passes
δ, ``lab.motion_features.prediction_life``, H = 200 ms).

For each wait w this fits a least-squares model (a constant, the features and their pairwise products) of
log life(i + w) - log life(i) on the training sessions, from features the device has at i: the log speed,
acceleration, jerk (``jerk_rms``) and derivative-fit residual (``fit_residual_rms``), and how each changed over
the last w samples. On the test sessions it prints:

- R²: the share of that difference's variance the model explains;
- sign: how often it says rightly whether waiting helps (rows where waiting changes the life);
- gain: the mean log-life gain of waiting where the model says so, as a share of a perfect chooser's (who waits
  exactly where it helps); 0 would be no better than never waiting, negative worse.

One model class only: a better learnt model could find more. The figures say how much of the lead these
features carry, not that no sender could ever take it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lab.motion_features import fit_residual_rms, jerk_rms, prediction_life
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.session import Session, load_session

CAP = 2000  # samples: longer lives count as this (2 s, the oracle's longest gap)


def features(s: Session) -> np.ndarray:
    """(N, 4) causal features per sample: log1p of the RMS speed (deg/s), acceleration (deg/s²) and jerk (deg/s³)
    of the device's estimate, and the log of its fit residual (deg)."""
    c = np.degrees(quad_fit(s.t_us, s.q, np.arange(len(s.t_us)), DERIV_WINDOW))
    v = np.sqrt((c[:, 1] ** 2).mean(axis=1))
    a = 2 * np.sqrt((c[:, 2] ** 2).mean(axis=1))
    return np.stack([np.log1p(v), np.log1p(a), np.log1p(jerk_rms(s.t_us, s.q)),
                     np.log(fit_residual_rms(s.t_us, s.q) + 1e-6)], axis=1)


def measured(s: Session, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """(features, log life) of every sample of one session: computed once, shared by every wait."""
    return features(s), np.log(prediction_life(s.t_us, s.q, delta, cap=CAP))


def rows(f: np.ndarray, y: np.ndarray, wait: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, target) of one session (its ``measured`` figures) for a wait of ``wait`` samples; rows whose life
    could hit the session's end and the first ``DERIV_WINDOW + wait`` rows (no full history yet) are left out."""
    n = len(y)
    i = np.arange(DERIV_WINDOW + wait, n - wait - CAP)
    x = np.concatenate([f[i], f[i] - f[i - wait]], axis=1)
    return x, y[i + wait] - y[i]


def design(x: np.ndarray) -> np.ndarray:
    """A constant, each input, and each pairwise product (squares included)."""
    k = x.shape[1]
    cols = [np.ones(len(x)), *x.T, *(x[:, a] * x[:, b] for a in range(k) for b in range(a, k))]
    return np.stack(cols, axis=1)


def score(train: list[tuple[np.ndarray, np.ndarray]], test: list[tuple[np.ndarray, np.ndarray]],
          wait: int) -> dict[str, float]:
    """Fit on ``train``, score on ``test`` (each session's ``measured`` figures): R², sign agreement, and share of
    the perfect chooser's gain."""
    xs, ys = zip(*(rows(f, y, wait) for f, y in train), strict=True)
    w, *_ = np.linalg.lstsq(design(np.concatenate(xs)), np.concatenate(ys), rcond=None)
    xt, yt = (np.concatenate(p) for p in zip(*(rows(f, y, wait) for f, y in test), strict=True))
    pred = design(xt) @ w
    moved = yt != 0
    perfect = np.maximum(yt, 0).mean()
    return {"rows": len(yt), "r2": 1 - ((yt - pred) ** 2).mean() / yt.var(),
            "sign": float((np.sign(pred[moved]) == np.sign(yt[moved])).mean()),
            "gain": float((yt * (pred > 0)).mean() / perfect) if perfect > 0 else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="+", type=Path, required=True, help="sessions the model is fitted on")
    ap.add_argument("--test", nargs="+", type=Path, required=True, help="sessions it is scored on")
    ap.add_argument("--delta", type=float, default=0.1, help="the life's error bound, RMS over joints, deg "
                                                              "(default 0.1, the tuned RMS trigger's δ range)")
    ap.add_argument("--wait-ms", default="3,10", help="waits to judge, ms at the session's rate (default 3,10)")
    args = ap.parse_args()
    if args.delta <= 0:
        ap.error("--delta must be > 0 deg")
    try:
        waits_ms = [float(x) for x in args.wait_ms.split(",")]
    except ValueError:
        ap.error(f"--wait-ms takes numbers separated by commas, not {args.wait_ms!r}")
    if not all(w > 0 and np.isfinite(w) for w in waits_ms):
        ap.error(f"--wait-ms values must be > 0 ms, not {args.wait_ms!r}")
    train = [load_session(p) for p in args.train]
    test = [load_session(p) for p in args.test]
    period_ms = float(np.median(np.diff(test[0].t_us))) / 1000
    longest = max(1, round(max(waits_ms) / period_ms))
    for path, s in zip([*args.train, *args.test], [*train, *test], strict=True):
        if len(s.t_us) < CAP + DERIV_WINDOW + 2 * longest + 100:
            ap.error(f"{path}: {len(s.t_us)} samples; the lives are counted up to {CAP} samples, so each session "
                     f"needs at least {CAP + DERIV_WINDOW + 2 * longest + 100}")
    print(f"δ = {args.delta:g} deg, H = 200 ms; fitted on {len(train)} sessions, scored on {len(test)}")
    print("| wait (ms) | test rows | R² | sign right | share of a perfect chooser's gain |")
    print("|---|---|---|---|---|")
    train_m = [measured(s, args.delta) for s in train]
    test_m = [measured(s, args.delta) for s in test]
    for w_ms in waits_ms:
        wait = max(1, round(w_ms / period_ms))
        r = score(train_m, test_m, wait)
        print(f"| {w_ms:g} | {r['rows']} | {r['r2']:.3f} | {r['sign']:.3f} | {r['gain']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
