"""Where the device's time goes: per-stage time sums on the 1 kHz path, and frame arrival -> packet sent.

Each stage is written by one thread only (the reader: ``read``, ``decode``, ``wake`` = pinging the main loop; the
main loop: ``policy``, ``send``, ``replies``, ``score``; the recorder: ``record``), so plain integer sums need no
lock. Every stage is timed with its thread's CPU clock (``time.thread_time_ns``): a blocking read costs its system
calls, not its wait, and a thread that waits for the GIL while another runs is not charged for it (wall-clock sums
counted those waits twice: the stages added up to more than the process's CPU). One reading costs ~0.7 µs; the
accounting takes a few per loop iteration, under 1 % of a core at 1 kHz. ``armtwin bench`` reads the report from
the device's summary (``stages``).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from device.ring import Int64Ring

STAGES = ("read", "decode", "wake", "policy", "send", "replies", "score", "record")
MAX_LATENCIES = 100_000  # arrival -> sent latencies kept (a ring: memory stays flat on a run with no --duration)

now_ns = time.thread_time_ns  # this thread's CPU time, ns


class StageClock:
    """Nanoseconds spent per stage, and a ring of frame-arrival -> packet-sent latencies (µs)."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = dict.fromkeys(STAGES, 0)
        self._lat = Int64Ring(MAX_LATENCIES)

    def add(self, stage: str, ns: int) -> None:
        self.ns[stage] += ns

    def sent_after(self, latency_us: int) -> None:
        """A sample left ``latency_us`` after its frame was read from the port."""
        self._lat.append(latency_us)

    def report(self) -> dict[str, Any]:
        """Stage totals in ms, and the arrival -> sent percentiles in ms (NaN when nothing was sent)."""
        lat = self._lat.values() / 1000
        p50, p99 = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99))) if len(lat) else (
            float("nan"), float("nan"))
        return {"ms": {k: v / 1e6 for k, v in self.ns.items()}, "arrival_to_sent_p50_ms": p50,
                "arrival_to_sent_p99_ms": p99, "sends_timed": self._lat.appended}
