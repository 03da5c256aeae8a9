"""What a fixed dead-reckoning trigger can reach when its δ is chosen on the test sessions themselves:

    python tools/trigger_frontier.py RESULTS.json [--link loss=0] [--deltas 60]

An optimistic reference for issue 14's targets, not a policy anyone can run (the tuning sees the test data).
For the test sessions, links and constraints of an ``armtwin evaluate`` results.json, it sweeps δ on a fine
log grid (0.003-2 deg, H = 200 ms) for the max-joint and the RMS-over-joints trigger, simulates each on the test
sessions with the repo's simulator, and prints per (link, ε):

- the lowest load meeting ε, with its tail fraction, and that load / the oracle's (from the file);
- the lowest load meeting ε whose tail is also no higher than the tuned static and dead-reckoning rows' tails
  in the file (the DRL agent's target), as a ratio to the lower of their loads ("–": no δ reaches it).

The test sessions are the ones the file names (``meta.test``).
"""

from __future__ import annotations

import argparse

import numpy as np

from device.link_emulation import LinkSpec
from lab.results_file import ResultsFile, add_arguments, lowest_meeting, short_link
from lab.trigger_sweep import sweep


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--deltas", type=int, default=60, help="δ grid points (default 60)")
    args = ap.parse_args()
    f = ResultsFile.read(args.results, args.link)
    deltas = np.geomspace(0.003, 2.0, args.deltas)
    print("test-side δ sweep (H = 200 ms); cells: load (× oracle) / tail; target: load / min(static, DR) load "
          "with tail <= both of theirs")
    print("| link | ε (deg²) | trigger | lowest load meeting ε | ... with tail ≤ static's and DR's: load / lower "
          "baseline load |")
    print("|---|---|---|---|---|")
    for label in f.links:
        link = LinkSpec.parse(label)
        for norm in ("max", "rms"):
            rows = sweep(f.test, link, norm, deltas, f.constraints)
            for e in f.constraints:
                o = f.row(label, e).get("oracle")
                best = lowest_meeting(rows, e)
                cell = "–" if best is None else (
                    f"{best['load']:.4f}" + (f" ({best['load'] / o['load']:.2f}×)"
                                             if o and o.get("oracle_feasible") else "")
                    + f" / {best['tail'][e]:.3f}")
                tmax, lmin = f.target_bounds(label, e)
                target = "–"
                if np.isfinite(tmax):
                    hit = lowest_meeting(rows, e, tmax)
                    target = "none" if hit is None else (
                        f"{hit['load']:.4f} / {hit['tail'][e]:.3f}: {hit['load'] / lmin:.2f}× (tail bound {tmax:.3f})")
                print(f"| {short_link(label)} | {e:g} | {norm} | {cell} | {target} |", flush=True)


if __name__ == "__main__":
    main()
