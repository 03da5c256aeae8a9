"""Local kinematics: velocity and acceleration from a window of samples (least-squares parabola).

Used by the server's quadratic predictor on the samples it received, and by the device on its own 1 kHz stream
to send velocity and acceleration with a sample (the DIS dead-reckoning state), which the server's
``kinematic`` predictor extrapolates. One function, so device, server and simulator compute the same numbers.
"""

from __future__ import annotations

import numpy as np
from numba import njit

DERIV_WINDOW = 20  # samples (20 ms at 1 kHz): long enough to average encoder noise, short enough to track


def quad_fit(t_us: np.ndarray, q: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Parabola through the newest sample, least squares over up to ``window`` samples ending at each ``ends``.

    Returns (len(ends), 3, J): [q_end, velocity, acceleration / 2] in rad, rad/s, rad/s². Rows with fewer than
    three samples fall back to a two-point velocity (or zero) and no acceleration. Compiled (numba): the
    simulator fits millions of rows; ``quad_fit_reference`` is the numpy formulation it is tested against.
    """
    t = np.ascontiguousarray(t_us, dtype=np.int64)
    qq = np.ascontiguousarray(q, dtype=np.float64)
    e = np.ascontiguousarray(ends, dtype=np.int64)
    out = np.zeros((len(e), 3, qq.shape[1]))
    if len(e):
        _quad_fit_rows(t, qq, e, window, out)
    return out


@njit(cache=True)
def fit_row(t: np.ndarray, q: np.ndarray, first: int, last: int, coeffs: np.ndarray) -> None:
    """[q, v, a/2] from rows first..last (newest last) into ``coeffs`` (3, J): the parabola through the newest
    row, least squares over the others; two-point velocity with fewer than three rows."""
    joints = q.shape[1]
    for j in range(joints):
        coeffs[0, j] = q[last, j]
        coeffs[1, j] = 0.0
        coeffs[2, j] = 0.0
    if last - first < 1:
        return
    dt = (t[last] - t[last - 1]) * 1e-6
    if dt < 1e-6:
        dt = 1e-6
    for j in range(joints):
        coeffs[1, j] = (q[last, j] - q[last - 1, j]) / dt
    if last - first < 2:
        return
    s2 = 0.0
    s3 = 0.0
    s4 = 0.0
    for r in range(first, last + 1):
        tau = (t[r] - t[last]) * 1e-6
        s2 += tau * tau
        s3 += tau * tau * tau
        s4 += tau * tau * tau * tau
    det = s2 * s4 - s3 * s3
    if abs(det) <= 1e-30:
        return
    for j in range(joints):
        b1 = 0.0
        b2 = 0.0
        for r in range(first, last + 1):
            tau = (t[r] - t[last]) * 1e-6
            dq = q[r, j] - q[last, j]
            b1 += tau * dq
            b2 += tau * tau * dq
        coeffs[1, j] = (b1 * s4 - b2 * s3) / det
        coeffs[2, j] = (s2 * b2 - s3 * b1) / det


@njit(cache=True)
def _quad_fit_rows(t: np.ndarray, q: np.ndarray, ends: np.ndarray, window: int, out: np.ndarray) -> None:
    for r in range(ends.shape[0]):
        e = ends[r]
        fit_row(t, q, max(0, e - window + 1), e, out[r])


def quad_fit_reference(t_us: np.ndarray, q: np.ndarray, ends: np.ndarray, window: int,
                       block: int = 50_000) -> np.ndarray:
    """Numpy formulation of ``quad_fit`` (vectorised normal equations), kept as its test reference."""
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
