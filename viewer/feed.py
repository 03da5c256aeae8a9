"""The twin states a viewer receives: a SUB socket to twin servers and the newest state of each device.

"Now" is server time: per device the viewer keeps the lower envelope of (local receive time - server ``rx``), so
the same code is right on the server's machine (offset ~ the PUB latency) and on another one (offset = clock
difference + the smallest latency; followed at up to ``DRIFT_PPM``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from twin.security import Security

DRIFT_PPM = 100
MAX_DRAIN = 2000


def local_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass
class DeviceView:
    """Newest twin state of one device, and where it sits in the scene."""

    dev: str
    joints: list[str]
    urdf: str
    slot: int
    pred: Any = None  # twin.display.Prediction
    rx: int = 0
    q_last: Any = None  # np.ndarray (J,)
    status: dict[str, Any] = field(default_factory=dict)
    offset_us: int | None = None  # local clock - server clock (lower envelope)
    last_local_us: int = 0
    messages: int = 0
    loaded: bool = False
    error: str | None = None
    ghost_dirty: bool = True

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.dev) or "device"

    def observe(self, now: int, rx: int) -> None:
        cand = now - rx
        if self.offset_us is None or cand < self.offset_us or cand - self.offset_us > 1_000_000:
            self.offset_us = cand  # first message, a faster path, or a server restarted with another clock
        else:  # follow a slowly drifting clock upward too
            self.offset_us += min(cand - self.offset_us, (now - self.last_local_us) * DRIFT_PPM // 1_000_000)
        self.last_local_us = now

    def twin_q(self, now: int) -> Any:
        """The prediction evaluated at server time now (clamped to its horizon by Prediction.evaluate)."""
        server_now = now - (self.offset_us or 0)
        return self.pred.evaluate(self.pred.t0_us + server_now - self.rx)

    def overlay(self, now: int, stale_after_s: float) -> list[str]:
        st = self.status

        def num(key: str, fmt: str) -> str:
            v = st.get(key)
            return format(v, fmt) if isinstance(v, int | float) and v == v else "-"

        age = (now - self.last_local_us) / 1e6
        link = {True: "up", False: "DOWN"}.get(bool(st["link_up"])) if "link_up" in st else "-"
        lines = [f"{self.dev}   load {num('load', '.3f')}   MSE {num('mse_deg2', '.3g')} deg^2",
                 f"k {num('k', '.3g')}   H {num('h_ms', '.4g')} ms   RTT {num('rtt_ms', '.2f')} ms   link {link}"]
        if age > stale_after_s:
            lines.append(f"STALE: no update for {age:.0f} s")
        return lines


class TwinFeed:
    """SUB socket(s) to twin servers; keeps the newest state per device, counts what it drops."""

    def __init__(self, endpoints: list[str], devices: list[str] | None, security: Security | None = None) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        (security or Security.insecure()).client_socket(self.sock)  # CURVE: the server admits known keys only
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # twin states are ~300 bytes: refuse absurd ones
        self.wanted = set(devices) if devices else None
        for topic in sorted(self.wanted) if self.wanted else [""]:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for ep in endpoints:
            self.sock.connect(ep)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.devices: dict[str, DeviceView] = {}
        self.messages = 0
        self.bad = 0

    def poll(self, timeout_ms: int) -> list[DeviceView]:
        """Wait up to ``timeout_ms`` for messages, take what is queued (at most ``MAX_DRAIN``, so a flood cannot
        starve the display); returns the devices seen for the first time."""
        new: list[DeviceView] = []
        if not self.poller.poll(max(timeout_ms, 0)):
            return new
        for _ in range(MAX_DRAIN):
            try:
                frames = self.sock.recv_multipart(flags=self.zmq.NOBLOCK)
            except self.zmq.Again:
                return new
            now = local_us()
            self.messages += 1
            try:
                dv = self._apply(frames, now)
            except (ValueError, TypeError, KeyError, IndexError):
                self.bad += 1
                continue
            if dv is not None:
                new.append(dv)
        return new

    def _apply(self, frames: list[bytes], now: int, name: str | None = None) -> DeviceView | None:
        """Take one twin state [topic, body]; ``name``: the device's name here (default: the one it sent;
        the Zenoh feed prefixes the site, so equal names on two edge servers stay two arms)."""
        import msgpack
        import numpy as np

        from twin.schema import ProtocolError, prediction_from_wire

        if len(frames) != 2:
            raise ValueError("expected [topic, body]")
        msg = msgpack.unpackb(frames[1], raw=False)
        if not isinstance(msg, dict) or msg.get("type") != "twin" or not isinstance(msg.get("dev"), str):
            raise ValueError("not a twin state")
        dev = name if name is not None else msg["dev"]
        if self.wanted is not None and dev not in self.wanted:
            return None  # SUBSCRIBE matches prefixes: "arm1" also lets "arm10" through
        joints = [str(j) for j in msg["joints"]]
        try:
            _, pred = prediction_from_wire(msg["pred"], len(joints))
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        q_last = np.asarray(msg["q_last"], dtype=np.float64)
        rx = msg["rx"]
        if q_last.shape != (len(joints),) or not isinstance(rx, int):
            raise ValueError("bad q_last/rx")
        dv = self.devices.get(dev)
        is_new = dv is None or dv.joints != joints
        if dv is None or dv.joints != joints:
            dv = DeviceView(dev, joints, str(msg.get("urdf") or ""), dv.slot if dv else len(self.devices))
            self.devices[dev] = dv
        dv.observe(now, rx)
        dv.pred, dv.rx, dv.q_last, dv.ghost_dirty = pred, rx, q_last, True
        if isinstance(msg.get("status"), dict):
            dv.status = msg["status"]
        dv.messages += 1
        return dv if is_new else None

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()
