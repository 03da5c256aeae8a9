"""Sampling policies: which measured samples go to the server, and with which prediction horizon.

One interface, used unchanged by the live device (chunks of a few samples as they arrive) and by the offline
simulator (a whole session in one call): ``select`` is stateful across chunks, so both see the same decisions.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import numpy as np

from device.acks import AckTracker, periodic_sends


class PolicySpecError(ValueError):
    """A ``--policy`` string that cannot be parsed; the message lists the valid forms."""


class Policy(ABC):
    """Decides per sample whether it is sent; ``horizon_us`` is the horizon the server must honour."""

    family: str = ""
    # Ack-based resend (device.acks), for policies that support it: the live agent feeds it the predictions
    # that come back, the simulator replaces it with acknowledgements drawn from the emulated link.
    acks: AckTracker | None = None

    def __init__(self, horizon_ms: float = 0.0) -> None:
        self.horizon_us = round(horizon_ms * 1000)

    @property
    def k(self) -> float:
        """Current (nominal) sampling interval in samples, for status lines."""
        return 1.0

    @abstractmethod
    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        """(N,), (N, J) new samples in time order -> (N,) bool, True = send."""

    def link_estimate(self) -> tuple[float, float] | None:
        """(RTT ms, loss) the policy was told by ``set_link`` (policies that use link estimates), else None."""
        return None

    def reset(self) -> None:  # noqa: B027 - optional hook, stateless policies need nothing
        """Forget state (start of a simulated episode)."""

    def spec(self) -> str:
        return self.family

    def describe(self) -> dict[str, Any]:
        return {"policy": self.spec(), "k": self.k, "h_ms": self.horizon_us / 1000}


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


PolicyFactory = Callable[[dict[str, str]], Policy]
POLICIES: dict[str, PolicyFactory] = {
    "none": lambda a: SendAll(float(a.get("h", 0))),
    "static": lambda a: StaticPolicy(int(a.get("k", 1)), float(a.get("h", 0)), parse_flag(a.get("resend", "0"))),
}


def parse_flag(text: str) -> bool:
    """``resend=1`` / ``resend=0`` (also true/false, yes/no, on/off) in a policy spec."""
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise PolicySpecError(f"expected 0 or 1, got {text!r}")


def register_policy(family: str, factory: PolicyFactory) -> None:
    """Register a policy family for ``parse_policy`` (event policies, KC-TD3)."""
    POLICIES[family] = factory


def parse_policy(spec: str) -> Policy:
    """``static:k=10,h=20`` / ``none`` / other registered families -> Policy."""
    import device.event_policies  # registers the event-triggered families
    import device.kctd3_policy  # noqa: F401 - registers kc-td3 / td3
    family, _, rest = spec.partition(":")
    family = family.strip()
    if family not in POLICIES:
        known = ", ".join(sorted(POLICIES))
        raise PolicySpecError(f"unknown policy {family!r}; known: {known} (e.g. static:k=10,h=20)")
    args: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, val = part.partition("=")
        if not eq:
            # A bare value is a path (kc-td3:POLICY.pt).
            args["path"] = part
            continue
        args[key.strip()] = val.strip()
    try:
        return POLICIES[family](args)
    except (ValueError, KeyError) as exc:
        raise PolicySpecError(f"bad policy {spec!r}: {exc}") from exc
