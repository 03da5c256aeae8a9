"""Link impairments (DESIGN.md §3 "Link"): one model drawn identically by the live emulator and the simulator.

Delay = ``delay_ms`` + uniform jitter in [0, ``jitter_ms``]; loss is Bernoulli(``loss``), or Gilbert–Elliott bursts
with mean length ``burst`` (> 1) and the same average loss. Each impairment draws from its own seeded stream
(uplink loss, uplink jitter, downlink loss, downlink jitter), so drawing packet by packet (live) or all at once
(simulator) gives the same fates for the same sequence of sent samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class LinkSpecError(ValueError):
    """A ``--link`` string that cannot be parsed."""


@dataclass(frozen=True)
class LinkSpec:
    """``delay_ms=D,jitter_ms=J,loss=P[,burst=B][,seed=S]``; all zero = a perfect link."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0
    burst: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise LinkSpecError("delay_ms and jitter_ms must be >= 0")
        if not 0.0 <= self.loss < 1.0:
            raise LinkSpecError("loss must be in [0, 1)")
        if self.burst < 1.0:
            raise LinkSpecError("burst (mean loss-burst length) must be >= 1")

    @classmethod
    def parse(cls, text: str | None) -> LinkSpec:
        if not text or text.strip() in ("", "none", "perfect"):
            return cls()
        fields: dict[str, float | int] = {}
        names = {"delay_ms", "jitter_ms", "loss", "burst", "seed"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, val = part.partition("=")
            key = key.strip()
            if not eq or key not in names:
                raise LinkSpecError(f"bad link field {part!r}; use delay_ms=D,jitter_ms=J,loss=P[,burst=B][,seed=S]")
            try:
                fields[key] = int(val) if key == "seed" else float(val)
            except ValueError:
                raise LinkSpecError(f"link field {key} needs a number, got {val!r}") from None
        return cls(**fields)  # type: ignore[arg-type]

    @property
    def is_perfect(self) -> bool:
        return self.delay_ms == 0 and self.jitter_ms == 0 and self.loss == 0

    def label(self) -> str:
        out = f"delay_ms={self.delay_ms:g},jitter_ms={self.jitter_ms:g},loss={self.loss:g}"
        out += f",burst={self.burst:g}" if self.burst > 1 else ""
        return out + (f",seed={self.seed}" if self.seed else "")


class _Direction:
    """Fates of the packets of one direction, in send order."""

    def __init__(self, spec: LinkSpec, stream: int) -> None:
        self.spec = spec
        self._loss_rng = np.random.default_rng([spec.seed, stream, 0])
        self._jitter_rng = np.random.default_rng([spec.seed, stream, 1])
        self._bad = False  # Gilbert–Elliott state
        if spec.burst > 1 and spec.loss > 0:
            self._p_bg = 1.0 / spec.burst
            self._p_gb = spec.loss * self._p_bg / (1.0 - spec.loss)

    def fates(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """-> (lost (n,) bool, delay (n,) int µs) for the next n packets."""
        s = self.spec
        u = self._loss_rng.random(n)
        if s.loss == 0:
            lost = np.zeros(n, dtype=bool)
        elif s.burst <= 1:
            lost = u < s.loss
        else:
            lost = np.empty(n, dtype=bool)
            bad = self._bad
            for i in range(n):  # sequential by nature; only sent packets pass here
                bad = (u[i] >= self._p_bg) if bad else (u[i] < self._p_gb)
                lost[i] = bad
            self._bad = bad
        jitter = self._jitter_rng.random(n) * s.jitter_ms if s.jitter_ms else np.zeros(n)
        delay = np.rint((s.delay_ms + jitter) * 1000).astype(np.int64)
        return lost, delay


class LinkModel:
    """Uplink (device -> server samples) and downlink (server -> device replies) impairments."""

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.up = _Direction(spec, 0)
        self.down = _Direction(spec, 1)
