"""Plots of sessions (matplotlib, imported lazily, Agg backend so no display is needed)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from twin.session import Session

WINDOW_S = 0.1  # the 100 ms windows whose MSE the constraint ε bounds (docs/architecture.md)
# Measured thick and light under a thin dark twin: both stay visible where they agree (most of the time).
MEASURED_STYLE = {"lw": 2.6, "color": "#9ecae1", "zorder": 2, "solid_capstyle": "butt"}
TWIN_STYLE = {"lw": 0.9, "color": "#a63603", "zorder": 3, "ls": "--", "dashes": (4, 1.5)}
EPS_STYLE = {"color": "k", "ls": "--", "lw": 1.0, "zorder": 4}  # the constraint line, in every plot that has one


def eps_line(ax: Any, eps: float) -> Any:
    """The constraint ε (an MSE bound, deg²) as a horizontal line; the same look in session and evaluate plots."""
    return ax.axhline(eps, label=f"ε = {eps:g} deg² (MSE bound)", **EPS_STYLE)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def joint_panel(ax: Any, t: np.ndarray, q_deg: np.ndarray, qhat_deg: np.ndarray | None, name: str) -> None:
    """One joint: measured thick and light, the twin thin, dashed and dark on top, so both stay visible."""
    ax.plot(t, q_deg, label="measured q", **MEASURED_STYLE)
    if qhat_deg is not None:
        ax.plot(t, qhat_deg, label="twin displayed q̂", **TWIN_STYLE)
    ax.set_ylabel(f"{name}\n(deg)")
    ax.grid(alpha=0.3)


def plot_tracking(session: Session, out: str | os.PathLike[str], joints: int = 3, title: str = "",
                  eps: float | None = None) -> Any:
    """Measured vs displayed angles for the first ``joints`` joints (the most active first), a zoom on individual
    sends, and the squared error over time with the 100 ms window MSE and, if given, the constraint ``eps``
    (deg², an MSE bound) as a horizontal line. Saves to ``out``; returns the (closed) matplotlib Figure."""
    plt = _pyplot()
    t = (session.t_us - session.t_us[0]) * 1e-6
    q = np.degrees(session.q)
    order = np.argsort(-np.ptp(q, axis=0))[:joints]
    fig, axes = plt.subplots(len(order) + 2, 1, figsize=(11, 2.2 * (len(order) + 2)))
    for ax, j in zip(axes[: len(order)], order, strict=True):
        joint_panel(ax, t, q[:, j], None if session.qhat is None else np.degrees(session.qhat[:, j]),
                    session.joint_names[j])
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    _zoom(axes[len(order)], session, t, q, int(order[0]))
    _error(axes[-1], session, t, eps)
    fig.suptitle(title or "armtwin: measured arm vs twin")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return fig


def _error(ax: Any, session: Session, t: np.ndarray, eps: float | None) -> None:
    """Per-sample mean squared error over joints (deg²), its 100 ms window MSE, and ε: the quantities the
    constraint compares (a window above ε counts in the tail fraction)."""
    if session.qhat is not None:
        sq = np.mean(np.degrees(session.q - session.qhat) ** 2, axis=1)
        ok = ~np.isnan(sq)  # nothing displayed yet before the first prediction
        if ok.any():
            ax.plot(t[ok], np.maximum(sq[ok], 1e-12), lw=0.5, color="tab:red", alpha=0.35,
                    label="squared error (mean over joints)")
            win = (t[ok] // WINDOW_S).astype(np.int64)
            sums, counts = np.bincount(win - win[0], weights=sq[ok]), np.bincount(win - win[0])
            has = counts > 0
            ax.step((np.flatnonzero(has) + win[0]) * WINDOW_S, np.maximum(sums[has] / counts[has], 1e-12),
                    where="post", lw=1.1, color="darkred", label="100 ms window MSE")
            ax.set_yscale("log")
    if eps is not None:
        eps_line(ax, eps)
    ax.set_ylabel("squared error\n(deg²)")
    ax.set_xlabel("time (s)")
    ax.grid(alpha=0.3)
    if ax.get_lines():  # below the data: at the top it would hide the ε line
        ax.legend(loc="lower right", fontsize=8, ncol=3, framealpha=0.9)


def _zoom(ax: Any, session: Session, t: np.ndarray, q: np.ndarray, j: int) -> None:
    """0.3 s around the largest error: individual sends and the twin's extrapolation between them."""
    if session.qhat is not None and not np.isnan(session.qhat).all():
        err = np.nan_to_num(np.abs(q[:, j] - np.degrees(session.qhat[:, j])))
        centre = float(t[int(np.argmax(err))])
    else:
        centre = float(t[len(t) // 2])
    sel = (t >= centre - 0.15) & (t <= centre + 0.15)
    ax.plot(t[sel], q[sel, j], label="measured q", **MEASURED_STYLE)
    if session.qhat is not None:
        ax.plot(t[sel], np.degrees(session.qhat[sel, j]), label="twin q̂", **TWIN_STYLE)
    if session.sent is not None:
        s = sel & session.sent
        ax.plot(t[s], q[s, j], "o", ms=3, color="k", zorder=4, label="sent samples")
    ax.set_ylabel(f"zoom {session.joint_names[j]}\n(deg)")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax.grid(alpha=0.3)
