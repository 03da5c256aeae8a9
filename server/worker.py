"""One worker process of ``armtwin server --workers N`` (started by ``server.front``, never by hand).

It owns the sessions of the devices the front hashes to it: the same ``SessionCore`` as the single-process
server (validation, drop counters, session cap, idle expiry), fed by batches from the front and answering with
batches of replies, twin states and status changes. It exits when the front sends STOP, on SIGINT/SIGTERM, and
when the front dies (the kernel's parent-death signal, and a check of the parent's pid as a fallback).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

import zmq

from server.sessions import EVENT_LINES, SessionCore
from server.shard_link import FINAL, LOG, MSG, REPLY, STATS, STATUS, STOP, TWIN, pack, record, records
from twin.stop_signals import stop_on_signals

HMAC_ENV = "ARMTWIN_WORKER_HMAC"  # the shared HMAC key (hex), never on a command line that `ps` shows
STATS_EVERY_S = 0.5  # counters to the front this often (its status line and the tests read them)


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when the front exits, however it exits (kill -9 included)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the pid check in the loop still catches it
    if os.getppid() != parent:  # the front died before prctl took effect
        sys.exit(0)


class Worker:
    """A worker's loop: PULL batches from the front, run them through the session core, PUSH the output."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.zmq, self.args = zmq, args
        key = os.environ.get(HMAC_ENV)
        self.out: list[bytes] = []
        self.core = SessionCore(self._reply, self._twin, self._status, args.predictor,
                                bytes.fromhex(key) if key else None, self._log, time.monotonic,
                                args.max_sessions, args.idle_s)
        self.ctx: Any = zmq.Context()
        self.pull = self.ctx.socket(zmq.PULL)
        self.pull.setsockopt(zmq.LINGER, 0)
        self.pull.bind(args.listen)
        self.push = self.ctx.socket(zmq.PUSH)
        self.push.setsockopt(zmq.LINGER, 2000)  # the FINAL record must reach the front
        self.push.setsockopt(zmq.SNDHWM, 10_000)
        self.push.connect(args.front)
        self.stop = threading.Event()
        self.suppressed_total = 0

    def _reply(self, ident: bytes, frames: list[bytes]) -> bool:
        record(self.out, REPLY, [ident, *frames])
        return True

    def _twin(self, dev: str, body: bytes) -> bool:
        record(self.out, TWIN, [dev.encode(), body])
        return True

    def _status(self, dev: str, status: dict[str, Any]) -> None:
        record(self.out, STATUS, [dev.encode(), pack(status)])

    def _log(self, line: str) -> None:
        record(self.out, LOG, [f"{line} (worker {self.args.index})".encode()])

    def _counters(self, kind: int) -> None:
        st = {**self.core.stats.to_dict(), "sessions": len(self.core.sessions),
              "events_suppressed": self.suppressed_total + self.core.events_suppressed}
        record(self.out, kind, [pack(st), pack(self.core.session_rows())], self.args.index)

    def _flush(self) -> None:
        if self.out:
            batch, self.out = self.out, []
            try:
                self.push.send(b"".join(batch), flags=self.zmq.NOBLOCK)
            except self.zmq.Again:  # the front is not reading (10 000 batches queued): count each lost batch
                self.core.stats.drop("front-busy")

    def run(self) -> int:
        zmq, core, parent = self.zmq, self.core, self.args.parent
        self._counters(STATS)  # "ready": the front waits for it before serving
        self._flush()
        next_stats = next_events = time.monotonic()
        try:
            while not self.stop.is_set():
                if self.pull.poll(100):
                    for _ in range(64):  # bounded: counters and expiry still run under a flood
                        try:
                            batch = self.pull.recv(flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        msgs: list[tuple[list[bytes], int]] = []
                        try:
                            for kind, value, frames in records(batch):
                                if kind == MSG:
                                    msgs.append((frames, value))
                                elif kind == STOP:
                                    self.stop.set()
                        except ValueError:  # a truncated batch from our own front: a bug, counted, not fatal
                            core.stats.drop("front-garbled")
                        core.receive_batch(msgs)  # trusted sessions first, as in one process
                        self._flush()
                now = time.monotonic()
                if now >= next_stats:
                    core.expire()
                    self._counters(STATS)
                    next_stats = now + STATS_EVERY_S
                if now >= next_events:  # the event-line budget per status period, as in the single server
                    self.suppressed_total += core.events_suppressed
                    core.events_left, core.events_suppressed = EVENT_LINES, 0
                    next_events = now + self.args.status_every
                self._flush()
                if os.getppid() != parent:
                    break
        finally:
            self._counters(FINAL)
            self._flush()
            self.pull.close(linger=0)
            self.push.close()
            self.ctx.term()
        return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m server.worker", description="a worker of armtwin server "
                                "--workers N (started by the front; not a command to run by hand)")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--listen", required=True, help="ipc endpoint this worker binds (PULL from the front)")
    p.add_argument("--front", required=True, help="ipc endpoint of the front's PULL")
    p.add_argument("--parent", type=int, required=True, help="the front's pid")
    p.add_argument("--predictor", required=True)
    p.add_argument("--max-sessions", type=int, required=True)
    p.add_argument("--idle-s", type=float, required=True)
    p.add_argument("--status-every", type=float, required=True)
    args = p.parse_args(argv)
    _die_with_parent(args.parent)
    worker = Worker(args)
    with stop_on_signals(worker.stop.set):  # SIGTERM also comes from the parent-death signal
        return worker.run()


if __name__ == "__main__":
    sys.exit(main())
