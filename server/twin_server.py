"""The twin server: ROUTER for devices, one session each, predictions back, twin states on PUB.

Single-threaded event loop on a ZeroMQ poller. Each device (ROUTER identity) gets a session holding its
predictor state and counters. Anything malformed, unknown or unauthorised is counted and dropped.
"""

from __future__ import annotations

import secrets
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
from twin.schema import MAX_MESSAGE_BYTES, ProtocolError, Wire, prediction_to_wire
from twin.security import Security

SESSION_IDLE_S = 30.0
MAX_SESSIONS = 256  # devices one server holds; a flood of identities gets "server-full", not memory
# The transport refuses (disconnects) anything this big before it is buffered; below it Wire counts "oversize".
MAX_TRANSPORT_BYTES = 4 * MAX_MESSAGE_BYTES
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_HANDSHAKE_REASON: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake-refused",  # a key not in the authorised dir
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake-protocol",  # plaintext vs CURVE, garbage
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake-failed"}
# Messages read from the ROUTER socket per pass: read all at once (each stamped when read), then served trusted
# sessions first, so a flood from other identities queues behind the real devices' samples, not in front of them.
BATCH = 256
# An identity whose messages were dropped more often than this (share, since its first hello) is served after the
# well-behaved ones: a device that sends junk loses its priority, never its session.
TRUST_BAD_SHARE = 0.01
EVENT_LINES = 50  # session event lines (connected / left / expired) per status period; the rest are counted
_STATUS_KEYS = 16  # device status fields kept per session (published to viewers)


def new_epoch() -> int:
    """A session's epoch: random, so a restarted server (or a new session) never repeats the previous one."""
    return secrets.randbits(62)


def clean_status(stats: dict[Any, Any]) -> dict[str, Any]:
    """The device status a viewer may see: at most ``_STATUS_KEYS`` short names with finite numbers / flags."""
    out: dict[str, Any] = {}
    for k, v in stats.items():
        if len(out) >= _STATUS_KEYS:
            break
        if isinstance(k, str) and len(k) <= 32 and (isinstance(v, bool) or (
                isinstance(v, int | float) and np.isfinite(v))):
            out[k] = v
    return out


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
    epoch: int = field(default_factory=new_epoch)  # sent in welcome and every reply: pred_seq restarts with it
    pred_seq: int = 0
    samples: int = 0
    stale: int = 0
    recent: deque[list[Any]] = field(default_factory=lambda: deque(maxlen=REPEAT_MAX))
    last_pred: Prediction | None = None
    last_q: list[float] | None = None
    device_status: dict[str, Any] = field(default_factory=dict)
    messages: int = 0  # from this identity since its first hello (carried over when the session is replaced)
    bad: int = 0  # of those, dropped

    @property
    def trusted(self) -> bool:
        """Served first: (almost) nothing this identity sent was dropped."""
        return self.bad <= TRUST_BAD_SHARE * self.messages


