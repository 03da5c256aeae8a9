"""Markdown table of `armtwin evaluate`'s results.json, as docs/sync_science.md shows it (figures from the file,
not typed): python tools/results_table.py docs/results/bundled/results.json --constraints 0.002,0.007
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(records: list[dict], constraints: set[float], skip: set[str] | frozenset[str] = frozenset()) -> str:
    head = ("| loss | ε (deg²) | policy | load | MSE (deg²) | p99 \\|e\\| (deg) | tail | EE mean (mm) | meets "
            "| spec |\n|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in sorted(records, key=lambda r: (r["delay_ms"], r["loss"])):  # stable: evaluate's policy order
        if r["constraint"] not in constraints or r["policy"] in skip or r["load"] is None:  # None: undefined oracle
            continue
        ee = r.get("ee_err_mean_mm")
        rows.append(f"| {r['loss']:g} | {r['constraint']:g} | {r['policy']} | {r['load']:.4f} | {r['mse_deg2']:.3g} | "
                    f"{r['p99_abs_err_deg']:.3f} | {r['tail_fraction']:.3f} | "
                    f"{'-' if ee is None else format(ee, '.3f')} | {'yes' if r['meets_constraint'] else 'no'} | "
                    f"`{r['spec']}` |")
    return "\n".join([head, *rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("results", type=Path)
    ap.add_argument("--constraints", default="0.002,0.007", help="comma-separated ε values to show")
    ap.add_argument("--skip", default="static-prediction-only", help="comma-separated policies to leave out")
    args = ap.parse_args()
    records = json.loads(args.results.read_text())["records"]
    print(table(records, {float(c) for c in args.constraints.split(",")}, set(filter(None, args.skip.split(",")))))


if __name__ == "__main__":
    main()
