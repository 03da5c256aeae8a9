"""Local kinematics: velocity and acceleration from a window of samples (least-squares parabola).

Used by the server's quadratic predictor on the samples it received, and by the device on its own 1 kHz stream
to send velocity and acceleration with a sample (the DIS dead-reckoning state), which the server's
``kinematic`` predictor extrapolates. One function, so device, server and simulator compute the same numbers.
"""

from __future__ import annotations

import numpy as np

DERIV_WINDOW = 20  # samples (20 ms at 1 kHz): long enough to average encoder noise, short enough to track


def quad_fit(t_us: np.ndarray, q: np.ndarray, ends: np.ndarray, window: int, block: int = 50_000) -> np.ndarray:
    """Parabola through the newest sample, least squares over up to ``window`` samples ending at each ``ends``.

    Returns (len(ends), 3, J): [q_end, velocity, acceleration / 2] in rad, rad/s, rad/s². Rows with fewer than
    three samples fall back to a two-point velocity (or zero) and no acceleration.
    """
    t = np.asarray(t_us, dtype=np.int64)
    q = np.asarray(q, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.int64)
    out = np.zeros((len(ends), 3, q.shape[1]))
    for a in range(0, len(ends), block):
        e = ends[a:a + block]
        out[a:a + len(e)] = _quad_fit_block(t, q, e, window)
    return out


def _quad_fit_block(t: np.ndarray, q: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    n, j = len(ends), q.shape[1]
    out = np.zeros((n, 3, j))
    out[:, 0] = q[ends]
    has_prev = ends >= 1
    if has_prev.any():
        e = ends[has_prev]
        dt = np.maximum((t[e] - t[e - 1]) * 1e-6, 1e-6)
        out[has_prev, 1] = (q[e] - q[e - 1]) / dt[:, None]
    idx = ends[:, None] + np.arange(-window + 1, 1)[None, :]  # (n, window)
    valid = idx >= 0
    idxc = np.clip(idx, 0, None)
    tau = (t[idxc] - t[ends][:, None]) * 1e-6
    dq = q[idxc] - q[ends][:, None, :]
    w = valid.astype(np.float64)
    s2 = (w * tau**2).sum(1)
    s3 = (w * tau**3).sum(1)
    s4 = (w * tau**4).sum(1)
    b1 = np.einsum("nm,nm,nmj->nj", w, tau, dq)
    b2 = np.einsum("nm,nm,nmj->nj", w, tau**2, dq)
    det = s2 * s4 - s3 * s3
    good = (valid.sum(1) >= 3) & (np.abs(det) > 1e-30)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (b1 * s4[:, None] - b2 * s3[:, None]) / det[:, None]
        acc = (s2[:, None] * b2 - s3[:, None] * b1) / det[:, None]
    out[good, 1] = v[good]
    out[good, 2] = acc[good]
    return out
