"""Causal features of the arm's motion that the device could compute at each sample, and the life of a
prediction sent there: what the test-side studies in ``tools/`` (``trigger_variants``, ``prediction_life``)
measure a sender's choices with.

Every feature at sample i uses samples up to i only; ``prediction_life`` looks ahead (it is the quantity to be
predicted, not a feature).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from twin.kinematics import DERIV_WINDOW, quad_fit

JERK_LAG = 10  # samples between the two acceleration estimates of the jerk figure (10 ms at 1 kHz)


def jerk_rms(t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per sample, the RMS over joints of (a_i - a_{i-JERK_LAG}) / lag in deg/s³ (0 for the first rows), a from the
    device's derivative estimate (``twin.kinematics.quad_fit``): causal, it uses rows up to i only."""
    a = np.degrees(2 * quad_fit(t_us, q, np.arange(len(t_us)), DERIV_WINDOW)[:, 2, :])
    out = np.zeros(len(t_us))
    lag_s = (t_us[JERK_LAG:] - t_us[:-JERK_LAG]) * 1e-6
    out[JERK_LAG:] = np.sqrt((((a[JERK_LAG:] - a[:-JERK_LAG]) / lag_s[:, None]) ** 2).mean(axis=1))
    return out


@njit(cache=True)
def _residual(t: np.ndarray, q: np.ndarray, c: np.ndarray, window: int, out: np.ndarray) -> None:
    n, joints = q.shape
    for i in range(n):
        s, k = 0.0, 0
        for m in range(max(0, i - window + 1), i + 1):
            tau = (t[m] - t[i]) * 1e-6
            for j in range(joints):
                e = q[m, j] - (c[i, 0, j] + tau * (c[i, 1, j] + tau * c[i, 2, j]))
                s += e * e
            k += 1
        out[i] = np.sqrt(s / (k * joints))


def fit_residual_rms(t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per sample, the RMS (deg, over joints and the window) of the device's derivative fit's residual: how badly
    the parabola it would send fits the last ``DERIV_WINDOW`` samples (encoder noise, or motion it cannot follow)."""
    t = np.ascontiguousarray(t_us, dtype=np.int64)
    c = np.ascontiguousarray(np.degrees(quad_fit(t, q, np.arange(len(t)), DERIV_WINDOW)))
    out = np.zeros(len(t))
    _residual(t, np.ascontiguousarray(np.degrees(q)), c, DERIV_WINDOW, out)
    return out


@njit(cache=True)
def _life(t: np.ndarray, q: np.ndarray, c: np.ndarray, horizon_us: int, delta: float, cap: int,
          out: np.ndarray) -> None:
    n, joints = q.shape
    for i in range(n):
        out[i] = cap
        for m in range(i + 1, min(n, i + cap)):
            tau = min(t[m] - t[i], horizon_us) * 1e-6
            s = 0.0
            for j in range(joints):
                e = q[m, j] - (c[i, 0, j] + tau * (c[i, 1, j] + tau * c[i, 2, j]))
                s += e * e
            if s > delta * delta * joints:
                out[i] = m - i
                break


def prediction_life(t_us: np.ndarray, q: np.ndarray, delta_deg: float, horizon_ms: float = 200.0,
                    cap: int = 2000) -> np.ndarray:
    """Per sample i, how many samples the ``kinematic`` prediction sent at i (the device's derivative estimate,
    frozen at the horizon) keeps its RMS error over joints within ``delta_deg``: the samples until the first one
    beyond it, or ``cap`` (also where the session ends first). Looks ahead: a target, not a feature."""
    t = np.ascontiguousarray(t_us, dtype=np.int64)
    c = np.ascontiguousarray(np.degrees(quad_fit(t, q, np.arange(len(t)), DERIV_WINDOW)))
    out = np.zeros(len(t), dtype=np.int64)
    _life(t, np.ascontiguousarray(np.degrees(q)), c, round(horizon_ms * 1000), delta_deg, cap, out)
    return out
