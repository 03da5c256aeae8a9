"""Server capacity: samples/s answered (prediction + reply + publish) by a real ``armtwin server`` process for 1,
10, 100 and 1000 emulated devices (``bench/loadgen.py``, closed loop, a few samples in flight each), with 1 worker
and, where ``armtwin server --workers W`` exists, with W.

The load generator shares this 2-core machine with the server, so its CPU is reported beside the server's: the
server's figure is what it answered while the generator used the rest.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

from bench.common import CpuWindow, Lab, Part, cpu_s, median, tree_cpu_s
from bench.loadgen import LoadGen
from twin.security import Security


def start_server(lab: Lab, workers: int, max_sessions: int) -> tuple[Any, str] | str:
    """A server with ``workers`` (no flag for 1); the reason as a string if this server refuses ``--workers``."""
    extra = ["--max-sessions", str(max_sessions)]
    if workers > 1:
        extra += ["--workers", str(workers)]
    try:
        return lab.server(f"server-w{workers}", extra)
    except RuntimeError as exc:
        err = lab.procs[-1].stderr_tail()
        lab.procs[-1].stop()
        if "--workers" in err:
            return f"skipped: this armtwin server refuses --workers ({err.splitlines()[-1][:120]})"
        raise RuntimeError(f"server with {workers} worker(s) did not start: {exc}") from exc


def capacity(lab: Lab, devices: list[int], workers: list[int], seconds: float, repeats: int,
             in_flight: int = 4) -> Part:
    part = Part("server", f"server: samples/s answered, closed loop ({in_flight} in flight per device), "
                f"{seconds:g} s windows, median of {repeats}",
                ["workers", "devices", "answered_per_s", "server_cpu_%", "loadgen_cpu_%", "connect_s"])
    sec = Security.for_client(lab.keys, "bench")
    for w in workers:
        started = start_server(lab, w, max(devices) + 16)
        if isinstance(started, str):
            print(f"  server: {w} workers {started}", flush=True)
            part.notes.append(f"{w} workers: {started}")
            continue
        server, endpoint = started
        server_pid = server.pid
        try:
            for n in devices:
                print(f"  server: {w} worker(s), {n} emulated devices", flush=True)
                gen = LoadGen(endpoint, sec, n, in_flight=in_flight, name=f"w{w}n{n}-")
                try:
                    connect_s = gen.connect(timeout_s=60 + n / 10)
                    gen.run(min(0.5, seconds / 2))  # warm: every device's first predictions
                    rates, srv_pct, gen_pct = [], [], []
                    for _ in range(repeats):
                        srv_cpu = CpuWindow(partial(tree_cpu_s, server_pid))
                        gen_cpu = CpuWindow(partial(cpu_s, os.getpid()))  # this process: the generator
                        srv_cpu.start()
                        gen_cpu.start()
                        r = gen.run(seconds)
                        rates.append(r["answered_per_s"])
                        srv_pct.append(srv_cpu.stop())
                        gen_pct.append(gen_cpu.stop())
                    part.rows.append({"workers": w, "devices": n, "answered_per_s": median(rates),
                                      "server_cpu_%": median(srv_pct), "loadgen_cpu_%": median(gen_pct),
                                      "connect_s": connect_s, "rates": rates,
                                      "errors": dict(gen.errors), "sessions_lost": gen.sessions_lost})
                finally:
                    gen.close()
        finally:
            server.stop()
    part.notes.append("answered = prediction replies the emulated devices read (the server also publishes each "
                      "on PUB); the generator runs in this process, CURVE, 7 joints with derivatives")
    return part
