"""``armtwin mock-arm``: replay a session file through a real pty, like the arm's firmware would stream it."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="stream a recorded session as serial frames on a pty (a mock arm)",
        description="Open a pseudo-terminal, print 'port=<path>' as the first line on stdout, and stream the "
        "session's samples as protocol-v1 frames at their recorded times (absolute-deadline pacing). Open the "
        "port with 'armtwin device --port <path>'. By default streaming starts when a reader opens the port.",
        epilog="examples:\n  armtwin mock-arm data/sessions/default.mcap\n"
        "  armtwin mock-arm s.mcap --loop --rate 2 --corrupt-rate 0.001\n"
        "  armtwin mock-arm s.mcap --bounce            # long runs from a short recording, no jumps",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", help="session file (.mcap) to replay")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0 = real time)")
    p.add_argument("--loop", action="store_true", help="repeat forever (sequence and time keep increasing)")
    p.add_argument("--bounce", action="store_true",
                   help="loop forwards then backwards, so angles stay continuous at the seams")
    p.add_argument("--corrupt-rate", type=float, default=0.0, metavar="P",
                   help="probability of replacing each byte with a random one (exercises the decoder)")
    p.add_argument("--seed", type=int, default=None, help="seed for --corrupt-rate")
    p.add_argument("--no-wait", action="store_true", help="start streaming at once, even with no reader")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from firmware_interfaces.mock_arm import MockArm
    from twin.session import SessionError, load_session, to_urad

    try:
        session = load_session(args.session)
        arm = MockArm(session.t_us, to_urad(session.q), rate=args.rate, loop=args.loop, bounce=args.bounce,
                      corrupt_rate=args.corrupt_rate, seed=args.seed)
    except (SessionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with arm:
        print(f"port={arm.port}", flush=True)
        print(f"mock arm: {len(session.t_us)} samples, {session.joints} joints, {session.duration_s:.1f} s"
              f"{' (bouncing)' if args.bounce else ' (looping)' if args.loop else ''}", file=sys.stderr, flush=True)
        if not args.no_wait:
            print("waiting for a reader to open the port...", file=sys.stderr, flush=True)
            if not arm.wait_for_reader(stop):
                return 0
        st = arm.run(stop)
    print(f"mock arm done: frames_sent={st.frames_sent} frames_dropped={st.frames_dropped} "
          f"bytes_corrupted={st.bytes_corrupted} late_max_us={st.late_max_us} loops={st.loops} "
          f"unread_bytes={st.unread_bytes}",
          file=sys.stderr, flush=True)
    return 0
