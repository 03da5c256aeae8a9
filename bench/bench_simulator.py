"""Simulator speed: one hour of 1 kHz data (the bundled sessions tiled) per policy; target >= 1000x real time.

    python bench/bench_simulator.py [--hours 1] [--repeat 3] [--json out.json] [--reference]

Reports the median wall time of --repeat runs per policy and the speed-up over real time, on one core.
``--reference`` runs the event policies through their numpy reference path (``select_reference``) instead of
the compiled kernel, to show what the kernel buys (use a short --hours: it is slow).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one core, as the target says

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.policies.registry import parse_policy  # noqa: E402
from lab.simulator import simulate  # noqa: E402
from twin.predictors import DEFAULT_PREDICTOR  # noqa: E402
from twin.session import Session, load_session  # noqa: E402

POLICIES = [
    "static:k=10,h=50",
    "static:k=1,h=0",
    "send-on-delta:delta=0.1",
    "dead-reckoning:delta=0.05,h=200",
    "dead-reckoning:delta=0.02,h=200",
]


def tiled_session(hours: float) -> Session:
    """The bundled default session played forwards and backwards (continuous angles) until ``hours`` of data."""
    s = load_session(REPO / "data" / "sessions" / "default.mcap")
    n_target = int(hours * 3600 * 1000)
    dt = np.diff(s.t_us)
    t_chunks, q_chunks, offset, n, forward = [], [], 0, 0, True
    while n < n_target:
        steps = dt if forward else dt[::-1]
        t_chunks.append(offset + np.concatenate(([0], np.cumsum(steps))))
        q_chunks.append(s.q if forward else s.q[::-1])
        offset = int(t_chunks[-1][-1]) + 1000
        n += len(s.t_us)
        forward = not forward
    t = np.concatenate(t_chunks)[:n_target]
    q = np.concatenate(q_chunks)[:n_target]
    return Session(t_us=t, q=q, joint_names=s.joint_names, meta={"source": "bench tiling"})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--reference", action="store_true", help="event policies through the numpy reference path")
    args = ap.parse_args()
    session = tiled_session(args.hours)
    real_s = session.duration_s
    print(f"session: {len(session.t_us)} samples, {real_s:.0f} s of data, {session.joints} joints")
    rows = []
    for spec in POLICIES:
        times = []
        for _ in range(args.repeat):
            policy = parse_policy(spec)
            if args.reference and hasattr(policy, "select_reference"):
                policy.select = policy.select_reference  # type: ignore[method-assign]
            elif args.reference:
                continue
            t0 = time.perf_counter()
            r = simulate(session, policy, DEFAULT_PREDICTOR, eps=0.002)
            times.append(time.perf_counter() - t0)
        if not times:
            continue
        med = statistics.median(times)
        rows.append({"policy": spec, "median_s": med, "speedup": real_s / med, "load": r.metrics["load"],
                     "mse_deg2": r.metrics["mse_deg2"]})
        print(f"{spec:36s} median {med:6.2f} s  -> {real_s / med:7.0f}x real time  "
              f"(load {r.metrics['load']:.4f}, mse {r.metrics['mse_deg2']:.3g})")
    ok = all(row["speedup"] >= 1000 for row in rows if row["policy"] != "static:k=1,h=0")
    print("target >= 1000x for static and event policies:", "met" if ok else "NOT met")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
