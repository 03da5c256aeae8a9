"""The link: round trip sample -> prediction through the real device and server, beside the floor: raw pyzmq
DEALER/ROUTER + msgpack echo between two processes on the same machine, measured in the same bench run.

The echo runs in its own process (``python -m bench.link --echo KEYS``), like the server: a ROUTER with the
server's CURVE key and one in plaintext. The client sends a message the size of a real sample (7 joints with
derivatives) at 1 kHz for a few seconds, the echo decodes it and answers with a reply the size of a prediction, the
client decodes that: p50/p99 of send -> reply decoded. The ratio device/raw (CURVE both) is the figure. The echo
also runs at 20 Hz, the rate of a sparse policy's sends, where each round trip wakes idle processes.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from bench.common import REPO, Lab, Part, median, percentiles_ms
from bench.device import DeviceRuns, short
from twin.security import Security

JOINTS = 7
SPARSE_HZ = 20.0  # the raw echo's second rate: a sample every 50 ms, as dead reckoning sends at ~2 % load


def sample_message(i: int, now_us: int) -> bytes:
    return msgpack.packb({"v": 1, "type": "sample", "seq": i, "t": i * 1000, "q": [0.1 * j for j in range(JOINTS)],
                          "h": 200_000, "ts": now_us, "k": 1.0, "d": [0.01 * j for j in range(2 * JOINTS)], "a": i})


def reply_message(msg: dict[str, Any]) -> bytes:
    """What the server sends back for a sample: a few polynomial predictions (3 redundant copies)."""
    pred = [msg["seq"], msg["t"], 200_000, [[0.1] * JOINTS] * 3, 0, msg["ts"]]
    return msgpack.packb({"v": 1, "type": "pred", "seq": msg["seq"], "ts": msg["ts"], "rx": msg["ts"], "epoch": 1,
                          "preds": [pred, pred, pred]})


def serve_echo(keys: Path) -> int:
    """The echo process: prints ``curve=`` and ``plain=`` endpoints, answers until SIGTERM."""
    ctx: zmq.Context[Any] = zmq.Context()
    sec = Security.for_server(keys)
    auth = sec.start_authenticator(ctx)
    socks = []
    for secure in (True, False):
        s = ctx.socket(zmq.ROUTER)
        s.setsockopt(zmq.LINGER, 0)
        if secure:
            sec.server_socket(s)
        s.bind("tcp://127.0.0.1:*")
        socks.append(s)
        print(f"{'curve' if secure else 'plain'}={s.getsockopt_string(zmq.LAST_ENDPOINT)}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    poller = zmq.Poller()
    for s in socks:
        poller.register(s, zmq.POLLIN)
    while not stop:
        for s, _ in poller.poll(100):
            while True:
                try:
                    ident, body = s.recv_multipart(flags=zmq.NOBLOCK)
                except zmq.Again:
                    break
                s.send_multipart([ident, reply_message(msgpack.unpackb(body))])
    for s in socks:
        s.close(linger=0)
    if auth is not None:
        auth.stop()
    ctx.term()
    return 0


def echo_round_trips(endpoint: str, security: Security, seconds: float, rate_hz: float = 1000.0) -> list[int]:
    """Round trips (µs) of messages sent at ``rate_hz`` for ``seconds`` (open loop, like the device's sends)."""
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    security.client_socket(sock)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    rtts: list[int] = []
    try:
        sock.send(sample_message(0, time.monotonic_ns() // 1000))  # the handshake and the first reply: not counted
        if not sock.poll(10_000):
            raise RuntimeError(f"the echo at {endpoint} did not answer")
        sock.recv()
        period = int(1e6 / rate_hz)
        start = time.monotonic_ns() // 1000
        end, next_send, i = start + int(seconds * 1e6), start, 1
        while True:
            now = time.monotonic_ns() // 1000
            if now >= next_send and now < end:
                sock.send(sample_message(i, now))
                i += 1
                next_send += period
            elif now >= end + 200_000 or (now >= end and len(rtts) >= i - 1):
                break
            if sock.poll(max(0, -(-(next_send - now) // 1000)) if now < end else 10):
                while True:
                    try:
                        body = sock.recv(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = msgpack.unpackb(body)
                    rtts.append(time.monotonic_ns() // 1000 - msg["ts"])
    finally:
        sock.close(linger=0)
        ctx.term()
    return rtts


def measure_raw(lab: Lab, seconds: float, repeats: int) -> dict[str, dict[str, float]]:
    """The echo floor, CURVE and plaintext: the median over ``repeats`` of each run's p50 and p99."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.link", "--echo", str(lab.keys)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, bufsize=1, cwd=REPO)
    try:
        assert proc.stdout is not None
        eps = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
        if set(eps) != {"curve", "plain"}:
            raise RuntimeError(f"the echo process did not start (exit {proc.poll()})")
        out: dict[str, dict[str, float]] = {}
        curve = Security.for_client(lab.keys, "bench")
        # The floor at 1 kHz (the target's reference), and at 20 Hz: the send rate of dead reckoning's ~2 % load,
        # where every round trip starts with both processes idle (waking them is part of that floor).
        for kind, sec, endpoint, rate in (("curve", curve, eps["curve"], 1000.0),
                                          ("plain", Security.insecure(), eps["plain"], 1000.0),
                                          ("curve_20hz", curve, eps["curve"], SPARSE_HZ)):
            p50s, p99s = [], []
            for _ in range(repeats):
                p50, p99 = percentiles_ms(echo_round_trips(endpoint, sec, seconds, rate_hz=rate))
                p50s.append(p50)
                p99s.append(p99)
            out[kind] = {"p50_ms": median(p50s), "p99_ms": median(p99s)}
        return out
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def link_part(runs: DeviceRuns, raw: dict[str, dict[str, float]], seconds: float, repeats: int) -> Part:
    part = Part("link", "link: round trip sample -> prediction (device -> server -> device), beside raw pyzmq "
                "DEALER/ROUTER + msgpack echo in the same run", ["path", "p50_ms", "p99_ms", "x_raw_p50",
                                                                 "x_raw_p99"])
    floor = raw["curve"]
    for spec in runs.runs:
        m = runs.medians(spec)
        part.rows.append({"path": f"device+server {short(spec)}", "p50_ms": m["rtt_p50_ms"],
                          "p99_ms": m["rtt_p99_ms"], "x_raw_p50": m["rtt_p50_ms"] / floor["p50_ms"],
                          "x_raw_p99": m["rtt_p99_ms"] / floor["p99_ms"]})
    for kind, label in (("curve", "raw pyzmq+msgpack, CURVE"), ("plain", "raw pyzmq+msgpack, plaintext"),
                        ("curve_20hz", f"raw pyzmq+msgpack, CURVE, {SPARSE_HZ:g} Hz")):
        part.rows.append({"path": label, "p50_ms": raw[kind]["p50_ms"], "p99_ms": raw[kind]["p99_ms"],
                          "x_raw_p50": raw[kind]["p50_ms"] / floor["p50_ms"],
                          "x_raw_p99": raw[kind]["p99_ms"] / floor["p99_ms"]})
    part.notes.append(f"device rows: the device's own RTT over its run (median of {runs.repeats} run(s)); raw: "
                      f"1 kHz (and {SPARSE_HZ:g} Hz) for {seconds:g} s, median of {repeats}; x_raw = / raw CURVE "
                      "at 1 kHz (issue 11 target: p50 <= 2x, p99 <= 3x)")
    return part


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="the raw pyzmq + msgpack echo process of the link benchmark")
    ap.add_argument("--echo", type=Path, required=True, metavar="KEYS", help="CURVE keys directory (server key)")
    return serve_echo(ap.parse_args(argv).echo)


if __name__ == "__main__":
    sys.exit(main())
