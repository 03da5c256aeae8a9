"""Evaluation protocol: tune each policy family on training sessions, score on test sessions.

For every link condition, each candidate parameter set of each family is simulated once on the training and on
the test sessions (the constraint does not change a simulation, only the choice). For each constraint ε, the
tuned candidate of a family is the one with the lowest training load whose pooled training MSE meets ε (the
lowest-MSE candidate when none does); its *test* figures are reported. Every record carries the exact policy
spec, so ``armtwin simulate TEST... --policy SPEC --link LINK`` reproduces its numbers.

With ``oracle`` the records also hold the clairvoyant bound (``lab.oracle``) on the test sessions for each
constraint and link (a row ``oracle``, undefined with loss or jitter), and every record's load as a ratio to it
(``load_vs_oracle``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.link_emulation import LinkSpec
from device.policies.registry import parse_policy
from lab.oracle import MAX_GAP_MS, ClairvoyantBound, OracleUndefined, undefined_reason
from lab.simulator import simulate_many
from twin.predictors import DEFAULT_PREDICTOR
from twin.session import Session

STATIC_K = (1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 150, 200)
STATIC_H_MS = (0, 5, 10, 20, 50, 100, 200, 500)
DELTAS_DEG = (0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)
DR_H_MS = (50, 200, 1000)
# The dead-reckoning families searched over DELTAS_DEG x DR_H_MS: what each adds to the spec. -resend: ack-based
# resend of lost samples (device.acks); -rms: δ bounds the RMS over joints, the quantity the MSE constraint averages.
# -look: the trigger tests the error one measured one-way delay ahead (look=auto), so a correction lands in time.
DR_VARIANTS = {"dead-reckoning": "", "dead-reckoning-resend": ",resend=1", "dead-reckoning-rms": ",norm=rms",
               "dead-reckoning-look": ",look=auto", "dead-reckoning-rms-look": ",norm=rms,look=auto"}
DEFAULT_FAMILIES = ("none", "static", "static-sampling-only", "static-prediction-only", "send-on-delta",
                    "dead-reckoning")


@dataclass(frozen=True)
class Candidate:
    """One parameter set of one family: the record name, the policy spec, and its parameters."""

    family: str
    spec: str
    params: dict[str, Any]


def candidates(family: str, predictor: str = DEFAULT_PREDICTOR) -> list[Candidate]:
    """The grid searched for a family (a fixed policy spec such as ``kc-td3:P.pt`` is its own single candidate).

    Dead reckoning mirrors ``predictor``, the one the server runs in this evaluation.
    """
    if family == "none":
        return [Candidate("none", "none:h=0", {"k": 1, "h_ms": 0})]
    if family in ("static", "static-sampling-only", "static-prediction-only"):
        ks = (1,) if family == "static-prediction-only" else STATIC_K
        hs = (0,) if family == "static-sampling-only" else STATIC_H_MS
        return [Candidate(family, f"static:k={k},h={h}", {"k": k, "h_ms": h}) for k in ks for h in hs]
    if family == "static-resend":  # static with ack-based resend (device.acks): the fair baseline for KC-TD3
        return [Candidate(family, f"static:k={k},h={h},resend=1", {"k": k, "h_ms": h})
                for k in STATIC_K for h in STATIC_H_MS]
    if family == "send-on-delta":
        return [Candidate(family, f"send-on-delta:delta={d},h=0", {"delta_deg": d}) for d in DELTAS_DEG]
    if family in DR_VARIANTS:
        return [Candidate(family, f"dead-reckoning:delta={d},h={h},pred={predictor}{DR_VARIANTS[family]}",
                          {"delta_deg": d, "h_ms": h}) for d in DELTAS_DEG for h in DR_H_MS]
    # Anything else is a complete policy spec evaluated as is (e.g. kc-td3:POLICY.pt, static:k=10,h=50).
    parse_policy(family)  # fail early with the list of valid families
    return [Candidate(family.split(":", 1)[0], family, {"spec": family})]


def choose(rows: list[dict[str, Any]], eps: float) -> dict[str, Any]:
    """Lowest training load meeting ε (ties: lower MSE); else the lowest training MSE."""
    ok = [r for r in rows if r["train"]["mse_deg2"] <= eps]
    if ok:
        return min(ok, key=lambda r: (r["train"]["load"], r["train"]["mse_deg2"]))
    return min(rows, key=lambda r: r["train"]["mse_deg2"])


def evaluate(
    train: list[Session],
    test: list[Session],
    constraints: list[float],
    links: list[LinkSpec],
    families: Iterable[str] = DEFAULT_FAMILIES,
    predictor: str = DEFAULT_PREDICTOR,
    progress: Callable[[Iterable[Any]], Iterable[Any]] | None = None,
    ee: Callable[[list[Session], list[np.ndarray | None]], dict[str, Any]] | None = None,
    oracle: bool = True,
    oracle_gap_ms: float = MAX_GAP_MS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Returns (records: one per family x constraint x link, plus with ``oracle`` one ``oracle`` row per
    constraint x link; cloud: every candidate's test/train figures)."""
    fams = list(families)
    jobs = [(link, c) for link in links for fam in fams for c in candidates(fam, predictor)]
    it: Iterable[Any] = progress(jobs) if progress else jobs
    cloud: list[dict[str, Any]] = []
    for link, cand in it:
        policy = parse_policy(cand.spec)
        tr, _ = simulate_many(train, policy, predictor, link)
        te, _ = simulate_many(test, policy, predictor, link)
        cloud.append({"family": cand.family, "spec": cand.spec, "params": cand.params, "link": link.label(),
                      "delay_ms": link.delay_ms, "loss": link.loss, "train": tr, "test": te})
    records = []
    for link in links:
        for fam in fams:
            rows = [r for r in cloud if r["link"] == link.label() and
                    (r["family"] == fam or r["spec"] == fam)]
            for eps in constraints:
                best = choose(rows, eps)
                policy = parse_policy(best["spec"])
                te, results = simulate_many(test, policy, predictor, link, eps, keep=ee is not None)
                rec = {
                    "policy": best["family"] if best["family"] == fam else
                    policy.display_name,
                    "spec": best["spec"],
                    "constraint": eps,
                    "link": link.label(),
                    "delay_ms": link.delay_ms,
                    "jitter_ms": link.jitter_ms,
                    "loss": link.loss,
                    "predictor": predictor,
                    "params": best["params"],
                    "load": te["load"],
                    "mse_deg2": te["mse_deg2"],
                    "rmse_deg": te["rmse_deg"],
                    "p99_abs_err_deg": te["p99_abs_err_deg"],
                    "tail_fraction": te["tail_fraction"],
                    "meets_constraint": bool(te["mse_deg2"] <= eps),
                    "bytes_per_s": te["bytes_per_s"],
                    "train_load": best["train"]["load"],
                    "train_mse_deg2": best["train"]["mse_deg2"],
                    "tuned_meets_on_train": bool(best["train"]["mse_deg2"] <= eps),
                    "window_mse": [w for r in results for w in r.acc.window_mse],
                    # A learnt checkpoint carries the ε it was trained for; scored at another ε it is only a
                    # reference (the plots show it at its own ε).
                    "trained_for_eps": getattr(policy, "eps", None),
                }
                if ee is not None:
                    rec.update(ee(test, [r.qhat for r in results]))
                records.append(rec)
    if oracle:
        records += oracle_records(test, constraints, links, predictor, ee, oracle_gap_ms)
        order = {link.label(): i for i, link in enumerate(links)}
        records.sort(key=lambda r: order[r["link"]])  # stable: each link's oracle rows follow its policies
        add_oracle_ratios(records)
    return records, cloud


