"""``armtwin simulate``: score a policy on a recording offline, as the live system would."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from twin.arm_spec import ArmSpec, add_arm_args, arm_spec
from twin.predictors import DEFAULT_PREDICTOR


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
        "      --constraint 0.002 --json out.json\n"
        "  armtwin simulate xarm.mcap --policy static:k=10,h=50 --urdf xarm/xarm6_robot.urdf --ee-link link6\n\n"
        "exit status: 0 = simulated; 2 = bad arguments or session, or the arm named (by the flags or the session)\n"
        "does not fit a session's joints (checked before simulating; --no-ee skips the arm).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sessions", type=Path, nargs="+", metavar="SESSION",
                   help="one or more sessions; with several, figures are pooled over all their samples")
    p.add_argument("--policy", required=True, help="policy spec, e.g. static:k=10,h=50")
    p.add_argument("--predictor", default=DEFAULT_PREDICTOR, help=f"server predictor (default {DEFAULT_PREDICTOR})")
    p.add_argument("--link", default="", help="link impairments: delay_ms=D,jitter_ms=J,loss=P[,burst=B][,seed=S]")
    p.add_argument("--constraint", type=float, default=0.002, help="ε in deg² for the tail fraction (default 0.002)")
    p.add_argument("--no-ee", action="store_true", help="skip the end-effector error (needs the URDF)")
    p.add_argument("--ee-stride", type=int, default=1, metavar="N",
                   help="end-effector error on every N-th sample (evaluate uses 10; default 1)")
    p.add_argument("--as-recorded", action="store_true",
                   help="replay a device recording's run as it happened: the resend timeouts, link estimates and "
                        "online-learning steps of the live device instead of ones from --link's nominal figures "
                        "(live/offline agreement; see lab/recorded_run.py)")
    p.add_argument("--json", type=Path, help="write the figures as JSON here")
    add_arm_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from device.link_emulation import LinkSpec, LinkSpecError
    from device.policies.base import PolicySpecError
    from device.policies.registry import parse_policy
    from lab.simulator import simulate_many
    from twin.session import SessionError, load_session
    from viewer.arm import ArmModelError

    try:
        sessions = [load_session(p) for p in args.sessions]
        policy = parse_policy(args.policy)
        link = LinkSpec.parse(args.link)
        arm = None if args.no_ee else check_arms(arm_spec(args), sessions, args.sessions)
        m, results = simulate_many(sessions, policy, args.predictor, link, args.constraint, keep=not args.no_ee,
                                    as_recorded=args.as_recorded)
    except (SessionError, PolicySpecError, LinkSpecError, ArmModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m["session"] = ",".join(str(p) for p in args.sessions)
    if any(r.status_lambdas for r in results):  # online learning: where λ started and ended, per session
        m["lambda_path"] = ",".join(f"{r.status_lambdas[0]:.3g}->{r.status_lambdas[-1]:.3g}" for r in results
                                    if r.status_lambdas)
    if arm is not None:
        m.update(pooled_ee_error(sessions, [r.qhat for r in results], stride=max(1, args.ee_stride), arm=arm))
    print(" ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items()))
    if args.json:
        args.json.write_text(json.dumps(m, indent=2, default=float) + "\n")
    return 0


def check_arms(arm: ArmSpec, sessions: list[Any], paths: list[Any]) -> ArmSpec:
    """Before any simulation: ``arm`` (over each session's own) fits every session, else ``ArmModelError`` naming
    the session. A session with no arm named anywhere that the default does not fit only warns (no
    end-effector error for it)."""
    from twin.constants import DEFAULT_URDF
    from viewer.arm import ArmModelError, NoArm, open_arm

    for s, path in zip(sessions, paths, strict=True):
        try:
            open_arm(arm, s.joint_names, s.meta).disconnect()
            if not arm.over(s.meta).given:
                print(f"warning: {path} records no URDF: end-effector error through the default {DEFAULT_URDF} "
                      "(pass --urdf if that is not the arm)", file=sys.stderr)
        except NoArm as exc:
            print(f"warning: {path}: no end-effector error: {exc}", file=sys.stderr)
        except ArmModelError as exc:
            raise ArmModelError(f"{path}: {exc}") from None
    return arm


def pooled_ee_error(sessions: list[Any], qhats: list[Any], stride: int = 1,
                    arm: ArmSpec | None = None) -> dict[str, Any]:
    """End-effector error over several sessions through ``arm`` (over each session's own; ``check_arms`` first):
    mean and p99 over all scored poses (mm). Sessions no arm fits are left out."""
    import numpy as np

    from viewer.arm import JointLimitWarning, NoArm, open_arm

    errs = []
    for s, qh in zip(sessions, qhats, strict=True):
        if qh is None:
            continue
        try:
            model = open_arm(arm or ArmSpec(), s.joint_names, s.meta)
        except NoArm:
            continue  # check_arms said so
        with model, warnings.catch_warnings():
            warnings.simplefilter("ignore", JointLimitWarning)
            errs.append(model.ee_error_mm(s.q, qh, stride))
    err = np.concatenate(errs) if errs else np.empty(0)
    err = err[~np.isnan(err)]
    if not len(err):
        return {}
    return {"ee_err_mean_mm": float(err.mean()), "ee_err_p99_mm": float(np.percentile(err, 99)),
            "ee_err_max_mm": float(err.max())}
