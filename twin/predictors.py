"""Trajectory predictors, registered by name, used unchanged by the live server and the offline simulator.

Every predictor implements one vectorised function, ``fit_all``: given the samples the server has received (in
display order), return the prediction polynomial made after each of them. The live server calls it on its short
history and keeps the last row (``OnlinePredictor``); the simulator calls it once on a whole session. One code
path, so the two cannot disagree.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections import deque
from typing import ClassVar

import numpy as np

from twin.display import Prediction
from twin.kinematics import quad_fit

# DIS-style extrapolation from the device's own velocity/acceleration estimate: the best on every recording we
# have (see docs/sync_science.md); falls back to a quadratic fit when a device sends no derivatives.
DEFAULT_PREDICTOR = "kinematic"


class Predictor(ABC):
    """Maps received samples to polynomial predictions q(t0 + tau) = sum_p c[p] * tau**p (rad, s)."""

    name: ClassVar[str]
    degree: ClassVar[int]
    history: ClassVar[int]  # how many received samples ``fit_all`` needs to look back
    # Predictors that extrapolate with the device's own velocity/acceleration estimate (``fit_with_derivatives``).
    uses_derivatives: ClassVar[bool] = False
    # The newest sample's own [velocity, acceleration / 2], when sent, are its prediction's higher coefficients
    # (``fit_with_derivatives(...)[-1]`` is just [q, *deriv]): the live wrapper skips the history fit then.
    derivatives_are_coefficients: ClassVar[bool] = False

    @abstractmethod
    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(N,), (N, J) received samples -> (N, degree + 1, J) coefficients, one prediction per sample."""

    def fit_with_derivatives(self, t_us: np.ndarray, q: np.ndarray, deriv: np.ndarray) -> np.ndarray:
        """As ``fit_all``, with the device's (N, 2, J) [velocity, acceleration / 2] per sample (NaN where a
        device sent none). Predictors without ``uses_derivatives`` ignore them."""
        return self.fit_all(t_us, q)


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
        return quad_fit(t_us, q, np.arange(len(q)), self.history)


class KinematicPredictor(Predictor):
    """DIS-style dead reckoning: extrapolate with the velocity and acceleration the device measured.

    The device estimates them on its own 1 kHz stream (``twin.kinematics.quad_fit`` over ``DERIV_WINDOW``
    samples) and sends them with each sample, so the server extrapolates from the arm's current motion instead
    of from differences of sparse samples. Samples that arrive without them fall back to the quadratic fit.
    """

    name = "kinematic"
    degree = 2
    history = QuadraticPredictor.history
    uses_derivatives = True
    derivatives_are_coefficients = True

    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        return QuadraticPredictor().fit_all(t_us, q)

    def fit_with_derivatives(self, t_us: np.ndarray, q: np.ndarray, deriv: np.ndarray) -> np.ndarray:
        """``deriv`` (N, 2, J): device-sent [velocity, acceleration / 2]; NaN rows (not sent) fall back."""
        q = np.asarray(q, dtype=np.float64)
        have = ~np.isnan(deriv).any(axis=(1, 2))
        out = np.empty((len(q), 3, q.shape[1]))
        out[:, 0] = q
        out[have, 1:] = deriv[have]
        missing = np.flatnonzero(~have)
        if len(missing):  # the quadratic fit only where the device sent nothing (cheap on the live path)
            out[missing] = quad_fit(t_us, q, missing, QuadraticPredictor.history)
        return out


PREDICTORS: dict[str, type[Predictor]] = {
    cls.name: cls for cls in (HoldPredictor, LinearPredictor, QuadraticPredictor, KinematicPredictor)
}


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator for predictors defined elsewhere (e.g. the learned one)."""
    PREDICTORS[cls.name] = cls
    return cls


# Predictors registered by a module of their own, imported on first use (that module imports this one).
_LAZY: dict[str, str] = {"learned": "twin.learned_predictor"}


def make_predictor(name: str) -> Predictor:
    """Instantiate a predictor by registry name, with a message listing the valid ones.

    ``name:arg`` passes ``arg`` to the constructor, e.g. ``learned:/path/model.npz``.
    """
    base, sep, arg = name.partition(":")
    if base not in PREDICTORS and base in _LAZY:
        importlib.import_module(_LAZY[base])
    if base not in PREDICTORS:
        raise ValueError(f"unknown predictor {base!r}; choose one of: {', '.join(sorted({*PREDICTORS, *_LAZY}))}")
    cls = PREDICTORS[base]
    if not sep:
        return cls()
    if cls.__init__ is object.__init__:
        raise ValueError(f"predictor {base!r} takes no argument (got {name!r})")
    return cls(arg)  # type: ignore[call-arg]


class OnlinePredictor:
    """Live wrapper: keeps the short received history and returns the newest prediction for each new sample."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self._t: deque[int] = deque(maxlen=max(predictor.history, 1))
        self._q: deque[np.ndarray] = deque(maxlen=max(predictor.history, 1))
        self._d: deque[np.ndarray] = deque(maxlen=max(predictor.history, 1))
        self.uses_derivatives = predictor.uses_derivatives

    @property
    def newest_t0(self) -> int | None:
        return self._t[-1] if self._t else None

    def update(self, t_us: int, q: np.ndarray, horizon_us: int, deriv: np.ndarray | None = None) -> Prediction:
        """Add a received sample (``deriv``: optional device-sent (2, J) [velocity, acceleration / 2])."""
        q = np.asarray(q, dtype=np.float64)
        self._t.append(int(t_us))
        self._q.append(q)
        d = np.full((2, len(q)), np.nan) if deriv is None else np.asarray(deriv, dtype=np.float64)
        self._d.append(d)
        if deriv is not None and self.predictor.derivatives_are_coefficients and np.isfinite(d).all():
            # The same numbers as the history fit's last row, without stacking the history (the server's hot path).
            return Prediction(t0_us=int(t_us), horizon_us=int(horizon_us), coeffs=np.concatenate((q[None], d)))
        t = np.fromiter(self._t, dtype=np.int64)
        if self.uses_derivatives:
            coeffs = self.predictor.fit_with_derivatives(t, np.stack(self._q), np.stack(self._d))[-1]
        else:
            coeffs = self.predictor.fit_all(t, np.stack(self._q))[-1]
        return Prediction(t0_us=int(t_us), horizon_us=int(horizon_us), coeffs=coeffs)
