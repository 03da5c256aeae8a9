"""The device's reply path against a broken or hostile server, fuzzed with hypothesis (issue 10, item 3).

A real ``DeviceAgent`` (its samples pushed through a ``SampleSource``) records to a real file and talks CURVE on
loopback TCP to a ROUTER socket this test plays the server with. For every sample the agent sends, the "server"
answers with a hypothesis-generated reply (any bytes, any kind, odd fields, predictions with any items) and then
a valid prediction. The agent must never stop, count every reply it refused by reason, keep scoring on the valid
predictions, and never put a value it could not trust into the recording.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device.agent import DeviceAgent, DeviceConfig
from device.policies.registry import parse_policy
from device.sample_source import SampleSource
from twin.schema import MAX_ABS_Q, Wire
from twin.security import Security
from twin.session import load_session

TIMEOUT_S = 10.0
JOINTS = 2
WIRE = Wire()

_nasty_num = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**64 - 1), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, 2, 20_000, 2**62, 2**63, 2**64 - 1, -1, 1e12, 1e300, float("nan")]))
_any = st.recursive(st.one_of(st.none(), st.booleans(), _nasty_num, st.text(max_size=8), st.binary(max_size=8)),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner,
                                                                                 max_size=4), max_leaves=12)
# A prediction item: [pred_seq, t0_us, horizon_us, order p, p * joints coefficients, (server rx)] with each part
# valid or not, so many items are well-formed but odd (another joint count, a huge coefficient, a wrong order).
_item = st.tuples(
    st.one_of(st.integers(min_value=-5, max_value=2**64 - 1), _any),
    st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), _any),
    st.one_of(st.integers(min_value=-1, max_value=10**9), _any),
    st.one_of(st.integers(min_value=-1, max_value=9), _any),
    st.one_of(st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-1e13, 1e13)),
                       max_size=12), _any),
    st.one_of(st.just(()), st.tuples(st.one_of(st.integers(min_value=-(2**63), max_value=2**64 - 1), _any))),
).map(lambda parts: [*parts[:5], *parts[5]])
# Well-formed items with odd values: any sequence number and time, a long horizon, coefficients up to the wire's
# limit (a constant of 1e12 rad passes the schema, and must still never be shown as the arm's pose).
_odd_item = st.integers(min_value=1, max_value=4).flatmap(lambda p: st.tuples(
    st.integers(min_value=1, max_value=2**62 - 1), st.integers(min_value=-(2**62) + 1, max_value=2**62 - 1),
    st.integers(min_value=0, max_value=60_000_000), st.just(p),
    st.lists(st.floats(-1e12, 1e12) | st.sampled_from([0.0, 1.0, 1e4, 1e6]), min_size=p * JOINTS,
             max_size=p * JOINTS),
    st.one_of(st.just(()), st.tuples(st.integers(min_value=-(2**62) + 1, max_value=2**62 - 1))),
)).map(lambda parts: [*parts[:5], *parts[5]])
_fields = st.fixed_dictionaries(
    {}, optional={"seq": _nasty_num | _any, "ts": _nasty_num | _any, "rx": _nasty_num | _any,
                  "epoch": _nasty_num | _any, "srv_us": _nasty_num | _any, "predictor": _any,
                  "preds": st.one_of(st.lists(_item | _odd_item | _odd_item, max_size=6), _any), "v": _any})
_kind = st.sampled_from(["pred", "pred", "pred", "pong", "welcome", "error", "hello", "sample", "bye", "x"])
hostile_replies = st.one_of(
    st.binary(max_size=64).map(lambda b: [b]),  # garbage
    st.lists(st.binary(max_size=8), min_size=2, max_size=3),  # extra frames
    st.tuples(_kind, _fields).map(lambda kf: [msgpack.packb({"v": 1, "type": kf[0], **kf[1]})]),
    st.tuples(st.lists(_odd_item, min_size=1, max_size=4), _nasty_num).map(  # a plain pred of odd items
        lambda pe: WIRE.encode("pred", seq=1, ts=1, rx=1, preds=pe[0])),
)


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        threading.Event().wait(0.0005)


class HostileServer:
    """A ROUTER on loopback with the server's CURVE keys that answers the device's hello and heartbeats
    correctly, and each sample with a reply the test chooses followed by a valid prediction."""

    def __init__(self, ctx: zmq.Context[Any], security: Security) -> None:
        self.auth = security.start_authenticator(ctx)
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        security.server_socket(self.sock)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.ident = b""
        self.pred_seq = 0
        self.hostile_sent = 0

    def serve_control(self, msg: dict[str, Any], ident: bytes) -> None:
        now = time.monotonic_ns() // 1000
        if msg["type"] == "hb":
            self.sock.send_multipart([ident, *WIRE.encode("pong", ts=msg["ts"], rx=now, srv_us=now)])
        elif msg["type"] == "hello":
            self.sock.send_multipart([ident, *WIRE.encode("welcome", dev=msg["dev"], srv_us=now, predictor="zoh",
                                                          derivatives=False, epoch=7)])

    def next_sample(self) -> dict[str, Any]:
        """Serve control messages until the device's next sample arrives; returns it."""
        while True:
            assert self.sock.poll(int(TIMEOUT_S * 1000)), "the device stopped sending"
            ident, *body = self.sock.recv_multipart()
            msg = WIRE.decode(body)
            self.ident = ident
            if msg["type"] == "sample":
                return msg
            self.serve_control(msg, ident)

    def reply(self, sample: dict[str, Any], hostile: list[bytes]) -> None:
        self.sock.send_multipart([self.ident, *hostile])
        self.hostile_sent += 1
        self.pred_seq += 1
        now = time.monotonic_ns() // 1000
        item = [self.pred_seq, sample["t"], 0, 1, [float(x) for x in sample["q"]], now]  # hold the sample
        self.sock.send_multipart([self.ident, *WIRE.encode("pred", seq=sample["seq"], ts=sample["ts"], rx=now,
                                                           epoch=7, preds=[item])])

    def close(self) -> None:
        self.sock.close(linger=0)
        if self.auth is not None:
            self.auth.stop()


