"""``armtwin evaluate``: the policy comparison protocol (docs/sync_science.md) with results files and plots."""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from pathlib import Path
from typing import Any

from twin.arm_spec import add_arm_args, arm_spec
from twin.predictors import DEFAULT_PREDICTOR

CSV_KEYS = ["policy", "constraint", "delay_ms", "jitter_ms", "loss", "load", "mse_deg2", "rmse_deg",
            "p99_abs_err_deg", "tail_fraction", "meets_constraint", "load_vs_oracle", "load_lower_bound",
            "ee_err_mean_mm", "ee_err_p99_mm",
            "bytes_per_s", "train_load", "train_mse_deg2", "spec", "link", "predictor"]


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="tune policy families on training sessions, score them on test sessions, write results + plots",
        description="For each constraint and link condition, tune every policy family on the --train sessions "
        "(exhaustive search over (k, H) for static, δ (and H) for the event policies) and score the tuned "
        "policy on the --test sessions. Writes results.json, results.csv, candidates.json and plots into --out. "
        "Every record holds the policy spec: 'armtwin simulate TEST... --policy SPEC --link LINK' reproduces it. "
        "The row 'oracle' is the clairvoyant bound: the least load any sender knowing the whole test trajectory "
        "could reach with the server's predictor (defined without loss or jitter; docs/sync_science.md); "
        "load_vs_oracle is every row's load divided by it.",
        epilog="examples:\n"
        "  armtwin evaluate --train data/sessions/train_*.mcap --test data/sessions/test_*.mcap --out eval\n"
        "  armtwin evaluate --train a.mcap --test b.mcap --constraints 0.002,0.007 --links loss=0 loss=0.1 \\\n"
        "      --policies static,dead-reckoning,kc-td3:policy.pt --out eval\n"
        "  armtwin evaluate --train x1.mcap --test x2.mcap --urdf xarm/xarm6_robot.urdf --ee-link link6 --out eval\n\n"
        "The end-effector error (ee_err_*_mm) of the test sessions goes through --urdf/--joint-map/--ee-link, else\n"
        "each session's own arm. exit status: 0 = done; 2 = bad arguments or sessions, or that arm does not fit a\n"
        "test session's joints (checked before any simulation; --no-ee skips the arm).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--train", type=Path, nargs="+", required=True, help="sessions used for tuning")
    p.add_argument("--test", type=Path, nargs="+", required=True, help="held-out sessions used for scoring")
    p.add_argument("--constraints", default="0.002,0.005,0.007,0.01,0.02",
                   help="comma-separated ε values in deg² (default 0.002,0.005,0.007,0.01,0.02)")
    p.add_argument("--links", nargs="+", default=["loss=0", "loss=0.1"],
                   help="link conditions in --link syntax (default: loss=0 loss=0.1)")
    p.add_argument("--policies", default=None,
                   help="comma-separated families or full specs (default: none,static,static-sampling-only,"
                   "static-prediction-only,send-on-delta,dead-reckoning; also static-resend and dead-reckoning-resend: "
                   "the same with ack-based resend of lost samples; dead-reckoning-rms: δ bounds the RMS error over "
                   "joints instead of the largest joint error; dead-reckoning-look and dead-reckoning-rms-look: the "
                   "trigger tests the error one measured one-way delay ahead, look=auto)")
    p.add_argument("--predictor", default=DEFAULT_PREDICTOR, help=f"server predictor (default {DEFAULT_PREDICTOR})")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--no-ee", action="store_true", help="skip end-effector error (FK through the URDF)")
    p.add_argument("--no-oracle", action="store_true",
                   help="skip the clairvoyant bound (row 'oracle' and every load's ratio to it, load_vs_oracle)")
    p.add_argument("--oracle-gap-ms", type=float, default=None,
                   help="longest gap between two sends the bound may use (default 2000 ms; docs/sync_science.md)")
    add_arm_args(p)
    p.set_defaults(run=run)


