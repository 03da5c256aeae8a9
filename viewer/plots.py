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
    fig, axes = plt.subplots(len(order) + 2, 1, figsize=(11, 2.2 * (len(order) + 2)))
    for ax, j in zip(axes[: len(order)], order, strict=True):
        ax.plot(t, q[:, j], lw=1.2, label="measured q")
        if session.qhat is not None:
            ax.plot(t, np.degrees(session.qhat[:, j]), lw=0.9, ls="--", label="twin displayed q̂")
        ax.set_ylabel(f"{session.joint_names[j]}\n(deg)")
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    _zoom(axes[len(order)], session, t, q, int(order[0]))
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


def _zoom(ax: object, session: Session, t: np.ndarray, q: np.ndarray, j: int) -> None:
    """0.3 s around the largest error: individual sends and the twin's extrapolation between them."""
    if session.qhat is not None and not np.isnan(session.qhat).all():
        err = np.nan_to_num(np.abs(q[:, j] - np.degrees(session.qhat[:, j])))
        centre = float(t[int(np.argmax(err))])
    else:
        centre = float(t[len(t) // 2])
    sel = (t >= centre - 0.15) & (t <= centre + 0.15)
    ax.plot(t[sel], q[sel, j], lw=1.5, label="measured q")  # type: ignore[attr-defined]
    if session.qhat is not None:
        ax.plot(t[sel], np.degrees(session.qhat[sel, j]), lw=1.0, ls="--", label="twin q̂")  # type: ignore[attr-defined]
    if session.sent is not None:
        s = sel & session.sent
        ax.plot(t[s], q[s, j], "o", ms=3, color="k", label="sent samples")  # type: ignore[attr-defined]
    ax.set_ylabel(f"zoom {session.joint_names[j]}\n(deg)")  # type: ignore[attr-defined]
    ax.legend(loc="upper right", fontsize=8, ncol=3)  # type: ignore[attr-defined]
    ax.grid(alpha=0.3)  # type: ignore[attr-defined]
