"""Joint samples from a program instead of serial frames (a vendor SDK, a ROS 2 ``/joint_states`` bridge).

``SampleSource`` stands where the serial reader stands: the program calls ``push(t_us, q)`` from any thread, the
device agent drains the samples as it drains the reader's, and ``end()`` ends the run once they are scored.
Give it to the agent as ``DeviceAgent(cfg, source=src)``; ``cfg.port`` is then only a label.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from device.reader import Sample, host_us
from firmware_interfaces.codec import FrameDecoder
from twin.clock import ClockMap


class SampleSource:
    """A thread-safe queue of samples with the reader's interface. ``push`` refuses (and counts by reason) a sample
    whose time does not increase, whose joint count changes, or that holds a non-finite angle."""

    def __init__(self, joints: int) -> None:
        if not 1 <= joints <= 32:
            raise ValueError("a sample source carries 1..32 joints")
        self.joints = joints
        self.on_data: Callable[[], None] | None = None
        self.decoder = FrameDecoder()  # only its stats are used: frames_ok counts accepted samples
        self.samples: deque[Sample] = deque()
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.rejected: Counter[str] = Counter()
        self.port_errors, self.last_error, self.time_resets = 0, "", 0
        self.estop, self.estop_frames = False, 0
        self._lock = threading.Lock()
        self._last_t: int | None = None
        self._seq = 0
        # What the agent reads from a serial reader too: the device <-> host clock map (fed per sample here),
        # reconnects, gaps and backlog drops (none: a program's samples have no port to lose).
        self.clock = ClockMap()
        self.reconnects = 0
        self.realtime = "n/a: samples pushed by the program"  # no serial thread to schedule
        self.gaps: list[Any] = []
        self.backlog_dropped = 0

    def start(self) -> None:
        self.connected.set()

    def stop(self) -> None:
        self.connected.clear()

    def drain(self) -> list[Sample]:
        out = []
        while self.samples:
            out.append(self.samples.popleft())
        return out

    def push(self, t_us: int, q_rad: Sequence[float] | np.ndarray) -> bool:
        """Add one sample: device time ``t_us`` (µs, strictly increasing) and joint angles in radians. Returns
        False (and counts why in ``rejected``) for a sample the twin must not see."""
        q = np.asarray(q_rad, dtype=np.float64).reshape(-1)
        with self._lock:
            if len(q) != self.joints:
                self.rejected["joint-count"] += 1
                return False
            if not all(math.isfinite(x) for x in q):
                self.rejected["non-finite"] += 1
                return False
            if self._last_t is not None and int(t_us) <= self._last_t:
                self.rejected["time-not-increasing"] += 1
                return False
            self._last_t = int(t_us)
            now = host_us()
            self.samples.append(Sample(int(t_us), self._seq, q.copy(), now))
            self.clock.observe(int(t_us), now)
            self._seq += 1
            self.decoder.stats.frames_ok += 1
        if self.on_data is not None:
            self.on_data()
        return True

    def end(self) -> None:
        """No more samples: the agent scores what it has and ends the run."""
        self.ended.set()
        if self.on_data is not None:
            self.on_data()
