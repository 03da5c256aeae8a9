"""The KC-TD3 comparison table of docs/kctd3.md from an ``armtwin evaluate`` results.json.

    python tools/kctd3_table.py docs/results/kctd3/results.json

One row per (link, ε): load / MSE / tail fraction on the held-out sessions for the tuned baselines and for each
learnt checkpoint scored at the ε it was trained for (the ε in its file name, ``..._eps0.002.pt``; with λ as
trained and, ``kc-td3-online``, adapted on the device), then KC-TD3's load and tail as ratios of the best static
policy's, and whether the acceptance holds (meets ε, lower load, lower tail).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

BASELINES = ("static", "static-resend", "dead-reckoning", "dead-reckoning-resend")


def _cell(r: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    mark = "" if r["meets_constraint"] else " ✗"
    return f"{r['load']:.4f} / {r['mse_deg2']:.2g} / {r['tail_fraction']:.3f}{mark}"


def _short(link: str) -> str:
    """``delay_ms=0,jitter_ms=0,loss=0.1`` -> ``loss 0.1``; a perfect link -> ``perfect``."""
    parts = [p.replace("_ms=", " ").replace("=", " ") + (" ms" if "_ms=" in p else "")
             for p in link.split(",") if not p.endswith("=0")]
    return ", ".join(parts) or "perfect"


def _trained_eps(spec: str) -> float | None:
    m = re.search(r"eps([0-9.]+?)\.(pt|npz)", spec)
    return float(m.group(1)) if m else None


def _verdict(kc: dict[str, Any] | None, st: dict[str, Any] | None) -> str:
    """Load and tail as ratios of the static policy's; acceptance: meets ε with less load and a thinner tail."""
    if kc is None or st is None:
        return "–"
    ok = kc["meets_constraint"] and kc["load"] < st["load"] and kc["tail_fraction"] < st["tail_fraction"]
    return (f"{kc['load'] / st['load']:.2f}, {kc['tail_fraction'] / max(st['tail_fraction'], 1e-9):.2f}; "
            + ("yes" if ok else "**no**"))


def table(records: list[dict[str, Any]]) -> str:
    links = list(dict.fromkeys(r["link"] for r in records))
    eps_all = sorted({r["constraint"] for r in records})
    learnt = [f for f in ("kc-td3", "kc-td3-online", "td3") if any(r["policy"] == f for r in records)]
    cols = [*(b for b in BASELINES if any(r["policy"] == b for r in records)), *learnt]
    judged = [f for f in ("kc-td3", "kc-td3-online") if f in learnt]
    head = ["link", "ε (deg²)", *cols, *(f"{f} / static: load, tail; acceptance" for f in judged)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for link in links:
        for eps in eps_all:
            row = {}
            for r in records:
                if r["link"] != link or r["constraint"] != eps:
                    continue
                if r["policy"] in BASELINES or _trained_eps(r["spec"]) == eps:
                    row[r["policy"]] = r
            verdicts = [_verdict(row.get(f), row.get("static")) for f in judged]
            lines.append("| " + " | ".join([_short(link), f"{eps:g}", *(_cell(row.get(c)) for c in cols),
                                            *verdicts]) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, help="results.json written by armtwin evaluate")
    args = ap.parse_args()
    records = json.loads(args.results.read_text())
    records = records["records"] if isinstance(records, dict) else records
    print("cells: load / MSE (deg²) / tail fraction on the held-out sessions; ✗ = misses ε")
    print(table(records))


if __name__ == "__main__":
    main()
