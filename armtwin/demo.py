"""``armtwin demo``: bundled session -> mock arm (pty) -> device -> server, summary + picture.

Every part runs as its own process, exactly as a user would start them, talking over a real pty and loopback TCP.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from twin.constants import DEFAULT_URDF
from twin.predictors import DEFAULT_PREDICTOR

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SESSION = REPO / "data" / "sessions" / "default.mcap"
DEFAULT_PUB = "tcp://127.0.0.1:5556"
DEFAULT_POLICY = "dead-reckoning:delta=0.1,h=200"
DEFAULT_EPSILON = 0.002  # deg²: the tighter of the two constraints the docs evaluate (docs/sync_science.md)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="run mock arm, server and device on the bundled session; print load/error, write a plot",
        description="Replay a recorded session through a mock serial port (a real pty) into the device agent, "
        "which sends samples to a twin server on loopback and scores the twin online. Prints the summary and "
        "writes summary.json, session.mcap and tracking.png into --out. The link is CURVE-encrypted with keys made "
        "fresh in --out/keys (or --keys DIR); --insecure runs it in plaintext.",
        epilog="examples:\n  armtwin demo\n  armtwin demo --seconds 5 --out /tmp/demo --policy static:k=5,h=20",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=20.0, help="how long to run (default 20)")
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="output directory (default demo-out)")
    p.add_argument("--session", type=Path, default=DEFAULT_SESSION, help="session to replay (default: bundled)")
    p.add_argument("--policy", default=DEFAULT_POLICY, help=f"device policy (default {DEFAULT_POLICY})")
    p.add_argument("--pub", default=DEFAULT_PUB,
                   help=f"where the server publishes twin states (default {DEFAULT_PUB}, the viewer's default; "
                   "a random port if it is taken)")
    p.add_argument("--predictor", default=DEFAULT_PREDICTOR,
                   help=f"server predictor (default {DEFAULT_PREDICTOR})")
    p.add_argument("--epsilon", type=float, default=None, metavar="DEG2",
                   help="constraint ε (MSE bound, deg²) drawn in the plot's error panel (default: the one a "
                   f"kc-td3/td3 policy was trained for, else {DEFAULT_EPSILON:g})")
    p.add_argument("--keys", type=Path, default=None, metavar="DIR",
                   help="use these CURVE keys (armtwin keys init DIR) instead of fresh ones in --out/keys")
    p.add_argument("--insecure", action="store_true", help="plaintext ZeroMQ (every process warns)")
    p.set_defaults(run=run)


def demo_security(args: argparse.Namespace) -> list[str]:
    """The security flags every child gets: --insecure, or --keys with the given or freshly made keys."""
    if args.insecure:
        return ["--insecure"]
    if args.keys is not None:
        return ["--keys", str(args.keys)]
    from twin.security import init_keys

    keys = args.out / "keys"
    init_keys(keys, ["device", "viewer"], force=True)  # fresh for every demo: nothing to manage
    return ["--keys", str(keys)]


def plot_epsilon(policy: str, given: float | None) -> tuple[float, str]:
    """The ε to draw and where it comes from: ``given`` (--epsilon), the policy's own constraint (a trained
    kc-td3/td3 checkpoint carries its ε), else ``DEFAULT_EPSILON``."""
    if given is not None:
        return given, "--epsilon"
    from device.policies.base import PolicySpecError
    from device.policies.registry import parse_policy

    try:
        eps = getattr(parse_policy(policy), "eps", None)
    except (PolicySpecError, ValueError):  # the device reports a bad policy; the plot still gets an ε
        eps = None
    return (float(eps), "the policy's constraint") if eps is not None else (DEFAULT_EPSILON, "default")


def read_key(proc: subprocess.Popen[str], key: str) -> str:
    """Read the child's stdout until 'key=value'; the children print these first."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(key + "="):
            return line.strip().split("=", 1)[1]
    raise RuntimeError(f"{proc.args!r} exited before printing {key}= (exit code {proc.wait()})")


def stop_process(proc: subprocess.Popen[str]) -> None:
    """SIGTERM, then SIGKILL after 10 s; closes its pipes."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def spawn(args: list[str], stderr: IO[str] | int | None = None) -> subprocess.Popen[str]:
    """``python -m armtwin ARGS`` with stdout piped as text lines (this interpreter, so the same install)."""
    return subprocess.Popen([sys.executable, "-m", "armtwin", *args], stdout=subprocess.PIPE, stderr=stderr,
                            text=True, bufsize=1)


def run(args: argparse.Namespace) -> int:
    from twin.session import SessionError, load_session
    from viewer.plots import plot_tracking

    if not args.session.exists():
        print(f"error: session {args.session} not found (the bundled one lives in data/sessions/)", file=sys.stderr)
        return 2
    try:
        src = load_session(args.session)
    except SessionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rec, summary_path = args.out / "session.mcap", args.out / "summary.json"
    sec = demo_security(args)
    procs: list[subprocess.Popen[str]] = []
    try:
        server = spawn(["server", "--bind", "tcp://127.0.0.1:*", "--pub", args.pub, "--predictor", args.predictor,
                         *sec], stderr=subprocess.PIPE)
        try:
            endpoint = read_key(server, "bind")
        except RuntimeError:  # the PUB port is taken (another server or demo): publish on a random port
            stop_process(server)
            server = spawn(["server", "--bind", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*",
                             "--predictor", args.predictor, *sec])
            endpoint = read_key(server, "bind")
        procs.append(server)
        pub = read_key(server, "pub")
        loop = ["--loop"] if args.seconds > src.duration_s else []
        arm = spawn(["mock-arm", str(args.session), *loop], stderr=subprocess.DEVNULL)
        procs.append(arm)
        port = read_key(arm, "port")
        print(f"demo: mock arm on {port}, server on {endpoint}, policy {args.policy}, {args.seconds:g} s",
              flush=True)
        print(f"demo: link {'PLAINTEXT (--insecure)' if sec == ['--insecure'] else 'CURVE, keys in ' + sec[1]}",
              flush=True)
        print(f"demo: watch the twin with: armtwin view --sub {pub} {' '.join(sec)}   (or --headless "
              "--snapshot-every 1 --out snaps)", flush=True)
        device = subprocess.run(
            [sys.executable, "-m", "armtwin", "device", "--port", port, "--server", endpoint, "--policy",
             args.policy, "--duration", str(args.seconds), "--record", str(rec), "--summary-json",
             str(summary_path), "--joint-names", ",".join(src.joint_names),
             "--urdf", str(src.meta.get("urdf", DEFAULT_URDF)), *sec],
            check=False,
        )
        if device.returncode != 0:
            print(f"error: device exited with {device.returncode}", file=sys.stderr)
            return 1
    finally:
        for p in reversed(procs):
            stop_process(p)
    summary = json.loads(summary_path.read_text())
    session = load_session(rec)
    png = args.out / "tracking.png"
    eps, eps_from = plot_epsilon(args.policy, args.epsilon)
    plot_tracking(session, png, title=f"armtwin demo: {args.policy}, predictor {args.predictor} - "
                  f"load {summary['load']:.3f}, MSE {summary['mse_deg2']:.3g} deg² (ε = {eps:g}, {eps_from})",
                  eps=eps)
    print(f"demo result: load={summary['load']:.3f} mse={summary['mse_deg2']:.4g}deg2 "
          f"rmse={summary['rmse_deg']:.4g}deg frames_lost={summary['frames_lost']} samples={summary['samples']}")
    print(f"wrote {summary_path}, {rec}, {png}")
    return 0
