"""Server capacity with 1 and N worker processes: ``python bench/bench_server_workers.py [--devices 10]
[--seconds 4] [--workers 1,2] [--loadgen 1] [--repeats 3] [--json out.json]``.

Prints samples/s answered (prediction + reply + publish, CURVE on) by a real ``armtwin server --workers N`` driven
by emulated devices in separate load-generator processes (``bench/server_load.py``), the server's CPU (cores) and
samples per server CPU-second; each figure is the median over the repeats. On a 2-core machine the load generator
competes with the server for the cores, so the per-CPU-second column is the fairer comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.server_load import measure_throughput


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=10)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts (default 1,2)")
    ap.add_argument("--loadgen", type=int, default=1, help="load-generator processes (default 1)")
    ap.add_argument("--in-flight", type=int, default=4, help="unanswered samples per device (default 4)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()
    rows = []
    print(f"{'workers':>7} {'devices':>7} {'samples/s':>10} {'server cores':>12} {'front cores':>11} "
          f"{'samples/CPU-s':>13}")
    for w in (int(x) for x in args.workers.split(",")):
        runs = [measure_throughput(w, args.devices, args.seconds, args.in_flight, args.loadgen)
                for _ in range(args.repeats)]
        row = {**runs[0], **{k: statistics.median(r[k] for r in runs)
                             for k in ("samples_per_s", "server_cpu_cores", "front_cpu_cores",
                                       "samples_per_server_cpu_s")},
               "repeats": args.repeats, "bad_replies": sum(r["bad_replies"] for r in runs)}
        rows.append(row)
        front = f"{row['front_cpu_cores']:>11.2f}" if w > 1 else f"{'-':>11}"
        print(f"{w:>7} {args.devices:>7} {row['samples_per_s']:>10.0f} {row['server_cpu_cores']:>12.2f} {front} "
              f"{row['samples_per_server_cpu_s']:>13.0f}", flush=True)
    if len(rows) > 1:
        print(f"ratio {rows[-1]['workers']} vs {rows[0]['workers']} workers: samples/s "
              f"{rows[-1]['samples_per_s'] / rows[0]['samples_per_s']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["bad_replies"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
