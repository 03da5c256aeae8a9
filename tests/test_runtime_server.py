"""server.twin_server session lifecycle, in-process: the server runs in a thread on loopback TCP (random port) and
the test speaks the wire format through DEALER sockets. Session expiry runs on an injected clock."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import zmq

from server.twin_server import SESSION_IDLE_S, TwinServer, reply_preds
from twin.constants import REDUNDANCY, REPEAT_MAX
from twin.schema import Wire, prediction_from_wire
from twin.security import Security

TIMEOUT_MS = 5000


class Device:
    """One device's DEALER (its own ROUTER identity, so its own session)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, security: Security | None = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        if security is not None:
            security.client_socket(self.sock)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.wire = Wire()
        self.joints = 0

    def send(self, kind: str, **fields: Any) -> None:
        self.sock.send_multipart(self.wire.encode(kind, **fields))

    def recv(self) -> dict[str, Any]:
        assert self.sock.poll(TIMEOUT_MS), "no reply from the server"
        return self.wire.decode(self.sock.recv_multipart())

    def hello(self, dev: str = "arm", joints: int = 2) -> dict[str, Any]:
        self.joints = joints
        self.send("hello", dev=dev, joints=[f"j{i}" for i in range(joints)], rate_hz=1000.0, urdf="u.urdf",
                  policy="static:k=1", ts=0)
        return self.recv()

    def sample(self, seq: int, t_us: int, q: list[float], **extra: Any) -> dict[str, Any]:
        self.send("sample", seq=seq, t=t_us, q=q, h=10_000, ts=seq, **extra)
        return self.recv()


def pred_seqs(reply: dict[str, Any]) -> list[int]:
    assert reply["type"] == "pred", reply
    return [int(p[0]) for p in reply["preds"]]