def test_hostile_replies_never_stop_the_device_and_never_reach_the_recording_as_good(
        ctx: zmq.Context[Any], tmp_path: Path, server_security: Security, device_security: Security) -> None:
    server = HostileServer(ctx, server_security)
    src = SampleSource(joints=JOINTS)
    rec = tmp_path / "hostile.mcap"
    agent = DeviceAgent(DeviceConfig(port="program", server=server.endpoint, policy=parse_policy("static:k=1,h=0"),
                                     record=rec, security=device_security, lag_ms=20), out=open(  # noqa: SIM115
                                         tmp_path / "status.txt", "w"), source=src)
    runner = threading.Thread(target=agent.run, name="device-agent")
    runner.start()
    t = [0]

    def taken() -> int:
        """Replies the uplink has taken, delivered or refused."""
        up = agent.uplink
        return 0 if up is None else up.stats.replies + up.stats.bad_replies

    try:
        @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(hostile=hostile_replies)
        def one(hostile: list[bytes]) -> None:
            t[0] = max(t[0] + 1000, time.monotonic_ns() // 1000)  # a program's samples: stamped as measured
            assert src.push(t[0], [math.sin(t[0] * 1e-6), math.cos(t[0] * 1e-6)])
            sample = server.next_sample()
            before = taken()
            server.reply(sample, hostile)
            _wait(lambda: taken() >= before + 2 or not runner.is_alive(), "the device to take both replies")
            assert runner.is_alive(), "the device agent stopped on a reply"

        one()
    finally:
        src.end()
        runner.join(timeout=30)
        server.close()
        agent.out.close()
    assert not runner.is_alive()
    summary = agent.summary
    up = agent.uplink
    assert up is not None
    # Every refused reply is counted by reason; the valid predictions kept the twin scored throughout.
    assert sum(up.stats.bad_reasons.values()) == up.stats.bad_replies > 0
    assert summary["bad_replies"] == up.stats.bad_replies
    why = f"{summary} {up.stats.bad_reasons} epochs={up.stats.epochs}"
    assert summary["samples_scored"] >= 0.9 * summary["samples"] > 0, why
    assert math.isfinite(summary["mse_deg2"])
    s = load_session(rec)
    assert len(s.t_us) == summary["samples"] and s.qhat is not None
    shown = ~np.isnan(s.qhat).any(axis=1)
    assert shown.mean() > 0.9
    # Nothing recorded as the twin's display is non-finite or beyond any joint position (a hostile prediction
    # with huge-but-"valid" coefficients must not become a recorded pose).
    assert np.all(np.isfinite(s.qhat[shown])) and np.all(np.abs(s.qhat[shown]) <= MAX_ABS_Q)
