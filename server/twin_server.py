"""The twin server: ROUTER for devices, one session each, predictions back, twin states on PUB.

Single-threaded event loop on a ZeroMQ poller. Each device (ROUTER identity) gets a session holding its
predictor state and counters. Anything malformed, unknown or unauthorised is counted and dropped.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import zmq

from twin.constants import REDUNDANCY, REPEAT_MAX
from twin.display import Prediction
from twin.predictors import DEFAULT_PREDICTOR, OnlinePredictor, make_predictor
from twin.schema import ProtocolError, Wire, prediction_to_wire

SESSION_IDLE_S = 30.0


def reply_preds(recent: deque[list[Any]], acked: int | None) -> list[list[Any]]:
    """The predictions a reply carries: the last REDUNDANCY, and every one newer than the device's
    acknowledgement ``acked`` (pred_seq), at most REPEAT_MAX (``recent``'s length)."""
    if acked is None:  # a device that does not acknowledge
        return list(recent)[-REDUNDANCY:]
    out = [p for p in recent if p[0] > acked]
    return list(recent)[-REDUNDANCY:] if len(out) < REDUNDANCY else out


def server_us() -> int:
    return time.monotonic_ns() // 1000


@dataclass
class DeviceSession:
    """Per-device state: identity, joints, predictor, recent predictions, counters."""

    identity: bytes
    device_id: str
    joints: list[str]
    urdf: str
    predictor: OnlinePredictor
    last_seen: float
    pred_seq: int = 0
    samples: int = 0
    stale: int = 0
    recent: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=REPEAT_MAX))
    last_pred: Prediction | None = None
    last_q: list[float] | None = None
    device_status: dict[str, Any] = field(default_factory=dict)


@dataclass
class ServerStats:
    """Counters reported at exit and in ``stats()``."""

    messages: int = 0
    samples: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    sessions_opened: int = 0
    sessions_closed: int = 0  # bye
    sessions_expired: int = 0  # silent for SESSION_IDLE_S

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