def oracle_records(
    test: list[Session],
    constraints: list[float],
    links: list[LinkSpec],
    predictor: str = DEFAULT_PREDICTOR,
    ee: Callable[[list[Session], list[np.ndarray | None]], dict[str, Any]] | None = None,
    max_gap_ms: float = MAX_GAP_MS,
) -> list[dict[str, Any]]:
    """One ``oracle`` record per link x constraint: the clairvoyant bound's figures on the pooled test sessions
    (load, MSE, tail... of its schedule, scored like any policy), or ``oracle_defined: false`` and no figures."""
    out = []
    for link in links:
        reason = undefined_reason(link, predictor)
        bound = None
        if reason is None:
            try:
                bound = ClairvoyantBound(test, link, predictor, max_gap_ms=max_gap_ms)
            except OracleUndefined as exc:  # e.g. sessions too long for its tables: say so in the row
                reason = str(exc)
        for eps in constraints:
            base = {"policy": "oracle", "constraint": eps, "link": link.label(), "delay_ms": link.delay_ms,
                    "jitter_ms": link.jitter_ms, "loss": link.loss, "predictor": predictor,
                    "params": {"max_gap_ms": max_gap_ms}}
            if bound is None:
                out.append({**base, "spec": "oracle", "oracle_defined": False, "oracle_note": reason,
                            "load": None, "mse_deg2": None, "rmse_deg": None, "p99_abs_err_deg": None,
                            "tail_fraction": None, "meets_constraint": None, "window_mse": []})
                continue
            r = bound.solve(eps, keep=ee is not None)
            rec = {**base, "spec": bound.spec(), "oracle_defined": True,
                   "load": r["load"], "load_lower_bound": r["load_lower_bound"], "mse_deg2": r["mse_deg2"],
                   "rmse_deg": r["rmse_deg"], "p99_abs_err_deg": r["p99_abs_err_deg"],
                   "tail_fraction": r["tail_fraction"], "meets_constraint": bool(r["mse_deg2"] <= eps),
                   "oracle_feasible": r["feasible"], "oracle_lambda": r["lambda"], "oracle_hull": r["hull"],
                   "window_mse": r["window_mse"]}
            if ee is not None:
                rec.update(ee(test, r["qhats"]))
            out.append(rec)
    return out


def add_oracle_ratios(records: list[dict[str, Any]]) -> None:
    """``load_vs_oracle`` on every record: its load / the oracle's at the same link and ε (None where the oracle
    is undefined, or where no schedule meets ε: then its row holds the least-MSE schedule)."""
    ref = {(r["link"], r["constraint"]): r["load"] for r in records
           if r["policy"] == "oracle" and r.get("oracle_defined") and r.get("oracle_feasible")}
    for r in records:
        o = ref.get((r["link"], r["constraint"]))
        r["load_vs_oracle"] = r["load"] / o if o and r["load"] is not None else None
