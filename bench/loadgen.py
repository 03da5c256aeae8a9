"""Emulated devices: one process of DEALER sockets speaking the real wire format to a real server.

Each emulated device has its own socket (its own ROUTER identity and CURVE connection, the ``bench`` client key),
says hello, waits for its welcome, then sends samples of 7 joints with the velocity/acceleration estimate the
device attaches (``d``) and its acknowledgement (``a``), as ``device/uplink.py`` does. Two ways to load the server:

* closed loop (``rate_hz=None``): ``in_flight`` samples outstanding per device, a new one sent as each prediction
  comes back: the server's capacity;
* paced (``rate_hz``): each device sends at that rate and a heartbeat every 200 ms, like a real device (20 Hz is
  dead reckoning's ~2 % load): the soak.

Replies are read with msgpack only (the generator's CPU is the server's competition on a 2-core machine). A
``no-session`` error after the welcome is a lost session: counted, and the device says hello again.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import time
from collections import Counter
from typing import Any

import msgpack
import zmq

from twin.schema import Wire
from twin.security import Security

JOINTS = 7
HEARTBEAT_S = 0.2
PACE_TICK_S = 0.002  # paced mode: send what is due and read what came back, once per tick


def now_us() -> int:
    return time.monotonic_ns() // 1000


def sample_fields(n: int, acked: int, ts: int, derivatives: bool = True, joints: int = JOINTS) -> dict[str, Any]:
    """Sample number ``n`` of an emulated device, as ``device/uplink.py`` sends it: a smooth motion, its
    acknowledgement ``acked`` and, when the server wants them, the velocity / acceleration estimate ``d``."""
    x = n * 0.001
    q = [0.5 * math.sin(x + j) for j in range(joints)]
    fields: dict[str, Any] = {"seq": n, "t": n * 1000, "q": q, "h": 200_000, "ts": ts, "k": 1.0, "a": acked}
    if derivatives:
        fields["d"] = [0.5 * math.cos(x + j) for j in range(joints)] + [-v for v in q]
    return fields


class LoadGen:
    """``devices`` emulated devices connected to ``endpoint``; ``connect`` then ``run`` (repeatable), ``close``."""

    def __init__(self, endpoint: str, security: Security, devices: int, in_flight: int = 4,
                 rate_hz: float | None = None, name: str = "emu") -> None:
        self.wire = Wire()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.ctx.setsockopt(zmq.MAX_SOCKETS, devices + 64)  # the default (1023) is below 1000 devices + ours
        self.in_flight, self.rate_hz, self.name = in_flight, rate_hz, name
        self.socks: list[zmq.Socket[bytes]] = []
        for _ in range(devices):
            s = self.ctx.socket(zmq.DEALER)
            security.client_socket(s)
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 10_000)
            s.setsockopt(zmq.RCVHWM, 10_000)
            s.connect(endpoint)
            self.socks.append(s)
        self.index = {s: i for i, s in enumerate(self.socks)}
        self.seq = [0] * devices
        self.acked = [0] * devices
        self.outstanding = [0] * devices
        self.welcomed = [False] * devices
        self.derivatives = True
        self.sent = 0
        self.answered = 0
        self.errors: Counter[str] = Counter()
        self.sessions_lost = 0
        self.poller = zmq.Poller()
        for s in self.socks:
            self.poller.register(s, zmq.POLLIN)

    def _hello(self, i: int) -> None:
        self.socks[i].send_multipart(self.wire.encode("hello", dev=f"{self.name}{i}", joints=[f"j{j}" for j in
                                                                                               range(JOINTS)],
                                                      rate_hz=1000.0, urdf="bench", policy="bench"))

    def _sample(self, i: int) -> None:
        n = self.seq[i] = self.seq[i] + 1
        self.socks[i].send_multipart(self.wire.encode("sample", **sample_fields(n, self.acked[i], now_us(),
                                                                                self.derivatives)))
        self.outstanding[i] += 1
        self.sent += 1

    def connect(self, timeout_s: float = 60.0) -> float:
        """Hello from every device; returns once all are welcomed (seconds taken), RuntimeError after timeout."""
        t0 = time.monotonic()
        for i in range(len(self.socks)):
            self._hello(i)
        deadline = t0 + timeout_s
        while not all(self.welcomed):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{sum(self.welcomed)}/{len(self.socks)} emulated devices welcomed in "
                                   f"{timeout_s:g} s; errors: {dict(self.errors)}")
            for s, _ in self.poller.poll(min(100, int(left * 1000) + 1)):
                self._drain(s, closed_loop=False)
        return time.monotonic() - t0

    def _drain(self, sock: zmq.Socket[bytes], closed_loop: bool) -> None:
        i = self.index[sock]
        while True:
            try:
                body = sock.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            msg = msgpack.unpackb(body)
            kind = msg.get("type")
            if kind == "pred":
                self.answered += 1
                self.outstanding[i] = max(self.outstanding[i] - 1, 0)
                self.acked[i] = max(self.acked[i], int(msg["preds"][-1][0]))
                if closed_loop:
                    self._sample(i)
            elif kind == "welcome":
                if not self.welcomed[i]:
                    self.derivatives = bool(msg.get("derivatives", True))
                self.welcomed[i] = True
                self.acked[i] = 0  # a new session numbers its predictions from 1
            elif kind == "error":
                code = str(msg.get("code"))
                self.errors[code] += 1
                if code == "no-session" and self.welcomed[i]:
                    self.sessions_lost += 1
                    self.welcomed[i] = False
                    self._hello(i)

    def run(self, seconds: float) -> dict[str, float]:
        """Load the server for ``seconds``; samples sent and answered in that time, and the rate answered."""
        sent0, ans0, t0 = self.sent, self.answered, time.monotonic()
        end = t0 + seconds
        if self.rate_hz is None:
            for i in range(len(self.socks)):
                while self.welcomed[i] and self.outstanding[i] < self.in_flight:
                    self._sample(i)
            while (now := time.monotonic()) < end:
                for s, _ in self.poller.poll(max(1, min(100, int((end - now) * 1000)))):
                    self._drain(s, closed_loop=True)
        else:
            self._paced(end)
        dt = time.monotonic() - t0
        return {"seconds": dt, "sent": self.sent - sent0, "answered": self.answered - ans0,
                "answered_per_s": (self.answered - ans0) / dt}

    def _paced(self, end: float) -> None:
        """Each device at ``rate_hz`` (phases spread evenly) plus a heartbeat every 200 ms.

        Sends and reads go in ticks of ``PACE_TICK_S``: everything due is sent, then one poll reads every reply
        that is ready. Polling 200 sockets once per message cost the generator half its core (and so half of the
        server's share of a 2-core machine); a tick's jitter is ~1 % of a 20 Hz device's period.
        """
        assert self.rate_hz is not None
        period, n = 1.0 / self.rate_hz, len(self.socks)
        t0 = time.monotonic()
        due = [(t0 + period * i / n, i, False) for i in range(n)] + [(t0 + HEARTBEAT_S * i / n, i, True)
                                                                     for i in range(n)]
        heapq.heapify(due)
        while (now := time.monotonic()) < end:
            while due and due[0][0] <= now:
                t, i, hb = heapq.heappop(due)
                if hb:
                    self.socks[i].send_multipart(self.wire.encode("hb", ts=now_us(), stats={"load": 0.02}))
                elif self.welcomed[i]:
                    self._sample(i)
                heapq.heappush(due, (t + (HEARTBEAT_S if hb else period), i, hb))
            for s, _ in self.poller.poll(0):
                self._drain(s, closed_loop=False)
            # Until the next tick (or the end): what falls due meanwhile goes out then, replies wait in their sockets.
            if (left := min(now + PACE_TICK_S, end) - time.monotonic()) > 0:
                time.sleep(left)

    def close(self) -> None:
        """Bye from every device (the server frees its sessions at once), then close."""
        for s in self.socks:
            with contextlib.suppress(zmq.Again):
                s.send_multipart(self.wire.encode("bye"), flags=zmq.NOBLOCK)
            s.close(linger=200)
        self.ctx.term()
