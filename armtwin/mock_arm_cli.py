"""``armtwin mock-arm``: replay a session file through a real pty, like the arm's firmware would stream it."""

from __future__ import annotations

import argparse
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
        "  armtwin mock-arm s.mcap --bounce            # long runs from a short recording, no jumps\n"
        "  armtwin mock-arm s.mcap --loop --drift-ppm -100 --start-us 2147000000 --restart-after 60\n"
        "      # a slow crystal, a clock past 2^31 µs, a firmware restart every minute\n"
        "  armtwin mock-arm s.mcap --link /tmp/ttyARM --unplug-after 5 --unplug-for 2   # a pulled cable",
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
    p.add_argument("--drift-ppm", type=float, default=0.0, metavar="P",
                   help="the firmware clock runs P ppm fast (P > 0) or slow (P < 0) against real time (a crystal "
                        "is typically within +-20..100 ppm)")
    p.add_argument("--start-us", type=int, default=None, metavar="T",
                   help="firmware clock (µs) at the first frame, e.g. 4294000000 to cross the u32 wrap after "
                        "~1 s, or 2200000000 to be past 2^31 µs of uptime (default: the recording's first stamp)")
    p.add_argument("--restart-after", type=float, default=None, metavar="S",
                   help="restart the firmware every S seconds of streaming: nothing for 0.1 s (boot), then "
                        "sequence and clock from zero")
    p.add_argument("--link", default=None, metavar="PATH",
                   help="also make PATH a symlink to the pty (like a udev rule's /dev/armtwin); it follows the "
                        "new pty after an unplug, and 'port=' prints PATH")
    p.add_argument("--unplug-after", type=float, default=None, metavar="S",
                   help="pull the cable S seconds after streaming starts (the pty goes away)")
    p.add_argument("--unplug-for", type=float, default=1.0, metavar="S",
                   help="with --unplug-after: plug back in (a new pty at --link) after S seconds (default 1)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from firmware_interfaces.mock_arm import MockArm
    from twin.session import SessionError, load_session, to_urad
    from twin.stop_signals import stop_on_signals

    try:
        session = load_session(args.session)
        if args.unplug_after is not None and args.link is None:
            raise ValueError("--unplug-after needs --link PATH (a pty's own path vanishes with it)")
        arm = MockArm(session.t_us, to_urad(session.q), rate=args.rate, loop=args.loop, bounce=args.bounce,
                      corrupt_rate=args.corrupt_rate, seed=args.seed, drift_ppm=args.drift_ppm,
                      start_us=args.start_us, restart_after_s=args.restart_after, link=args.link)
    except (SessionError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()
    with stop_on_signals(stop.set), arm:
        print(f"port={arm.port}", flush=True)
        print(f"mock arm: {len(session.t_us)} samples, {session.joints} joints, {session.duration_s:.1f} s"
              f"{' (bouncing)' if args.bounce else ' (looping)' if args.loop else ''}", file=sys.stderr, flush=True)
        if not args.no_wait:
            print("waiting for a reader to open the port...", file=sys.stderr, flush=True)
            if not arm.wait_for_reader(stop):
                return 0
        cable = None
        if args.unplug_after is not None:
            cable = threading.Thread(target=_pull_cable, args=(arm, stop, args.unplug_after, args.unplug_for),
                                     name="cable", daemon=True)
            cable.start()
        st = arm.run(stop)
        stop.set()
        if cable is not None:
            cable.join()
    print(f"mock arm: streaming thread scheduling: {st.scheduling}", file=sys.stderr, flush=True)
    print(f"mock arm done: frames_sent={st.frames_sent} frames_dropped={st.frames_dropped} "
          f"bytes_corrupted={st.bytes_corrupted} late_max_us={st.late_max_us} loops={st.loops} "
          f"unread_bytes={st.unread_bytes} restarts={st.restarts} frames_booting={st.frames_booting} "
          f"frames_unplugged={st.frames_unplugged}",
          file=sys.stderr, flush=True)
    return 0


def _pull_cable(arm: Any, stop: threading.Event, after_s: float, for_s: float) -> None:
    if stop.wait(after_s):
        return
    arm.unplug()
    # The firmware clock at each event (µs stamp of the newest frame made before it): where the device's
    # recording should show the gap begin, and the moment a reconnect delay is measured from.
    print(f"mock arm: cable pulled for {for_s:g} s at fw_us={arm.unplugged_at_us}", file=sys.stderr, flush=True)
    if stop.wait(for_s):
        return
    arm.replug()
    print(f"mock arm: plugged back in at {arm.port} (now {arm.pty}) at fw_us={arm.replugged_at_us}",
          file=sys.stderr, flush=True)
