"""Twin server on loopback TCP: sessions per device, horizon honoured, bad input counted and dropped."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from server.twin_server import TwinServer
from twin.schema import Wire, prediction_from_wire


@pytest.fixture
def server() -> Iterator[TwinServer]:
    srv = TwinServer("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", "linear", key=None)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 20}, name="test-server")
    th.start()
    yield srv
    srv.stop()
    th.join(timeout=10)


class Client:
    """A DEALER speaking the wire format (or raw bytes) to the server."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, wire: Wire | None = None) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.wire = wire or Wire()

    def send(self, kind: str, **fields: Any) -> None:
        self.sock.send_multipart(self.wire.encode(kind, **fields))

    def recv(self, timeout_ms: int = 5000) -> dict[str, Any]:
        assert self.sock.poll(timeout_ms), "no reply from the server"
        return self.wire.decode(self.sock.recv_multipart())

    def hello(self, dev: str, joints: int) -> dict[str, Any]:
        self.send("hello", dev=dev, joints=[f"j{i}" for i in range(joints)], rate_hz=1000.0, urdf="u", policy="p",
                  ts=0)
        return self.recv()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.term()


def _wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        threading.Event().wait(0.01)


def test_predictions_per_device_and_horizon(server: TwinServer, ctx: zmq.Context[Any]) -> None:
    a, b = Client(ctx, server.endpoint), Client(ctx, server.endpoint)
    try:
        assert a.hello("A", 2)["type"] == "welcome"
        assert b.hello("B", 3)["type"] == "welcome"
        a.send("sample", seq=1, t=0, q=[0.0, 0.0], h=10_000, ts=1)
        a.recv()
        a.send("sample", seq=2, t=10_000, q=[0.01, -0.02], h=10_000, ts=2)
        rep = a.recv()
        assert rep["type"] == "pred" and rep["seq"] == 2
        _, pred = prediction_from_wire(rep["preds"][-1], 2)
        np.testing.assert_allclose(pred.coeffs[1], [1.0, -2.0])  # rad/s from the two samples
        np.testing.assert_allclose(pred.evaluate(10_000 + 50_000), [0.02, -0.04])  # frozen at t0 + H
        b.send("sample", seq=1, t=5, q=[1.0, 2.0, 3.0], h=0, ts=3)
        rep_b = b.recv()
        _, pred_b = prediction_from_wire(rep_b["preds"][-1], 3)
        assert pred_b.t0_us == 5
        assert {"A", "B"} == {s.device_id for s in server.sessions.values()}
        # A sample older than what the twin shows (reordered by the network) is ignored, not displayed.
        a.send("sample", seq=3, t=5_000, q=[9.0, 9.0], h=0, ts=4)
        _wait_for(lambda: any(s.stale == 1 for s in server.sessions.values()))
    finally:
        a.sock.close()
        b.sock.close()


def test_bad_messages_are_counted_and_dropped(server: TwinServer, ctx: zmq.Context[Any]) -> None:
    c = Client(ctx, server.endpoint)
    try:
        c.sock.send_multipart([b"\xc1garbage"])
        c.sock.send_multipart([msgpack.packb({"v": 99, "type": "hb", "ts": 1})])
        c.sock.send_multipart([msgpack.packb({"v": 1, "type": "launch-missiles"})])
        c.sock.send_multipart([msgpack.packb({"v": 1, "type": "hb", "ts": "soon"})])
        c.sock.send_multipart([b"x" * 70_000])
        c.send("sample", seq=1, t=0, q=[0.0], h=0, ts=1)  # no hello yet
        assert c.recv()["code"] == "no-session"
        c.hello("C", 2)
        c.send("sample", seq=2, t=1, q=[0.0, 1.0, 2.0], h=0, ts=2)  # wrong joint count
        assert c.recv()["code"] == "invalid"
        c.send("hb", ts=5)
        assert c.recv()["type"] == "pong"  # still serving
        d = server.stats.dropped
        assert d.get("malformed", 0) >= 2 and d.get("version") == 1 and d.get("unknown") == 1
        assert d.get("oversize") == 1 and d.get("no-session") == 1 and d.get("invalid") == 1
    finally:
        c.sock.close()


def test_unauthorised_messages_are_dropped(ctx: zmq.Context[Any]) -> None:
    srv = TwinServer("tcp://127.0.0.1:*", None, "linear", key=b"secret")
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 20})
    th.start()
    good, bad = Client(ctx, srv.endpoint, Wire(b"secret")), Client(ctx, srv.endpoint, Wire(b"wrong"))
    try:
        bad.send("hb", ts=1)
        assert good.hello("G", 1)["type"] == "welcome"
        _wait_for(lambda: srv.stats.dropped.get("auth", 0) == 1)
        assert not bad.sock.poll(100)
    finally:
        good.sock.close()
        bad.sock.close()
        srv.stop()
        th.join(timeout=10)


def test_twin_states_are_published(server: TwinServer, ctx: zmq.Context[Any]) -> None:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    assert server.pub_endpoint is not None
    sub.connect(server.pub_endpoint)
    c = Client(ctx, server.endpoint)
    try:
        c.hello("P", 1)
        deadline = time.monotonic() + 5
        seq = 0
        while not sub.poll(20):  # PUB drops until the subscription has propagated: keep sending
            assert time.monotonic() < deadline
            seq += 1
            c.send("sample", seq=seq, t=seq * 1000, q=[0.1], h=0, ts=seq)
        topic, body = sub.recv_multipart()
        state = msgpack.unpackb(body)
        assert topic == b"P" and state["type"] == "twin" and state["dev"] == "P"
    finally:
        c.sock.close()
        sub.close()
