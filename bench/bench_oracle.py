"""Clairvoyant-bound speed and memory: tables and solves on two bundled test sessions (60 s of 1 kHz data).

    python bench/bench_oracle.py [--family mocap|busy] [--delay-ms 0] [--gap-ms 2000] [--repeat 3]

Reports the median wall time of --repeat runs of the segment-cost tables (once per link) and of one solve per ε
(0.002 and 0.007 deg²), plus the tables' size, after one warm-up run (numba compiles on first use).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.link_emulation import LinkSpec  # noqa: E402
from lab.oracle import ClairvoyantBound  # noqa: E402
from twin.session import load_session  # noqa: E402

FILES = {"mocap": ("test_a", "test_b"), "busy": ("busy_test_a", "busy_test_b")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FILES), default="mocap")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--gap-ms", type=float, default=2000.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sessions = [load_session(REPO / "data" / "sessions" / f"{name}.mcap") for name in FILES[args.family]]
    link = LinkSpec(delay_ms=args.delay_ms)
    ClairvoyantBound(sessions[:1], link, max_gap_ms=50).solve(0.002)  # warm-up: compile the kernels
    prep: list[float] = []
    solve: dict[float, list[float]] = {0.002: [], 0.007: []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        bound = ClairvoyantBound(sessions, link, max_gap_ms=args.gap_ms)
        prep.append(time.perf_counter() - t0)
        for eps in solve:
            t0 = time.perf_counter()
            r = bound.solve(eps)
            solve[eps].append(time.perf_counter() - t0)
    mb = sum(p.gcost.nbytes for p in bound._prep) / 1e6
    seconds = sum(s.duration_s for s in sessions)
    solves = ", ".join(f"ε {e:g} {statistics.median(v):.2f} s" for e, v in solve.items())
    print(f"{args.family}, {seconds:.0f} s of data, delay {args.delay_ms:g} ms, gap {args.gap_ms:g} ms: tables "
          f"{statistics.median(prep):.2f} s ({mb:.0f} MB); solve {solves} (last load {r['load']:.4f})")


if __name__ == "__main__":
    main()
