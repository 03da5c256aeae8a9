"""Where the trigger loses against the clairvoyant bound: the gap split into what each piece of foresight is worth.

    python tools/oracle_gap.py RESULTS.json [--link delay_ms=20] [--deltas 60] [--h-ms 200]

For each lossless link and ε of an ``armtwin evaluate`` results.json, on the test sessions it names:

- ``oracle``: the clairvoyant bound (``lab/oracle.py``): any send instants, each send's H from the policies' set;
- ``oracle, one H``: the same with one horizon for every send (``--h-ms``, the RMS trigger's 200 ms by default);
  this / oracle is what choosing H per send is worth;
- ``foresight``: ``ClairvoyantBound.solve_foresight`` with that H. It knows the future of the prediction the
  twin shows, not of the ones it could send: it ends each segment where that pays best, but cannot choose
  where the next begins. This / ``oracle, one H`` (*next*) is at most what knowing the next prediction's future
  adds (the rule is one use of its knowledge, not the best);
- ``trigger``: the RMS dead-reckoning trigger with that H, δ swept on the test sessions themselves
  (``lab/trigger_sweep.py``, as ``tools/trigger_frontier.py``; a log grid, ``--deltas`` points from 0.003 to 2°),
  the lowest load meeting ε; this / foresight (*current*) compares the trigger, which knows only the past, with
  that rule;
- ``best in file``: the lowest-load row of the file that meets ε (tuned on the training sessions), oracle excluded.

Cells: load (× oracle) / tail fraction ("infeasible": no schedule of that kind meets ε). The last column gives
the three factors (H, next, current): their product is trigger / oracle.
"""

from __future__ import annotations

import argparse

import numpy as np

from device.link_emulation import LinkSpec
from lab.oracle import MAX_GAP_MS, ClairvoyantBound
from lab.results_file import ResultsFile, add_arguments, lowest_meeting, short_link
from lab.trigger_sweep import sweep


def _cell(load: float, oracle: float, tail: float) -> str:
    return f"{load:.4f} ({load / oracle:.2f}×) / {tail:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--deltas", type=int, default=60, help="δ grid points of the trigger sweep (default 60)")
    ap.add_argument("--h-ms", type=float, default=200.0,
                    help="the one horizon of the trigger, the foresight sender and the one-H oracle (default 200)")
    ap.add_argument("--gap-ms", type=float, default=MAX_GAP_MS,
                    help=f"longest gap between sends of the oracles (default {MAX_GAP_MS}, as armtwin evaluate)")
    args = ap.parse_args()
    f = ResultsFile.read(args.results, args.link)
    defined = [lb for lb in f.links if LinkSpec.parse(lb).loss == 0 and LinkSpec.parse(lb).jitter_ms == 0]
    if args.link and len(defined) < len(f.links):
        ap.error("the oracle is defined on lossless links without jitter only: pick such --link values")
    if not defined:
        ap.error(f"{args.results} has no lossless link without jitter, where the oracle is defined")
    f.links = defined
    deltas = np.geomspace(0.003, 2.0, args.deltas)
    h = f"{args.h_ms:g} ms"
    print(f"test sessions: {len(f.test)}; cells: load (× oracle) / tail; factors: oracle one H / oracle, "
          f"foresight / oracle one H, trigger / foresight (H = {h})")
    print(f"| link | ε (deg²) | oracle | oracle, H = {h} | foresight, H = {h} | trigger (δ tuned on test), "
          f"H = {h} | best in file | factors: H, next, current |")
    print("|---|---|---|---|---|---|---|---|")
    for label in f.links:
        link = LinkSpec.parse(label)
        full = ClairvoyantBound(f.test, link, max_gap_ms=args.gap_ms)
        oracles = {e: full.solve(e) for e in f.constraints}
        del full  # its tables are the largest thing held here
        one = ClairvoyantBound(f.test, link, max_gap_ms=args.gap_ms, horizons_ms=(args.h_ms,))
        rows = sweep(f.test, link, "rms", deltas, f.constraints, args.h_ms)
        for e in f.constraints:
            o, o1, fs = oracles[e], one.solve(e), one.solve_foresight(e)
            if not o["feasible"]:
                print(f"| {short_link(label)} | {e:g} | infeasible | | | | | |", flush=True)
                continue
            ol = o["load"]
            trig = lowest_meeting(rows, e)
            rec = [r for p, r in f.row(label, e).items() if p != "oracle" and r.get("meets_constraint")]
            best = min(rec, key=lambda r: r["load"]) if rec else None
            best_cell = "–" if best is None else f"{best['policy']}: {_cell(best['load'], ol, best['tail_fraction'])}"
            one_cell = _cell(o1["load"], ol, o1["tail_fraction"]) if o1["feasible"] else "infeasible"
            fs_cell = _cell(fs["load"], ol, fs["tail_fraction"]) if fs["feasible"] else "infeasible"
            trig_cell = "infeasible" if trig is None else _cell(trig["load"], ol, trig["tail"][e])
            factors = ", ".join([
                f"{o1['load'] / ol:.2f}" if o1["feasible"] else "–",
                f"{fs['load'] / o1['load']:.2f}" if fs["feasible"] and o1["feasible"] else "–",
                f"{trig['load'] / fs['load']:.2f}" if trig is not None and fs["feasible"] else "–"])
            print(f"| {short_link(label)} | {e:g} | {_cell(ol, ol, o['tail_fraction'])} | {one_cell} | {fs_cell} | "
                  f"{trig_cell} | {best_cell} | {factors} |", flush=True)

if __name__ == "__main__":
    main()
