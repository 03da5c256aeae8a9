"""The ``zenoh`` part of ``armtwin bench``: device send -> global Zenoh subscriber over two edge servers.

Runs ``bench/bench_zenoh_latency.py``'s measurement (two real ``armtwin server --zenoh`` processes as Zenoh peers
on loopback, one subscriber on ``armtwin/**``, emulated arms split between the servers) and reports the median
p50/p99 over the repeats. Each edge server gets enough ``--workers`` that no worker holds more than the 256
sessions one process takes, so 1 000 arms (500 per edge server) run with 2 workers each.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import REPO, Part, median
from server.sessions import MAX_SESSIONS


def workers_for(arms: int) -> int:
    """Worker processes per edge server so that each holds at most MAX_SESSIONS of its half of the arms."""
    return max(1, math.ceil(math.ceil(arms / 2) / MAX_SESSIONS))


def measure(arms: int, rate_hz: float, seconds: float, workers: int) -> dict[str, Any]:
    """One run of ``bench/bench_zenoh_latency.py`` in a process of its own (its subscriber is a spawned process,
    whose bookkeeping, such as multiprocessing's resource tracker, then stays out of the bench's own)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "zenoh.json"
        r = subprocess.run([sys.executable, str(REPO / "bench" / "bench_zenoh_latency.py"), "--arms", str(arms),
                            "--rate-hz", str(rate_hz), "--seconds", str(seconds), "--workers", str(workers),
                            "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
        if not out.exists():
            raise RuntimeError(f"the Zenoh latency run failed (exit {r.returncode}): {r.stderr.strip()[-500:]}")
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def zenoh_part(arms: int, rate_hz: float, seconds: float, repeats: int) -> Part:
    workers = workers_for(arms)
    runs = [measure(arms, rate_hz, seconds, workers) for _ in range(repeats)]
    part = Part("zenoh", "zenoh tier: device send -> global subscriber on armtwin/**, two edge servers",
                ["arms", "rate_hz", "workers_each", "p50_ms", "p99_ms", "max_ms", "arrived", "sent"])
    part.rows.append({"arms": arms, "rate_hz": rate_hz, "workers_each": workers,
                      "p50_ms": median(r["p50_ms"] for r in runs), "p99_ms": median(r["p99_ms"] for r in runs),
                      "max_ms": max(r["max_ms"] for r in runs), "arrived": sum(r["arrived"] for r in runs),
                      "sent": sum(r["sent"] for r in runs)})
    part.notes.append(f"{seconds:g} s per run, median of {repeats}; arms take turns at {rate_hz:g} samples/s each "
                      "(the load generator, both servers and the subscriber share this machine's cores); "
                      "arrived/sent: twin states the subscriber got of the samples sent, over all runs")
    return part
