"""What the twin shows offline, given the sends and their link fates: the server's predictor and the display rule."""

from __future__ import annotations

import numpy as np

from twin.constants import PIPELINE_LATENCY_US
from twin.display import displayed, in_effect
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.predictors import make_predictor


class TwinDisplay:
    """What the twin shows, given the sends and their fates: the server predictor fitted on what arrived (with the
    device's derivative estimates if it uses them), the display rule, reordering handled as the server does."""

    def __init__(self, predictor: str, latency_us: int = PIPELINE_LATENCY_US,
                 arrivals: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        self.pred = make_predictor(predictor)
        self.deriv_used = self.pred.uses_derivatives
        self.latency_us = latency_us
        # A live run's recorded arrivals (sample time, sorted -> device time it took effect, -1: never came back):
        # a send the live device also made takes effect when it did there; other sends follow the link model.
        self.arrivals = arrivals

    def display(self, t: np.ndarray, q: np.ndarray, idx: np.ndarray, lost: np.ndarray, delay: np.ndarray,
                horizon_us: np.ndarray, t_query: np.ndarray) -> np.ndarray:
        """Display at ``t_query`` for the sends ``idx`` (rows of t, q) with link fates ``lost``/``delay`` (µs) and
        horizons ``horizon_us`` (one per send)."""
        arrival_all = t[idx] + delay + self.latency_us
        if self.arrivals is not None and len(self.arrivals[0]) and len(idx):
            t0_rec, arr_rec = self.arrivals
            pos = np.minimum(np.searchsorted(t0_rec, t[idx]), len(t0_rec) - 1)
            match = t0_rec[pos] == t[idx]
            lost = np.where(match, arr_rec[pos] < 0, lost)
            arrival_all = np.where(match, arr_rec[pos], arrival_all)
        recv = idx[~lost]
        arrival = arrival_all[~lost]
        order = in_effect(arrival, t[recv])  # the server ignores samples older than what it shows (reordering)
        recv, arrival, horizon = recv[order], arrival[order], horizon_us[~lost][order]
        if self.deriv_used:
            # The device sends its own velocity/acceleration estimate with each sample (same quad_fit as live).
            deriv = quad_fit(t, q, recv, DERIV_WINDOW)[:, 1:]
            coeffs = self.pred.fit_with_derivatives(t[recv], q[recv], deriv)
        else:
            coeffs = self.pred.fit_all(t[recv], q[recv])
        return displayed(t_query, arrival, t[recv], horizon, coeffs)
