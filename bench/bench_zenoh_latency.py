"""End-to-end latency on the Zenoh tier: device send -> global subscriber, with two edge servers.
``python bench/bench_zenoh_latency.py [--arms 100] [--rate-hz 20] [--seconds 5] [--workers 1] [--json out.json]``

Two real ``armtwin server --zenoh`` processes (sites ``edge0``, ``edge1``; CURVE on the device side) listen as Zenoh
peers on loopback; a subscriber process on ``armtwin/**`` connects to both. Emulated arms (half per server, open
loop at ``--rate-hz`` each: 20 Hz is 2 % load of a 1 kHz arm) send samples; the subscriber stamps each twin state
on arrival. Both ends read the same CLOCK_MONOTONIC (one machine), so latency = arrival - send, matched by
(site, device, sample time). Prints p50/p99/max in ms and how many states arrived; the figure includes the load
generator and the subscriber sharing this machine's cores with the servers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
REPO = Path(__file__).resolve().parents[1]
JOINTS = 6


def _subscribe(eps: list[str], ready: Any, stop: Any, out: Any) -> None:
    """The global subscriber: (site, device, t0) -> arrival time (ns), returned when ``stop`` is set."""
    import msgpack

    from server.zenoh_tier import open_session, zenoh_config

    conf, _ = zenoh_config(None, eps, [])
    session = open_session(conf)
    arrivals: list[tuple[str, str, int, int]] = []

    def on_sample(s: Any) -> None:
        now = time.monotonic_ns()
        parts = str(s.key_expr).split("/")
        if parts[-1] == "twin":
            state = msgpack.unpackb(s.payload.to_bytes(), raw=False)
            arrivals.append((parts[1], parts[2], int(state["pred"][1]), now))

    sub = session.declare_subscriber("armtwin/**", on_sample)
    ready.set()
    stop.wait(600)
    sub.undeclare()
    session.close()
    out.put(arrivals)


def _edge(site: str, keys: str, workers: int) -> tuple[subprocess.Popen[str], str, str]:
    p = subprocess.Popen([sys.executable, "-m", "armtwin", "server", "--keys", keys, "--bind", "tcp://127.0.0.1:*",
                          "--pub", "none", "--zenoh", "--site", site, "--zenoh-listen", "tcp/127.0.0.1:0",
                          "--workers", str(workers), "--status-every", "3600"], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    assert p.stdout is not None
    bind = listen = ""
    for line in p.stdout:
        if line.startswith("bind="):
            bind = line.strip().split("=", 1)[1]
        if line.startswith("zenoh="):
            listen = line.strip().split("listen=", 1)[1]
            break
    if not bind or not listen:
        p.kill()
        raise RuntimeError(f"edge server {site} did not start")
    return p, bind, listen


def measure_latency(arms: int = 100, rate_hz: float = 20.0, seconds: float = 5.0,
                    workers: int = 1) -> dict[str, Any]:
    """Device send -> global Zenoh subscriber latency over two edge servers; see the module docstring."""
    import msgpack
    import numpy as np
    import zmq

    from twin.schema import Wire
    from twin.security import Security, init_keys

    with tempfile.TemporaryDirectory() as tmp:
        keys = str(Path(tmp) / "keys")
        init_keys(keys, ["device"])
        edges = [_edge(f"edge{i}", keys, workers) for i in range(2)]
        mpc = mp.get_context("spawn")
        ready, stop, out = mpc.Event(), mpc.Event(), mpc.Queue()
        sub = mpc.Process(target=_subscribe, args=([e[2] for e in edges], ready, stop, out))
        sub.start()
        ctx: zmq.Context[Any] = zmq.Context()
        socks: list[zmq.Socket[bytes]] = []
        sent: dict[tuple[str, str, int], int] = {}
        try:
            if not ready.wait(60):
                raise RuntimeError("subscriber did not start")
            sec, wire = Security.for_client(keys, "device"), Wire()
            names = [(f"edge{i % 2}", f"arm{i:04d}") for i in range(arms)]
            for i, (_, name) in enumerate(names):
                s = ctx.socket(zmq.DEALER)
                sec.client_socket(s)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(edges[i % 2][1])
                s.send_multipart(wire.encode("hello", dev=name, joints=[f"j{j}" for j in range(JOINTS)],
                                             rate_hz=1000.0, urdf="u", policy="bench", ts=0))
                socks.append(s)
            for s in socks:
                if not s.poll(30_000):
                    raise RuntimeError("no welcome")
                reply = msgpack.unpackb(s.recv_multipart()[0])
                if reply["type"] != "welcome":  # e.g. server-full: 256 sessions per server process
                    raise RuntimeError(f"hello refused: {reply.get('code')} ({reply.get('msg')}); with more arms "
                                       "than 256 per edge server, use --workers")
            # Let the subscriber's interest reach both servers' publishers before the clock starts.
            time.sleep(1.0)
            poller = zmq.Poller()
            for s in socks:
                poller.register(s, zmq.POLLIN)
            q, d = np.linspace(-0.5, 0.5, JOINTS).tolist(), [0.1] * (2 * JOINTS)
            period_ns = int(1e9 / (rate_hz * arms))  # arms take turns: an even stream, not bursts
            start = time.monotonic_ns()
            end, k, seq, replies = start + int(seconds * 1e9), 0, 0, 0
            drain_until = end + 30 * 10**9  # after the last send: until every reply is back (or 30 s)
            while (now := time.monotonic_ns()) < drain_until and (now < end or replies < seq):
                due = start + k * period_ns if now < end else drain_until
                if now >= due:
                    i = k % arms
                    seq += 1
                    t = 1000 * seq
                    sent[(names[i][0], names[i][1], t)] = time.monotonic_ns()
                    socks[i].send_multipart(wire.encode("sample", seq=seq, t=t, q=q, h=10_000,
                                                        ts=now // 1000, d=d))
                    k += 1
                    continue
                for s, _ in poller.poll(min(max((due - now) // 1_000_000, 0), 100)):
                    while True:
                        try:
                            replies += msgpack.unpackb(s.recv_multipart(flags=zmq.NOBLOCK)[0])["type"] == "pred"
                        except zmq.Again:
                            break
            time.sleep(1.0)  # every reply is back: the twin states published with them are on their way
        finally:
            stop.set()
            arrivals = out.get(timeout=60) if sub.is_alive() or not out.empty() else []
            sub.join(timeout=30)
            for s in socks:
                s.close(linger=0)
            ctx.term()
            for p, _, _ in edges:
                p.terminate()
                p.wait(timeout=30)
                if p.stdout is not None:
                    p.stdout.close()
    lat = np.array([(now - sent[(site, dev, t0)]) / 1e6 for site, dev, t0, now in arrivals
                    if (site, dev, t0) in sent])
    return {"arms": arms, "rate_hz": rate_hz, "seconds": seconds, "workers": workers, "sent": len(sent),
            "replies": replies,
            "arrived": int(lat.size), "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
            "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
            "max_ms": float(lat.max()) if lat.size else float("nan")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", type=int, default=100)
    ap.add_argument("--rate-hz", type=float, default=20.0, help="samples/s per arm (default 20: 2 %% load)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=1, help="worker processes per edge server (default 1)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    r = measure_latency(args.arms, args.rate_hz, args.seconds, args.workers)
    print(f"two edge servers, {r['arms']} arms at {r['rate_hz']:g} Hz, {r['workers']} worker(s) each: "
          f"device send -> Zenoh subscriber p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
          f"max {r['max_ms']:.2f} ms ({r['arrived']}/{r['sent']} states arrived, {r['replies']} replies)")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))
    return 0 if r["arrived"] else 1


if __name__ == "__main__":
    sys.exit(main())
