"""Serial reader thread: port -> FrameDecoder -> timestamped samples, reconnecting when the port vanishes.

Device time is the firmware's u32 µs clock made monotonic int64. A forward step of the u32 stamp is a wrap only if
the host clock agrees: a firmware restart after 2^31 µs (35.8 min) of uptime also looks like a forward step, of
~2^31 µs, but no frame can be stamped later than the host's "now" mapped to the firmware clock. A restart (that, or
a sequence reset, or a stamp going backwards) continues device time where the host clock says it is: the gap is
kept as it happened (no jump), and counted in ``time_resets``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import serial

from device.stages import StageClock, now_ns
from firmware_interfaces.codec import FLAG_END, FLAG_ESTOP, Frame, FrameDecoder, seq_restarted
from firmware_interfaces.ports import DEFAULT_BAUD, PortError, is_selector, open_port, resolve_port
from firmware_interfaces.realtime import realtime
from twin.clock import ClockMap

_U32 = 1 << 32
# A stamp may sit this far past the host's "now" mapped to firmware time (estimator error) before it is called a
# restart rather than a wrap: far above the serial latency jitter, far below the 2^31 µs a late restart steps.
RESTART_TOLERANCE_US = 500_000
MAX_BACKLOG = 60_000  # samples the agent has not drained (60 s at 1 kHz); beyond it the oldest are dropped, counted
MAX_GAPS = 256  # gap records kept (the counters keep counting)
# A missing port is looked for this often: an open attempt (or a selector lookup) costs well under a ms, and issue
# 10 asks for reading again within 1 s of the port's return; 0.5 s used half of that on waiting alone.
RECONNECT_S = 0.1


@dataclass(frozen=True, slots=True)
class Gap:
    """A hole in device time: the port went away (``reconnect``) or the firmware restarted (``restart``)."""

    after_t_us: int  # device time of the last sample before the gap
    t_us: int  # device time of the first sample after it
    reason: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured sample in device time (unwrapped firmware µs) with its host receive time."""

    t_us: int
    seq: int
    q: np.ndarray  # rad
    host_us: int


def host_us() -> int:
    return time.monotonic_ns() // 1000


_POLL_MS = 50  # a read waits this long for bytes before the loop looks at its stop flag (pyserial's timeout)
_READ_MAX = 4096  # bytes per read: every frame that is waiting (a 7-joint frame is 43)


def lean_read(ser: serial.SerialBase) -> Callable[[], bytes]:
    """A read of whatever the port holds, waiting up to ``_POLL_MS``: one poll and one ``os.read`` on a POSIX
    port's descriptor, where ``ser.read(ser.in_waiting or 1)`` cost an ioctl, a select and pyserial's timeout
    bookkeeping per frame. Same outcomes: b"" on timeout or ``cancel_read`` (pyserial's abort pipe is polled too),
    ``SerialException`` when the port is gone. Ports without a descriptor (``loop://``, ``rfc2217://``) keep
    pyserial's read."""
    fd, abort = getattr(ser, "fd", None), getattr(ser, "pipe_abort_read_r", None)
    if not isinstance(fd, int) or not isinstance(abort, int):
        return lambda: ser.read(ser.in_waiting or 1)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    poller.register(abort, select.POLLIN)

    def read() -> bytes:
        events = poller.poll(_POLL_MS)
        if not events:
            return b""
        if any(f == abort for f, _ in events):
            with contextlib.suppress(OSError):
                os.read(abort, 1000)
            return b""
        try:
            data = os.read(fd, _READ_MAX)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return b""
            raise serial.SerialException(f"read failed: {exc}") from exc
        if not data:  # ready but empty: how Linux reports an unplugged device
            raise serial.SerialException("device reports readiness to read but returned no data (device "
                                         "disconnected or multiple access on port?)")
        return data

    return read