def _split_policies(text: str) -> list[str]:
    """Split on commas that start a new family (a spec such as static:k=1,h=0 keeps its own commas)."""
    parts: list[str] = []
    for piece in text.split(","):
        if parts and "=" in piece and ":" not in piece:
            parts[-1] += "," + piece
        else:
            parts.append(piece.strip())
    return [p for p in parts if p]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from device.link_emulation import LinkSpec, LinkSpecError
    from device.policies.base import PolicySpecError
    from lab.cli_simulate import check_arms, pooled_ee_error
    from lab.eval_plots import plot_error_distributions, plot_tradeoff
    from lab.evaluate import DEFAULT_FAMILIES, evaluate
    from lab.oracle import MAX_GAP_MS
    from twin.session import SessionError, load_session

    try:
        constraints = [float(c) for c in args.constraints.split(",") if c.strip()]
        if args.oracle_gap_ms is not None and not args.oracle_gap_ms > 0:
            raise ValueError(f"--oracle-gap-ms must be > 0 ms (got {args.oracle_gap_ms:g})")
        links = [LinkSpec.parse(text) for text in args.links]
        families = _split_policies(args.policies) if args.policies else list(DEFAULT_FAMILIES)
        train = [load_session(p) for p in args.train]
        test = [load_session(p) for p in args.test]
        arm = None if args.no_ee else check_arms(arm_spec(args), test, args.test)  # ArmModelError: a ValueError
    except (ValueError, SessionError, LinkSpecError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    overlap = {p.resolve() for p in args.train} & {p.resolve() for p in args.test}
    if overlap:
        print(f"warning: sessions in both --train and --test: {sorted(map(str, overlap))}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)

    def ee(sessions: list[Any], qhats: list[Any]) -> dict[str, Any]:
        # Every 10th pose keeps FK cheap; `armtwin simulate ... --ee-stride 10` reproduces the figure exactly.
        return {**pooled_ee_error(sessions, qhats, stride=10, arm=arm), "ee_stride": 10}

    try:
        records, cloud = evaluate(
            train, test, constraints, links, families, args.predictor,
            progress=lambda jobs: tqdm(jobs, desc="simulating candidates", unit="sim", file=sys.stderr),
            ee=None if args.no_ee else ee, oracle=not args.no_oracle,
            oracle_gap_ms=MAX_GAP_MS if args.oracle_gap_ms is None else args.oracle_gap_ms)
    except (PolicySpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {"train": [str(p) for p in args.train], "test": [str(p) for p in args.test],
            "constraints": constraints, "links": [lk.label() for lk in links], "predictor": args.predictor,
            "command": "armtwin " + " ".join(sys.argv[1:])}
    (args.out / "results.json").write_text(json.dumps(
        {"meta": meta, "records": [{k: v for k, v in r.items() if k != "window_mse"} for r in records]},
        indent=2, default=float) + "\n")
    (args.out / "candidates.json").write_text(json.dumps(cloud, default=float) + "\n")
    with open(args.out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=[*CSV_KEYS, "params"], extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({**r, "params": json.dumps(r["params"])})
    for lk in links:
        tag = re.sub(r"[^0-9a-z.]+", "_", lk.label())
        plot_tradeoff(records, cloud, lk.label(), args.out / f"tradeoff_{tag}.png")
        for eps in constraints:
            plot_error_distributions(records, lk.label(), eps, args.out / f"errors_{tag}_eps{eps:g}.png")
    _print_table(records)
    print(f"wrote {args.out}/results.json, results.csv, candidates.json and plots")
    return 0


def _print_table(records: list[dict[str, Any]]) -> None:
    print(f"{'link':38s} {'ε':>6s} {'policy':24s} {'load':>7s} {'/oracle':>7s} {'mse':>9s} {'p99|e|':>7s} "
          f"{'tail':>6s} {'ok':>3s}  spec")
    for r in records:
        if r["load"] is None:  # the oracle where it is undefined
            print(f"{r['link']:38s} {r['constraint']:6g} {r['policy']:24s} {'-':>7s} {'-':>7s}  "
                  f"{r.get('oracle_note', 'undefined')}")
            continue
        ratio = r.get("load_vs_oracle")
        print(f"{r['link']:38s} {r['constraint']:6g} {r['policy']:24s} {r['load']:7.4f} "
              f"{'-' if ratio is None else format(ratio, '.2f'):>7s} {r['mse_deg2']:9.3g} "
              f"{r['p99_abs_err_deg']:7.3f} {r['tail_fraction']:6.3f} {'yes' if r['meets_constraint'] else 'NO':>3s}"
              f"  {r['spec']}")
