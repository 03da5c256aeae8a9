"""A mock arm on a real pty: streams (t, q) samples as v1 frames, paced against absolute deadlines.

The device agent opens the pty's slave path with pyserial exactly as it would open ``/dev/ttyACM0``. Like real
firmware, the mock arm does not wait for anyone once streaming: bytes the reader does not drain in time are lost
(counted in ``stats.frames_dropped``). By default it waits until a reader opens the port before the first frame,
so a replay starts at the beginning of the recording.
"""

from __future__ import annotations

import fcntl
import os
import random
import select
import struct
import termios
import threading
import time
import tty
from dataclasses import dataclass

import numpy as np

from firmware_interfaces.codec import FLAG_END, FLAG_SIM, encode_frame

_POLLHUP = select.POLLHUP


@dataclass
class MockArmStats:
    """What the mock arm did; ``frames_dropped`` are frames the pty could not take (reader too slow)."""

    frames_sent: int = 0
    frames_dropped: int = 0
    bytes_corrupted: int = 0
    late_max_us: int = 0  # worst lateness of a frame against its deadline
    loops: int = 0
    unread_bytes: int = 0  # left in the pty when the replay ended (the reader stopped before reading them)


BOOT_S = 0.1  # from the port being opened to the first frame (an Arduino-class board boots in 0.1-2 s)


class MockArm:
    """Replays ``t_us`` (N,) int64 and ``q_urad`` (N, J) int samples on a fresh pty.

    ``rate`` scales playback speed (2.0 = twice as fast); ``loop`` repeats with continuous seq and time;
    ``bounce`` makes every other repetition play backwards, so angles stay continuous at the seams (a plain loop
    of a recording that does not end where it starts makes the arm jump);
    ``corrupt_rate`` is the probability that any byte is replaced with a random one.
    """

    def __init__(
        self,
        t_us: np.ndarray,
        q_urad: np.ndarray,
        rate: float = 1.0,
        loop: bool = False,
        bounce: bool = False,
        corrupt_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        if len(t_us) < 1:
            raise ValueError("mock arm needs at least one sample")
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if not 0.0 <= corrupt_rate < 1.0:
            raise ValueError("corrupt rate must be in [0, 1)")
        self.t_us = np.asarray(t_us, dtype=np.int64)
        self.q_urad = np.asarray(q_urad, dtype=np.int64)
        self.rate = rate
        self.loop = loop or bounce
        self.bounce = bounce
        self.corrupt_rate = corrupt_rate
        self._rng = random.Random(seed)
        self.stats = MockArmStats()
        self._master, slave = os.openpty()
        tty.setraw(slave)  # no line discipline: 0x00 and 0x0A must pass untouched
        self.port = os.ttyname(slave)
        os.close(slave)  # closing our slave end lets us see when a reader opens/closes it (POLLHUP)
        os.set_blocking(self._master, False)
        self._poll = select.poll()
        self._poll.register(self._master, select.POLLHUP)

    def reader_connected(self) -> bool:
        return not any(ev & _POLLHUP for _, ev in self._poll.poll(0))

    def wait_for_reader(self, stop: threading.Event, timeout: float | None = None, boot_s: float = BOOT_S) -> bool:
        """Wait until a reader opens the port, then ``boot_s`` more before streaming, as a board that resets when
        its port is opened (DTR) does. The reader is still setting the port up in that moment: pyserial flushes
        the input queue when it opens a port, and frames written before that were lost uncounted."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            if self.reader_connected():
                stop.wait(boot_s)
                return not stop.is_set()
            if deadline is not None and time.monotonic() > deadline:
                return False
            stop.wait(0.01)  # a pty offers no "opened" event; poll the HUP state at 100 Hz
        return False

    def run(self, stop: threading.Event) -> MockArmStats:
        """Stream until the samples are exhausted (or forever with ``loop``) or ``stop`` is set."""
        n = len(self.t_us)
        period = int(np.median(np.diff(self.t_us))) if n > 1 else 1000
        span = int(self.t_us[-1] - self.t_us[0]) + period
        start = time.monotonic_ns()
        seq = 0
        i = 0
        loop_offset = 0
        backwards = False
        while not stop.is_set():
            if i == n:
                if not self.loop:
                    break
                i = 0
                loop_offset += span
                self.stats.loops += 1
                backwards = self.bounce and not backwards
            # Backwards passes replay the same time steps mirrored, so pacing and spacing stay those recorded.
            t_rel = (int(self.t_us[-1] - self.t_us[n - 1 - i]) if backwards else int(self.t_us[i] - self.t_us[0]))
            t_rel += loop_offset
            row = n - 1 - i if backwards else i
            deadline = start + int(t_rel * 1000 / self.rate)
            now = time.monotonic_ns()
            if deadline > now:
                # Absolute deadline: sleeping too long on one frame is caught up on the next, never accumulated.
                stop.wait((deadline - now) * 1e-9)
                now = time.monotonic_ns()
            self.stats.late_max_us = max(self.stats.late_max_us, (now - deadline) // 1000)
            last = not self.loop and i == n - 1  # a finite replay marks its last frame: the device ends the run
            frame = encode_frame(seq, int(self.t_us[0]) + t_rel, self.q_urad[row].tolist(),
                                 FLAG_SIM | (FLAG_END if last else 0))
            self._write(frame)
            seq += 1
            i += 1
        if i == n and not self.loop:
            self.drain(stop)
        return self.stats

    def drain(self, stop: threading.Event, timeout: float = 2.0) -> int:
        """After the last frame, keep the pty open until the reader closes it (a device ends its run on the END
        frame), at most ``timeout`` s: closing the master discards what the reader has not read yet, and bytes
        just written are not even counted as unread for a moment (the kernel moves them to the slave side
        asynchronously). Returns the bytes left unread (``stats.unread_bytes``)."""
        deadline = time.monotonic() + timeout
        while not stop.is_set() and self.reader_connected():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._poll.poll(min(left, 0.1) * 1000)  # wakes on POLLHUP: the reader closed the port
        unread = 0
        try:
            slave = os.open(self.port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # to ask how much is unread
        except OSError:
            return 0
        try:
            unread = struct.unpack("i", fcntl.ioctl(slave, termios.FIONREAD, b"\0\0\0\0"))[0]
        finally:
            os.close(slave)
        self.stats.unread_bytes = unread
        return unread

    def _write(self, frame: bytes) -> None:
        if self.corrupt_rate:
            frame = self._corrupt(frame)
        try:
            written = os.write(self._master, frame)
        except BlockingIOError:
            self.stats.frames_dropped += 1
            return
        if written < len(frame):
            # Partial write: the rest is lost like bytes on a UART nobody reads; the decoder resyncs.
            self.stats.frames_dropped += 1
            return
        self.stats.frames_sent += 1

    def _corrupt(self, frame: bytes) -> bytes:
        out = bytearray(frame)
        for k in range(len(out)):
            if self._rng.random() < self.corrupt_rate:
                out[k] = self._rng.randrange(256)
                self.stats.bytes_corrupted += 1
        return bytes(out)

    def close(self) -> None:
        if self._master >= 0:
            os.close(self._master)
            self._master = -1

    def __enter__(self) -> MockArm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
