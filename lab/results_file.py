"""An ``armtwin evaluate`` results.json read back, for the test-side reference sweeps in ``tools/``
(``trigger_frontier``, ``trigger_variants``, ``oracle_gap``): its records, test sessions, constraints and links,
and the two bounds issue 14's agent target sets per row."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from device.link_emulation import LinkSpec
from twin.session import Session, load_session

TARGET_BASELINES = ("static", "dead-reckoning")  # the rows the agent target is set against


@dataclass
class ResultsFile:
    """What a sweep needs of a results.json: records, the test sessions it names, its constraints, its links."""

    records: list[dict[str, Any]]
    test: list[Session]
    constraints: list[float]
    links: list[str]

    @classmethod
    def read(cls, path: Path, links: list[str] | None = None) -> ResultsFile:
        """``links`` (--link syntax) picks links; default: the file's lossless ones (where the oracle is defined)."""
        doc = json.loads(path.read_text())
        records = doc["records"]
        labels = list(dict.fromkeys(r["link"] for r in records))
        wanted = [LinkSpec.parse(s).label() for s in links] if links else [
            lb for lb in labels if LinkSpec.parse(lb).loss == 0]
        return cls(records, [load_session(p) for p in doc["meta"]["test"]],
                   sorted({float(r["constraint"]) for r in records}), wanted)

    def row(self, link: str, eps: float) -> dict[str, dict[str, Any]]:
        """The records of one (link, ε), by policy name."""
        return {r["policy"]: r for r in self.records if r["link"] == link and r["constraint"] == eps}

    def target_bounds(self, link: str, eps: float) -> tuple[float, float]:
        """(lowest tail, lowest load) of the tuned static and dead-reckoning rows: a policy meets the agent target
        with a tail no higher than the first and a load no higher than the second ((inf, nan) without them)."""
        base = [r for p, r in self.row(link, eps).items() if p in TARGET_BASELINES]
        if not base:
            return float(np.inf), float("nan")
        return min(b["tail_fraction"] for b in base), min(b["load"] for b in base)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The sweep tools' two shared arguments, what ``ResultsFile.read(args.results, args.link)`` takes."""
    ap.add_argument("results", type=Path, help="results.json written by armtwin evaluate")
    ap.add_argument("--link", action="append", default=None,
                    help="only these links (--link syntax; repeatable; default: the file's lossless links)")


def lowest_meeting(rows: list[dict[str, Any]], eps: float, tail_max: float = np.inf) -> dict[str, Any] | None:
    """The lowest-load sweep row (``load``, ``mse``, ``tail`` = {ε: fraction}) meeting ε with a tail ≤ ``tail_max``."""
    ok = [r for r in rows if r["mse"] <= eps and r["tail"][eps] <= tail_max]
    return min(ok, key=lambda r: r["load"]) if ok else None


def short_link(label: str) -> str:
    """A link label without its zero terms (``perfect`` when nothing is left), as the tables print it."""
    return ", ".join(p for p in label.split(",") if not p.endswith("=0")) or "perfect"
