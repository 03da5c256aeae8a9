"""``armtwin server --workers N`` on loopback with real CURVE keys: one ROUTER and one PUB endpoint, devices sharded
by identity over worker processes (each session in one worker), counters, cap and expiry per worker, and no
process left behind however the server ends (stop, SIGINT, SIGTERM, the front killed)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
import zmq

from server import shard_link as link
from server.front import ShardedServer, shard
from tests.conftest import Proc
from twin.schema import Wire, prediction_from_wire
from twin.security import Security

TIMEOUT_MS = 10_000


class Arm:
    """An emulated device: a DEALER with a chosen ROUTER identity (so the test knows its worker)."""

    def __init__(self, ctx: zmq.Context[Any], endpoint: str, identity: bytes, security: Security) -> None:
        self.sock = ctx.socket(zmq.DEALER)
        security.client_socket(self.sock)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.connect(endpoint)
        self.identity, self.wire = identity, Wire()

    def send(self, kind: str, **fields: Any) -> None:
        self.sock.send_multipart(self.wire.encode(kind, **fields))

    def recv(self) -> dict[str, Any]:
        assert self.sock.poll(TIMEOUT_MS), f"no reply for {self.identity!r}"
        return self.wire.decode(self.sock.recv_multipart())

    def hello(self, dev: str, joints: int = 2) -> dict[str, Any]:
        self.send("hello", dev=dev, joints=[f"j{i}" for i in range(joints)], rate_hz=1000.0, urdf="u", policy="p",
                  ts=0)
        return self.recv()


def _gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return True


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        threading.Event().wait(0.02)


@pytest.fixture
def start_front(server_security: Security,
                serve_in_thread: Callable[[Any, str], None]) -> Callable[..., ShardedServer]:
    def start(workers: int = 2, **kwargs: Any) -> ShardedServer:
        srv = ShardedServer("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", workers, "linear", security=server_security,
                            **kwargs)
        serve_in_thread(srv, "test-front")
        return srv

    return start


def _identities(workers: int, per_worker: int) -> list[bytes]:
    """Identities that land ``per_worker`` devices in each worker (by the front's own hash)."""
    out: dict[int, list[bytes]] = {k: [] for k in range(workers)}
    i = 0
    while any(len(v) < per_worker for v in out.values()):
        ident = f"arm-{i}".encode()
        if len(out[shard(ident, workers)]) < per_worker:
            out[shard(ident, workers)].append(ident)
        i += 1
    return [ident for k in range(workers) for ident in out[k]]


def test_two_workers_serve_every_device_through_one_endpoint(
        start_front: Callable[..., ShardedServer], ctx: zmq.Context[Any], device_security: Security,
        viewer_security: Security) -> None:
    srv = start_front(2)
    pids = srv.worker_pids
    assert len(pids) == 2 and all(not _gone(p) for p in pids)
    viewer = ctx.socket(zmq.SUB)
    viewer_security.client_socket(viewer)
    viewer.setsockopt(zmq.LINGER, 0)
    viewer.setsockopt(zmq.SUBSCRIBE, b"")
    assert srv.pub_endpoint is not None
    viewer.connect(srv.pub_endpoint)
    arms = [Arm(ctx, srv.endpoint, ident, device_security) for ident in _identities(2, 3)]
    try:
        for arm in arms:
            assert arm.hello(arm.identity.decode())["type"] == "welcome"
        for seq in range(1, 21):
            for j, arm in enumerate(arms):
                arm.send("sample", seq=seq, t=seq * 1000, q=[0.001 * seq * (j + 1), -0.5], h=10_000, ts=seq)
        for j, arm in enumerate(arms):
            replies = [arm.recv() for _ in range(20)]
            assert [r["seq"] for r in replies] == list(range(1, 21)) and {r["type"] for r in replies} == {"pred"}
            _, pred = prediction_from_wire(replies[-1]["preds"][-1], 2)
            assert pred.coeffs[1][0] == pytest.approx(1.0 * (j + 1))  # rad/s: this arm's own motion, not another's
        # Each session lives in the worker its identity hashes to, and every twin state reaches the one PUB.
        _wait(lambda: sum(len(rows) for rows in srv.worker_rows) == 6, "worker reports")
        placed = {r["dev"]: k for k, rows in enumerate(srv.worker_rows) for r in rows}
        assert placed == {a.identity.decode(): shard(a.identity, 2) for a in arms}
        assert set(placed.values()) == {0, 1}
        seen: dict[str, int] = {}
        while sum(seen.values()) < 6 * 20:
            assert viewer.poll(TIMEOUT_MS), f"twin states missing: {seen}"
            topic, body = viewer.recv_multipart()
            state = msgpack.unpackb(body)
            assert state["type"] == "twin" and topic.decode() == state["dev"]
            seen[state["dev"]] = seen.get(state["dev"], 0) + 1
        assert seen == {a.identity.decode(): 20 for a in arms}
    finally:
        for arm in arms:
            arm.sock.close(linger=0)
        viewer.close(linger=0)
    srv.stop()
    _wait(lambda: all(_gone(p) for p in pids), "workers still running after stop")
    _wait(lambda: len(srv.finals) == 2, "final counters")
    summary = "\n".join(srv.summary_lines())
    assert "120 samples answered" in summary and "workers (2): 0: 60 samples, 1: 60 samples" in summary


def test_cap_expiry_and_drops_are_per_worker_and_add_up(
        start_front: Callable[..., ShardedServer], ctx: zmq.Context[Any], device_security: Security) -> None:
    srv = start_front(2, max_sessions=1, idle_s=0.5)
    a0, b0, a1 = (Arm(ctx, srv.endpoint, ident, device_security) for ident in _identities(2, 2)[:3])
    assert shard(a0.identity, 2) == shard(b0.identity, 2) == 0 and shard(a1.identity, 2) == 1
    try:
        assert a0.hello("a0")["type"] == "welcome"
        assert a1.hello("a1")["type"] == "welcome"  # worker 1 has its own cap
        full = b0.hello("b0")
        assert full["type"] == "error" and full["code"] == "server-full"
        a1.sock.send_multipart([b"\xc1garbage"])
        a1.send("sample", seq=1, t=0, q=[0.0, 0.0, 0.0], h=0, ts=1)  # wrong joint count
        assert a1.recv()["code"] == "joint-count"
        # Silent for longer than the idle time: both sessions expire, each in its worker.
        _wait(lambda: srv.totals().sessions_expired == 2, "sessions did not expire")
        total = srv.totals()
        assert total.dropped == {"session-cap": 1, "malformed": 1, "joint-count": 1}
        assert total.sessions_opened == 2 and total.messages == 5
    finally:
        for arm in (a0, b0, a1):
            arm.sock.close(linger=0)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_its_workers_on_a_signal(procs: list[Proc], sig: signal.Signals) -> None:
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*", "--workers", "2")
    procs.append(srv)
    pids = [int(p) for p in srv.wait_line("workers=2", timeout=60).split("pids=")[1].split(",")]
    assert len(pids) == 2 and not any(_gone(p) for p in pids)
    srv.p.send_signal(sig)
    code, out, err = srv.finish(timeout=60)
    assert code == 0, err
    assert "server stopped: 0 messages" in out and "workers (2): 0: 0 samples, 1: 0 samples" in out
    _wait(lambda: all(_gone(p) for p in pids), "a worker outlived the server")


def test_workers_exit_when_the_front_is_killed(procs: list[Proc]) -> None:
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none", "--workers", "2")
    procs.append(srv)
    pids = [int(p) for p in srv.wait_line("workers=2", timeout=60).split("pids=")[1].split(",")]
    srv.p.kill()  # no chance to stop them in order: the parent-death signal must
    srv.p.wait(timeout=10)
    _wait(lambda: all(_gone(p) for p in pids), "orphaned workers")


def test_a_dead_worker_is_replaced_and_its_devices_say_hello_again(
        start_front: Callable[..., ShardedServer], ctx: zmq.Context[Any], device_security: Security) -> None:
    srv = start_front(2)
    ident = _identities(2, 1)[1]  # a device of worker 1
    arm = Arm(ctx, srv.endpoint, ident, device_security)
    try:
        assert arm.hello("x")["type"] == "welcome"
        old = srv.worker_pids[1]
        os.kill(old, signal.SIGKILL)
        _wait(lambda: srv.restarts == 1 and srv.worker_stats[1] != {}, "worker 1 not restarted", timeout=60)
        assert srv.worker_pids[1] != old
        arm.send("sample", seq=1, t=0, q=[0.0, 0.0], h=0, ts=1)
        assert arm.recv()["code"] == "no-session"  # the session died with its worker: the device must say hello
        assert arm.hello("x")["type"] == "welcome"
        arm.send("sample", seq=2, t=1000, q=[0.0, 0.0], h=0, ts=2)
        assert arm.recv()["type"] == "pred"
    finally:
        arm.sock.close(linger=0)


def test_link_records_round_trip_and_refuse_a_truncated_batch() -> None:
    batch: list[bytes] = []
    link.record(batch, link.MSG, [b"id", b"body", b""], 123)
    link.record(batch, link.STOP, [])
    data = b"".join(batch)
    assert list(link.records(data)) == [(link.MSG, 123, [b"id", b"body", b""]), (link.STOP, 0, [])]
    for cut in range(1, len(data) - 11):  # every truncation short of the last (empty) record is refused
        with pytest.raises(ValueError, match="truncated"):
            list(link.records(data[:cut]))
