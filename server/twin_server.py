"""The twin server: ROUTER for devices, one session each, predictions back, twin states on PUB.

Single-threaded event loop on a ZeroMQ poller, in one process: ``server.public_sockets`` holds the sockets,
``server.sessions`` the per-device state and the protocol. Anything malformed, unknown or unauthorised is counted
and dropped. ``armtwin server --workers N`` spreads the sessions over N processes instead (``server.front``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from server.public_sockets import MAX_TRANSPORT_BYTES, PublicSockets
from server.sessions import (
    BATCH,
    EVENT_LINES,
    MAX_SESSIONS,
    SESSION_IDLE_S,
    DeviceSession,
    ServerStats,
    SessionCore,
    UpperTier,
    clean_status,
    new_epoch,
    reply_preds,
    server_us,
    status_line,
    summary_lines,
)
from twin.predictors import DEFAULT_PREDICTOR
from twin.security import Security

__all__ = ["EVENT_LINES", "MAX_SESSIONS", "MAX_TRANSPORT_BYTES", "SESSION_IDLE_S", "DeviceSession", "ServerStats",
           "TwinServer", "clean_status", "new_epoch", "reply_preds", "server_us"]


class TwinServer:
    """Binds ROUTER (devices) and PUB (viewers); ``serve_forever`` until ``stop``. ``tier``: an upper tier
    (Zenoh) that also gets every twin state and status change."""

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
        tier: UpperTier | None = None,
    ) -> None:
        # ``log`` gets one line per event (a device connects, leaves or expires) and a status line every
        # ``status_every_s`` while devices are connected; None = quiet (tests, embedding).
        self.log = log or (lambda line: None)
        self.status_every_s = status_every_s
        self.tier = tier
        self.core = SessionCore(self._send_reply, self._send_twin, tier.status if tier is not None else None,
                                predictor, key, self.log, clock, max_sessions)
        self.net = PublicSockets(bind, pub, security, self.log)
        self.endpoint, self.pub_endpoint = self.net.endpoint, self.net.pub_endpoint
        self._stop = threading.Event()

    # The session state, as tests and embedders read it.
    @property
    def sessions(self) -> dict[bytes, DeviceSession]:
        return self.core.sessions

    @property
    def stats(self) -> ServerStats:
        return self.core.stats

    @property
    def max_sessions(self) -> int:
        return self.core.max_sessions

    @property
    def predictor_name(self) -> str:
        return self.core.predictor_name

    def _send_reply(self, ident: bytes, frames: list[bytes]) -> bool:
        return self.net.reply(ident, frames)

    def _send_twin(self, dev: str, body: bytes) -> bool:
        if self.tier is not None:
            self.tier.twin(dev, body)
        return self.net.publish(dev, body)

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self, poll_ms: int = 100) -> None:
        poller = zmq.Poller()
        self.net.register(poller)
        router = self.net.router
        assert router is not None
        clock = self.core.clock
        try:
            self._status_at, self._status_samples = clock(), 0
            while not self._stop.is_set():
                ready = dict(poller.poll(poll_ms))
                if router in ready:
                    self._drain(router)
                self.net.housekeeping(ready, self.core.stats.drop)
                self.core.expire()
                self._status(clock())
        finally:
            self.close()

    def _drain(self, router: zmq.Socket[bytes]) -> None:
        """Serve what the ROUTER socket holds, a batch at a time (trusted sessions first: ``receive_batch``, which
        looks at the socket again between slices of the rest)."""
        while True:
            batch = self._read(router)
            self.core.receive_batch(batch, more=lambda: self._read(router))
            if len(batch) < BATCH:
                return

    @staticmethod
    def _read(router: zmq.Socket[bytes]) -> list[tuple[list[bytes], int]]:
        """Up to BATCH messages that are waiting, each stamped when read (server µs)."""
        batch: list[tuple[list[bytes], int]] = []
        while len(batch) < BATCH:
            try:
                frames = router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            batch.append((frames, server_us()))
        return batch

    def close(self) -> None:
        self.net.close()
        if self.tier is not None:
            self.tier.close()

    def _status(self, now: float) -> None:
        """Once every ``status_every_s`` while devices are connected: devices, samples/s, drops by reason."""
        dt = now - self._status_at
        if dt < self.status_every_s:
            return
        core = self.core
        rate = (core.stats.samples - self._status_samples) / dt
        self._status_at, self._status_samples = now, core.stats.samples
        if core.sessions or rate or core.events_suppressed:
            self.log(status_line(len(core.sessions), rate, core.stats.dropped, core.events_suppressed))
        core.events_left, core.events_suppressed = EVENT_LINES, 0

    def summary_lines(self) -> list[str]:
        """The end-of-run summary, one fact per line."""
        return summary_lines(self.core.stats, self.core.session_rows())

    def describe(self) -> dict[str, Any]:
        return {"messages": self.stats.messages, "dropped": dict(self.stats.dropped),
                "sessions": {r["dev"]: {"samples": r["samples"], "stale": r["stale"]}
                             for r in self.core.session_rows()},
                "sessions_opened": self.stats.sessions_opened}
