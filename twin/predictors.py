"""Trajectory predictors, registered by name, used unchanged by the live server and the offline simulator.

Every predictor implements one vectorised function, ``fit_all``: given the samples the server has received (in
display order), return the prediction polynomial made after each of them. The live server calls it on its short
history and keeps the last row (``OnlinePredictor``); the simulator calls it once on a whole session. One code
path, so the two cannot disagree.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from typing import ClassVar

import numpy as np

from twin.display import Prediction


class Predictor(ABC):
    """Maps received samples to polynomial predictions q(t0 + tau) = sum_p c[p] * tau**p (rad, s)."""

    name: ClassVar[str]
    degree: ClassVar[int]
    history: ClassVar[int]  # how many received samples ``fit_all`` needs to look back

    @abstractmethod
    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(N,), (N, J) received samples -> (N, degree + 1, J) coefficients, one prediction per sample."""


class HoldPredictor(Predictor):
    """Hold the last received sample (H is irrelevant: the polynomial is constant)."""

    name = "hold"
    degree = 0
    history = 1

    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64)[:, None, :].copy()


class LinearPredictor(Predictor):
    """Extrapolate with the velocity between the last two received samples."""

    name = "linear"
    degree = 1
    history = 2

    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        out = np.zeros((len(q), 2, q.shape[1]))
        out[:, 0] = q
        if len(q) > 1:
            dt = np.diff(np.asarray(t_us, dtype=np.int64)) * 1e-6
            out[1:, 1] = np.diff(q, axis=0) / np.maximum(dt, 1e-6)[:, None]
        return out


class QuadraticPredictor(Predictor):
    """Constant-acceleration model: least-squares parabola through the last ``m`` received samples.

    Evaluated so that it passes through the newest sample (the twin must not jump away from a measured value);
    velocity and acceleration come from the fit. Falls back to linear while fewer than three samples exist.
    """

    name = "quadratic"
    degree = 2
    history = 5

    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        t = np.asarray(t_us, dtype=np.int64)
        n, j = q.shape
        out = LinearPredictor().fit_all(t, q)
        out = np.concatenate([out, np.zeros((n, 1, j))], axis=1)
        m = self.history
        if n < 3:
            return out
        # Window of up to m samples ending at each index i (>= 2), times relative to t_i (s).
        idx = np.arange(n)[:, None] + np.arange(-m + 1, 1)[None, :]  # (n, m)
        valid = idx >= 0
        idxc = np.clip(idx, 0, None)
        tau = (t[idxc] - t[:, None]) * 1e-6
        # Constrained fit through the newest sample: q_k - q_i = v*tau + a*tau^2 (least squares, 2 unknowns).
        dq = q[idxc] - q[:, None, :]  # (n, m, j)
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
            a = (s2[:, None] * b2 - s3[:, None] * b1) / det[:, None]
        out[good, 1] = v[good]
        out[good, 2] = a[good]
        return out


PREDICTORS: dict[str, type[Predictor]] = {
    cls.name: cls for cls in (HoldPredictor, LinearPredictor, QuadraticPredictor)
}


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator for predictors defined elsewhere (e.g. the learned one)."""
    PREDICTORS[cls.name] = cls
    return cls


def make_predictor(name: str) -> Predictor:
    """Instantiate a predictor by registry name, with a message listing the valid ones."""
    if name not in PREDICTORS:
        raise ValueError(f"unknown predictor {name!r}; choose one of: {', '.join(sorted(PREDICTORS))}")
    return PREDICTORS[name]()


class OnlinePredictor:
    """Live wrapper: keeps the short received history and returns the newest prediction for each new sample."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._t: deque[int] = deque(maxlen=max(predictor.history, 1))
        self._q: deque[np.ndarray] = deque(maxlen=max(predictor.history, 1))

    @property
    def newest_t0(self) -> int | None:
        return self._t[-1] if self._t else None

    def update(self, t_us: int, q: np.ndarray, horizon_us: int) -> Prediction:
        self._t.append(int(t_us))
        self._q.append(np.asarray(q, dtype=np.float64))
        coeffs = self.predictor.fit_all(np.fromiter(self._t, dtype=np.int64), np.stack(self._q))[-1]
        return Prediction(t0_us=int(t_us), horizon_us=int(horizon_us), coeffs=coeffs)
