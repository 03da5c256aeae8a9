"""Link impairments: one model drawn identically by the live emulator and the simulator.

Delay = ``delay_ms`` + uniform jitter in [0, ``jitter_ms``]; loss is Bernoulli(``loss``), or Gilbert–Elliott bursts
with mean length ``burst`` (> 1) packets and the same average loss. Each impairment (uplink loss, uplink jitter,
downlink loss, downlink jitter) draws from its own seeded hash of the packet's identity (``LinkModel.keys``), so
drawing packet by packet (live) or all at once (simulator) gives the same fates to the same sends.
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


_MASK = np.uint64(0xFFFFFFFFFFFFFFFF)


def _keyed_uniform(seed: int, stream: int, keys: np.ndarray) -> np.ndarray:
    """Uniforms in [0, 1), one per key: a SplitMix64 hash of (seed, stream, key). The same packet gets the same
    draw wherever it sits in the send order."""
    with np.errstate(over="ignore"):
        x = (np.asarray(keys, dtype=np.int64).astype(np.uint64)
             + np.uint64((seed * 0x9E3779B97F4A7C15 + stream * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF)) & _MASK
        x = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK
        x = ((x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK
        x = ((x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


SLOT_US = 100_000  # packets are identified by (100 ms slot of their sample's device time, rank in the slot)
_RANKS = 1 << 12


class _Direction:
    """Fates of the packets of one direction, each drawn from a hash of the packet's identity (``LinkModel``)."""

    def __init__(self, spec: LinkSpec, stream: int) -> None:
        self.spec = spec
        self._stream = stream
        self._bad = False  # Gilbert–Elliott state, advanced in send order
        if spec.burst > 1 and spec.loss > 0:
            self._p_bg = 1.0 / spec.burst
            self._p_gb = spec.loss * self._p_bg / (1.0 - spec.loss)

    def fates(self, keys: np.ndarray | list[int]) -> tuple[np.ndarray, np.ndarray]:
        """-> (lost (n,) bool, delay (n,) int µs) for the next packets, given their keys (``LinkModel.keys``)."""
        s = self.spec
        keys = np.asarray(keys, dtype=np.int64)
        n = len(keys)
        u = _keyed_uniform(s.seed, 2 * self._stream, keys)
        if s.loss == 0:
            lost = np.zeros(n, dtype=bool)
        elif s.burst <= 1:
            lost = u < s.loss
        else:
            # The chain runs in send order on keyed draws: two runs that part for a send meet again in the same
            # state within a few packets (same draws, same transitions), so bursts stay aligned too.
            lost = np.empty(n, dtype=bool)
            bad = self._bad
            for i in range(n):  # sequential by nature; only sent packets pass here
                bad = (u[i] >= self._p_bg) if bad else (u[i] < self._p_gb)
                lost[i] = bad
            self._bad = bad
        jitter = _keyed_uniform(s.seed, 2 * self._stream + 1, keys) * s.jitter_ms if s.jitter_ms else np.zeros(n)
        delay = np.rint((s.delay_ms + jitter) * 1000).astype(np.int64)
        return lost, delay


class LinkModel:
    """Uplink (device -> server samples) and downlink (server -> device replies) impairments.

    A packet's fate is a function of its identity, not of its place in the send order: the 100 ms slot of the
    sample's device time and its rank among the sends of that slot (a reply shares the key of the sample it
    answers). The live device and the simulator can differ in a send (a resend decided on a reply that came a
    few µs either side of its deadline moves the periodic schedule by a sample): with fates drawn in send order,
    every later packet then met another fate and the two runs scored different loss patterns; keyed by slot and
    rank, only the packets of the slot where they differ do.
    """

    def __init__(self, spec: LinkSpec) -> None:
        self.spec = spec
        self.up = _Direction(spec, 0)
        self.down = _Direction(spec, 1)
        self._slot, self._rank = -1, 0

    def keys(self, t_us: np.ndarray | list[int]) -> np.ndarray:
        """Keys of the next sends (samples' device times, in send order): slot * 4096 + rank in the slot."""
        slot = np.asarray(t_us, dtype=np.int64) // SLOT_US
        if not len(slot):
            return slot
        start = np.r_[True, slot[1:] != slot[:-1]]
        first = np.flatnonzero(start)
        rank = np.arange(len(slot)) - np.repeat(first, np.diff(np.r_[first, len(slot)]))
        if slot[0] == self._slot:  # the first run continues the previous call's slot
            rank[: (first[1] if len(first) > 1 else len(slot))] += self._rank
        self._slot = int(slot[-1])
        self._rank = int(rank[-1]) + 1
        return slot * _RANKS + np.minimum(rank, _RANKS - 1)
