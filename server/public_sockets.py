"""The server's public face: the devices' ROUTER and the viewers' PUB, CURVE-authenticated, with refused
handshakes counted and the authorised keys reloaded while running.

Shared by the single-process server (``server.twin_server``) and the front of ``--workers N``
(``server.front``): whichever process holds these sockets holds the keys; workers never see a client.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from twin.schema import MAX_MESSAGE_BYTES
from twin.security import Security

# The transport refuses (disconnects) anything this big before it is buffered; below it Wire counts "oversize".
MAX_TRANSPORT_BYTES = 4 * MAX_MESSAGE_BYTES
_HANDSHAKE_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                     | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL)
_HANDSHAKE_REASON: dict[int, str] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "handshake-refused",  # a key not in the authorised dir
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "handshake-protocol",  # plaintext vs CURVE, garbage
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "handshake-failed"}
_MORE, _LAST = int(zmq.SNDMORE | zmq.NOBLOCK), int(zmq.NOBLOCK)
# Messages the ROUTER queues per connected peer before it stops reading that peer's TCP stream (libzmq's
# default, made explicit). Each small message that arrived in a read of its own pins an 8 KB read buffer
# (`python bench/bench_router_backlog.py`: 8.3-8.4 KB per spaced message, 0.5-0.6 in a burst), so a
# server that falls behind holds up to ~8 MB per peer (2 GB at MAX_SESSIONS): bounded, not small. A smaller
# bound (100) was tried and refused: a device that closes while the server is behind then loses what the ROUTER
# had not read yet, its last samples and its bye (tests/test_server.py::test_bye_is_delivered_and_logged failed
# 3 runs of 4; likely the closing peer's reset, as it leaves replies unread, discarding the kernel's buffer).
ROUTER_RCVHWM = 1000


class PublicSockets:
    """ROUTER (bound at ``bind``) and optional PUB (``pub``) on a context of their own, CURVE per ``security``."""

    def __init__(self, bind: str, pub: str | None, security: Security | None, log: Callable[[str], None]) -> None:
        self.log = log
        self.ctx: zmq.Context[Any] = zmq.Context()
        # CURVE: the authenticator (ZAP handler thread) admits only the authorised client keys, on both sockets.
        self.security = security or Security.insecure()
        self.auth = self.security.start_authenticator(self.ctx)
        self.router: zmq.Socket[bytes] | None = None
        self.pub_sock: zmq.Socket[bytes] | None = None
        self.pub_endpoint: str | None = None
        self._monitors: list[zmq.Socket[bytes]] = []
        self._watched: list[zmq.Socket[bytes]] = []
        try:
            self.router = self.ctx.socket(zmq.ROUTER)
            self.router.setsockopt(zmq.LINGER, 0)
            self.router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self.router.setsockopt(zmq.MAXMSGSIZE, MAX_TRANSPORT_BYTES)
            self.router.setsockopt(zmq.RCVHWM, ROUTER_RCVHWM)
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
            # Refused handshakes (an unknown key, a plaintext client against CURVE, garbage) never reach the loop
            # as messages: the sockets' monitors report them so they are counted like every other drop.
            self._watched = [s for s in (self.router, self.pub_sock) if s is not None]
            self._monitors = [s.get_monitor_socket(_HANDSHAKE_EVENTS) for s in self._watched]
        except BaseException:
            self.close()
            raise
        self._auth_stamp = self.security.authorized_stamp()
        self._next_reload = time.monotonic() + 1.0

    def register(self, poller: zmq.Poller) -> None:
        assert self.router is not None
        poller.register(self.router, zmq.POLLIN)
        for mon in self._monitors:
            poller.register(mon, zmq.POLLIN)

    def housekeeping(self, ready: dict[Any, int], drop: Callable[[str], None]) -> None:
        """After each poll: count refused handshakes, re-read the authorised keys once a second."""
        if any(mon in ready for mon in self._monitors):
            from zmq.utils.monitor import recv_monitor_message

            for mon in self._monitors:
                while mon.poll(0):
                    event = recv_monitor_message(mon)["event"]
                    drop(_HANDSHAKE_REASON.get(int(event), "handshake-failed"))
        if self.auth is not None and time.monotonic() >= self._next_reload:
            self._next_reload = time.monotonic() + 1.0
            stamp = self.security.authorized_stamp()
            if stamp != self._auth_stamp:  # a key added or removed counts for new connections within 1 s
                self._auth_stamp = stamp
                self.security.reload(self.auth)
                self.log(f"authorised client keys reloaded: {stamp[1]} key(s) in {self.security.authorized}")

    def reply(self, ident: bytes, frames: list[bytes]) -> bool:
        assert self.router is not None
        send = self.router.send
        try:  # frame by frame with plain int flags: send_multipart's per-frame flag arithmetic costs µs per reply
            send(ident, _MORE)
            for f in frames[:-1]:
                send(f, _MORE)
            send(frames[-1], _LAST)
        except zmq.Again:  # only the first frame can meet the high-water mark: nothing half-sent
            return False
        return True

    def publish(self, dev: str | bytes, body: bytes) -> bool:
        if self.pub_sock is None:
            return True
        try:
            self.pub_sock.send(dev.encode() if isinstance(dev, str) else dev, _MORE)
            self.pub_sock.send(body, _LAST)
        except zmq.Again:
            return False
        return True

    def close(self) -> None:
        for mon, sock in zip(self._monitors, self._watched, strict=False):
            sock.disable_monitor()
            mon.close(linger=0)
        for public in (self.router, self.pub_sock):
            if public is not None:
                public.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
