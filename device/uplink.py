"""The device's ZeroMQ link to the twin server: DEALER, non-blocking sends, heartbeats, RTT and clock offset.

Sends never block the device loop: with no connected server (``IMMEDIATE``) or a full queue, the message is
dropped and counted. The link is "up" while replies keep coming; after a silence it is "down" and the device
says hello again when a server answers, so a restarted server picks the session up.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zmq

from device.link_emulation import LinkModel, LinkSpec
from device.ring import Int64Ring
from twin.schema import MAX_MESSAGE_BYTES, ProtocolError, Wire
from twin.security import Security

HEARTBEAT_US = 200_000
LINK_TIMEOUT_US = 1_000_000
BYE_LINGER_MS = 500  # how long close() lets the bye leave
_DEVICE_BOUND = frozenset({"pred", "pong", "welcome", "error"})  # what a server may send a device


def reply_t0(msg: dict[str, Any]) -> int:
    """The device time of the sample a prediction reply answers (its newest prediction's t0); -1 if none."""
    try:
        return int(msg["preds"][-1][1])
    except (KeyError, IndexError, TypeError, ValueError):
        return -1


@dataclass
class UplinkStats:
    """Counters for the status line and summary."""

    packets_sent: int = 0
    bytes_sent: int = 0
    dropped_packets: int = 0  # samples refused by the socket (no server / queue full)
    control_dropped: int = 0  # hello / heartbeats refused (e.g. before the connection is up)
    replies: int = 0
    bad_replies: int = 0
    link_downs: int = 0
    errors_from_server: int = 0
    emulated_lost_up: int = 0  # samples the link emulation dropped (they still count as sent: load)
    emulated_lost_down: int = 0
    samples_on_wire: int = 0  # sample messages the socket took (after any emulated delay)
    pred_replies: int = 0  # prediction replies read from the socket (before any emulated downlink loss)
    bad_reasons: dict[str, int] = field(default_factory=dict)
    epochs: int = 0  # server sessions seen (a restarted server or an expired session starts a new one)

    def bad(self, reason: str) -> None:
        self.bad_replies += 1
        self.bad_reasons[reason] = self.bad_reasons.get(reason, 0) + 1


class EpochMap:
    """Device-wide prediction numbers across server sessions.

    A server numbers its predictions from 1 in every session (``epoch`` in its welcome and replies); a restarted
    server or an expired session starts again. The device de-duplicates, acknowledges and measures latency by
    prediction number, so each epoch is placed after everything seen before it: device number = base + pred_seq.
    """

    KEEP = 8  # epochs remembered (a late reply of an old session still maps to its own numbers)

    def __init__(self) -> None:
        self.bases: dict[int, int] = {}
        self.current: int | None = None
        self.top = 0  # highest device-wide number handed out

    def enter(self, epoch: int) -> bool:
        """Make ``epoch`` current (new epochs start above everything seen); True if it is new."""
        new = epoch not in self.bases
        if new:
            # Right after the last number seen: replies are renumbered in socket order, and one connection keeps
            # order, so no reply of the old session can follow the new session's first message.
            self.bases[epoch] = self.top
            while len(self.bases) > self.KEEP:
                del self.bases[next(iter(self.bases))]
        self.current = epoch
        return new

    def to_device(self, epoch: int | None, pred_seq: int) -> int:
        base = self.bases.get(epoch, 0) if epoch is not None else self.bases.get(self.current, 0)  # type: ignore[arg-type]
        n = base + pred_seq
        self.top = max(self.top, n)
        return n

    def to_server(self, acked: int) -> int:
        """The device's acknowledgement in the current session's numbers (0 = nothing of this session yet)."""
        return max(0, acked - self.bases.get(self.current, 0)) if self.current is not None else acked  # type: ignore[arg-type]


class Uplink:
    """Owns the DEALER socket. ``poll_replies`` returns decoded predictions for the tracking monitor."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        hello: dict[str, Any] | None,
        wire: Wire | None = None,
        hwm: int = 1000,
        link: LinkSpec | None = None,
        security: Security | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.hello = hello
        self.wire = wire or Wire()
        self.sock = ctx.socket(zmq.DEALER)
        (security or Security.insecure()).client_socket(self.sock)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, 4 * MAX_MESSAGE_BYTES)  # a broken server cannot make us buffer more
        self.sock.setsockopt(zmq.IMMEDIATE, 1)
        self.sock.setsockopt(zmq.SNDHWM, hwm)
        self.sock.setsockopt(zmq.RCVHWM, hwm)
        self.sock.setsockopt(zmq.RECONNECT_IVL, 100)
        self.sock.setsockopt(zmq.RECONNECT_IVL_MAX, 1000)
        self.sock.connect(endpoint)
        self.stats = UplinkStats()
        self.rtts_us: deque[int] = deque(maxlen=4096)
        self.all_rtts_us = Int64Ring(200_000)  # summary RTTs: the newest 200k (1.6 MB, bounded and flat)
        self.link_up = False
        self._last_reply_us: int | None = None
        self._last_hb_us = 0
        self._hello_pending = True
        self.welcomed = False
        # Until the welcome says otherwise: a sample sent before it (a slow link delays the welcome by a round
        # trip) must carry what a derivative-using predictor needs, or the server fits that sample another way
        # than every later one (and than the simulator, which gives every send its derivatives).
        self.server_wants_derivatives = True
        self.server_predictor = ""
        self.server_offset_us = 0  # server clock - host clock
        self.epochs = EpochMap()
        self._best_rtt_us: int | None = None
        self._offset_age = 0
        # Link emulation: impaired messages wait in heaps until their release time (same LinkModel as the
        # simulator: one loss/jitter draw per sample uplink and per prediction reply downlink, in order).
        self.link = link or LinkSpec()
        self._model = None if self.link.is_perfect else LinkModel(self.link)
        self._reply_keys: dict[int, int] = {}  # sample device time -> link-emulation key of its send
        self._up_q: list[tuple[int, int, bool, list[bytes]]] = []  # (release, order, is_control, frames)
        self._down_q: list[tuple[int, int, dict[str, Any]]] = []
        self._tie = itertools.count()
        self.release_lateness_us: deque[int] = deque(maxlen=10_000)

    # -- sending -------------------------------------------------------------------------------------------
    def _send(self, frames: list[bytes], control: bool = False) -> bool:
        ok = self._send_frames(frames, control)
        if ok and not control:
            self.stats.samples_on_wire += 1
        return ok

    def _send_frames(self, frames: list[bytes], control: bool) -> bool:
        try:
            self.sock.send_multipart(frames, flags=zmq.NOBLOCK)
        except zmq.Again:
            if control:
                self.stats.control_dropped += 1
            else:
                self.stats.dropped_packets += 1
            return False
        self.stats.packets_sent += 1
        self.stats.bytes_sent += sum(len(f) for f in frames)
        return True

    def send_sample(self, seq: int, t_us: int, q: np.ndarray, horizon_us: int, now_us: int, k: float,
                    deriv: np.ndarray | None = None, acked: int | None = None) -> bool:
        """Send one sample (``acked``: the pred_seq up to which every prediction came back; the server repeats
        the newer ones in its reply)."""
        extra: dict[str, Any] = {} if deriv is None else {"d": deriv.ravel().tolist()}
        if acked is not None:
            extra["a"] = self.epochs.to_server(acked)
        frames = self.wire.encode("sample", seq=seq, t=t_us, q=q.tolist(), h=horizon_us, ts=now_us, k=k, **extra)
        if self._model is None:
            return self._send(frames)
        key = self._model.keys([t_us])
        self._reply_keys[t_us] = int(key[0])  # its reply meets the fate keyed alike
        while len(self._reply_keys) > 4096:
            del self._reply_keys[next(iter(self._reply_keys))]
        lost, delay = self._model.up.fates(key)
        if lost[0]:
            self.stats.emulated_lost_up += 1
            self.stats.packets_sent += 1  # it left the device; the emulated network lost it
            self.stats.bytes_sent += sum(len(f) for f in frames)
            return True
        heapq.heappush(self._up_q, (now_us + int(delay[0]), next(self._tie), False, frames))
        return True

    def set_hello(self, hello: dict[str, Any], now_us: int) -> None:
        """Announce the arm (joints are known once the first frame arrived) and say hello right away."""
        self.hello = hello
        self._hello_pending = True
        self._send_control(self.wire.encode("hello", ts=now_us, **hello), now_us)

    def _send_control(self, frames: list[bytes], now_us: int) -> None:
        """Hello/heartbeat: delayed by the constant link delay but never lost (they do not draw from the model)."""
        if self._model is None:
            self._send(frames, control=True)
        else:
            heapq.heappush(self._up_q, (now_us + int(self.link.delay_ms * 1000), next(self._tie), True, frames))

    def flush_due(self, now_us: int) -> None:
        while self._up_q and self._up_q[0][0] <= now_us:
            release, _, control, frames = heapq.heappop(self._up_q)
            self.release_lateness_us.append(now_us - release)
            self._send(frames, control=control)

    def in_flight(self) -> bool:
        """Samples still on their way: held by the link emulation, or on the wire with no reply read yet."""
        return (any(not control for _, _, control, _ in self._up_q) or bool(self._down_q)
                or self.stats.pred_replies < self.stats.samples_on_wire)

    def next_release_us(self) -> int | None:
        times = [q[0][0] for q in (self._up_q, self._down_q) if q]
        return min(times) if times else None

    def tick(self, now_us: int, status: Callable[[], dict[str, Any]] | None = None) -> None:
        """Heartbeat / hello / link-state bookkeeping; call every loop iteration.

        ``status`` is called only when a heartbeat goes out (5 Hz), not on every iteration of the 1 kHz loop.
        """
        if self._last_reply_us is not None and now_us - self._last_reply_us > LINK_TIMEOUT_US and self.link_up:
            self.link_up = False
            self.stats.link_downs += 1
            self._hello_pending = True
        if now_us - self._last_hb_us >= HEARTBEAT_US:
            if self._hello_pending and self.hello is not None:
                self._send_control(self.wire.encode("hello", ts=now_us, **self.hello), now_us)
            self._send_control(self.wire.encode("hb", ts=now_us, stats=status() if status else {}), now_us)
            self._last_hb_us = now_us
        self.flush_due(now_us)

    # -- receiving -----------------------------------------------------------------------------------------
    def poll_replies(self, now_us: int) -> list[dict[str, Any]]:
        """Drain the socket; returns the ``pred`` messages (RTT/offset/link state handled here)."""
        preds: list[dict[str, Any]] = []
        while True:
            try:
                frames = self.sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = self.wire.decode(frames)
            except ProtocolError as exc:
                self.stats.bad(exc.reason)
                continue
            if msg["type"] not in _DEVICE_BOUND:
                self.stats.bad("unexpected")
                continue
            self._renumber(msg)
            if msg["type"] == "pred":
                self.stats.pred_replies += 1
            if self._model is None:
                self._deliver(msg, now_us, preds)
            elif msg["type"] == "pred":
                lost, delay = self._model.down.fates([self._reply_keys.get(reply_t0(msg), -1)])
                if lost[0]:
                    self.stats.emulated_lost_down += 1
                else:
                    heapq.heappush(self._down_q, (now_us + int(delay[0]), next(self._tie), msg))
            else:
                heapq.heappush(self._down_q, (now_us + int(self.link.delay_ms * 1000), next(self._tie), msg))
        while self._down_q and self._down_q[0][0] <= now_us:
            self._deliver(heapq.heappop(self._down_q)[2], now_us, preds)
        return preds

    def _renumber(self, msg: dict[str, Any]) -> None:
        """Server prediction numbers -> device-wide ones (in socket order, before any emulated delay)."""
        epoch = msg.get("epoch")
        if msg["type"] == "welcome" and epoch is not None:
            if self.epochs.enter(epoch):
                self.stats.epochs += 1
        elif msg["type"] == "pred":
            if epoch is not None and epoch != self.epochs.current and epoch not in self.epochs.bases:
                # A reply of a session whose welcome was lost or is late (the hello crossed a restart).
                self.epochs.enter(epoch)
                self.stats.epochs += 1
            msg["preds"] = [[self.epochs.to_device(epoch, p[0]), *p[1:]] for p in msg["preds"]]

    def _deliver(self, msg: dict[str, Any], now_us: int, preds: list[dict[str, Any]]) -> None:
        """A reply reaches the device (after emulated delay, if any)."""
        self.stats.replies += 1
        self._last_reply_us = now_us
        if not self.link_up:
            self.link_up = True
        kind = msg["type"]
        if kind == "pred":
            self._rtt(now_us, msg["ts"], None)
            preds.append(msg)
        elif kind == "pong":
            self._rtt(now_us, msg["ts"], msg["srv_us"], msg.get("rx"))
        elif kind == "welcome":
            self._hello_pending = False
            self.welcomed = True
            self.server_wants_derivatives = bool(msg.get("derivatives", False))
            self.server_predictor = str(msg.get("predictor", ""))
        elif kind == "error":
            self.stats.errors_from_server += 1
            if msg["code"] == "no-session":
                self._hello_pending = True

    def _rtt(self, now_us: int, ts: int, srv_us: int | None, srv_rx: int | None = None) -> None:
        rtt = now_us - ts
        if rtt < 0:
            return
        self.rtts_us.append(rtt)
        self.all_rtts_us.append(rtt)
        if srv_us is not None:
            # NTP: offset = ((t2 - t1) + (t3 - t4)) / 2 with the server's receive (t2) and send (t3) stamps, so
            # the server's processing time does not bias it; trust the exchange with the least network delay
            # and forget it slowly so drift is followed.
            rx = srv_us if srv_rx is None else srv_rx
            delay = rtt - (srv_us - rx)
            self._offset_age += 1
            if self._best_rtt_us is None or delay <= self._best_rtt_us or self._offset_age > 50:
                self._best_rtt_us = delay
                self._offset_age = 0
                self.server_offset_us = ((rx - ts) + (srv_us - now_us)) // 2

    def rtt_percentiles_ms(self, recent: bool = True) -> tuple[float, float]:
        if not (self.rtts_us if recent else self.all_rtts_us):
            return float("nan"), float("nan")
        arr = (np.fromiter(self.rtts_us, dtype=np.float64) if recent
               else self.all_rtts_us.values().astype(np.float64))
        return float(np.percentile(arr, 50) / 1000), float(np.percentile(arr, 99) / 1000)

    def close(self, linger_ms: int = BYE_LINGER_MS) -> None:
        """Say bye (the server ends the session at once instead of after its idle timeout) and close. The bye, and
        the samples still queued ahead of it, get up to ``linger_ms`` to leave: with linger 0 it was usually
        discarded still queued; past the budget ZeroMQ discards what is left, so a shutdown stays bounded."""
        sent = False
        try:
            if self.welcomed:
                sent = self._send(self.wire.encode("bye"), control=True)
        finally:
            self.sock.close(linger=linger_ms if sent else 0)
