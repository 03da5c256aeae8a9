"""The one policy interface: which measured samples go to the server, and with which prediction horizon.

Used unchanged by the live device (chunks of a few samples as they arrive) and by the offline simulator (a whole
session in one call): ``select`` is stateful across chunks, so both see the same decisions. Everything the agent or
the simulator asks of a policy is declared here with a no-op default, so neither has to probe for capabilities.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from device.acks import AckTracker


class PolicySpecError(ValueError):
    """A ``--policy`` string that cannot be parsed; the message lists the valid forms."""


class Learner(Protocol):
    """An on-device learner that adapts a policy while it runs (KC-TD3's λ dual ascent)."""

    def start(self) -> Learner:
        """Start the background thread (live device); returns self."""
        ...

    def stop(self) -> None:
        """Stop the background thread."""
        ...

    def observe(self, window_mse: Sequence[float]) -> None:
        """Device-scored 100 ms window MSEs (deg²) since the last call."""
        ...

    def nudge(self) -> None:
        """Ask the background thread for one step now (the device's status)."""
        ...

    def step(self) -> None:
        """One step in the caller's thread (the device at each status, and the simulator)."""
        ...


class Policy(ABC):
    """Decides per sample whether it is sent; ``horizon_us`` is the horizon the server must honour."""

    family: str = ""
    # Ack-based resend (device.acks), for policies that support it: the live agent feeds it the predictions
    # that come back, the simulator replaces it with acknowledgements drawn from the emulated link.
    acks: AckTracker | None = None
    # The server predictor this policy mirrors on the device (event triggers, KC-TD3), else None.
    predictor_name: str | None = None
    # Policies that act on link estimates (RTT, loss) get them through set_link.
    uses_link: bool = False
    # On-device learning (KC-TD3 online=1): make_learner gives the learner the agent / simulator runs.
    supports_online: bool = False
    online: bool = False
    # Lagrange multiplier of a constrained policy (NaN for the others): recorded at each status.
    lam: float = float("nan")

    def __init__(self, horizon_ms: float = 0.0) -> None:
        self.horizon_us = round(horizon_ms * 1000)
        # Per-sample horizons of the last ``select`` call, for policies that change H on the fly; None = horizon_us.
        self.sample_horizons_us: np.ndarray | None = None

    @property
    def k(self) -> float:
        """Current (nominal) sampling interval in samples, for status lines."""
        return 1.0

    @abstractmethod
    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(N,), (N, J) new samples in time order -> (N,) bool, True = send."""

    def horizons_us(self, n: int) -> np.ndarray:
        """Horizon (µs) each of the ``n`` samples of the last ``select`` call would be sent with."""
        per_sample = self.sample_horizons_us
        if per_sample is not None and len(per_sample) == n:
            return np.asarray(per_sample, dtype=np.int64)
        return np.full(n, self.horizon_us, dtype=np.int64)

    def set_link(self, rtt_ms: float, loss: float) -> None:  # noqa: B027 - optional hook
        """Link estimates as the device measures them (only policies with ``uses_link`` act on them)."""

    def link_estimate(self) -> tuple[float, float] | None:
        """(RTT ms, loss) the policy was told by ``set_link`` (policies that use link estimates), else None."""
        return None

    def make_learner(self) -> Learner:
        """The on-device learner (not started) for a policy with ``supports_online``."""
        raise PolicySpecError(f"policy {self.spec()} has no on-device learning")

    def status(self) -> dict[str, float]:
        """Extra fields of the device's status line (λ, mirrored MSE, ε for KC-TD3); none by default."""
        return {}

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless policies need nothing
        """Forget state (start of a simulated episode)."""

    def spec(self) -> str:
        """The ``--policy`` string that rebuilds this policy."""
        return self.family

    @property
    def display_name(self) -> str:
        """Name in evaluation tables."""
        return self.family

    def describe(self) -> dict[str, Any]:
        return {"policy": self.spec(), "k": self.k, "h_ms": self.horizon_us / 1000}


def parse_flag(text: str) -> bool:
    """``resend=1`` / ``resend=0`` (also true/false, yes/no, on/off) in a policy spec."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise PolicySpecError(f"expected 0 or 1, got {text!r}")
