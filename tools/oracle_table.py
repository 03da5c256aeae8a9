"""Markdown table of every policy's load as a ratio to the clairvoyant bound, from `armtwin evaluate`'s results.json
(figures from the file, not typed):

    python tools/oracle_table.py docs/results/oracle/mocap/results.json

One row per (link, ε) where the bound is defined; cells: load (load / oracle), ✗ where the policy misses ε on the
test sessions. A learnt checkpoint is shown at the ε in its file name (``..._eps0.002.pt``) only, as
tools/kctd3_table.py does.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any


def _trained_eps(spec: str) -> float | None:
    m = re.search(r"eps([0-9.]+?)\.(pt|npz)", spec)
    return float(m.group(1)) if m else None


def table(records: list[dict[str, Any]]) -> str:
    oracle = {(r["link"], r["constraint"]): r for r in records
              if r["policy"] == "oracle" and r.get("oracle_defined")}
    pols = list(dict.fromkeys(r["policy"] for r in records if r["policy"] != "oracle"))
    lines = ["| link | ε (deg²) | oracle load | " + " | ".join(pols) + " |", "|" + "---|" * (3 + len(pols))]
    for (link, eps), o in oracle.items():
        cells = []
        for p in pols:
            rs = [r for r in records if r["link"] == link and r["constraint"] == eps and r["policy"] == p
                  and _trained_eps(r["spec"]) in (None, eps)]
            if not rs:
                cells.append("–")
                continue
            r = rs[0]
            ratio = r.get("load_vs_oracle")
            cells.append(f"{r['load']:.4f} ({'–' if ratio is None else format(ratio, '.2f')}×)"
                         + ("" if r["meets_constraint"] else " ✗"))
        short = ", ".join(p for p in link.split(",") if not p.endswith("=0")) or "perfect"
        lines.append(f"| {short} | {eps:g} | {o['load']:.4f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="results.json written by armtwin evaluate")
    args = ap.parse_args()
    print(table(json.loads(args.results.read_text())["records"]))


if __name__ == "__main__":
    main()
