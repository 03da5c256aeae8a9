"""Plots of an evaluation: the load–error trade-off (the paper's Fig. 5) and per-policy error distributions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from viewer.plots import eps_line

MARKERS = {"none": "x", "static": "o", "static-sampling-only": "s", "static-prediction-only": "^",
           "static-resend": "h", "send-on-delta": "v", "dead-reckoning": "D", "dead-reckoning-resend": "d",
           "kc-td3": "*", "td3": "P"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_tradeoff(records: list[dict[str, Any]], cloud: list[dict[str, Any]], link: str, out: Path) -> None:
    """Left: every candidate's test (MSE, load) with the constraint lines; right: tuned load against ε."""
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    recs = [r for r in records if r["link"] == link and r["load"] is not None]
    oracle = sorted((r for r in recs if r["policy"] == "oracle"), key=lambda r: r["constraint"])
    recs = [r for r in recs if r["policy"] != "oracle"]
    fams = sorted({r["policy"] for r in recs})
    colors = {f: plt.cm.tab10(i % 10) for i, f in enumerate(fams)}
    for fam in fams:
        pts = [(c["test"]["mse_deg2"], c["test"]["load"]) for c in cloud
               if c["link"] == link and c["family"] == fam]
        if pts:
            x, y = np.array(pts).T
            ax.scatter(x, y, s=10, alpha=0.25, color=colors[fam], marker=MARKERS.get(fam, "o"))
        chosen = sorted((r for r in recs if r["policy"] == fam
                         and r.get("trained_for_eps") in (None, r["constraint"])), key=lambda r: r["constraint"])
        ax.scatter([r["mse_deg2"] for r in chosen], [r["load"] for r in chosen], s=60, color=colors[fam],
                   marker=MARKERS.get(fam, "o"), edgecolor="k", label=fam)
        ax2.plot([r["constraint"] for r in chosen], [r["load"] for r in chosen], marker=MARKERS.get(fam, "o"),
                 color=colors[fam], label=fam)
    if oracle:  # the clairvoyant bound: its lower hull (every λ the bisections tried) and its tuned points
        hull = np.array(sorted({tuple(p) for r in oracle for p in r.get("oracle_hull", [])}))
        eps_all = [r["constraint"] for r in oracle]
        if len(hull):  # the part near the constraints (the bisections also try the extremes)
            hull = hull[(hull[:, 0] >= min(eps_all) / 10) & (hull[:, 0] <= max(eps_all) * 10)]
        if len(hull):
            ax.plot(hull[:, 0], hull[:, 1], color="k", lw=1, ls="--", label="oracle hull")
        ax.scatter([r["mse_deg2"] for r in oracle], [r["load"] for r in oracle], s=70, color="k", marker="_",
                   label="oracle")
        ax2.plot([r["constraint"] for r in oracle], [r["load"] for r in oracle], color="k", ls="--", marker="_",
                 label="oracle (clairvoyant bound)")
    for eps in sorted({r["constraint"] for r in recs}):
        ax.axvline(eps, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("test MSE (deg²)")
    ax.set_ylabel("normalised load (1 = full 1 kHz stream)")
    ax.set_title("all candidates (faint) and tuned choices; dotted: constraints ε")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("average tracking-error constraint ε (deg²)")
    ax2.set_ylabel("load of the tuned policy on test sessions")
    ax2.set_title("load vs constraint (paper Fig. 5)")
    ax2.grid(alpha=0.3, which="both")
    ax2.legend(fontsize=8)
    fig.suptitle(f"load–error trade-off, link {link}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_error_distributions(records: list[dict[str, Any]], link: str, eps: float, out: Path) -> None:
    """100 ms window MSE of each tuned policy at one constraint (box = quartiles, whiskers 1–99 %)."""
    plt = _plt()
    recs = [r for r in records if r["link"] == link and r["constraint"] == eps and r.get("window_mse")]
    if not recs:
        return
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(recs)), 4.5))
    data = [np.maximum(np.asarray(r["window_mse"]), 1e-9) for r in recs]
    ax.boxplot(data, whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(recs) + 1), [f"{r['policy']}\nload {r['load']:.3f}" for r in recs], fontsize=8)
    eps_line(ax, eps)
    ax.set_yscale("log")
    ax.set_ylabel("MSE of 100 ms windows (deg²)")
    ax.set_title(f"error distribution of tuned policies, ε = {eps:g}, link {link}")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
