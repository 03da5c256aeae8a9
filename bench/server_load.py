"""Server capacity: emulated devices (DEALER, real CURVE keys) drive a real ``armtwin server [--workers N]``.

``measure_throughput(workers=2)`` is the function a benchmark calls: it makes keys in a temp dir, starts the
server as its own process tree, connects ``devices`` emulated arms split over ``loadgen_procs`` load-generator
processes, each arm keeping ``in_flight`` samples (with the velocity/acceleration estimate the default predictor
uses) unanswered, and counts the predictions that come back during ``seconds``. It returns samples/s answered,
the server's CPU use (front + workers, from /proc) and samples per server CPU-second, which is the figure that
stays meaningful when the load generator shares the machine's cores with the server.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from armtwin.demo import stop_process

REPO = Path(__file__).resolve().parents[1]
JOINTS = 6


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drive(endpoint: str, keys: str, names: list[str], in_flight: int, warm_s: float, seconds: float,
           result: Any) -> None:
    """One load-generator process: hello for each arm, then a closed loop of samples; puts its counts."""
    import msgpack
    import numpy as np
    import zmq

    from twin.schema import Wire
    from twin.security import Security

    sec = Security.for_client(keys, "device") if keys else Security.insecure()
    wire = Wire()
    ctx: zmq.Context[Any] = zmq.Context()
    socks, seqs, acks = [], [], []
    poller = zmq.Poller()
    try:
        for name in names:
            s = ctx.socket(zmq.DEALER)
            sec.client_socket(s)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(endpoint)
            s.send_multipart(wire.encode("hello", dev=name, joints=[f"j{i}" for i in range(JOINTS)],
                                         rate_hz=1000.0, urdf="kuka_iiwa/model.urdf", policy="bench", ts=0))
            socks.append(s)
            poller.register(s, zmq.POLLIN)
        for s in socks:
            assert s.poll(30_000), "no welcome from the server"
            assert msgpack.unpackb(s.recv_multipart()[0])["type"] == "welcome"
            seqs.append(0)
            acks.append(0)
        q = np.linspace(-0.5, 0.5, JOINTS).tolist()
        d = [0.1] * (2 * JOINTS)

        def send(i: int) -> None:
            seqs[i] += 1
            socks[i].send_multipart(wire.encode("sample", seq=seqs[i], t=seqs[i] * 1000, q=q, h=10_000,
                                                ts=time.monotonic_ns() // 1000, d=d, a=acks[i]))

        index = {s: i for i, s in enumerate(socks)}
        for i in range(len(socks)):
            for _ in range(in_flight):
                send(i)
        start = time.monotonic()
        counted_from, end = start + warm_s, start + warm_s + seconds
        answered = bad = 0
        while (now := time.monotonic()) < end:
            for s, _ in poller.poll(100):
                i = index[s]
                while True:
                    try:
                        frames = s.recv_multipart(flags=zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    msg = msgpack.unpackb(frames[0])
                    if msg.get("type") != "pred":
                        bad += 1
                        continue
                    acks[i] = msg["preds"][-1][0]
                    if now >= counted_from:
                        answered += 1
                    send(i)
        result.put({"answered": answered, "bad": bad})
    finally:
        for s in socks:
            s.close(linger=0)
        ctx.term()


def measure_throughput(workers: int = 1, devices: int = 10, seconds: float = 3.0, in_flight: int = 4,
                       loadgen_procs: int = 1, warm_s: float = 1.0, predictor: str = "kinematic",
                       curve: bool = True) -> dict[str, Any]:
    """Samples/s a real server answers (prediction + reply + publish) with ``workers`` processes; see the module
    docstring. Raises RuntimeError if the server does not start or a load generator fails."""
    with tempfile.TemporaryDirectory() as tmp:
        keys = ""
        if curve:
            from twin.security import init_keys

            keys = str(Path(tmp) / "keys")
            init_keys(keys, ["device"])
        sec = ["--keys", keys] if curve else ["--insecure"]
        srv = subprocess.Popen([sys.executable, "-m", "armtwin", "server", "--bind", "tcp://127.0.0.1:*",
                                "--pub", "tcp://127.0.0.1:*", "--predictor", predictor, "--workers", str(workers),
                                "--status-every", "3600", *sec], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
        try:
            assert srv.stdout is not None
            info: dict[str, str] = {}
            for line in srv.stdout:
                key, _, value = line.strip().partition("=")
                info[key] = value
                if (key == "security" and workers == 1) or key == "workers":
                    break
            if "bind" not in info:
                raise RuntimeError(f"server did not start: {info}")
            pids = [srv.pid, *(int(p) for p in info.get("workers", "").partition("pids=")[2].split(",") if p)]
            mpc = mp.get_context("spawn")
            result = mpc.Queue()
            names = [f"arm{i:04d}" for i in range(devices)]
            gens = [mpc.Process(target=_drive, args=(info["bind"], keys, names[g::loadgen_procs], in_flight,
                                                     warm_s, seconds, result)) for g in range(loadgen_procs)]
            for g in gens:
                g.start()
            # The server's CPU over the counted window only (hellos and warm-up excluded).
            time.sleep(warm_s + 0.5)
            cpu0, t0 = [_cpu_s(p) for p in pids], time.monotonic()
            time.sleep(max(seconds - 1.0, 0.1))
            cpu1, t1 = [_cpu_s(p) for p in pids], time.monotonic()
            parts = [result.get(timeout=60 + seconds) for _ in gens]
            for g in gens:
                g.join(timeout=30)
                if g.exitcode != 0:
                    raise RuntimeError(f"load generator exited with {g.exitcode}")
        finally:
            stop_process(srv)
    answered = sum(p["answered"] for p in parts)
    rate = answered / seconds
    per = [(b - a) / (t1 - t0) for a, b in zip(cpu0, cpu1, strict=True)]
    cpu = sum(per)
    return {"workers": workers, "devices": devices, "in_flight": in_flight, "loadgen_procs": loadgen_procs,
            "seconds": seconds, "samples_per_s": rate, "server_cpu_cores": cpu,
            # With workers: the front's share (routing only) and the workers' (sessions, predictions).
            "front_cpu_cores": per[0] if workers > 1 else cpu,
            "workers_cpu_cores": sum(per[1:]) if workers > 1 else cpu,
            "samples_per_server_cpu_s": rate / cpu if cpu > 0 else float("nan"),
            "bad_replies": sum(p["bad"] for p in parts)}
