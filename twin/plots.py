"""Plots of sessions (matplotlib, imported lazily, Agg backend so no display is needed)."""

from __future__ import annotations

import os

import numpy as np

from twin.session import Session


def plot_tracking(session: Session, out: str | os.PathLike[str], joints: int = 3, title: str = "") -> None:
    """Measured vs displayed angles for the first ``joints`` joints (the most active first) and send instants."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (session.t_us - session.t_us[0]) * 1e-6
    q = np.degrees(session.q)
    order = np.argsort(-np.ptp(q, axis=0))[:joints]
    fig, axes = plt.subplots(len(order) + 1, 1, figsize=(11, 2.2 * (len(order) + 1)), sharex=True)
    for ax, j in zip(axes[:-1], order, strict=True):
        ax.plot(t, q[:, j], lw=1.2, label="measured q")
        if session.qhat is not None:
            ax.plot(t, np.degrees(session.qhat[:, j]), lw=0.9, ls="--", label="twin displayed q̂")
        if session.sent is not None:
            s = session.sent
            ax.plot(t[s], q[s, j], "|", ms=5, color="k", alpha=0.35, label="sent")
        ax.set_ylabel(f"{session.joint_names[j]}\n(deg)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8, ncol=3)
    ax = axes[-1]
    if session.qhat is not None:
        err = np.degrees(session.q - session.qhat)
        ok = ~np.isnan(err).any(axis=1)  # nothing displayed yet before the first prediction
        ax.plot(t[ok], np.sqrt(np.mean(err[ok] ** 2, axis=1)), lw=0.8, color="tab:red")
        ax.set_yscale("log")
    ax.set_ylabel("RMS error\n(deg)")
    ax.set_xlabel("time (s)")
    ax.grid(alpha=0.3)
    fig.suptitle(title or "armtwin: measured arm vs twin")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
