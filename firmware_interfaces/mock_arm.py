"""A mock arm on a real pty: streams (t, q) samples as v1 frames, paced against absolute deadlines.

The device agent opens the pty's slave path with pyserial exactly as it would open ``/dev/ttyACM0``. Like real
firmware, the mock arm does not wait for anyone once streaming: bytes the reader does not drain in time are lost
(counted in ``stats.frames_dropped``). By default it waits until a reader opens the port before the first frame,
so a replay starts at the beginning of the recording.

It can also misbehave the way firmware does on long runs: a crystal off by ``drift_ppm``, a clock that starts at
``start_us`` (e.g. just before the u32 wrap at 71.6 min, or past 2^31 µs), a restart every ``restart_after_s``
(sequence and clock from zero after a boot pause), and a cable pulled and plugged back (``unplug``/``replug``,
with ``link`` a stable path like a udev symlink that follows the new pty).
"""

from __future__ import annotations

import contextlib
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
from firmware_interfaces.realtime import realtime

_POLLHUP = select.POLLHUP


@dataclass
class MockArmStats:
    """What the mock arm did; ``frames_dropped`` are frames the pty could not take (reader too slow)."""

    frames_sent: int = 0
    frames_dropped: int = 0
    scheduling: str = "not started"  # the streaming thread's scheduling class (realtime.py)
    bytes_corrupted: int = 0
    late_max_us: int = 0  # worst lateness of a frame against its deadline
    loops: int = 0
    unread_bytes: int = 0  # left in the pty when the replay ended (the reader stopped before reading them)
    restarts: int = 0  # firmware restarts played (``restart_after_s``)
    frames_booting: int = 0  # samples not sent while the restarted firmware booted
    frames_unplugged: int = 0  # samples not sent while the cable was out


BOOT_S = 0.1  # from the port being opened to the first frame (an Arduino-class board boots in 0.1-2 s)


