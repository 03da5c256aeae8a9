"""``armtwin device``: the agent on the arm's controller computer."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from twin.arm_spec import add_arm_args, arm_spec
from twin.constants import DEFAULT_URDF
from twin.security import add_security_args


def add_parser(sub: Any, name: str) -> None:
    from device.scoring import DEFAULT_SCORE_LAG_MS
    from device.status_fields import status_help
    from firmware_interfaces.ports import DEFAULT_BAUD

    p = sub.add_parser(
        name,
        help="read the arm at 1 kHz, send what the policy chooses, score the twin online",
        description="Read joint frames from the arm's serial port, send the samples the policy selects to the "
        "twin server, reconstruct what the twin displayed from the predictions sent back, and report load and "
        "tracking error once a second. Ctrl-C or SIGTERM ends the run with a summary.",
        epilog="examples:\n"
        "  armtwin device --port /dev/ttyACM0 --server tcp://edge-pc:5555 --keys keys\n"
        "  armtwin device --port /dev/pts/3 --server tcp://127.0.0.1:5555 --policy static:k=10,h=0 \\\n"
        "      --duration 10 --record out.mcap --summary-json out.json\n"
        "  armtwin device --port spy:///dev/ttyACM0 ...   (any pyserial URL works)\n\n"
        f"{status_help()}\n\n"
        "arm: --urdf (path or pybullet_data id) is announced to the server and recorded with --joint-map and\n"
        "--ee-link, so every verb that reads the session uses that arm; at the first frame the joint count is\n"
        "checked against the URDF (by name, no PyBullet needed; skipped if the URDF is not on this machine).\n\n"
        "exit status: 0 = ran and scored; 1 = no samples from the arm; 2 = bad arguments, or the port can never\n"
        "be a serial device, or no keys (--keys DIR or --insecure), or the arm's frames do not fit the --urdf /\n"
        "--joint-map given (stopped at the first frame; the error says what to pass); 3 = samples came but\n"
        "nothing was scored (no prediction came back from the server: wrong address, or keys the server does not\n"
        "authorise); 4 = ran and scored, but the --record file stopped early (disk full, write error: the loop\n"
        "went on; the summary says how many samples and seconds the file kept, and `armtwin recover` completes it).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", required=True,
                   help="serial device path, pyserial URL, or a stable USB selector: VID:PID, VID:PID:SERIAL or "
                   "serial:SERIAL (survives a replug that renames the port; `armtwin find-port` lists them)")
    p.add_argument("--server", required=True, help="twin server endpoint: tcp://HOST:PORT or HOST:PORT")
    p.add_argument("--policy", default="static:k=1,h=0",
                   help="sampling policy (default static:k=1,h=0): none, static:k=K,h=H_MS, send-on-delta:delta=DEG, "
                   "dead-reckoning:delta=DEG[,h=H_MS], kc-td3:POLICY.pt, td3:POLICY.pt; "
                   "add ,resend=1 to static / send-on-delta / "
                   "dead-reckoning (built-in predictors) to resend at once when a sample's prediction does not "
                   "come back "
                   "(kc-td3 follows its checkpoint); kc-td3:POLICY.pt,online=1 = --online-learning; "
                   "kc-td3:POLICY.pt,actor=expert runs the checkpoint's expert rule instead of its network; "
                   "dead-reckoning:...,look=auto triggers on the error the twin will show one measured one-way "
                   "delay ahead (look=MS: a fixed lookahead)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"baud rate (default {DEFAULT_BAUD}; ignored by native USB CDC)")
    p.add_argument("--device-id", default="arm0", help="name of this arm at the server")
    p.add_argument("--joint-names", help="comma-separated joint names (default: the --joint-map's recorded names, "
                   "else the URDF's movable joints, when their count matches the frames, else joint_1..N)")
    add_arm_args(p, f"{DEFAULT_URDF}, announced and recorded only if the frames fit it", from_session=False)
    p.add_argument("--duration", type=float,
                   help="stop S seconds after the first sample (or after S seconds with none); a replay from "
                   "the mock arm also ends the run when it ends")
    p.add_argument("--record", type=Path, help="write the session (every sample, sends, twin display) here; missing "
                   "directories are created; an existing file is refused unless --force")
    p.add_argument("--force", action="store_true", help="let --record overwrite an existing file")
    p.add_argument("--summary-json", type=Path, help="write the final summary as JSON here")
    p.add_argument("--lag-ms", type=float, default=DEFAULT_SCORE_LAG_MS,
                   help=f"how long samples wait for predictions before being scored "
                        f"(default {DEFAULT_SCORE_LAG_MS:g})")
    p.add_argument("--link", default="", help="emulate an impaired link (uplink and downlink): "
                   "delay_ms=D,jitter_ms=J,loss=P[,burst=B][,seed=S]; the simulator models the same")
    p.add_argument("--key-env", default="ARMTWIN_KEY", metavar="VAR",
                   help="environment variable holding the shared HMAC key, if the server uses one (defence in "
                   "depth on top of CURVE)")
    add_security_args(p, "client", "device")
    p.add_argument("--online-learning", action="store_true",
                   help="KC-TD3 policies: adapt λ on the device from the scored error (background thread, ~1 Hz; "
                        "same as online=1 in the policy spec)")
    p.set_defaults(run=run)


EXIT_NO_SAMPLES = 1  # the arm sent nothing (wrong port, unplugged, not streaming)
EXIT_NOTHING_SCORED = 3  # samples came, but no prediction came back: the twin was never shown, nothing measured
EXIT_RECORDING_STOPPED = 4  # the run went on, but the recording stopped early (disk full): a script must know
# 2: bad arguments or a port that can never be a serial device; 130: interrupted before starting


def run(args: argparse.Namespace) -> int:
    from device.agent import DeviceAgent, DeviceConfig, install_signal_handlers
    from device.link_emulation import LinkSpec
    from device.policies.base import PolicySpecError
    from device.policies.registry import parse_policy
    from device.recorder import check_writable
    from device.summary import format_summary, write_summary
    from firmware_interfaces.ports import PortError, port_problem, resolve_port
    from twin.endpoints import EndpointError, endpoint
    from twin.joint_map import ArmModelError, JointMap
    from twin.paths import OutputPathError, prepare_output
    from twin.security import security_from_args
    from twin.urdf_names import describe_urdf, movable_joint_names

    try:
        security = security_from_args(args, "client", "device")
        server = endpoint(args.server)  # HOST:PORT is accepted too
        if args.record is not None:
            if args.record.exists() and not args.force:
                raise OutputPathError(f"{args.record} exists: give another --record path, or --force to overwrite it")
            prepare_output(args.record)
            check_writable(args.record)  # now, not at the first sample: exit 2 with the reason
        if args.summary_json is not None:
            prepare_output(args.summary_json)
        policy = parse_policy(args.policy)
        if args.online_learning and not policy.supports_online:
            raise PolicySpecError(f"--online-learning adapts a kc-td3/td3 policy's λ; {policy.spec()} has none")
        key = os.environ.get(args.key_env)
        arm = arm_spec(args)
        JointMap.parse(arm.joint_map)  # a bad spec fails now, not at the first frame
        urdf = arm.urdf or DEFAULT_URDF
        names = describe_urdf(urdf)  # None: not on this machine (announced as given; the viewer checks it)
        if arm.ee_link and names is not None and arm.ee_link not in names.links:
            raise ArmModelError(f"--ee-link {arm.ee_link}: {urdf} has no such link; links: {', '.join(names.links)}")
        # A selector must match a port now (exit 2 with what was found otherwise); the reader is given the selector
        # itself and looks it up again on every reconnect, so a replug that renames the port is followed.
        path = resolve_port(args.port)
        cfg = DeviceConfig(
            port=args.port, server=server, policy=policy, device_id=args.device_id, baudrate=args.baud,
            duration_s=args.duration, record=args.record, summary_json=args.summary_json,
            joint_names=args.joint_names.split(",") if args.joint_names else None,
            urdf_joint_names=movable_joint_names(urdf), urdf=urdf, joint_map=arm.joint_map, ee_link=arm.ee_link,
            arm_named=arm.given,
            lag_ms=args.lag_ms, key=key.encode() if key else None, link=LinkSpec.parse(args.link),
            online_learning=args.online_learning, security=security)
    except (PolicySpecError, EndpointError, OutputPathError, PortError, ArmModelError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    problem = port_problem(path)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if "://" not in path and not os.path.exists(path):
        print(f"warning: {path} does not exist (yet): waiting for it to appear (is the arm plugged in? "
              "`armtwin` lists nothing by itself: try `ls /dev/ttyACM* /dev/ttyUSB*`)", file=sys.stderr, flush=True)
    agent = DeviceAgent(cfg)
    install_signal_handlers(agent)
    summary = agent.run()
    if agent.arm_error is not None:
        print(f"error: {agent.arm_error}", file=sys.stderr)
        return 2
    if agent.ended_because:
        print(f"device: run ended: {agent.ended_because}", flush=True)
    print(format_summary(summary), flush=True)
    if cfg.summary_json is not None:
        write_summary(cfg.summary_json, summary)
    if summary["samples"] == 0:
        why = f"; last port error: {agent.reader.last_error}" if agent.reader.last_error else ""
        print(f"error: no samples received from {cfg.port}{why}", file=sys.stderr)
        return EXIT_NO_SAMPLES
    if summary.get("samples_scored", 0) == 0:
        print(f"error: nothing was scored: no prediction came back from {cfg.server} (is the server running and "
              "reachable? see the warnings above)", file=sys.stderr)
        return EXIT_NOTHING_SCORED
    rec = summary.get("recording")
    if isinstance(rec, dict) and rec.get("error"):
        return EXIT_RECORDING_STOPPED  # the message naming the file and the error is printed above
    return 0