class FakeClock:
    """The server's session clock (seconds). ``advance`` returns once the server has read the new time three
    times: the loop reads it at the start of every ``_expire`` pass and a message handler reads it for
    ``last_seen``, so with at most one message still being handled, a full expiry pass ran on the new time."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self._cond = threading.Condition()
        self._reads = 0

    def __call__(self) -> float:
        with self._cond:
            self._reads += 1
            self._cond.notify_all()
            return self.now

    def advance(self, seconds: float) -> None:
        with self._cond:
            self.now += seconds
            start = self._reads
            assert self._cond.wait_for(lambda: self._reads >= start + 3, TIMEOUT_MS / 1000), "server loop stuck"


@pytest.fixture
def server(start_server: Callable[..., TwinServer]) -> TwinServer:
    return start_server()


@pytest.fixture
def devices(ctx: zmq.Context[Any], server: TwinServer,
            device_security: Security) -> Iterator[Callable[[], Device]]:
    made: list[Device] = []

    def make() -> Device:
        made.append(Device(ctx, server.endpoint, device_security))
        return made[-1]

    yield make
    for d in made:
        d.sock.close(linger=0)


def test_hello_is_welcomed(server: TwinServer, devices: Callable[[], Device]) -> None:
    msg = devices().hello("arm-7", 3)
    assert msg["type"] == "welcome" and msg["dev"] == "arm-7"
    assert msg["predictor"] == "linear" and msg["derivatives"] is False and isinstance(msg["srv_us"], int)
    assert server.stats.sessions_opened == 1
    (sess,) = server.sessions.values()
    assert sess.device_id == "arm-7" and sess.joints == ["j0", "j1", "j2"] and sess.urdf == "u.urdf"


def test_a_repeated_identical_hello_keeps_the_predictor_state(server: TwinServer,
                                                              devices: Callable[[], Device]) -> None:
    d = devices()
    d.hello()
    assert pred_seqs(d.sample(1, 0, [0.0, 0.0]))[-1] == 1
    assert pred_seqs(d.sample(2, 10_000, [0.01, -0.02]))[-1] == 2
    assert d.hello()["type"] == "welcome"  # e.g. the welcome crossed a heartbeat
    rep = d.sample(3, 20_000, [0.02, -0.04])
    assert pred_seqs(rep) == [1, 2, 3]  # numbering goes on
    _, p = prediction_from_wire(rep["preds"][-1], 2)
    np.testing.assert_allclose(p.coeffs[1], [1.0, -2.0])  # the velocity still uses the sample before the hello
    assert server.stats.sessions_opened == 1 and len(server.sessions) == 1


def test_a_hello_with_other_joints_or_device_id_opens_a_new_session(server: TwinServer,
                                                                    devices: Callable[[], Device]) -> None:
    d = devices()
    d.hello("arm", 2)
    d.sample(1, 0, [0.0, 0.0])
    d.sample(2, 10_000, [0.01, 0.01])
    d.hello("arm", 3)  # the arm was rebuilt with another joint
    rep = d.sample(3, 20_000, [0.1, 0.2, 0.3])
    assert pred_seqs(rep) == [1]  # a fresh session: numbering restarts...
    _, p = prediction_from_wire(rep["preds"][-1], 3)
    np.testing.assert_allclose(p.coeffs[1], [0.0, 0.0, 0.0])  # ...and the predictor has no history
    assert d.sample(4, 30_000, [0.0, 0.0])["code"] == "joint-count"  # the old joint count no longer fits
    d.hello("other-arm", 3)  # same socket, same joints, another device id
    assert pred_seqs(d.sample(5, 40_000, [0.0, 0.0, 0.0])) == [1]
    assert server.stats.sessions_opened == 3 and len(server.sessions) == 1


def test_sessions_are_per_device(server: TwinServer, devices: Callable[[], Device]) -> None:
    a, b = devices(), devices()
    a.hello("a", 1)
    b.hello("b", 1)
    for i in range(3):
        a.sample(i, 1000 * i, [0.0])
    assert pred_seqs(b.sample(0, 0, [0.0])) == [1]
    assert {s.device_id: s.samples for s in server.sessions.values()} == {"a": 3, "b": 1}


def test_bye_removes_the_session(server: TwinServer, devices: Callable[[], Device]) -> None:
    d, other = devices(), devices()
    d.hello("leaving", 1)
    other.hello("staying", 1)
    d.sample(1, 0, [0.0])
    d.send("bye")  # no answer to a bye; the next message shows it was handled (one connection keeps order)
    assert d.sample(2, 1000, [0.0])["code"] == "no-session"
    assert [s.device_id for s in server.sessions.values()] == ["staying"]
    d.hello("leaving", 1)
    assert pred_seqs(d.sample(3, 2000, [0.0])) == [1]  # a new session from scratch
    assert server.stats.sessions_opened == 3


def test_samples_without_hello_get_no_session_and_are_counted(server: TwinServer,
                                                              devices: Callable[[], Device]) -> None:
    d = devices()
    for i in range(3):
        err = d.sample(i, 1000 * i, [0.0])
        assert err["type"] == "error" and err["code"] == "no-session"
    assert server.stats.dropped == {"no-session": 3}
    # A heartbeat without a session is answered (clock sync works) and tells the device to say hello; it is
    # not a dropped sample.
    d.send("hb", ts=5)
    pong, err = d.recv(), d.recv()
    assert pong["type"] == "pong" and pong["ts"] == 5 and err["code"] == "no-session"
    assert server.stats.dropped == {"no-session": 3} and server.sessions == {}


def test_a_reply_carries_the_last_redundancy_predictions(server: TwinServer, devices: Callable[[], Device]) -> None:
    d = devices()
    d.hello("r", 1)
    replies = [d.sample(i, 1000 * i, [0.001 * i]) for i in range(1, 7)]
    for n, rep in enumerate(replies, start=1):
        assert pred_seqs(rep) == list(range(max(1, n - REDUNDANCY + 1), n + 1))
        assert rep["seq"] == n and rep["ts"] == n
    # Each repeated prediction is the one first sent for its sample, with its own server receive time.
    first = {int(r["preds"][-1][0]): r["preds"][-1] for r in replies}
    for item in replies[-1]["preds"]:
        assert item == first[int(item[0])]
        assert item[5] <= replies[-1]["rx"]


def test_a_reply_repeats_every_prediction_newer_than_the_ack(server: TwinServer,
                                                            devices: Callable[[], Device]) -> None:
    d = devices()
    d.hello("a", 1)
    replies = [d.sample(i, 1000 * i, [0.0], a=0) for i in range(1, 21)]  # the device has acknowledged nothing
    for n, rep in enumerate(replies, start=1):
        assert pred_seqs(rep) == list(range(max(1, n - REPEAT_MAX + 1), n + 1))  # all, at most REPEAT_MAX
    assert pred_seqs(d.sample(21, 21_000, [0.0], a=17)) == [18, 19, 20, 21]
    # Fewer than REDUNDANCY newer than the ack: the last REDUNDANCY still come.
    assert pred_seqs(d.sample(22, 22_000, [0.0], a=21)) == [20, 21, 22]
    assert pred_seqs(d.sample(23, 23_000, [0.0], a=23)) == [21, 22, 23]


def test_reply_preds_selection() -> None:
    recent: deque[list[Any]] = deque(([s] for s in range(5, 5 + REPEAT_MAX)), maxlen=REPEAT_MAX)
    newest = 4 + REPEAT_MAX
    tail = list(range(newest - REDUNDANCY + 1, newest + 1))
    assert [p[0] for p in reply_preds(recent, None)] == tail
    assert [p[0] for p in reply_preds(recent, 0)] == list(range(5, newest + 1))
    assert [p[0] for p in reply_preds(recent, newest - 5)] == list(range(newest - 4, newest + 1))
    assert [p[0] for p in reply_preds(recent, newest - REDUNDANCY)] == tail
    assert [p[0] for p in reply_preds(recent, newest - 1)] == tail
    assert [p[0] for p in reply_preds(recent, newest + 10)] == tail
    assert reply_preds(deque(maxlen=REPEAT_MAX), 0) == []


def test_an_idle_session_expires(start_server: Callable[..., TwinServer], ctx: zmq.Context[Any],
                                 device_security: Security) -> None:
    clock = FakeClock()
    srv = start_server(clock=clock)
    idle, busy = Device(ctx, srv.endpoint, device_security), Device(ctx, srv.endpoint, device_security)
    try:
        idle.hello("idle", 1)
        busy.hello("busy", 1)
        clock.advance(SESSION_IDLE_S)  # exactly the idle limit: still alive
        assert sorted(s.device_id for s in srv.sessions.values()) == ["busy", "idle"]
        busy.send("hb", ts=1)  # a heartbeat keeps a session alive
        assert busy.recv()["type"] == "pong"
        clock.advance(0.5)
        assert [s.device_id for s in srv.sessions.values()] == ["busy"]
        assert idle.sample(1, 0, [0.0])["code"] == "no-session"
        assert pred_seqs(busy.sample(1, 0, [0.0])) == [1]
        assert srv.stats.dropped == {"no-session": 1}
    finally:
        idle.sock.close(linger=0)
        busy.sock.close(linger=0)


def test_a_new_session_has_a_new_epoch(start_server: Callable[..., TwinServer], ctx: zmq.Context[Any],
                                       device_security: Security) -> None:
    """Session expiry (like a server restart) numbers predictions from 1 again: the welcome and every reply
    carry the session's epoch so the device can tell the new 1 from the old one (issue 10, defect 3)."""
    clock = FakeClock()
    srv = start_server(clock=clock)
    d = Device(ctx, srv.endpoint, device_security)
    try:
        first = d.hello("e", 1)
        again = d.hello("e", 1)  # a repeated hello keeps the session, so its epoch
        rep = d.sample(1, 0, [0.0])
        assert first["epoch"] == again["epoch"] == rep["epoch"] and pred_seqs(rep) == [1]
        clock.advance(SESSION_IDLE_S + 1)
        assert d.sample(2, 1000, [0.0])["code"] == "no-session"
        second = d.hello("e", 1)
        rep = d.sample(3, 2000, [0.0])
        assert second["epoch"] != first["epoch"] and rep["epoch"] == second["epoch"] and pred_seqs(rep) == [1]
    finally:
        d.sock.close(linger=0)