@dataclass
class ServerStats:
    """Counters reported at exit and in ``stats()``."""

    messages: int = 0
    samples: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)  # decoded and handled, by kind (stale samples too)
    drops: int = 0  # sum of ``dropped``: every message is accepted or dropped, never lost uncounted
    sessions_opened: int = 0
    sessions_closed: int = 0  # bye
    sessions_expired: int = 0  # silent for SESSION_IDLE_S

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.drops += 1


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
        security: Security | None = None,
        max_sessions: int = MAX_SESSIONS,
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
        self.max_sessions = max_sessions
        self.ctx: zmq.Context[Any] = zmq.Context()
        # CURVE: the authenticator (ZAP handler thread) admits only the authorised client keys, on both sockets.
        self.security = security or Security.insecure()
        self.auth = self.security.start_authenticator(self.ctx)
        self.pub_sock = None
        self.pub_endpoint: str | None = None
        try:
            self.router = self.ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self.router.setsockopt(zmq.MAXMSGSIZE, MAX_TRANSPORT_BYTES)
            self.security.server_socket(self.router)
            self.router.bind(bind)
            self.endpoint = str(self.router.getsockopt_string(zmq.LAST_ENDPOINT))
            if pub:
                self.pub_sock = self.ctx.socket(zmq.PUB)
                self.pub_sock.setsockopt(zmq.LINGER, 0)
                self.pub_sock.setsockopt(zmq.SNDHWM, 1000)
                self.pub_sock.setsockopt(zmq.MAXMSGSIZE, MAX_TRANSPORT_BYTES)  # subscriptions are tiny
                self.security.server_socket(self.pub_sock)
                self.pub_sock.bind(pub)
                self.pub_endpoint = str(self.pub_sock.getsockopt_string(zmq.LAST_ENDPOINT))
        except BaseException:
            self.close()
            raise
        # Refused handshakes (an unknown key, a plaintext client against CURVE, garbage) never reach the loop as
        # messages: the sockets' monitors report them so they are counted like every other drop.
        self._watched = [s for s in (self.router, self.pub_sock) if s is not None]
        self._monitors = [s.get_monitor_socket(_HANDSHAKE_EVENTS) for s in self._watched]
        self._auth_stamp = self.security.authorized_stamp()
        self.sessions: dict[bytes, DeviceSession] = {}
        self._clock = clock  # seconds; when a session was last seen (injectable: tests expire sessions at once)
        self.stats = ServerStats()
        self._stop = threading.Event()
        self._events_left, self._events_suppressed = EVENT_LINES, 0

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self, poll_ms: int = 100) -> None:
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        for mon in self._monitors:
            poller.register(mon, zmq.POLLIN)
        next_reload = time.monotonic() + 1.0
        try:
            self._status_at, self._status_samples = self._clock(), 0
            while not self._stop.is_set():
                ready = dict(poller.poll(poll_ms))
                if self.router in ready:
                    self._drain()
                if len(ready) > (self.router in ready):
                    self._handshakes()
                self._expire()
                self._status(self._clock())
                if self.auth is not None and time.monotonic() >= next_reload:
                    self._reload_keys()
                    next_reload = time.monotonic() + 1.0
        finally:
            self.close()

    def _handshakes(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        for mon in self._monitors:
            while mon.poll(0):
                event = recv_monitor_message(mon)["event"]
                self.stats.drop(_HANDSHAKE_REASON.get(int(event), "handshake-failed"))

    def _reload_keys(self) -> None:
        """A key added to or removed from the authorised directory counts for new connections within 1 s."""
        stamp = self.security.authorized_stamp()
        if stamp != self._auth_stamp:
            self._auth_stamp = stamp
            self.security.reload(self.auth)
            self.log(f"authorised client keys reloaded: {stamp[1]} key(s) in {self.security.authorized}")

    def close(self) -> None:
        for mon, sock in zip(getattr(self, "_monitors", []), getattr(self, "_watched", []), strict=True):
            sock.disable_monitor()
            mon.close(linger=0)
        if getattr(self, "router", None) is not None:
            self.router.close(linger=0)
        if self.pub_sock is not None:
            self.pub_sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()

    def _drain(self) -> None:
        """Serve what the ROUTER socket holds, a batch at a time: each batch is read at once (receive times
        stamped as read), then trusted sessions' messages are handled before everything else. Per identity the
        order is kept (the class is fixed per batch), so a device's own samples never overtake each other."""
        while True:
            batch: list[tuple[bytes, list[bytes], int]] = []
            later: list[tuple[bytes, list[bytes], int]] = []
            while len(batch) + len(later) < BATCH:
                try:
                    frames = self.router.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                rx = server_us()
                self.stats.messages += 1
                if len(frames) < 2:
                    self.stats.drop("malformed")
                    continue
                sess = self.sessions.get(frames[0])
                (batch if sess is not None and sess.trusted else later).append((frames[0], frames[1:], rx))
            for ident, body, rx in batch:
                self._one(ident, body, rx)
            for ident, body, rx in later:
                self._one(ident, body, rx)
            if len(batch) + len(later) < BATCH:
                return

    def _one(self, ident: bytes, body: list[bytes], rx: int) -> None:
        drops = self.stats.drops
        try:
            self._decode_and_handle(ident, body, rx)
        finally:
            sess = self.sessions.get(ident)
            if sess is not None:  # its reputation: what it sent and how much of it was dropped
                sess.messages += 1
                sess.bad += self.stats.drops - drops

    def _decode_and_handle(self, ident: bytes, body: list[bytes], rx: int) -> None:
        try:
            msg = self.wire.decode(body)
        except ProtocolError as exc:
            self.stats.drop(exc.reason)
            return
        drops = self.stats.drops
        try:
            self._handle(ident, msg, rx)
            if self.stats.drops == drops:
                self.stats.accepted[msg["type"]] = self.stats.accepted.get(msg["type"], 0) + 1
        except ProtocolError as exc:  # well-formed but inconsistent with the session (e.g. joint count)
            self.stats.drop(exc.reason)
            self._reply(ident, "error", code=exc.reason, msg=str(exc)[:200])
        except Exception as exc:  # a bug must cost one message, not the server (counted, logged once)
            self.stats.drop("handler-error")
            if self.stats.dropped["handler-error"] == 1:
                self.log(f"error: message handler failed ({exc.__class__.__name__}: {exc}); dropping such "
                         "messages and counting them as handler-error")

    def _reply(self, ident: bytes, msg_type: str, **fields: Any) -> None:
        try:
            self.router.send_multipart([ident, *self.wire.encode(msg_type, **fields)], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.stats.drop("reply-queue-full")

    def _handle(self, ident: bytes, msg: dict[str, Any], rx: int) -> None:
        kind = msg["type"]
        if kind == "hello":
            joints = list(msg["joints"])  # validated by Wire: 1..MAX_JOINTS names
            old = self.sessions.get(ident)
            if old is not None and old.joints == joints and old.device_id == msg["dev"]:
                # A repeated hello (its welcome crossed a heartbeat): keep the predictor state.
                old.last_seen = self._clock()
                self._welcome(ident, old)
                return
            if old is None and len(self.sessions) >= self.max_sessions:
                self.stats.drop("session-cap")
                self._reply(ident, "error", code="server-full",
                            msg=f"{self.max_sessions} devices connected; try again later")
                return
            self.sessions[ident] = DeviceSession(
                ident, msg["dev"], joints, msg["urdf"], OnlinePredictor(make_predictor(self.predictor_name)),
                self._clock())
            if old is not None:  # a new session, the same sender: its record goes on
                self.sessions[ident].messages, self.sessions[ident].bad = old.messages, old.bad
            self.stats.sessions_opened += 1
            again = " (new session: joints or name changed)" if old is not None else ""
            self._event(f"device {msg['dev']} connected{again}: {len(joints)} joints, urdf {msg['urdf'][:80]}, "
                     f"policy {msg.get('policy', '?')[:80]}; {len(self.sessions)} connected")
            self._welcome(ident, self.sessions[ident])
            return
        sess = self.sessions.get(ident)
        if kind == "hb":
            self._reply(ident, "pong", ts=msg["ts"], rx=rx, srv_us=server_us())
            if sess is None:
                self._reply(ident, "error", code="no-session", msg="send hello first")
            else:
                sess.last_seen = self._clock()
                if isinstance(msg.get("stats"), dict):
                    sess.device_status = clean_status(msg["stats"])
            return
        if kind == "bye":
            gone = self.sessions.pop(ident, None)
            if gone is not None:
                self.stats.sessions_closed += 1
                self._event(f"device {gone.device_id} left (bye) after {gone.samples} samples; "
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
        q = np.asarray(msg["q"], dtype=np.float64)  # finite, in range (Wire)
        if len(q) != len(sess.joints):
            raise ProtocolError("joint-count", f"sample has {len(q)} joints, session has {len(sess.joints)}")
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
        self._reply(ident, "pred", seq=msg["seq"], ts=msg["ts"], rx=rx, epoch=sess.epoch,
                    preds=reply_preds(sess.recent, msg.get("a")))
        self._publish(sess, pred, rx)

    def _welcome(self, ident: bytes, sess: DeviceSession) -> None:
        # Tell the device whether to attach its velocity/acceleration estimate to each sample, and the session's
        # epoch: its pred_seq counts from 1 again, so the device must not de-duplicate it against older ones.
        self._reply(ident, "welcome", dev=sess.device_id, srv_us=server_us(), predictor=self.predictor_name,
                    derivatives=self._wants_derivatives, epoch=sess.epoch)

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
            self._event(f"device {gone.device_id} expired (silent for {SESSION_IDLE_S:g} s) after {gone.samples} "
                     f"samples; {len(self.sessions)} connected")

    def _event(self, line: str) -> None:
        """A session event line, at most ``EVENT_LINES`` per status period: a flood of hellos must not turn into
        a flood of output (a full stdout pipe would stall the server); the status line counts the rest."""
        if self._events_left > 0:
            self._events_left -= 1
            self.log(line)
        else:
            self._events_suppressed += 1

    def _status(self, now: float) -> None:
        """Once every ``status_every_s`` while devices are connected: devices, samples/s, drops by reason."""
        dt = now - self._status_at
        if dt < self.status_every_s:
            return
        rate = (self.stats.samples - self._status_samples) / dt
        self._status_at, self._status_samples = now, self.stats.samples
        if self.sessions or rate or self._events_suppressed:
            drops = ", ".join(f"{k}={v}" for k, v in sorted(self.stats.dropped.items())) or "none"
            quiet = f"; {self._events_suppressed} session events not shown" if self._events_suppressed else ""
            self.log(f"status: {len(self.sessions)} devices, {rate:.1f} samples/s, dropped: {drops}{quiet}")
        self._events_left, self._events_suppressed = EVENT_LINES, 0

    def summary_lines(self) -> list[str]:
        """The end-of-run summary, one fact per line."""
        st = self.stats
        drops = ", ".join(f"{k}={v}" for k, v in sorted(st.dropped.items())) or "none"
        accepted = ", ".join(f"{k}={v}" for k, v in sorted(st.accepted.items())) or "none"
        lines = [f"server stopped: {st.messages} messages, {st.samples} samples answered, dropped: {drops}",
                 f"  accepted: {accepted}",
                 f"  sessions: {st.sessions_opened} opened, {st.sessions_closed} left, {st.sessions_expired} expired, "
                 f"{len(self.sessions)} still connected"]
        lines += [f"  {s.device_id}: {s.samples} samples, {s.stale} stale (reordered)" for s in self.sessions.values()]
        return lines

    def describe(self) -> dict[str, Any]:
        return {"messages": self.stats.messages, "dropped": dict(self.stats.dropped),
                "sessions": {s.device_id: {"samples": s.samples, "stale": s.stale} for s in self.sessions.values()},
                "sessions_opened": self.stats.sessions_opened}
