"""``armtwin plot``: one picture of a recorded session (measured vs twin per joint, error and ε, sends, load,
end-effector error)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from twin.arm_spec import add_arm_args, arm_spec, check_arm

DEFAULT_EPSILON = 0.002  # deg²: the tighter constraint the docs evaluate (docs/sync_science.md)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="plot a session: measured vs twin per joint, error vs ε, sends, load, end-effector error",
        description="Draw a recorded session into one picture: per joint the measured angle (thick, light) and "
        "what the twin displayed (thin, dark, dashed, on top); the squared error with its 100 ms window MSE and "
        "the constraint ε; the instants samples were sent; the load per second; the end-effector error in mm "
        "through the session's URDF. The format follows the file's extension (png, pdf, svg).",
        epilog="examples:\n  armtwin plot demo-out/session.mcap -o session.png\n"
        "  armtwin plot s.mcap -o s.pdf --epsilon 0.007\n"
        "  armtwin plot s.mcap -o s.png --urdf xarm/xarm6_robot.urdf --ee-link link6\n\n"
        "exit status: 0 = written; 2 = bad output name, unreadable session, or the arm named (by the flags or the\n"
        "session) does not fit the recording (nothing is written; the error says what to pass).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True, help="output picture (.png, .pdf, .svg)")
    p.add_argument("--epsilon", type=float, default=None, metavar="DEG2",
                   help="constraint ε (MSE bound, deg²) drawn in the error panel (default: the session's policy "
                   f"constraint if it has one, else {DEFAULT_EPSILON:g})")
    p.add_argument("--title", default="", help="figure title (default: the session's policy)")
    add_arm_args(p)
    p.set_defaults(run=run)


def session_epsilon(policy: str | None) -> float:
    """The constraint a trained kc-td3/td3 policy of the session carries (its checkpoint, if still there), else
    ``DEFAULT_EPSILON``."""
    if policy:
        from device.policies.base import PolicySpecError
        from device.policies.registry import parse_policy

        try:
            eps = getattr(parse_policy(str(policy)), "eps", None)
        except (PolicySpecError, ValueError, OSError):
            eps = None
        if eps is not None:
            return float(eps)
    return DEFAULT_EPSILON


def run(args: argparse.Namespace) -> int:
    from twin.session import SessionError, load_session
    from viewer.arm import ArmModelError
    from viewer.session_plot import plot_session

    if args.out.suffix.lower() not in (".png", ".pdf", ".svg"):
        print(f"error: -o {args.out}: give a .png, .pdf or .svg file", file=sys.stderr)
        return 2
    try:
        session = load_session(args.session)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    eps = args.epsilon if args.epsilon is not None else session_epsilon(session.meta.get("policy"))
    try:
        named = arm_spec(args).over(session.meta)
        if named.given:  # by name first: a refused plot leaves no directory behind
            check_arm(named, session.joint_names)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        plot_session(session, args.out, eps=eps, arm=arm_spec(args), title=args.title)
    except ArmModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0
