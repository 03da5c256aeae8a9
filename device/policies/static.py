"""Periodic policies: send everything (``none``) or every k-th sample (``static``)."""

from __future__ import annotations

import numpy as np

from device.acks import AckTracker, periodic_sends
from device.policies.base import Policy, PolicySpecError


class SendAll(Policy):
    """No sampling: every sample goes to the server (load 1.0)."""

    family = "none"

    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        return np.ones(len(t_us), dtype=bool)

    def spec(self) -> str:
        return f"none:h={self.horizon_us / 1000:g}"


class StaticPolicy(Policy):
    """Send every k-th measured sample (rate 1000/k Hz at 1 kHz); server horizon H ms.

    ``resend=True``: a send whose prediction does not come back in time is followed at once by a send of the
    current sample, and the period restarts from it (``device.acks``).
    """

    family = "static"

    def __init__(self, k: int, horizon_ms: float = 0.0, resend: bool = False) -> None:
        super().__init__(horizon_ms)
        if k < 1:
            raise PolicySpecError("static policy needs k >= 1")
        self._k = int(k)
        self.resend = resend
        self._count, self._countdown = 0, 0
        self.reset()

    @property
    def k(self) -> float:
        return float(self._k)

    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.acks is not None:
            out = np.zeros(len(t_us), dtype=bool)
            self._countdown = periodic_sends(np.asarray(t_us, dtype=np.int64), out, 0, len(t_us), self._countdown,
                                             self._k, self.acks)
            return out
        idx = self._count + np.arange(len(t_us))
        self._count += len(t_us)
        return (idx % self._k) == 0

    def reset(self) -> None:
        self._count, self._countdown = 0, 0
        self.acks = AckTracker() if self.resend else None

    def spec(self) -> str:
        return f"static:k={self._k},h={self.horizon_us / 1000:g}" + (",resend=1" if self.resend else "")


