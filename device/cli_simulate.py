"""``armtwin simulate``: score a policy on a recording offline, as the live system would."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="simulate a policy on a session offline: load, MSE, p99, tail, end-effector error",
        description="Replay a recorded session through the same policy, link model, server predictor and "
        "display rule the live system uses, and print load and tracking-error figures. Fast: the whole "
        "session is processed with numpy (see bench/bench_simulator.py).",
        epilog="examples:\n"
        "  armtwin simulate data/sessions/test_a.mcap --policy static:k=10,h=50\n"
        "  armtwin simulate s.mcap --policy dead-reckoning:delta=0.05,h=200 --link delay_ms=20,loss=0.1 \\\n"
        "      --constraint 0.002 --json out.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", type=Path)
    p.add_argument("--policy", required=True, help="policy spec, e.g. static:k=10,h=50")
    p.add_argument("--predictor", default="linear", help="server predictor (default linear)")
    p.add_argument("--link", default="", help="link impairments: delay_ms=D,jitter_ms=J,loss=P[,burst=B][,seed=S]")
    p.add_argument("--constraint", type=float, default=0.002, help="ε in deg² for the tail fraction (default 0.002)")
    p.add_argument("--no-ee", action="store_true", help="skip the end-effector error (needs the URDF)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from device.link import LinkSpec, LinkSpecError
    from device.policies import PolicySpecError, parse_policy
    from device.simulator import simulate
    from twin.session import SessionError, load_session

    try:
        session = load_session(args.session)
        policy = parse_policy(args.policy)
        link = LinkSpec.parse(args.link)
        result = simulate(session, policy, args.predictor, link, args.constraint, keep=not args.no_ee)
    except (SessionError, PolicySpecError, LinkSpecError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = result.metrics
    m["session"] = str(args.session)
    if not args.no_ee and result.qhat is not None:
        m.update(end_effector_error(session, result.qhat))
    print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))
    if args.json:
        args.json.write_text(json.dumps(m, indent=2, default=float) + "\n")
    return 0


def end_effector_error(session: Any, qhat: Any, stride: int = 1) -> dict[str, Any]:
    """End-effector error (mm) through the session's URDF (pybullet FK of measured vs displayed pose)."""
    from twin.arm import ee_error_summary

    try:
        return dict(ee_error_summary(q=session.q, qhat=qhat, joint_names=session.joint_names,
                                     urdf=session.meta.get("urdf"), stride=stride))
    except (ValueError, RuntimeError) as exc:
        print(f"warning: no end-effector error: {exc}", file=sys.stderr)
        return {}
