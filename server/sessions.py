"""The server's protocol core: one session per device, validation, predictions, counters; no sockets.

``SessionCore`` turns one received message (its ROUTER identity, frames and receive time) into replies and
twin states through hooks, so the same code serves the single-process server (``server.twin_server``) and each
worker process of ``armtwin server --workers N`` (``server.worker``), where the hooks batch records for the front.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack
import numpy as np

from twin.constants import REDUNDANCY, REPEAT_MAX
from twin.display import Prediction
from twin.predictors import DEFAULT_PREDICTOR, OnlinePredictor, make_predictor
from twin.schema import ProtocolError, Wire, prediction_to_wire

SESSION_IDLE_S = 30.0
MAX_SESSIONS = 256  # devices one server (or one worker) holds; a flood of identities gets "server-full", not memory
EVENT_LINES = 50  # session event lines (connected / left / expired) per status period; the rest are counted
_STATUS_KEYS = 16  # device status fields kept per session (published to viewers)
# Messages a server reads from its socket per pass: read at once (each stamped when read), then served trusted
# sessions first, so a flood from other identities queues behind the real devices' samples, not in front of them.
BATCH = 256
# Untrusted messages served between two looks at the socket for trusted ones (a slice of a flood costs ~0.5 ms),
# and how many such looks one pass makes before the poll loop gets its turn (expiry, status, key reloads).
SLICE = 16
REFILL_BATCHES = 8
# An identity whose messages were dropped more often than this (share, since its first hello) is served after the
# well-behaved ones: a device that sends junk loses its priority, never its session.
TRUST_BAD_SHARE = 0.01

ReplyHook = Callable[[bytes, list[bytes]], bool]  # (identity, frames) -> sent? (False: the queue was full)
PublishHook = Callable[[str, bytes], bool]  # (device id, msgpack twin state) -> sent?
StatusHook = Callable[[str, dict[str, Any]], None]  # (device id, status incl. "connected")


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
    """Counters reported at exit and in ``describe()``."""

    messages: int = 0
    samples: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    accepted: dict[str, int] = field(default_factory=dict)  # decoded and handled, by kind (stale samples too)
    drops: int = 0  # sum of ``dropped``: every message is accepted or dropped, never lost uncounted
    sessions_opened: int = 0
    sessions_closed: int = 0  # bye
    sessions_expired: int = 0  # silent for the idle time

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self.drops += 1

    def to_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "samples": self.samples, "dropped": dict(self.dropped),
                "accepted": dict(self.accepted), "sessions_opened": self.sessions_opened,
                "sessions_closed": self.sessions_closed, "sessions_expired": self.sessions_expired}

    def add(self, other: dict[str, Any]) -> None:
        """Add another process's counters (``to_dict``): the front's summary of all workers."""
        for name in ("messages", "samples", "sessions_opened", "sessions_closed", "sessions_expired"):
            setattr(self, name, getattr(self, name) + int(other.get(name, 0)))
        for reason, n in other.get("dropped", {}).items():
            self.dropped[reason] = self.dropped.get(reason, 0) + int(n)
            self.drops += int(n)
        for kind, n in other.get("accepted", {}).items():
            self.accepted[kind] = self.accepted.get(kind, 0) + int(n)


class SessionCore:
    """The sessions of one process and what it does with each message; output goes through the hooks."""

    def __init__(self, reply: ReplyHook, publish: PublishHook | None = None, status: StatusHook | None = None,
                 predictor: str = DEFAULT_PREDICTOR, key: bytes | None = None,
                 log: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = MAX_SESSIONS, idle_s: float = SESSION_IDLE_S) -> None:
        self.log = log or (lambda line: None)
        # Validate the name early (the error lists valid ones) and warm the predictor up: compiled kernels load
        # on first use (~0.3 s), which must not stall the first device's first samples.
        warm = OnlinePredictor(make_predictor(predictor))
        self.wants_derivatives = warm.uses_derivatives
        for i in range(3):
            warm.update(i * 1000, np.zeros(2), 0, np.zeros((2, 2)) if i else None)
        self.predictor_name = predictor
        self.wire = Wire(key)
        self.max_sessions, self.idle_s = max_sessions, idle_s
        self._send, self._pub, self._status_hook = reply, publish, status
        self.sessions: dict[bytes, DeviceSession] = {}
        self.clock = clock  # seconds; when a session was last seen (injectable: tests expire sessions at once)
        self.stats = ServerStats()
        self.events_left, self.events_suppressed = EVENT_LINES, 0

    def receive_batch(self, batch: list[tuple[list[bytes], int]],
                      more: Callable[[], list[tuple[list[bytes], int]]] | None = None) -> None:
        """Messages read together, each with its receive time: trusted sessions' first, then the rest. Per identity
        the order is kept (an identity waiting in the rest stays there), so a device's own samples never overtake
        each other. ``more`` reads what has arrived since (non-blocking): it is called after every ``SLICE`` of
        the rest, and trusted messages it brings are served before the rest goes on, so a real device's sample
        waits behind at most a slice of a flood, not behind the whole batch."""
        later: deque[tuple[list[bytes], int]] = deque()
        waiting: dict[bytes, int] = {}  # identities with messages in ``later``, and how many
        self._serve_split(batch, later, waiting)
        budget = REFILL_BATCHES  # refills per call: the poll loop's housekeeping must come round too
        while later:
            for _ in range(min(SLICE, len(later))):
                frames, rx = later.popleft()
                if frames:
                    n = waiting[frames[0]] - 1
                    if n:
                        waiting[frames[0]] = n
                    else:
                        del waiting[frames[0]]
                self.receive(frames, rx)
            if more is not None and budget > 0 and len(later) < BATCH:
                budget -= 1
                self._serve_split(more(), later, waiting)

    def _serve_split(self, batch: list[tuple[list[bytes], int]], later: deque[tuple[list[bytes], int]],
                     waiting: dict[bytes, int]) -> None:
        """Serve ``batch``'s trusted messages now; queue the others (and anything from an identity already
        queued, to keep its order) on ``later``."""
        for frames, rx in batch:
            ident = frames[0] if frames else b""
            sess = self.sessions.get(ident) if frames else None
            if sess is not None and sess.trusted and ident not in waiting:
                self.receive(frames, rx)
            else:
                later.append((frames, rx))
                if frames:
                    waiting[ident] = waiting.get(ident, 0) + 1

    def receive(self, frames: list[bytes], rx: int) -> None:
        """One ROUTER message [identity, *body] received at server time ``rx`` (µs): accepted or dropped."""
        self.stats.messages += 1
        if len(frames) < 2:
            self.stats.drop("malformed")
            return
        ident, body = frames[0], frames[1:]
        drops = self.stats.drops
        try:
            self._receive(ident, body, rx)
        finally:
            sess = self.sessions.get(ident)
            if sess is not None:  # its reputation: what it sent and how much of it was dropped
                sess.messages += 1
                sess.bad += self.stats.drops - drops

    def _receive(self, ident: bytes, body: list[bytes], rx: int) -> None:
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
        if not self._send(ident, self.wire.encode(msg_type, **fields)):
            self.stats.drop("reply-queue-full")

    def _handle(self, ident: bytes, msg: dict[str, Any], rx: int) -> None:
        kind = msg["type"]
        if kind == "hello":
            self._hello(ident, msg)
            return
        sess = self.sessions.get(ident)
        if kind == "hb":
            self._reply(ident, "pong", ts=msg["ts"], rx=rx, srv_us=server_us())
            if sess is None:
                self._reply(ident, "error", code="no-session", msg="send hello first")
            else:
                sess.last_seen = self.clock()
                if isinstance(msg.get("stats"), dict):
                    sess.device_status = clean_status(msg["stats"])
                    self._tell_status(sess, True)
            return
        if kind == "bye":
            gone = self.sessions.pop(ident, None)
            if gone is not None:
                self.stats.sessions_closed += 1
                self._tell_status(gone, False)
                self.event(f"device {gone.device_id} left (bye) after {gone.samples} samples; "
                           f"{len(self.sessions)} connected")
            return
        if sess is None:
            self.stats.drop("no-session")
            self._reply(ident, "error", code="no-session", msg="send hello first")
            return
        if kind != "sample":
            self.stats.drop("unexpected")
            return
        self._sample(ident, sess, msg, rx)

    def _hello(self, ident: bytes, msg: dict[str, Any]) -> None:
        joints = list(msg["joints"])  # validated by Wire: 1..MAX_JOINTS names
        old = self.sessions.get(ident)
        if old is not None and old.joints == joints and old.device_id == msg["dev"]:
            # A repeated hello (its welcome crossed a heartbeat): keep the predictor state.
            old.last_seen = self.clock()
            self._welcome(ident, old)
            return
        if old is None and len(self.sessions) >= self.max_sessions:
            self.stats.drop("session-cap")
            self._reply(ident, "error", code="server-full",
                        msg=f"{self.max_sessions} devices connected; try again later")
            return
        sess = self.sessions[ident] = DeviceSession(
            ident, msg["dev"], joints, msg["urdf"], OnlinePredictor(make_predictor(self.predictor_name)),
            self.clock())
        if old is not None:  # a new session, the same sender: its record goes on
            sess.messages, sess.bad = old.messages, old.bad
        self.stats.sessions_opened += 1
        again = " (new session: joints or name changed)" if old is not None else ""
        self.event(f"device {msg['dev']} connected{again}: {len(joints)} joints, urdf {msg['urdf'][:80]}, "
                   f"policy {msg.get('policy', '?')[:80]}; {len(self.sessions)} connected")
        self._welcome(ident, sess)
        self._tell_status(sess, True)

    def _sample(self, ident: bytes, sess: DeviceSession, msg: dict[str, Any], rx: int) -> None:
        sess.last_seen = self.clock()
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
                    derivatives=self.wants_derivatives, epoch=sess.epoch)

    def _publish(self, sess: DeviceSession, pred: Prediction, rx: int) -> None:
        if self._pub is None:
            return
        state = {"type": "twin", "dev": sess.device_id, "joints": sess.joints, "urdf": sess.urdf,
                 "pred": prediction_to_wire(sess.pred_seq, pred), "q_last": sess.last_q, "rx": rx,
                 "status": sess.device_status}
        if not self._pub(sess.device_id, msgpack.packb(state)):
            self.stats.drop("pub-queue-full")

    def _tell_status(self, sess: DeviceSession, connected: bool) -> None:
        if self._status_hook is not None:
            self._status_hook(sess.device_id, {"connected": connected, "samples": sess.samples,
                                               "joints": sess.joints, "urdf": sess.urdf, **sess.device_status})

    def expire(self) -> None:
        """Drop the sessions silent for longer than the idle time."""
        now = self.clock()
        for ident in [i for i, s in self.sessions.items() if now - s.last_seen > self.idle_s]:
            gone = self.sessions.pop(ident)
            self.stats.sessions_expired += 1
            self._tell_status(gone, False)
            self.event(f"device {gone.device_id} expired (silent for {self.idle_s:g} s) after {gone.samples} "
                       f"samples; {len(self.sessions)} connected")

    def event(self, line: str) -> None:
        """A session event line, at most ``EVENT_LINES`` per status period: a flood of hellos must not turn into
        a flood of output (a full stdout pipe would stall the server); the status line counts the rest."""
        if self.events_left > 0:
            self.events_left -= 1
            self.log(line)
        else:
            self.events_suppressed += 1

    def session_rows(self) -> list[dict[str, Any]]:
        return [{"dev": s.device_id, "samples": s.samples, "stale": s.stale} for s in self.sessions.values()]


def status_line(devices: int, rate: float, dropped: dict[str, int], suppressed: int, extra: str = "") -> str:
    """The periodic status line: devices, samples/s, drops by reason (``extra``: e.g. per-worker figures)."""
    drops = ", ".join(f"{k}={v}" for k, v in sorted(dropped.items())) or "none"
    quiet = f"; {suppressed} session events not shown" if suppressed else ""
    return f"status: {devices} devices, {rate:.1f} samples/s, dropped: {drops}{quiet}{extra}"


def summary_lines(st: ServerStats, rows: list[dict[str, Any]]) -> list[str]:
    """The end-of-run summary, one fact per line (``rows``: ``SessionCore.session_rows`` of every process)."""
    drops = ", ".join(f"{k}={v}" for k, v in sorted(st.dropped.items())) or "none"
    accepted = ", ".join(f"{k}={v}" for k, v in sorted(st.accepted.items())) or "none"
    lines = [f"server stopped: {st.messages} messages, {st.samples} samples answered, dropped: {drops}",
             f"  accepted: {accepted}",
             f"  sessions: {st.sessions_opened} opened, {st.sessions_closed} left, {st.sessions_expired} expired, "
             f"{len(rows)} still connected"]
    return lines + [f"  {r['dev']}: {r['samples']} samples, {r['stale']} stale (reordered)" for r in rows]


class UpperTier(Protocol):
    """Where an edge server also sends its arms' twin states and status (``server.zenoh_tier``)."""

    def twin(self, dev: str, body: bytes) -> None: ...

    def status(self, dev: str, status: dict[str, Any]) -> None: ...

    def close(self) -> None: ...
