"""``armtwin view --text``: the twin feed as lines, one per arm, no 3D scene (any machine, any install with the
feed's transport): a line when an arm first appears, then each arm's newest state every ``--snapshot-every`` s."""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from twin.stop_signals import stop_on_signals
from viewer.feed import DeviceView, local_us

NOTHING_ARRIVED = 3


def arm_line(dv: DeviceView, now: int) -> str:
    q = " ".join(f"{v:.4f}" for v in dv.twin_q(now))
    st = dv.status
    conn = "" if "connected" not in st else f" connected={int(bool(st['connected']))}"
    return (f"state arm={dv.dev} t0_us={dv.pred.t0_us} msgs={dv.messages} age_s={(now - dv.last_local_us) / 1e6:.2f}"
            f"{conn} twin_q=[{q}]")


def run_text(feed: Any, stop: threading.Event, every_s: float, duration: float | None, source: str) -> int:
    """Print until ``stop`` or ``duration``; exit code 0 if any twin state arrived, else NOTHING_ARRIVED."""
    start = local_us()
    end = start + int(duration * 1e6) if duration is not None else None
    period = int(max(every_s, 0.05) * 1e6)
    next_print = start + period
    print(f"view: mode=text {source}", flush=True)
    while not stop.is_set():
        now = local_us()
        if end is not None and now >= end:
            break
        wait_ms = min(100, -(-(next_print - now) // 1000), *([-(-(end - now) // 1000)] if end else []))
        for dv in feed.poll(int(wait_ms)):
            origin = "query" if dv.dev in getattr(feed, "first_from_query", ()) else "live"
            print(f"arm={dv.dev} joints={len(dv.joints)} urdf={dv.urdf or '-'} first={origin}", flush=True)
        now = local_us()
        if now >= next_print:
            for dv in feed.devices.values():
                print(arm_line(dv, now), flush=True)
            next_print = max(next_print + period, now)
    elapsed = (local_us() - start) / 1e6
    print(f"view stopped after {elapsed:.1f} s: arms={len(feed.devices)} msgs={feed.messages} bad={feed.bad}",
          flush=True)
    return 0 if feed.devices else NOTHING_ARRIVED


def run_text_mode(args: argparse.Namespace, make_feed: Any, source: str) -> int:
    """``--text``: lines per arm until Ctrl-C, SIGTERM or --duration."""
    stop = threading.Event()
    with stop_on_signals(stop.set):  # before the feed opens, as before: a Ctrl-C while it connects stops cleanly
        try:
            feed = make_feed()
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        try:
            every = args.snapshot_every if args.snapshot_every else 1.0
            return run_text(feed, stop, every, args.duration, source)
        finally:
            feed.close()
