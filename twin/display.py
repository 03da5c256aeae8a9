"""What the twin displays: the reconstruction rule of DESIGN.md §3, shared by the live device and the simulator.

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


class DisplayTimeline:
    """Incrementally collected predictions (in arrival order) that can be evaluated at any device time.

    The device appends predictions as replies come back and asks for the display at finalized sample times; old
    predictions are pruned once no future query can need them.
    """

    def __init__(self, joints: int, degree_max: int = 4) -> None:
        self.joints = joints
        self._p = degree_max + 1
        self._arr: list[int] = []
        self._t0: list[int] = []
        self._h: list[int] = []
        self._c: list[np.ndarray] = []
        self._newest_t0: int | None = None
        self.stale = 0

    def add(self, arrival_us: int, pred: Prediction) -> bool:
        """Record a prediction that took effect at ``arrival_us``; returns False (and counts) if stale."""
        if self._newest_t0 is not None and pred.t0_us <= self._newest_t0:
            self.stale += 1
            return False
        if self._arr and arrival_us < self._arr[-1]:
            arrival_us = self._arr[-1]  # clock-offset noise must not reorder the display
        self._newest_t0 = pred.t0_us
        c = np.zeros((self._p, self.joints))
        c[: pred.coeffs.shape[0]] = pred.coeffs
        self._arr.append(arrival_us)
        self._t0.append(pred.t0_us)
        self._h.append(pred.horizon_us)
        self._c.append(c)
        return True

    def __len__(self) -> int:
        return len(self._arr)

    def evaluate(self, t_us: np.ndarray) -> np.ndarray:
        if not self._arr:
            return np.full((len(t_us), self.joints), np.nan)
        return displayed(
            np.asarray(t_us, dtype=np.int64),
            np.asarray(self._arr, dtype=np.int64),
            np.asarray(self._t0, dtype=np.int64),
            np.asarray(self._h, dtype=np.int64),
            np.stack(self._c),
        )

    def prune_before(self, t_us: int) -> None:
        """Drop predictions superseded before ``t_us`` (keep the one in effect at ``t_us``)."""
        if not self._arr:
            return
        i = int(np.searchsorted(np.asarray(self._arr), t_us, side="right")) - 1
        if i > 0:
            del self._arr[:i], self._t0[:i], self._h[:i], self._c[:i]
