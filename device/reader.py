"""Serial reader thread: port -> FrameDecoder -> timestamped samples, reconnecting when the port vanishes."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import serial

from firmware_interfaces.codec import FLAG_END, FLAG_ESTOP, FrameDecoder, TimestampUnwrapper
from firmware_interfaces.ports import DEFAULT_BAUD, PortError, open_port


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured sample in device time (unwrapped firmware µs) with its host receive time."""

    t_us: int
    seq: int
    q: np.ndarray  # rad
    host_us: int


def host_us() -> int:
    return time.monotonic_ns() // 1000


class SerialReader:
    """Reads the port in a thread (``in_waiting or 1`` bytes, blocking with a short timeout: never busy-polls).

    Samples go into a deque that the agent drains; ``on_data`` is called after each read that produced samples
    (the agent uses it to wake its poll loop). A vanished port is reopened with back-off; all of it is counted.
    """

    def __init__(
        self,
        port: str,
        baudrate: int = DEFAULT_BAUD,
        on_data: Callable[[], None] | None = None,
        reconnect_s: float = 0.5,
    ) -> None:
        self.port = port
        self.baudrate = baudrate
        self.on_data = on_data
        self.reconnect_s = reconnect_s
        self.decoder = FrameDecoder()
        self.samples: deque[Sample] = deque()
        self.connected = threading.Event()
        self.port_errors = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._unwrap = TimestampUnwrapper()
        self._last_t: int | None = None
        self._base = 0
        self.time_resets = 0
        self.estop = False  # the arm reports its emergency stop (frame flag bit 0); shown, never acted on
        self.estop_frames = 0
        # Set on the END frame of a finite replay (mock arm): the agent ends the run once the samples are in.
        self.ended = threading.Event()
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

    def _device_time(self, t_us: int) -> int:
        t = self._unwrap.unwrap(t_us) + self._base
        if self._last_t is not None and t <= self._last_t:
            # Firmware restarted (or a replay looped without continuous time): keep device time monotonic.
            self._base += self._last_t - t + 1000
            t = self._last_t + 1000
            self.time_resets += 1
        self._last_t = t
        return t

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._ser = open_port(self.port, self.baudrate)
            except PortError as exc:
                self.port_errors += 1
                self.last_error = str(exc)
                self._stop.wait(self.reconnect_s)
                continue
            self.decoder.drop_partial()  # a frame cut by the last disconnect must not spoil the first new one
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
        while not self._stop.is_set():
            data = ser.read(ser.in_waiting or 1)
            if not data:
                continue
            now = host_us()
            frames = self.decoder.feed(data)
            if not frames:
                continue
            for f in frames:
                self.estop = bool(f.flags & FLAG_ESTOP)
                self.estop_frames += self.estop
                q = np.asarray(f.angles_urad, dtype=np.float64) * scale
                self.samples.append(Sample(self._device_time(f.t_us), f.seq, q, now))
                if f.flags & FLAG_END:
                    self.ended.set()
            if self.on_data is not None:
                self.on_data()
            if self.ended.is_set():
                return
