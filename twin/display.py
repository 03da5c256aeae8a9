"""What the twin displays: the reconstruction rule, shared by the live device and the simulator.

A prediction made from the sample at t0 is a polynomial in tau = t - t0 (seconds), evaluated at min(t, t0 + H).
The twin shows, at device time t, the newest prediction whose sample had arrived at the server by t.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """A compact predicted trajectory the device can evaluate exactly: q(t) = sum_p coeffs[p] * tau**p."""

    t0_us: int
    horizon_us: int
    coeffs: np.ndarray  # shape (degree + 1, joints), radians and seconds

    def evaluate(self, t_us: np.ndarray | int) -> np.ndarray:
        tau = np.clip((np.asarray(t_us, dtype=np.int64) - self.t0_us), 0, self.horizon_us) * 1e-6
        return _polyval(self.coeffs, tau)


def _polyval(coeffs: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Horner evaluation; coeffs (P, J), tau scalar or (N,) -> (J,) or (N, J)."""
    tau = np.asarray(tau, dtype=np.float64)
    out = np.broadcast_to(coeffs[-1], tau.shape + coeffs.shape[1:]).astype(np.float64)
    for p in range(coeffs.shape[0] - 2, -1, -1):
        out = out * tau[..., None] + coeffs[p]
    return out


def in_effect(arrival_us: np.ndarray, t0_us: np.ndarray) -> np.ndarray:
    """Indices of the predictions that ever take effect, in display order.

    The server ignores a sample that is not newer than the newest one it already has (reordering by jitter), so
    what it displays is the subsequence of arrivals whose t0 is a strict running maximum.
    """
    order = np.argsort(arrival_us, kind="stable")
    t0_sorted = t0_us[order]
    if len(order) == 0:
        return order
    prev_max = np.maximum.accumulate(np.concatenate(([np.iinfo(np.int64).min], t0_sorted[:-1])))
    return order[t0_sorted > prev_max]


def displayed(
    t_us: np.ndarray,
    arrival_us: np.ndarray,
    t0_us: np.ndarray,
    horizon_us: np.ndarray,
    coeffs: np.ndarray,
) -> np.ndarray:
    """What the twin displays at each device time ``t_us`` (N,), NaN where nothing has arrived yet.

    ``arrival_us`` must be the display-ordered arrivals (see ``in_effect``), non-decreasing; ``coeffs`` is
    (M, P, J). Vectorised: this is the simulator's inner loop as well as the device's online reconstruction.
    """
    n, m = len(t_us), len(arrival_us)
    joints = coeffs.shape[2] if coeffs.ndim == 3 else 0
    out = np.full((n, joints), np.nan)
    if m == 0 or n == 0:
        return out
    idx = np.searchsorted(arrival_us, t_us, side="right") - 1
    # t_us is sorted, so the samples before the first arrival form a prefix: slice instead of masking.
    start = int(np.searchsorted(idx, 0, side="left")) if np.all(np.diff(t_us) >= 0) else None
    sel: slice | np.ndarray = slice(start, None) if start is not None else idx >= 0
    i = idx[sel]
    if len(i) == 0:
        return out
    tau = np.clip(t_us[sel] - t0_us[i], 0, horizon_us[i]) * 1e-6
    val = coeffs[i, -1, :]
    for p in range(coeffs.shape[1] - 2, -1, -1):
        val *= tau[:, None]
        val += coeffs[i, p, :]
    out[sel] = val
    return out

