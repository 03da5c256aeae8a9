"""Training of the learned predictor (``armtwin fit-predictor``) and its held-out comparison with the baselines.

Training data simulate the server's view of each recording: every k-th sample from random phases, for each k of
the given list. Each received sample gives one window per joint; its target is the error the twin shows until the
next received sample arrives,

    L = sum over tau in (0, gap] of (c1 tau' + c2 tau'^2 - (q(t0 + tau) - q(t0)))^2,  tau' = min(tau, H),

which is quadratic in (c1, c2): with A = sum [tau'^2 tau'^3; tau'^3 tau'^4] and b = sum [tau' dq, tau'^2 dq],
L = (c - c*)^T A (c - c*) + const with c* = A^-1 b, so the future samples reduce to five numbers per row. Rows of
each k are weighted by 1 / (the linear predictor's mean L on that k), so short gaps (tiny errors) count as much as
long ones. torch is imported inside ``train`` only; the result is a numpy ``LearnedModel``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twin.display import displayed
from twin.learned_predictor import (
    HISTORY,
    LearnedModel,
    LearnedPredictor,
    forward,
    raw_features,
    window_indices,
)
from twin.metrics import ErrorAccumulator
from twin.predictors import HoldPredictor, LinearPredictor, Predictor, QuadraticPredictor
from twin.session import Session

VALIDATION_LATENCY_US = 300  # device -> server latency of the live pipeline (the simulator's default)
RANGE_TOLERANCE = 1.5  # newest gaps this far outside the trained ones fall back to the quadratic fit
RATIO_MARGIN = 1.05  # windows less regular than the trained ones (max gap / min gap) by this factor fall back too
T_STD_FLOOR = 0.1  # time features barely vary under regular sampling: do not blow up jitter


@dataclass
class Rows:
    """Training rows, one per (received sample, joint)."""

    shape: np.ndarray  # (R, m-1) raw shape features
    time: np.ndarray  # (R, m-1) raw time features
    sc: np.ndarray  # (R,) shape scale, rad
    g: np.ndarray  # (R,) newest gap, s
    ratio: np.ndarray  # (R,) max gap / min gap in the window (1 = perfectly regular)
    a: np.ndarray  # (R, 3) sum tau'^2, tau'^3, tau'^4
    b: np.ndarray  # (R, 2) sum tau' dq, tau'^2 dq
    k: np.ndarray  # (R,) sampling interval of the stream the row came from

    def take(self, sel: np.ndarray) -> Rows:
        return Rows(*(getattr(self, f)[sel] for f in self.__dataclass_fields__))

    @staticmethod
    def concat(parts: Sequence[Rows]) -> Rows:
        return Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in Rows.__dataclass_fields__))

    def best(self) -> tuple[np.ndarray, np.ndarray]:
        """c* = A^-1 b: the (c1, c2) that minimise each row's error."""
        a, (b1, b2) = self.a, self.b.T
        det = a[:, 0] * a[:, 2] - a[:, 1] ** 2
        return (a[:, 2] * b1 - a[:, 1] * b2) / det, (a[:, 0] * b2 - a[:, 1] * b1) / det

    def excess(self, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
        """(c - c*)^T A (c - c*): a row's squared error (rad² summed over its gap) above the best quadratic."""
        s1, s2 = self.best()
        d1, d2 = c1 - s1, c2 - s2
        return self.a[:, 0] * d1 * d1 + 2 * self.a[:, 1] * d1 * d2 + self.a[:, 2] * d2 * d2


def stream_rows(t: np.ndarray, q: np.ndarray, recv: np.ndarray, k: int, horizon_us: int) -> Rows:
    """Rows of the received stream ``recv`` (indices into the session, increasing), targets up to the next one."""
    n, j = len(recv), q.shape[1]
    if n < HISTORY + 1:
        return Rows(*(np.zeros((0, *s)) for s in ((HISTORY - 1,), (HISTORY - 1,), (), (), (), (3,), (2,), ())))
    win = recv[window_indices(n)[:-1]]  # the last received sample has no next one: no target
    t0, gap = win[:, -1], recv[HISTORY:] - recv[HISTORY - 1:-1]
    shape, tfeat, sc, g = raw_features(t[win], q[win])
    a = np.zeros((len(t0), 3))
    b = np.zeros((len(t0), j, 2))
    for u in range(1, int(gap.max()) + 1):
        act = gap >= u
        i0, iu = t0[act], t0[act] + u
        tau = np.minimum(t[iu] - t[i0], horizon_us) * 1e-6
        dq = q[iu] - q[i0]
        a[act] += np.stack([tau**2, tau**3, tau**4], axis=1)
        b[act] += np.stack([tau[:, None] * dq, (tau**2)[:, None] * dq], axis=2)
    gaps = np.diff(t[win], axis=1)
    ratio = gaps.max(1) / np.maximum(gaps.min(1), 1)
    # Timestamp glitches (repeated times) leave no usable window or target: skip those rows.
    ok = (gaps.min(1) > 0) & (a[:, 0] * a[:, 2] - a[:, 1] ** 2 > 1e-9 * a[:, 0] * a[:, 2])

    def rep(x: np.ndarray) -> np.ndarray:  # per-sample values to per-(sample, joint) rows
        return np.repeat(x[ok], j, axis=0)

    return Rows(shape[ok].reshape(-1, HISTORY - 1), rep(tfeat), sc[ok].reshape(-1), rep(g), rep(ratio), rep(a),
                b[ok].reshape(-1, 2), np.full(int(ok.sum()) * j, k))


def build_rows(sessions: Sequence[Session], ks: Sequence[int], horizon_us: int, max_rows: int,
               rng: np.random.Generator) -> Rows:
    """Rows from streams of every k-th sample (random phases), about ``max_rows`` balanced by session and k."""
    parts = []
    per_group = max(max_rows // (len(sessions) * len(ks)), 1)
    for s in sessions:
        n, j = s.t_us.shape[0], s.joints
        for k in ks:
            need = max(int(np.ceil(per_group / j / max(n / k, 1))), 1)
            got = []
            for phase in rng.choice(k, size=min(k, need), replace=False):
                recv = np.arange(phase, n, k)
                got.append(stream_rows(s.t_us, s.q, recv, k, horizon_us))
            rows = Rows.concat(got)
            if len(rows.k) > per_group:
                rows = rows.take(np.sort(rng.choice(len(rows.k), per_group, replace=False)))
            parts.append(rows)
    rows = Rows.concat(parts)
    if len(rows.k) == 0:
        raise ValueError("sessions too short to build training windows")
    return rows


def normalisation(rows: Rows) -> dict[str, np.ndarray]:
    """Whitening of the shape features and mean/std of the time features (the model's stored statistics)."""
    cov = rows.shape.T @ rows.shape / len(rows.shape)
    ev, vec = np.linalg.eigh(cov)
    whiten = vec / np.sqrt(np.maximum(ev, 1e-6 * max(ev.max(), 1e-30)))
    return {"whiten": whiten, "t_mean": rows.time.mean(0), "t_std": np.maximum(rows.time.std(0), T_STD_FLOOR)}


def linear_init(xs: np.ndarray, rows: Rows, weight: np.ndarray) -> np.ndarray:
    """Weighted least-squares skip weights Ws (m-1, 2) alone (the loss is quadratic in them): the start point."""
    s1, s2 = rows.sc / rows.g, rows.sc / rows.g**2
    a, k = rows.a, xs.shape[1]
    gram = np.zeros((2 * k, 2 * k))
    gram[:k, :k] = np.einsum("r,ri,rj->ij", weight * s1 * s1 * a[:, 0], xs, xs)
    gram[:k, k:] = gram[k:, :k] = np.einsum("r,ri,rj->ij", weight * s1 * s2 * a[:, 1], xs, xs)
    gram[k:, k:] = np.einsum("r,ri,rj->ij", weight * s2 * s2 * a[:, 2], xs, xs)
    rhs = np.concatenate([(weight * s1 * rows.b[:, 0]) @ xs, (weight * s2 * rows.b[:, 1]) @ xs])
    theta = np.linalg.lstsq(gram, rhs, rcond=None)[0]
    return np.stack([theta[:k], theta[k:]], axis=1)


def train(rows: Rows, epochs: int, seed: int, hidden: int = 32, batch: int = 1024, lr: float = 2e-3,
          progress: bool = True) -> tuple[LearnedModel, dict[str, Any]]:
    """Fit the odd MLP of ``twin.learned_predictor.forward`` with torch (CPU, 2 threads, seeded).

    Starts from the best linear filter (closed form) with the MLP's output layer at zero, so the network only
    has to learn the correction on top of it.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        return _train(rows, epochs, seed, hidden, batch, lr, progress)
    finally:
        torch.set_num_threads(threads)  # do not leave the caller's process (e.g. pytest) at 2 threads


def _train(rows: Rows, epochs: int, seed: int, hidden: int, batch: int, lr: float,
           progress: bool) -> tuple[LearnedModel, dict[str, Any]]:
    import torch
    from tqdm import tqdm

    torch.manual_seed(seed)
    start = time.monotonic()
    norm = normalisation(rows)
    lin = rows.excess(-rows.shape[:, -1] * rows.sc / rows.g, np.zeros(len(rows.g)))
    ks = np.unique(rows.k)
    weight = np.zeros(len(rows.k))
    for k in ks:  # the loss is the mean over k of (excess / the linear predictor's excess): 1.0 = linear
        sel = rows.k == k
        weight[sel] = len(rows.k) / (sel.sum() * len(ks) * max(float(lin[sel].mean()), 1e-300))
    xs_np = rows.shape @ norm["whiten"]
    ws0 = linear_init(xs_np, rows, weight)

    def tensor(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))

    xs, xt = tensor(xs_np), tensor((rows.time - norm["t_mean"]) / norm["t_std"])
    s1, s2 = tensor(rows.sc / rows.g), tensor(rows.sc / rows.g**2)
    a, w, cs = tensor(rows.a), tensor(weight), tensor(np.stack(rows.best(), axis=1))
    f, k1 = 2 * (HISTORY - 1), HISTORY - 1

    def param(*shape: int, fan_in: int) -> torch.nn.Parameter:
        return torch.nn.Parameter((torch.rand(*shape) * 2 - 1) / fan_in**0.5)

    p = {"W0": param(f, hidden, fan_in=f), "b0": param(hidden, fan_in=f), "W1": param(hidden, hidden, fan_in=hidden),
         "b1": param(hidden, fan_in=hidden), "W2": torch.nn.Parameter(torch.zeros(hidden, 2)),
         "Ws": torch.nn.Parameter(tensor(ws0))}

    def loss_of(i: torch.Tensor) -> torch.Tensor:
        pa = xs[i] @ p["W0"][:k1]
        pb = xt[i] @ p["W0"][k1:] + p["b0"]
        hp = torch.relu(torch.relu(pb + pa) @ p["W1"] + p["b1"])
        hm = torch.relu(torch.relu(pb - pa) @ p["W1"] + p["b1"])
        y = 0.5 * ((hp - hm) @ p["W2"]) + xs[i] @ p["Ws"]
        d1, d2 = y[:, 0] * s1[i] - cs[i, 0], y[:, 1] * s2[i] - cs[i, 1]
        ai = a[i]
        return ((ai[:, 0] * d1 * d1 + 2 * ai[:, 1] * d1 * d2 + ai[:, 2] * d2 * d2) * w[i]).sum() / len(i)

    opt = torch.optim.Adam(p.values(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs, 1))
    n = len(rows.k)
    bar = tqdm(range(epochs), desc="fit-predictor", unit="epoch", disable=None if progress else True)
    for _ in bar:
        perm, total = torch.randperm(n), 0.0
        for s in range(0, n, batch):
            opt.zero_grad()
            loss = loss_of(perm[s:s + batch])
            loss.backward()
            opt.step()
            total += loss.item() * min(batch, n - s)
        sched.step()
        bar.set_postfix(vs_linear=f"{total / n:.3f}")
    bar.close()
    weights = {name: v.detach().double().numpy() for name, v in p.items()}
    model = LearnedModel(**weights, **norm, meta={
        "gap_s_range": [float(rows.g.min()), float(rows.g.max())],
        "max_gap_ratio": float(rows.ratio.max()) * RATIO_MARGIN,
        "range_tolerance": RANGE_TOLERANCE,
        "hidden": hidden,
    })
    # Training fit relative to the linear predictor, per k (excess error over the best quadratic per row).
    y = forward(model, rows.shape[:, None, :], rows.time)[:, 0, :]
    ex = rows.excess(y[:, 0] * rows.sc / rows.g, y[:, 1] * rows.sc / rows.g**2)
    ey = xs_np @ ws0
    ex0 = rows.excess(ey[:, 0] * rows.sc / rows.g, ey[:, 1] * rows.sc / rows.g**2)
    rel = {int(k): float(ex[rows.k == k].mean() / max(lin[rows.k == k].mean(), 1e-300)) for k in ks}
    rel0 = {int(k): float(ex0[rows.k == k].mean() / max(lin[rows.k == k].mean(), 1e-300)) for k in ks}
    return model, {"train_seconds": round(time.monotonic() - start, 2), "train_rows": n, "epochs": epochs,
                   "batch": batch, "lr": lr, "train_excess_vs_linear": rel, "linear_init_excess_vs_linear": rel0,
                   "torch": torch.__version__}


def static_mse(session: Session, predictor: Predictor, k: int, horizon_us: int,
               latency_us: int = VALIDATION_LATENCY_US) -> tuple[float, int]:
    """Sum of e² (deg²) and count over a session sent every k-th sample (phase 0, no loss), as the twin shows it."""
    t, q = session.t_us, session.q
    recv = np.arange(0, len(t), k)
    coeffs = predictor.fit_all(t[recv], q[recv])
    qhat = displayed(t, t[recv] + latency_us, t[recv], np.full(len(recv), horizon_us, dtype=np.int64), coeffs)
    acc = ErrorAccumulator()
    acc.add(t, q, qhat)
    return acc.sum_sq, acc.count


def validate(sessions: Sequence[Session], ks: Sequence[int], horizon_us: int,
             predictors: dict[str, Predictor]) -> dict[int, dict[str, float]]:
    """Pooled MSE (deg²) per k and predictor over ``sessions``."""
    table: dict[int, dict[str, float]] = {}
    for k in ks:
        table[k] = {}
        for name, pred in predictors.items():
            sums = [static_mse(s, pred, k, horizon_us) for s in sessions]
            table[k][name] = sum(x for x, _ in sums) / max(sum(c for _, c in sums), 1)
    return table


def format_table(table: dict[int, dict[str, float]], horizon_ms: float) -> str:
    """Text table: MSE per k and predictor, and learned / best baseline."""
    names = list(next(iter(table.values())))
    lines = [f"held-out MSE (deg²), every k-th sample, H = {horizon_ms:g} ms, latency "
             f"{VALIDATION_LATENCY_US} µs, no loss:",
             f"{'k':>5} " + " ".join(f"{n:>11}" for n in names) + "   learned/best-baseline"]
    for k, row in table.items():
        best = min(v for n, v in row.items() if n not in ("learned", "hold"))
        lines.append(f"{k:>5} " + " ".join(f"{row[n]:>11.4g}" for n in names) + f"   {row['learned'] / best:>8.3f}")
    return "\n".join(lines)


def fit_predictor(train_sessions: Sequence[Session], ks: Sequence[int], horizon_ms: float, epochs: int, seed: int,
                  max_rows: int = 300_000, sources: Sequence[str] = (),
                  log: Callable[[str], None] = print, progress: bool = True) -> LearnedModel:
    """Build rows, train, and return the model with its training information in ``meta``."""
    if not ks or min(ks) < 2:
        raise ValueError("every --k must be >= 2 (a one-sample gap cannot identify an acceleration)")
    if horizon_ms < 2:
        raise ValueError("--horizon-ms must be >= 2 (H = 0 is hold: nothing to learn)")
    horizon_us = round(horizon_ms * 1000)
    rng = np.random.default_rng(seed)
    t0 = time.monotonic()
    rows = build_rows(train_sessions, ks, horizon_us, max_rows, rng)
    log(f"training rows: {len(rows.k)} from {len(train_sessions)} session(s), k in {list(ks)}")
    model, info = train(rows, epochs, seed, progress=progress)
    model.meta.update({
        "horizon_ms": horizon_ms, "ks": list(ks), "seed": seed, "max_rows": max_rows,
        "sessions": list(sources), "session_samples": [len(s.t_us) for s in train_sessions],
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_seconds": round(time.monotonic() - t0, 2), **info,
    })
    return model


def baselines(model: LearnedModel) -> dict[str, Predictor]:
    """The predictors compared on held-out data."""
    return {"learned": LearnedPredictor(model), "linear": LinearPredictor(), "quadratic": QuadraticPredictor(),
            "hold": HoldPredictor()}