class SerialReader:
    """Reads the port in a thread (whatever is waiting, blocking with a short timeout: never busy-polls; ``lean_read``).

    Samples go into a deque that the agent drains; ``on_data`` is called after each read that produced samples
    (the agent uses it to wake its poll loop). A vanished port is looked for again every ``reconnect_s``; all of it
    is counted. ``port`` may be a stable USB selector (``VID:PID[:SERIAL]``, ``serial:SERIAL``): it is resolved
    again at every attempt, so an adapter that comes back under another name (ttyACM0 -> ttyACM1) is found.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUD,
        on_data: Callable[[], None] | None = None,
        reconnect_s: float = RECONNECT_S,
        stages: StageClock | None = None,
    ) -> None:
        self.port = port
        self.stages = stages or StageClock()  # read / decode time (the agent reports them)
        self.baudrate = baudrate
        self.on_data = on_data
        self.reconnect_s = reconnect_s
        self.decoder = FrameDecoder()
        self.samples: deque[Sample] = deque()
        self.max_backlog = MAX_BACKLOG
        self.backlog_dropped = 0  # samples dropped because the agent stopped draining (never in a healthy run)
        self.connected = threading.Event()
        self.port_errors = 0
        self.reconnects = 0  # the port came back after being lost
        self.last_error = ""
        self._stop = threading.Event()
        # Firmware time -> host time (host_us), drift-aware; the agent maps with it too (scoring, status).
        self.clock = ClockMap()
        self._last_t: int | None = None  # device time of the last frame
        self._last_raw = 0  # its raw u32 stamp
        self._last_seq: int | None = None
        self._reconnected = False
        self.time_resets = 0
        self.gaps: deque[Gap] = deque(maxlen=MAX_GAPS)
        self.estop = False  # the arm reports its emergency stop (frame flag bit 0); shown, never acted on
        self.estop_frames = 0
        # Set on the END frame of a finite replay (mock arm): the agent ends the run once the samples are in.
        self.ended = threading.Event()
        self.realtime = "not started"  # the reader thread's scheduling class, once it runs
        self._thread = threading.Thread(target=self._run, name="serial-reader", daemon=True)
        self._ser: serial.SerialBase | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        ser = self._ser
        if ser is not None:
            with contextlib.suppress(Exception):
                ser.cancel_read()
        self._thread.join(timeout=5)

    def drain(self) -> list[Sample]:
        out = []
        while self.samples:
            out.append(self.samples.popleft())
        return out

    def _device_time(self, f: Frame, now: int, batch_end_raw: int) -> int:
        """Device time of frame ``f`` read at host time ``now``; ``batch_end_raw`` is the stamp of the last frame of
        the same read (the newest one, which the host clock bounds)."""
        last = self._last_t
        if last is None:
            t = f.t_us
        else:
            step = (f.t_us - self._last_raw) % _U32
            t = last + step
            restarted = (self._last_seq is not None and seq_restarted(self._last_seq, f.seq)) or step >= (1 << 31)
            if not restarted and self.clock.ready:
                newest = t + (batch_end_raw - f.t_us) % _U32
                restarted = newest > self.clock.to_a(now) + RESTART_TOLERANCE_US
            if restarted:
                # Where the host clock puts this frame (the batch's newest frame at "now", less the floor latency).
                t = last + 1000
                if self.clock.ready:
                    t = max(t, self.clock.to_a(now) - (batch_end_raw - f.t_us) % _U32)
                self.time_resets += 1
                self.gaps.append(Gap(last, t, "restart"))
            elif self._reconnected:
                self.gaps.append(Gap(last, t, "reconnect"))
        self._reconnected = False
        self._last_t, self._last_raw, self._last_seq = t, f.t_us, f.seq
        return t

    def _run(self) -> None:
        # Frames the pty cannot buffer while this thread is off the CPU are lost (firmware_interfaces/realtime.py).
        with realtime() as self.realtime:
            self._serve()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                path = resolve_port(self.port) if is_selector(self.port) else self.port
                self._ser = open_port(path, self.baudrate)
            except PortError as exc:
                self.port_errors += 1
                self.last_error = str(exc)
                self._stop.wait(self.reconnect_s)
                continue
            self.decoder.drop_partial()  # a frame cut by the last disconnect must not spoil the first new one
            if self.port_errors and self._last_t is not None:
                self.reconnects += 1
                self._reconnected = True  # the next frame's gap is recorded as a reconnect
            self.connected.set()
            try:
                self._read_loop(self._ser)
                if self.ended.is_set():
                    return  # the replay is over: nothing more will come (the finally closes the port)
            except (serial.SerialException, OSError) as exc:
                self.port_errors += 1
                self.last_error = f"port {self.port} lost: {exc}"
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    self._ser.close()
                self._ser = None
            if not self._stop.is_set():
                self._stop.wait(self.reconnect_s)

    def _read_loop(self, ser: serial.SerialBase) -> None:
        scale = 1e-6
        stage_ns = self.stages.ns
        t_top = now_ns()  # this thread's CPU clock: a blocking read costs its syscalls, not its wait
        read = lean_read(ser)
        while not self._stop.is_set():
            data = read()
            t_read = now_ns()
            stage_ns["read"] += t_read - t_top
            t_top = t_read
            if not data:
                continue
            now = host_us()
            frames = self.decoder.feed(data)
            if not frames:
                t_top = now_ns()
                stage_ns["decode"] += t_top - t_read
                continue
            end_raw = frames[-1].t_us
            for f in frames:
                self.estop = bool(f.flags & FLAG_ESTOP)
                self.estop_frames += self.estop
                q = np.asarray(f.angles_urad, dtype=np.float64) * scale
                if len(self.samples) >= self.max_backlog:  # the agent stopped draining: bounded, counted
                    self.samples.popleft()
                    self.backlog_dropped += 1
                self.samples.append(Sample(self._device_time(f, now, end_raw), f.seq, q, now))
                if f.flags & FLAG_END:
                    self.ended.set()
            # The newest frame of a read bounds the firmware->host offset from above (one observation per read).
            assert self._last_t is not None
            self.clock.observe(self._last_t, now)
            t_top = now_ns()
            stage_ns["decode"] += t_top - t_read
            if self.on_data is not None:
                self.on_data()
                t_read, t_top = t_top, now_ns()
                stage_ns["wake"] += t_top - t_read
            if self.ended.is_set():
                return
