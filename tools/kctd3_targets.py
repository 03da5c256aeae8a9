"""Issue 14's targets, checked on an ``armtwin evaluate`` results.json (figures from the file, not typed):

    python tools/kctd3_targets.py RESULTS.json [MORE.json ...] [--learnt kc-td3-trigger] [--baselines A,B]

Several files (e.g. the baselines' run and the new checkpoints' run, ``--no-oracle``) are merged: the same test
sessions, links and constraints are assumed; a policy row present in several files is taken from the first.
Checkpoints of one policy name from different training runs get one column each, named by the checkpoint's
file stem without its ε (``kc-td3-trigger-rms (kctd3_trigger_rms_mocap)``).

One row per (link, ε): the oracle's load (– where the bound is undefined: loss or jitter), then for every policy its
test load (× the oracle's) / tail fraction (✗: misses ε). A learnt checkpoint is shown only at the ε it was trained
for (the record's ``trained_for_eps``; in older files, the ``_eps0.002`` of its name). The last columns judge
``--learnt`` against the tuned static and dead-reckoning rows of the same link (their resend variants too when
present; ``--baselines`` changes the set): its load and tail as ratios of the lowest baseline load and the lowest
baseline tail, and whether the target holds (meets ε, load ≤ every baseline's, tail ≤ every baseline's); then the
best ε-meeting policy's load / the oracle's (target ≤ 1.15).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from lab.results_file import short_link

# The baselines: the tuned static and dead-reckoning policies (and their resend variants when present).
BASELINES = ("static", "static-resend", "dead-reckoning", "dead-reckoning-resend")


def _trained_for(r: dict[str, Any]) -> float | None:
    """The ε a learnt row's checkpoint was trained for: the record's own field (``armtwin evaluate`` writes it),
    else, in files written before it did, the ``_epsX`` of the checkpoint's name."""
    if "trained_for_eps" in r:
        return r["trained_for_eps"]
    m = re.search(r"eps([0-9.]+?)\.(pt|npz)", r["spec"])
    return float(m.group(1)) if m else None


def _cell(r: dict[str, Any] | None, oracle: dict[str, Any] | None) -> str:
    if r is None:
        return "–"
    ratio = r["load"] / oracle["load"] if oracle is not None and oracle.get("oracle_feasible", True) else None
    return (f"{r['load']:.4f}" + ("" if ratio is None else f" ({ratio:.2f}×)") + f" / {r['tail_fraction']:.3f}"
            + ("" if r["meets_constraint"] else " ✗"))


def _judge(row: dict[str, dict[str, Any]], learnt: str, baselines: tuple[str, ...] = BASELINES) -> str:
    me, base = row.get(learnt), [row[b] for b in baselines if b in row]
    if me is None or not base:
        return "–"
    load, tail = min(b["load"] for b in base), min(b["tail_fraction"] for b in base)
    ok = me["meets_constraint"] and me["load"] <= load and me["tail_fraction"] <= tail
    return f"{me['load'] / load:.2f}, {me['tail_fraction'] / max(tail, 1e-9):.2f}; " + ("yes" if ok else "**no**")


def _family_stem(spec: str) -> str:
    """The checkpoint behind a learnt row, without its ε (``kc-td3:data/p/x_eps0.002.pt,online=1`` -> ``x``)."""
    path = spec.split(":", 1)[-1].split(",")[0]
    return re.sub(r"_?eps[0-9.]+$", "", Path(path).stem)


def label_rows(records: list[dict[str, Any]]) -> None:
    """Name each row's column: its policy, plus its checkpoint family when checkpoints of one policy name
    from different training runs are merged (e.g. ``kc-td3-trigger-rms (kctd3_trigger_rms_mocap)``)."""
    stems: dict[str, set[str]] = {}
    for r in records:
        if r["spec"].startswith(("kc-td3:", "td3:")):
            stems.setdefault(r["policy"], set()).add(_family_stem(r["spec"]))
    for r in records:
        many = len(stems.get(r["policy"], ())) > 1
        r["column"] = f"{r['policy']} ({_family_stem(r['spec'])})" if many else r["policy"]


def table(records: list[dict[str, Any]], learnt: str, baselines: tuple[str, ...] = BASELINES,
          hide: tuple[str, ...] = ()) -> str:
    label_rows(records)
    pols = [c for c in dict.fromkeys(r["column"] for r in records if r["policy"] != "oracle")
            if c == learnt or not any(h in c for h in hide)]
    head = ["link", "ε (deg²)", "oracle load", *pols, f"{learnt} / best baseline: load, tail; target",
            "best / oracle"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = list(dict.fromkeys((r["link"], r["constraint"]) for r in records))
    for link, eps in keys:
        here = [r for r in records if r["link"] == link and r["constraint"] == eps]
        row = {r["column"]: r for r in here if r["policy"] != "oracle" and _trained_for(r) in (None, eps)}
        o = next((r for r in here if r["policy"] == "oracle" and r.get("oracle_defined")), None)
        meeting = [r["load"] for r in row.values() if r["meets_constraint"]]
        best = f"{min(meeting) / o['load']:.2f}" if o is not None and meeting else "–"
        cells = [short_link(link), f"{eps:g}", "–" if o is None else f"{o['load']:.4f}",
                 *(_cell(row.get(p), o) for p in pols), _judge(row, learnt, baselines), best]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path, nargs="+", help="results.json written by armtwin evaluate")
    ap.add_argument("--learnt", default="kc-td3-trigger",
                    help="the column judged against the baselines (a policy name, with its checkpoint family in "
                    "parentheses when several are merged, as the header shows)")
    ap.add_argument("--baselines", default=",".join(BASELINES),
                    help=f"comma-separated rows the learnt one is judged against (default {','.join(BASELINES)}; "
                    "e.g. add dead-reckoning-rms)")
    ap.add_argument("--hide", action="append", default=[],
                    help="leave out the columns whose name holds this text (repeatable; e.g. -online); the judged "
                    "column and the best/oracle figure still use every row")
    args = ap.parse_args()
    print("cells: test load (× oracle) / tail fraction; ✗ = misses ε")
    records: list[dict[str, Any]] = []
    seen = set()
    for path in args.results:
        for r in json.loads(path.read_text())["records"]:
            key = (r["policy"], r["spec"], r["link"], r["constraint"])
            if key not in seen:
                seen.add(key)
                records.append(r)
    print(table(records, args.learnt, tuple(args.baselines.split(",")), tuple(args.hide)))


if __name__ == "__main__":
    main()
