"""``armtwin info``: summarise a session file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from twin.arm_spec import ArmSpec, add_arm_args, arm_spec


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="summarise a session file",
        description="Duration, joints, sample rate and gaps, load and tracking error (recomputed from the "
        "recorded samples and twin display), metadata and the recorder's own summary.",
        epilog="examples:\n  armtwin info out.mcap\n  armtwin info out.mcap --json\n"
        "  armtwin info s.mcap --urdf xarm/xarm6_robot.urdf --ee-link link6\n\n"
        "exit status: 0 = summarised; 2 = unreadable file, or the arm named (by the flags or the session) does not\n"
        "fit the recording (the summary is printed, the end-effector error is not, the error says what to pass).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_arm_args(p)
    p.set_defaults(run=run)


def session_info(path: Path, arm: ArmSpec | None = None) -> dict[str, Any]:
    """The summary as a dict; ``_arm_error`` holds why the named arm does not fit (not printed by --json)."""
    import numpy as np

    from twin.metrics import ErrorAccumulator
    from twin.session import load_session

    s = load_session(path)
    dt = np.diff(s.t_us)
    info: dict[str, Any] = {
        "path": str(path),
        "samples": len(s.t_us),
        "duration_s": s.duration_s,
        "joints": s.joint_names,
        "rate_hz": float(1e6 / np.median(dt)) if len(dt) else float("nan"),
        "gaps_over_2ms": int(np.count_nonzero(dt > 2000)),
        "range_deg": {n: [float(np.degrees(s.q[:, i].min())), float(np.degrees(s.q[:, i].max()))]
                      for i, n in enumerate(s.joint_names)},
        "truncated": s.truncated,
        "meta": s.meta,
    }
    if s.sent is not None:
        info["load"] = float(s.sent.mean())
    if s.qhat is not None:
        acc = ErrorAccumulator()
        acc.add(s.t_us, s.q, s.qhat)
        info.update(acc.summary())
        info.update(_ee_error(s, arm or ArmSpec()))
    if s.summary is not None:
        info["recorded_summary"] = s.summary
    return info


def _ee_error(session: Any, arm: ArmSpec) -> dict[str, Any]:
    """End-effector error (mm) of the twin through the arm's URDF: the task-level KPI."""
    from armtwin.extras import missing_extra

    if missing_extra("viewer"):  # FK needs pybullet; a light install still gets every joint-space figure
        return {"ee_err_mean_mm": None,
                "ee_err_error": "end-effector error needs pybullet: pip install 'armtwin[viewer]'"}
    from viewer.arm import ArmModelError, NoArm, ee_error_summary

    stride = max(1, len(session.t_us) // 20_000)  # FK of ~20k poses keeps `info` quick on long sessions
    try:
        return dict(ee_error_summary(session, stride=stride, urdf=arm.urdf, joint_map=arm.joint_map,
                                     ee_link=arm.ee_link))
    except NoArm as exc:  # no arm named anywhere: the joint-space figures are the summary
        return {"ee_err_mean_mm": None, "ee_err_error": str(exc)}
    except ArmModelError as exc:
        return {"ee_err_mean_mm": None, "ee_err_error": str(exc), "_arm_error": str(exc)}
    except RuntimeError as exc:
        return {"ee_err_mean_mm": None, "ee_err_error": str(exc)}


def run(args: argparse.Namespace) -> int:
    from twin.session import SessionError

    try:
        info = session_info(args.session, arm_spec(args))
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    arm_error = info.pop("_arm_error", None)
    if args.json:
        print(json.dumps(info, indent=2, default=float))
        return _arm_exit(arm_error)
    print(f"{info['path']}: {info['samples']} samples, {info['duration_s']:.3f} s at {info['rate_hz']:.1f} Hz, "
          f"{len(info['joints'])} joints{' (TRUNCATED file)' if info['truncated'] else ''}")
    print(f"  joints: {', '.join(info['joints'])}")
    print(f"  source: {info['meta'].get('source', '?')}  resampled: {info['meta'].get('resampled', False)}  "
          f"policy: {info['meta'].get('policy', '-')}")
    if "load" in info:
        print(f"  load: {info['load']:.4f}")
    if "mse_deg2" in info:
        print(f"  mse: {info['mse_deg2']:.4g} deg2  rmse: {info['rmse_deg']:.4g} deg  "
              f"p99|e|: {info['p99_abs_err_deg']:.4g} deg  unscored: {info['samples_unscored']}")
    if info.get("ee_err_mean_mm") is not None:
        print(f"  end-effector error: mean {info['ee_err_mean_mm']:.3f} mm  p99 {info['ee_err_p99_mm']:.3f} mm  "
              f"max {info['ee_err_max_mm']:.3f} mm  (arm: {info.get('ee_urdf', '?')})")
    if info.get("ee_err_error") and arm_error is None:
        print(f"  end-effector error: not computed: {info['ee_err_error']}")
    print(f"  gaps > 2 ms: {info['gaps_over_2ms']}")
    rs = info.get("recorded_summary") or {}
    if rs.get("time_resets") or rs.get("port_reconnects"):
        print(f"  firmware restarts: {rs.get('time_resets', 0)}  port reconnects: {rs.get('port_reconnects', 0)}")
    rec = rs.get("recording")
    if isinstance(rec, dict) and rec.get("error"):
        print(f"  recording STOPPED during the run: {rec['error']}")
    if info["truncated"]:
        print(f"  the file has no footer (the recorder was killed): it was read up to its last intact chunk; "
              f"'armtwin recover {info['path']} -o FIXED.mcap' writes a complete, indexed copy")
    return _arm_exit(arm_error)


def _arm_exit(arm_error: str | None) -> int:
    if arm_error is None:
        return 0
    print(f"error: {arm_error}", file=sys.stderr)
    return 2
