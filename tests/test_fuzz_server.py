"""Hostile input, fast version of ``python -m bench.fuzz_server`` (issue 10, item 3), plus property tests.

A running server (CURVE) takes a few thousand generated hostile messages from authorised sockets, dozens of
short-lived identities, unknown keys and plaintext clients, while one real device streams through it from the mock
arm: the server survives, every message is accepted or dropped by reason, the session cap holds, and the device
keeps 1 kHz with its load unchanged. Hypothesis drives ``Wire.decode`` and the device's reply path directly.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.fuzz_messages import WIRE, generator, hostile_reply
from device.uplink import Uplink
from server.twin_server import TwinServer
from tests.conftest import Proc
from twin.schema import ProtocolError, Wire
from twin.security import Security

MESSAGES = 3000
IDENTITIES = 60


@pytest.fixture
def running_server(server_security: Security) -> Iterator[tuple[TwinServer, threading.Thread]]:
    srv = TwinServer("tcp://127.0.0.1:*", None, "linear", security=server_security, max_sessions=32)
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 10}, name="fuzzed-server")
    th.start()
    yield srv, th
    srv.stop()
    th.join(timeout=10)


def _socket(ctx: zmq.Context[Any], endpoint: str, sec: Security, linger: int = 0) -> zmq.Socket[bytes]:
    s: zmq.Socket[bytes] = ctx.socket(zmq.DEALER)
    sec.client_socket(s)
    s.setsockopt(zmq.LINGER, linger)
    s.setsockopt(zmq.SNDTIMEO, 5000)
    s.connect(endpoint)
    return s


def test_fuzzed_server_keeps_serving_a_real_device(running_server: tuple[TwinServer, threading.Thread],
                                                   procs: list[Proc], session_file: Path, tmp_path: Path,
                                                   ctx: zmq.Context[Any], device_security: Security) -> None:
    srv, thread = running_server
    arm = Proc("mock-arm", str(session_file), "--bounce")
    procs.append(arm)
    summary = tmp_path / "dev.json"
    dev = Proc("device", "--port", arm.value("port"), "--server", srv.endpoint, "--policy", "static:k=10,h=20",
               "--duration", "3", "--summary-json", str(summary))
    procs.append(dev)
    dev.wait_line("rate=", contains="link=up")
    stranger = Security(curve=True, server_public=device_security.server_public,
                        **dict(zip(("public", "secret"), zmq.curve_keypair(), strict=True)))
    pool = [_socket(ctx, srv.endpoint, device_security) for _ in range(4)]
    draw = generator(seed=1)
    try:
        for i in range(MESSAGES):
            pool[i % len(pool)].send_multipart(draw()[1])
            if i % (MESSAGES // IDENTITIES) == 0:  # a new identity: hello and a sample, then gone
                s = _socket(ctx, srv.endpoint, device_security, linger=1000)
                s.send_multipart(WIRE.encode("hello", dev=f"id{i}", joints=["a"], rate_hz=1.0, urdf="u", policy="p"))
                s.send_multipart(WIRE.encode("sample", seq=1, t=0, q=[0.0], h=0, ts=0))
                s.close()
        for sec, reasons in ((stranger, ("handshake-refused",)),
                             (Security.insecure(), ("handshake-protocol", "handshake-failed"))):
            s = _socket(ctx, srv.endpoint, sec)
            s.send_multipart(WIRE.encode("hb", ts=1))
            deadline = time.monotonic() + 10
            while not any(srv.stats.dropped.get(r) for r in reasons):  # refused at the handshake (monitor)
                assert time.monotonic() < deadline, f"no {reasons}: {srv.stats.dropped}"
                threading.Event().wait(0.01)
            s.close()
        big = _socket(ctx, srv.endpoint, device_security, linger=1000)
        big.send_multipart([b"\xc5" + b"x" * (1 << 20)])  # over ZMQ_MAXMSGSIZE: the transport cuts it off
        big.close()
        code, _out, err = dev.finish(timeout=60)
    finally:
        for s in pool:
            s.close(linger=0)
    assert code == 0, err
    assert thread.is_alive(), "the server loop died"
    st_ = srv.stats
    handshake = sum(v for k, v in st_.dropped.items() if k.startswith("handshake"))
    assert st_.messages == sum(st_.accepted.values()) + st_.drops - handshake, (st_.accepted, st_.dropped)
    for reason in ("malformed", "bad-field", "unknown", "version", "oversize", "non-finite", "out-of-range",
                   "joint-count", "session-cap"):
        assert st_.dropped.get(reason, 0) > 0, f"no {reason} drop: the generator misses a category"
    assert "handler-error" not in st_.dropped
    assert len(srv.sessions) <= srv.max_sessions
    s = json.loads(summary.read_text())
    assert s["frames_lost"] == 0 and s["samples_scored"] > 0
    assert abs(s["load"] - 0.1) < 0.002  # static k=10: the fuzz changes no send decision
    assert "arm0" in {x.device_id for x in srv.sessions.values()} or st_.sessions_closed >= 1


# -- property tests -------------------------------------------------------------------------------------------
json_like = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**64), max_value=2**64 - 1) | st.floats()
    | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20)
KINDS = ["hello", "welcome", "sample", "hb", "pong", "pred", "error", "bye", "other"]
FIELDS = ["dev", "joints", "rate_hz", "urdf", "policy", "srv_us", "predictor", "seq", "t", "q", "h", "ts", "d", "a",
          "k", "rx", "preds", "code", "msg", "epoch", "stats", "derivatives"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), fields=st.dictionaries(st.sampled_from(FIELDS), json_like, max_size=8),
       q=st.lists(st.floats() | st.integers(min_value=-(2**70), max_value=2**70), max_size=40))
def test_decode_raises_only_protocol_errors_and_passes_only_sane_samples(kind: str, fields: dict[str, Any],
                                                                         q: list[Any]) -> None:
    msg = {"v": 1, "type": kind, **fields}
    if kind == "sample" and "q" not in fields:
        msg.update(q=q, seq=1, t=1, h=0, ts=1)
    try:
        body = msgpack.packb(msg, use_bin_type=True)
    except (OverflowError, ValueError):
        return  # not representable in msgpack: never on the wire
    try:
        out = Wire().decode([body])
    except ProtocolError:
        return
    if out["type"] == "sample":
        assert 1 <= len(out["q"]) <= 32 and all(math.isfinite(x) and abs(x) <= 1e4 for x in out["q"])
        assert out["h"] >= 0 and abs(out["t"]) < 2**62
    if out["type"] == "pred":
        for item in out["preds"]:
            assert isinstance(item[0], int) and item[0] >= 1 and all(math.isfinite(c) for c in item[4])


def test_hostile_server_replies_never_raise_and_are_all_counted(ctx: zmq.Context[Any]) -> None:
    """The device's reply path against a broken or hostile server: thousands of generated replies, each either
    delivered (valid) or counted by reason; the uplink never raises and keeps working."""
    router = ctx.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    up = Uplink(ctx, f"tcp://127.0.0.1:{port}", None)
    try:
        assert up.sock.poll(5000, zmq.POLLOUT)
        up.set_hello({"dev": "d", "joints": ["a", "b"], "rate_hz": 1000.0, "urdf": "u", "policy": "p"}, 0)
        assert router.poll(5000)
        ident = router.recv_multipart()[0]
        rng = random.Random(3)
        n = 2000
        for _ in range(n):
            router.send_multipart([ident, *hostile_reply(rng)])
        router.send_multipart([ident, *WIRE.encode("pong", ts=0, srv_us=0)])  # the end marker
        while up.stats.bad_replies + up.stats.replies < n + 1:
            assert up.sock.poll(5000), "replies stopped arriving"
            up.poll_replies(1000)
        assert up.stats.bad_replies + up.stats.replies == n + 1
        assert sum(up.stats.bad_reasons.values()) == up.stats.bad_replies
        assert up.stats.bad_replies > n // 2
        item = [1, 0, 0, 1, [0.0, 0.0]]
        router.send_multipart([ident, *WIRE.encode("pred", seq=1, ts=0, rx=0, preds=[item])])
        assert up.sock.poll(5000)
        got = up.poll_replies(2000)
        assert got and np.isfinite(got[0]["preds"][0][4]).all()  # still serving valid replies
    finally:
        up.close()
        router.close(linger=0)
