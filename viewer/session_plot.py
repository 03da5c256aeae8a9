"""One picture of a whole session (``armtwin plot``): every joint measured vs displayed, the error against ε, when
samples were sent, the load over time and the end-effector error in mm.

The joint and error panels are drawn by the same functions as the demo's ``tracking.png`` (``viewer/plots.py``).
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from twin.arm_spec import ArmSpec
from twin.session import Session
from viewer.plots import _error, _pyplot, joint_panel

LOAD_WINDOW_S = 1.0  # the load panel: sent / measured samples per second of device time (the status line's load)
MAX_POINTS = 200_000  # per line: an hour at 1 kHz is drawn from every 18th sample (the error panel keeps all)


def load_over_time(t_s: np.ndarray, sent: np.ndarray, window_s: float = LOAD_WINDOW_S) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """(window start s, sent / measured samples in that window) for consecutive windows of ``window_s``."""
    win = ((t_s - t_s[0]) // window_s).astype(np.int64)
    counts = np.bincount(win)
    sends = np.bincount(win, weights=sent.astype(np.float64), minlength=len(counts))
    has = counts > 0
    if len(counts) > 1 and counts[-1] < 0.5 * np.median(counts[:-1]):
        has[-1] = False  # a few samples past the last whole window would show as a spike (or a dip)
    return t_s[0] + np.flatnonzero(has) * window_s, sends[has] / np.maximum(counts[has], 1)


def ee_error_series(session: Session, arm: ArmSpec, stride: int) -> tuple[np.ndarray | None, str]:
    """End-effector error (mm) of every ``stride``-th sample, or (None, why not) when there is no twin display, no
    PyBullet, or no arm named and the default does not fit. An arm that was named and does not fit raises
    ``ArmModelError``: a picture without the panel asked for would hide the mistake."""
    if session.qhat is None:
        return None, "no twin display recorded (imported or never sent)"
    try:
        from viewer.arm import JointLimitWarning, NoArm, open_arm
    except ImportError as exc:  # pybullet missing: the joint-space panels still help
        return None, f"end-effector error needs pybullet ({exc})"
    try:
        with open_arm(arm, session.joint_names, session.meta) as model, warnings.catch_warnings():
            warnings.simplefilter("ignore", JointLimitWarning)
            return model.ee_error_mm(session.q, session.qhat, stride), ""
    except (NoArm, RuntimeError) as exc:
        return None, str(exc)


def plot_session(session: Session, out: str | os.PathLike[str], eps: float | None = None,
                 arm: ArmSpec | None = None, title: str = "") -> Any:
    """Save the session picture to ``out`` (png/pdf/svg by extension); returns the closed Figure. Panels, top to
    bottom: one per joint (measured thick and light, the twin dashed and thin on top), squared error with its
    100 ms window MSE and ``eps``, send instants, load per second, end-effector error (mm)."""
    plt = _pyplot()
    arm = arm or ArmSpec()
    t = (session.t_us - session.t_us[0]) * 1e-6
    stride = max(1, len(t) // MAX_POINTS)
    q = np.degrees(session.q[::stride])
    qhat = None if session.qhat is None else np.degrees(session.qhat[::stride])
    nj = session.joints
    ratios = [1.0] * nj + [1.3, 0.35, 0.8, 1.0]
    fig, axes = plt.subplots(len(ratios), 1, figsize=(11, 1.5 * nj + 5.5), sharex=True,
                             gridspec_kw={"height_ratios": ratios})
    ts = t[::stride]
    for j in range(nj):
        joint_panel(axes[j], ts, q[:, j], None if qhat is None else qhat[:, j], session.joint_names[j])
    axes[0].legend(loc="upper right", fontsize=8, ncol=2)
    err_ax, send_ax, load_ax, ee_ax = axes[nj:]
    _error(err_ax, session, t, eps)
    err_ax.set_xlabel("")
    if session.sent is not None and session.sent.any():
        send_ax.eventplot(t[session.sent], lineoffsets=0.5, linelengths=1.0, linewidths=0.5, colors="k")
        send_ax.set_ylabel(f"sends\n({int(session.sent.sum())})")
        w, load = load_over_time(t, session.sent)
        load_ax.step(w, load, where="post", color="tab:green", lw=1.2,
                     label=f"load per {LOAD_WINDOW_S:g} s (mean {session.sent.mean():.4f})")
        load_ax.legend(loc="upper right", fontsize=8)
    else:
        _empty(send_ax, "no sends recorded")
        _empty(load_ax, "no sends recorded (imported session?)")
        send_ax.set_ylabel("sends")
    send_ax.set_yticks([])
    load_ax.set_ylabel("load\n(sent/measured)")
    load_ax.grid(alpha=0.3)
    ee, why = ee_error_series(session, arm, stride)
    if ee is not None and not np.isnan(ee).all():
        ee_ax.plot(ts[: len(ee)], ee, color="tab:purple", lw=0.7,
                   label=f"end-effector error (mean {np.nanmean(ee):.3g} mm, max {np.nanmax(ee):.3g} mm)")
        ee_ax.legend(loc="upper right", fontsize=8)
    else:
        _empty(ee_ax, f"end-effector error unavailable: {why or 'nothing displayed'}")
    ee_ax.set_ylabel("end-effector\nerror (mm)")
    ee_ax.set_xlabel("time since session start (s)")
    ee_ax.grid(alpha=0.3)
    fig.suptitle(title or f"armtwin session: {session.meta.get('policy', session.meta.get('source', ''))}")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return fig


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=8, color="grey")
