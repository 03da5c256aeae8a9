"""Simulator speed: x real time on one thread, through ``bench/bench_simulator.py`` (the bundled session tiled to
``hours`` of 1 kHz data, each policy ``repeats`` times, the median), run as its own process with one BLAS thread."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from bench.common import REPO, Part, run_quiet


def simulator_part(hours: float, repeats: int) -> Part:
    with tempfile.TemporaryDirectory(prefix="armtwin-bench-sim-") as tmp:
        out = Path(tmp) / "sim.json"
        run_quiet([sys.executable, str(REPO / "bench" / "bench_simulator.py"), "--hours", str(hours), "--repeat",
                   str(repeats), "--json", str(out)], timeout=600 + 200 * hours * repeats,
                  env={"OMP_NUM_THREADS": "1"})
        rows = json.loads(out.read_text())
    part = Part("simulator", f"simulator: x real time on one thread, {hours * 60:g} min of 1 kHz data, median of "
                f"{repeats}", ["policy", "x_real_time", "median_s", "load", "mse_deg2"])
    for r in rows:
        part.rows.append({"policy": r["policy"], "x_real_time": r["speedup"], "median_s": r["median_s"],
                          "load": r["load"], "mse_deg2": r["mse_deg2"]})
    if hours < 0.5:
        part.notes.append("short data: the fixed cost per run weighs more than on the full run's hour")
    return part
