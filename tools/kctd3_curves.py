"""Compare KC-TD3 and TD3 training curves (the paper's Fig. 4): convergence episode, stability, one figure.

    python tools/kctd3_curves.py data/policies/kctd3_eps0.002_curves.csv data/policies/td3_eps0.002_curves.csv \
        --eps 0.002 --png docs/results/kctd3/training_eps0.002.png

Convergence: the first deterministic (noise-free) episode after which the mean MSE of every 10 consecutive
deterministic episodes stays <= ε. Stability: over the last 100 episodes' deterministic ones, MSE mean ± std and
the fraction of episodes above ε. Reads the ``POLICY_curves.csv`` files ``armtwin train`` writes.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import numpy as np

WINDOW = 10


def load(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) for r in rows]) for k in ("episode", "mse_deg2", "load", "lambda", "explore")}


def summarise(c: dict[str, np.ndarray], eps: float) -> dict[str, Any]:
    det = c["explore"] == 0
    ep, mse = c["episode"][det], c["mse_deg2"][det]
    roll = np.convolve(mse, np.ones(WINDOW) / WINDOW, mode="valid")  # roll[i]: episodes i .. i+WINDOW-1
    bad = np.flatnonzero(roll > eps)
    first_ok = 0 if not len(bad) else int(bad[-1]) + 1
    converged = int(ep[first_ok + WINDOW - 1]) if first_ok < len(roll) else None
    last = det & (c["episode"] > c["episode"].max() - 100)
    tail = c["mse_deg2"][last]
    return {"episodes": int(c["episode"].max()) + 1, "converged_at": converged,
            "last100_mse_mean": float(tail.mean()), "last100_mse_std": float(tail.std()),
            "last100_over_eps": float(np.mean(tail > eps)), "last100_load_mean": float(c["load"][last].mean())}


def plot(curves: dict[str, dict[str, np.ndarray]], eps: float, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for name, c in curves.items():
        det = c["explore"] == 0
        for a, key in ((ax[0], "mse_deg2"), (ax[1], "load")):
            y = c[key][det]
            a.plot(c["episode"][det][WINDOW - 1:], np.convolve(y, np.ones(WINDOW) / WINDOW, mode="valid"),
                   label=f"{name} (mean of {WINDOW} noise-free episodes)")
    ax[0].axhline(eps, color="r", ls="--", label=f"ε = {eps:g}")
    ax[0].set_yscale("log")
    ax[0].set_ylabel("episode MSE (deg²)")
    ax[1].set_ylabel("load")
    ax[1].set_xlabel("episode (10 s, random link)")
    ax[0].legend(fontsize=7)
    fig.suptitle(f"training curves, ε = {eps:g} deg²")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("curves", type=Path, nargs="+", help="POLICY_curves.csv files (name = file stem)")
    ap.add_argument("--eps", type=float, required=True, help="the constraint they were trained for (deg²)")
    ap.add_argument("--png", type=Path, help="write the comparison figure here")
    args = ap.parse_args()
    curves = {p.name.removesuffix("_curves.csv"): load(p) for p in args.curves}
    print("| run | converged at episode | last 100: MSE mean ± std | episodes over ε | load |")
    print("|---|---|---|---|---|")
    for name, c in curves.items():
        s = summarise(c, args.eps)
        conv = "never" if s["converged_at"] is None else str(s["converged_at"])
        print(f"| {name} | {conv} | {s['last100_mse_mean']:.2g} ± {s['last100_mse_std']:.2g} | "
              f"{100 * s['last100_over_eps']:.0f} % | {s['last100_load_mean']:.4f} |")
    if args.png:
        plot(curves, args.eps, args.png)
        print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