class TwinServer:
    """Binds ROUTER (devices) and PUB (viewers, upper tier); ``serve_forever`` until ``stop``."""

    def __init__(
        self,
        bind: str = "tcp://*:5555",
        pub: str | None = "tcp://*:5556",
        predictor: str = DEFAULT_PREDICTOR,
        key: bytes | None = None,
        log: Callable[[str], None] | None = None,
        status_every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # ``log`` gets one line per event (a device connects, leaves or expires) and a status line every
        # ``status_every_s`` while devices are connected; None = quiet (tests, embedding).
        self.log = log or (lambda line: None)
        self.status_every_s = status_every_s
        # Validate the name early (the error lists valid ones) and warm the predictor up: compiled kernels load
        # on first use (~0.3 s), which must not stall the first device's first samples.
        warm = OnlinePredictor(make_predictor(predictor))
        self._wants_derivatives = warm.uses_derivatives
        for i in range(3):
            warm.update(i * 1000, np.zeros(2), 0, np.zeros((2, 2)) if i else None)
        self.predictor_name = predictor
        self.wire = Wire(key)
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
        self.router.bind(bind)
        self.endpoint = str(self.router.getsockopt_string(zmq.LAST_ENDPOINT))
        self.pub_sock = None
        self.pub_endpoint: str | None = None
        if pub:
            self.pub_sock = self.ctx.socket(zmq.PUB)
            self.pub_sock.setsockopt(zmq.LINGER, 0)
            self.pub_sock.setsockopt(zmq.SNDHWM, 1000)
            self.pub_sock.bind(pub)
            self.pub_endpoint = str(self.pub_sock.getsockopt_string(zmq.LAST_ENDPOINT))
        self.sessions: dict[bytes, DeviceSession] = {}
        self._clock = clock  # seconds; when a session was last seen (injectable: tests expire sessions at once)
        self.stats = ServerStats()
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self, poll_ms: int = 100) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        try:
            self._status_at, self._status_samples = self._clock(), 0
            while not self._stop.is_set():
                if poller.poll(poll_ms):
                    self._drain()
                self._expire()
                self._status(self._clock())
        finally:
            self.close()

    def close(self) -> None:
        self.router.close(linger=0)
        if self.pub_sock is not None:
            self.pub_sock.close(linger=0)
        self.ctx.term()

    def _drain(self) -> None:
        while True:
            try:
                frames = self.router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            rx = server_us()
            self.stats.messages += 1
            if len(frames) < 2:
                self.stats.drop("malformed")
                continue
            ident, body = frames[0], frames[1:]
            try:
                msg = self.wire.decode(body)
            except ProtocolError as exc:
                self.stats.drop(exc.reason)
                continue
            try:
                self._handle(ident, msg, rx)
            except (ValueError, TypeError) as exc:  # inconsistent but well-formed message (e.g. joint count)
                self.stats.drop("invalid")
                self._reply(ident, "error", code="invalid", msg=str(exc)[:200])

    def _reply(self, ident: bytes, msg_type: str, **fields: Any) -> None:
        try:
            self.router.send_multipart([ident, *self.wire.encode(msg_type, **fields)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats.drop("reply-queue-full")

    def _handle(self, ident: bytes, msg: dict[str, Any], rx: int) -> None:
        kind = msg["type"]
        if kind == "hello":
            joints = [str(j) for j in msg["joints"]]
            if not 1 <= len(joints) <= 32:
                raise ValueError("hello.joints must name 1..32 joints")
            old = self.sessions.get(ident)
            if old is not None and old.joints == joints and old.device_id == msg["dev"]:
                # A repeated hello (its welcome crossed a heartbeat): keep the predictor state.
                old.last_seen = self._clock()
                self._welcome(ident, msg["dev"])
                return
            self.sessions[ident] = DeviceSession(
                ident, msg["dev"], joints, msg["urdf"], OnlinePredictor(make_predictor(self.predictor_name)),
                self._clock())
            self.stats.sessions_opened += 1
            again = " (new session: joints or name changed)" if old is not None else ""
            self.log(f"device {msg['dev']} connected{again}: {len(joints)} joints, urdf {msg['urdf']}, "
                     f"policy {msg.get('policy', '?')}; {len(self.sessions)} connected")
            self._welcome(ident, msg["dev"])
            return
        sess = self.sessions.get(ident)
        if kind == "hb":
            self._reply(ident, "pong", ts=msg["ts"], rx=rx, srv_us=server_us())
            if sess is None:
                self._reply(ident, "error", code="no-session", msg="send hello first")
            else:
                sess.last_seen = self._clock()
                if isinstance(msg.get("stats"), dict):
                    sess.device_status = msg["stats"]
            return
        if kind == "bye":
            gone = self.sessions.pop(ident, None)
            if gone is not None:
                self.stats.sessions_closed += 1
                self.log(f"device {gone.device_id} left (bye) after {gone.samples} samples; "
                         f"{len(self.sessions)} connected")
            return
        if sess is None:
            self.stats.drop("no-session")
            self._reply(ident, "error", code="no-session", msg="send hello first")
            return
        if kind != "sample":
            self.stats.drop("unexpected")
            return
        sess.last_seen = self._clock()
        q = np.asarray(msg["q"], dtype=np.float64)
        if len(q) != len(sess.joints):
            raise ValueError(f"sample has {len(q)} joints, session has {len(sess.joints)}")
        if msg["h"] < 0:
            raise ValueError("negative horizon")
        newest = sess.predictor.newest_t0
        if newest is not None and msg["t"] <= newest:
            sess.stale += 1  # reordered by the network: the twin already shows something newer
            return
        deriv = np.asarray(msg["d"], dtype=np.float64).reshape(2, len(q)) if msg.get("d") is not None else None
        pred = sess.predictor.update(msg["t"], q, msg["h"], deriv)
        sess.pred_seq += 1
        sess.samples += 1
        self.stats.samples += 1
        sess.last_pred, sess.last_q = pred, msg["q"]
        sess.recent.append([*prediction_to_wire(sess.pred_seq, pred), rx])
        self._reply(ident, "pred", seq=msg["seq"], ts=msg["ts"], rx=rx, preds=reply_preds(sess.recent, msg.get("a")))
        self._publish(sess, pred, rx)

    def _welcome(self, ident: bytes, dev: str) -> None:
        # Tell the device whether to attach its velocity/acceleration estimate to each sample.
        self._reply(ident, "welcome", dev=dev, srv_us=server_us(), predictor=self.predictor_name,
                    derivatives=self._wants_derivatives)

    def _publish(self, sess: DeviceSession, pred: Prediction, rx: int) -> None:
        if self.pub_sock is None:
            return
        state = {"type": "twin", "dev": sess.device_id, "joints": sess.joints, "urdf": sess.urdf,
                 "pred": prediction_to_wire(sess.pred_seq, pred), "q_last": sess.last_q, "rx": rx,
                 "status": sess.device_status}
        try:
            self.pub_sock.send_multipart([sess.device_id.encode(), msgpack.packb(state)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats.drop("pub-queue-full")

    def _expire(self) -> None:
        now = self._clock()
        for ident in [i for i, s in self.sessions.items() if now - s.last_seen > SESSION_IDLE_S]:
            gone = self.sessions.pop(ident)
            self.stats.sessions_expired += 1
            self.log(f"device {gone.device_id} expired (silent for {SESSION_IDLE_S:g} s) after {gone.samples} "
                     f"samples; {len(self.sessions)} connected")

    def _status(self, now: float) -> None:
        """Once every ``status_every_s`` while devices are connected: devices, samples/s, drops by reason."""
        dt = now - self._status_at
        if dt < self.status_every_s:
            return
        rate = (self.stats.samples - self._status_samples) / dt
        self._status_at, self._status_samples = now, self.stats.samples
        if self.sessions or rate:
            drops = ", ".join(f"{k}={v}" for k, v in sorted(self.stats.dropped.items())) or "none"
            self.log(f"status: {len(self.sessions)} devices, {rate:.1f} samples/s, dropped: {drops}")

    def summary_lines(self) -> list[str]:
        """The end-of-run summary, one fact per line."""
        st = self.stats
        drops = ", ".join(f"{k}={v}" for k, v in sorted(st.dropped.items())) or "none"
        lines = [f"server stopped: {st.messages} messages, {st.samples} samples answered, dropped: {drops}",
                 f"  sessions: {st.sessions_opened} opened, {st.sessions_closed} left, {st.sessions_expired} expired, "
                 f"{len(self.sessions)} still connected"]
        lines += [f"  {s.device_id}: {s.samples} samples, {s.stale} stale (reordered)" for s in self.sessions.values()]
        return lines

    def describe(self) -> dict[str, Any]:
        return {"messages": self.stats.messages, "dropped": dict(self.stats.dropped),
                "sessions": {s.device_id: {"samples": s.samples, "stale": s.stale} for s in self.sessions.values()},
                "sessions_opened": self.stats.sessions_opened}