class MockArm:
    """Replays ``t_us`` (N,) int64 and ``q_urad`` (N, J) int samples on a fresh pty.

    ``rate`` scales playback speed (2.0 = twice as fast); ``loop`` repeats with continuous seq and time;
    ``bounce`` makes every other repetition play backwards, so angles stay continuous at the seams (a plain loop
    of a recording that does not end where it starts makes the arm jump);
    ``corrupt_rate`` is the probability that any byte is replaced with a random one; ``drift_ppm`` makes the
    firmware clock run fast (> 0) or slow against the pacing; ``start_us`` is the firmware clock at the first frame
    (default: the recording's first stamp); every ``restart_after_s`` of streaming the firmware restarts: nothing for
    ``BOOT_S``, then seq from 0 and the clock from the boot time.
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
        drift_ppm: float = 0.0,
        start_us: int | None = None,
        restart_after_s: float | None = None,
        link: str | None = None,
    ) -> None:
        if len(t_us) < 1:
            raise ValueError("mock arm needs at least one sample")
        if rate <= 0:
            raise ValueError("rate must be > 0")
        if not 0.0 <= corrupt_rate < 1.0:
            raise ValueError("corrupt rate must be in [0, 1)")
        if not -100_000 < drift_ppm < 100_000:
            raise ValueError("drift must be within +-100000 ppm")
        if start_us is not None and start_us < 0:
            raise ValueError("start time must be >= 0 µs")
        if restart_after_s is not None and restart_after_s <= BOOT_S:
            raise ValueError(f"restart interval must be > the boot time ({BOOT_S} s)")
        self.t_us = np.asarray(t_us, dtype=np.int64)
        self.q_urad = np.asarray(q_urad, dtype=np.int64)
        self.rate = rate
        self.loop = loop or bounce
        self.bounce = bounce
        self.corrupt_rate = corrupt_rate
        self._rng = random.Random(seed)
        self.drift = drift_ppm * 1e-6
        self.start_us = int(self.t_us[0]) if start_us is None else int(start_us)
        self.restart_after_us = None if restart_after_s is None else int(restart_after_s * 1e6)
        self.link = link
        self.stats = MockArmStats()
        # Firmware clock (µs) and sequence of the newest frame made (sent or not): tests read the moment of an
        # unplug or replug on the firmware's own clock, the clock the device's recording keeps.
        self.fw_us = self.start_us
        self.seq = 0
        self.unplugged_at_us: int | None = None  # fw_us when the cable was last pulled
        self.replugged_at_us: int | None = None  # fw_us when it was last plugged back in
        self._io = threading.Lock()  # the streaming thread writes, another may unplug
        self._master = -1
        self._open_pty()

    def _open_pty(self) -> None:
        self._master, slave = os.openpty()
        tty.setraw(slave)  # no line discipline: 0x00 and 0x0A must pass untouched
        self.pty = os.ttyname(slave)
        os.close(slave)  # closing our slave end lets us see when a reader opens/closes it (POLLHUP)
        os.set_blocking(self._master, False)
        self._poll = select.poll()
        self._poll.register(self._master, select.POLLHUP)
        if self.link is not None:  # atomically, so a reader never sees the path missing while plugged in
            tmp = f"{self.link}.new"
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(self.pty, tmp)
            os.replace(tmp, self.link)
        self.port = self.link or self.pty

    def unplug(self) -> None:
        """Pull the cable: the pty goes away (the reader's next read fails) and ``link`` leads nowhere."""
        with self._io:
            self.unplugged_at_us = self.fw_us  # under the lock: no frame is half-written at this moment
            if self.link is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.link)
            if self._master >= 0:
                os.close(self._master)
                self._master = -1

    def replug(self) -> None:
        """Plug it back: a new pty, at the same ``link`` path."""
        with self._io:
            if self._master < 0:
                self.replugged_at_us = self.fw_us  # frames made after this one find the port back
                self._open_pty()

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
        # Firmware is never preempted by the host's load; the mock arm's pacing should not be either.
        with realtime() as self.stats.scheduling:
            return self._stream(stop)

    def _stream(self, stop: threading.Event) -> MockArmStats:
        n = len(self.t_us)
        period = int(np.median(np.diff(self.t_us))) if n > 1 else 1000
        span = int(self.t_us[-1] - self.t_us[0]) + period
        start = time.monotonic_ns()
        seq = 0
        i = 0
        loop_offset = 0
        backwards = False
        epoch_rel = 0  # recording time at which the firmware clock started (a restart moves it)
        fw_origin = self.start_us
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
            if self.restart_after_us is not None and t_rel - epoch_rel >= self.restart_after_us:
                # The firmware resets: it boots for BOOT_S (nothing sent), then counts seq and µs from zero.
                epoch_rel, fw_origin, seq = t_rel, 0, 0
                self.stats.restarts += 1
            booting = t_rel - epoch_rel < (int(BOOT_S * 1e6) if self.stats.restarts else 0)
            if booting and (self.loop or i < n - 1):  # the END frame of a replay still goes out
                self.stats.frames_booting += 1
                i += 1
                continue
            deadline = start + int(t_rel * 1000 / self.rate)
            now = time.monotonic_ns()
            if deadline > now:
                # Absolute deadline: sleeping too long on one frame is caught up on the next, never accumulated.
                stop.wait((deadline - now) * 1e-9)
                now = time.monotonic_ns()
            self.stats.late_max_us = max(self.stats.late_max_us, (now - deadline) // 1000)
            last = not self.loop and i == n - 1  # a finite replay marks its last frame: the device ends the run
            stamp = fw_origin + round((t_rel - epoch_rel) * (1.0 + self.drift))  # the firmware's crystal
            self.fw_us, self.seq = stamp, seq
            frame = encode_frame(seq, stamp, self.q_urad[row].tolist(), FLAG_SIM | (FLAG_END if last else 0))
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
            slave = os.open(self.pty, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # to ask how much is unread
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
        with self._io:
            if self._master < 0:
                self.stats.frames_unplugged += 1
                return
            try:
                written = os.write(self._master, frame)
            except BlockingIOError:
                self.stats.frames_dropped += 1
                return
            except OSError:  # EIO: nobody has the slave open after a replug yet
                self.stats.frames_unplugged += 1
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
        self.unplug()

    def __enter__(self) -> MockArm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
