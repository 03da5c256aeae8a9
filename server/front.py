"""``armtwin server --workers N``: one front process, N worker processes, one endpoint for devices and viewers.

Why a front that routes and workers that own the sessions: the devices keep a single ROUTER address, the CURVE
keys and the authenticator stay in one process (workers never touch the network), and a device's session stays
in one worker because the front picks it by a stable hash of the ROUTER identity (``shard``). The front does
no decoding or predicting: it reads the ROUTER, batches each message with its receive time to worker
``crc32(identity) % N`` (``server.shard_link``), and sends back what the workers return: replies on the ROUTER,
twin states on the one PUB (and to the upper tier), status changes to the upper tier. CURVE itself runs in
libzmq's I/O threads, not in the front's Python loop.

Workers are restarted if one dies (its devices get "no-session" and say hello again); they exit when the front
stops, dies, or they get SIGINT/SIGTERM. The status line and the summary add up every worker's counters.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from server import shard_link as link
from server.public_sockets import PublicSockets
from server.sessions import MAX_SESSIONS, SESSION_IDLE_S, ServerStats, UpperTier, status_line, summary_lines
from server.worker import HMAC_ENV
from twin.predictors import DEFAULT_PREDICTOR, make_predictor
from twin.security import Security

READY_TIMEOUT_S = 60.0  # a worker imports numpy and warms its predictor up first
DRAIN_MAX = 1000  # ROUTER messages per batching round


def shard(identity: bytes, workers: int) -> int:
    """The worker of a device: stable across the run (and across runs) for the same ROUTER identity."""
    return zlib.crc32(identity) % workers


class ShardedServer:
    """The front: ROUTER and PUB like ``TwinServer``, sessions in ``workers`` worker processes."""

    def __init__(
        self,
        bind: str,
        pub: str | None,
        workers: int,
        predictor: str = DEFAULT_PREDICTOR,
        key: bytes | None = None,
        log: Callable[[str], None] | None = None,
        status_every_s: float = 10.0,
        security: Security | None = None,
        max_sessions: int = MAX_SESSIONS,
        idle_s: float = SESSION_IDLE_S,
        tier: UpperTier | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        make_predictor(predictor)  # a bad name fails here, with the list of valid ones, not in N workers
        self.log = log or (lambda line: None)
        self.n, self.status_every_s, self.tier = workers, status_every_s, tier
        self._worker_args = [predictor, str(max_sessions), str(idle_s), str(status_every_s)]
        self._key = key
        self.stats = ServerStats()  # the front's own drops (handshakes, worker-busy, reply-queue-full)
        self.worker_stats: list[dict[str, Any]] = [{} for _ in range(workers)]
        self.worker_rows: list[list[dict[str, Any]]] = [[] for _ in range(workers)]
        self.finals: dict[int, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
        self.restarts = 0
        self._stop = threading.Event()
        self._dir = Path(tempfile.mkdtemp(prefix="armtwin-workers-"))  # 0700: only this user reaches the link
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * workers
        self.net: PublicSockets | None = None
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.pushes: list[zmq.Socket[bytes]] = []
        try:
            self.pull = self.ctx.socket(zmq.PULL)
            self.pull.setsockopt(zmq.LINGER, 0)
            self.pull.bind(f"ipc://{self._dir}/front")
            for k in range(workers):
                push = self.ctx.socket(zmq.PUSH)
                push.setsockopt(zmq.LINGER, 0)
                push.setsockopt(zmq.SNDHWM, 1000)  # batches; beyond that the worker is busy: count, do not buffer
                push.connect(f"ipc://{self._dir}/w{k}")
                self.pushes.append(push)
            # One I/O thread: CURVE on ~300-byte messages costs far less than the front's Python loop per message.
            self.net = PublicSockets(bind, pub, security, self.log)
            self.endpoint, self.pub_endpoint = self.net.endpoint, self.net.pub_endpoint
            for k in range(workers):
                self._spawn(k)
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _spawn(self, k: int) -> None:
        root = str(Path(__file__).resolve().parents[1])  # the worker imports the same code as the front
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        env.pop(HMAC_ENV, None)
        if self._key:
            env[HMAC_ENV] = self._key.hex()
        cmd = [sys.executable, "-m", "server.worker", "--index", str(k), "--listen", f"ipc://{self._dir}/w{k}",
               "--front", f"ipc://{self._dir}/front", "--parent", str(os.getpid()),
               "--predictor", self._worker_args[0], "--max-sessions", self._worker_args[1],
               "--idle-s", self._worker_args[2], "--status-every", self._worker_args[3]]
        # Its own session: Ctrl-C reaches the front only, which stops the workers in order and collects their
        # final counters; a dying front takes them along through the parent-death signal.
        self.procs[k] = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, start_new_session=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(self.worker_stats):
            for k, p in enumerate(self.procs):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"worker {k} exited with code {p.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers not ready after {READY_TIMEOUT_S:g} s")
            if self.pull.poll(100):
                self._from_workers()

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs if p is not None]

    def stop(self) -> None:
        self._stop.set()

    def serve_forever(self, poll_ms: int = 100) -> None:
        assert self.net is not None and self.net.router is not None
        poller = zmq.Poller()
        self.net.register(poller)
        poller.register(self.pull, zmq.POLLIN)
        router = self.net.router
        try:
            self._status_at, self._status_samples, self._status_quiet = time.monotonic(), 0, 0
            next_check = time.monotonic() + 1.0
            while not self._stop.is_set():
                ready = dict(poller.poll(poll_ms))
                if router in ready:
                    self._to_workers(router)
                if self.pull in ready:
                    self._from_workers()
                self.net.housekeeping(ready, self.stats.drop)
                now = time.monotonic()
                self._status(now)
                if now >= next_check:
                    self._check_workers()
                    next_check = now + 1.0
            self._stop_workers()
        finally:
            self.close()

    def _to_workers(self, router: zmq.Socket[bytes]) -> None:
        batches: list[list[bytes]] = [[] for _ in range(self.n)]
        counts = [0] * self.n
        n, now_us = self.n, time.monotonic_ns
        for _ in range(DRAIN_MAX):
            try:
                frames = router.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            if len(frames) > link.MAX_FRAMES:
                self.stats.messages += 1
                self.stats.drop("malformed")
                continue
            k = zlib.crc32(frames[0]) % n
            link.record(batches[k], link.MSG, frames, now_us() // 1000)
            counts[k] += 1
        for k, batch in enumerate(batches):
            if not batch:
                continue
            try:
                self.pushes[k].send(b"".join(batch), flags=zmq.NOBLOCK)
            except zmq.Again:  # worker k is that far behind: refuse, counted, rather than queue without bound
                self.stats.messages += counts[k]
                for _ in range(counts[k]):
                    self.stats.drop("worker-busy")

    def _from_workers(self) -> None:
        for _ in range(256):
            try:
                batch = self.pull.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                self._dispatch(batch)
            except (ValueError, IndexError, UnicodeDecodeError):  # our own workers: a bug, counted, not fatal
                self.stats.drop("worker-garbled")

    def _dispatch(self, batch: bytes) -> None:
        assert self.net is not None
        net, tier = self.net, self.tier
        for kind, value, frames in link.records(batch):
            if kind == link.REPLY:
                if not net.reply(frames[0], frames[1:]):
                    self.stats.drop("reply-queue-full")
            elif kind == link.TWIN:
                if tier is not None:
                    tier.twin(frames[0].decode(), frames[1])
                if not net.publish(frames[0], frames[1]):
                    self.stats.drop("pub-queue-full")
            elif kind == link.STATUS:
                if tier is not None:
                    tier.status(frames[0].decode(), link.unpack(frames[1]))
            elif kind == link.LOG:
                self.log(frames[0].decode())
            elif kind in (link.STATS, link.FINAL) and 0 <= value < self.n:
                st, rows = link.unpack(frames[0]), link.unpack(frames[1])
                self.worker_stats[value], self.worker_rows[value] = st, rows
                if kind == link.FINAL:
                    self.finals[value] = (st, rows)

    def _check_workers(self) -> None:
        """A worker that died is started again: its devices get "no-session" and say hello again."""
        for k, p in enumerate(self.procs):
            if p is not None and p.poll() is not None and not self._stop.is_set():
                self.restarts += 1
                self.log(f"error: worker {k} exited with code {p.returncode}; starting it again (its "
                         f"{self.worker_stats[k].get('sessions', 0)} devices reconnect with hello)")
                self._bank(k)
                self._spawn(k)

    def _bank(self, k: int) -> None:
        """Keep a dead worker's last counters in the front's totals (its sessions are gone)."""
        self.stats.add(self.finals.pop(k, (self.worker_stats[k], []))[0])
        self.worker_stats[k], self.worker_rows[k] = {}, []

    def _stop_workers(self, timeout_s: float = 10.0) -> None:
        for push in self.pushes:
            out: list[bytes] = []
            link.record(out, link.STOP, [])
            with contextlib.suppress(zmq.Again):  # a worker that far behind gets SIGTERM from _reap
                push.send(b"".join(out), flags=zmq.NOBLOCK)
        deadline = time.monotonic() + timeout_s
        alive = [k for k, p in enumerate(self.procs) if p is not None and p.poll() is None]
        while len(self.finals) < len(alive) and time.monotonic() < deadline:
            if self.pull.poll(100):
                self._from_workers()
        self._reap()

    def _reap(self) -> None:
        for p in self.procs:
            if p is None:
                continue
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.terminate()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()

    def close(self) -> None:
        for p in self.procs:  # an error while starting: no worker stays behind
            if p is not None and p.poll() is None:
                p.terminate()
        self._reap()
        for sock in [*self.pushes, *([self.pull] if hasattr(self, "pull") else [])]:
            sock.close(linger=0)
        self.ctx.term()
        if self.net is not None:
            self.net.close()
            self.net = None
        if self.tier is not None:
            self.tier.close()
            self.tier = None
        shutil.rmtree(self._dir, ignore_errors=True)

    def totals(self) -> ServerStats:
        """The front's counters plus every worker's (the latest report of each)."""
        total = ServerStats()
        total.add(self.stats.to_dict())
        for st in self.worker_stats:
            total.add(st)
        return total

    def _status(self, now: float) -> None:
        dt = now - self._status_at
        if dt < self.status_every_s:
            return
        total = self.totals()
        quiet = sum(int(st.get("events_suppressed", 0)) for st in self.worker_stats)
        rate = (total.samples - self._status_samples) / dt
        self._status_at, self._status_samples = now, total.samples
        devices = sum(int(st.get("sessions", 0)) for st in self.worker_stats)
        if devices or rate or quiet > self._status_quiet:
            per = ", ".join(f"{k}: {st.get('sessions', 0)} devices" for k, st in enumerate(self.worker_stats))
            self.log(status_line(devices, rate, total.dropped, quiet - self._status_quiet, f"; workers {per}"))
        self._status_quiet = quiet

    def summary_lines(self) -> list[str]:
        rows = [r for rows in self.worker_rows for r in rows]
        lines = summary_lines(self.totals(), rows)
        per = ", ".join(f"{k}: {st.get('samples', 0)} samples" for k, st in enumerate(self.worker_stats))
        restarts = f", {self.restarts} restarted" if self.restarts else ""
        return [*lines, f"  workers ({self.n}{restarts}): {per}"]

    def describe(self) -> dict[str, Any]:
        total = self.totals()
        return {"messages": total.messages, "dropped": dict(total.dropped),
                "sessions": {r["dev"]: {"samples": r["samples"], "stale": r["stale"], "worker": k}
                             for k, rows in enumerate(self.worker_rows) for r in rows},
                "sessions_opened": total.sessions_opened, "workers": self.n}
