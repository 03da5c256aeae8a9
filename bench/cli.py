"""``armtwin bench`` / ``python -m bench``: the benchmark suite (issue 11) and the soaks (issue 10).

Parts: device (1 kHz through the pty, per policy), link (round trip beside raw pyzmq), server (samples/s for 1-1000
emulated devices, 1 and W workers), zenoh (device send -> global subscriber, two edge servers, 1 000 arms),
simulator (x real time), viewer (frames/s). Each prints a table; ``--json``
writes every figure. ``soak-device`` and ``soak-server`` run for minutes and print memory every minute.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.common import Part

PARTS = ("device", "link", "server", "zenoh", "simulator", "viewer")
EPILOG = """examples:
  armtwin bench --quick                          # every figure in under 2 minutes
  armtwin bench --json bench.json                # the full run (~7 minutes)
  armtwin bench --only server --workers 1,2 --devices 1,10,100,1000
  python -m bench soak-device --minutes 30
  python -m bench soak-server --minutes 30 --devices 200

Timing figures on a shared machine are noisy: each table says how many repeats its medians are of, and the JSON
holds every repeat and the machine's load."""


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers, e.g. 1,10,100")
    return vals


def _parts(text: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(f"unknown part(s) {', '.join(bad) or text!r}; choose from {', '.join(PARTS)}")
    return parts


def configure(p: argparse.ArgumentParser) -> None:
    """The bench's options and its soak sub-commands (shared by ``armtwin bench`` and ``python -m bench``)."""
    p.add_argument("--quick", action="store_true", help="short windows and fewer repeats: every figure in < 2 min")
    p.add_argument("--json", type=Path, metavar="OUT", help="write every figure (and every repeat) here")
    p.add_argument("--only", type=_parts, default=list(PARTS), metavar="PARTS",
                   help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    p.add_argument("--seconds", type=float, default=None,
                   help="device steady window per run, s (default 10; --quick 2)")
    p.add_argument("--repeats", type=int, default=None, help="repeats per figure (default 3; --quick 1-2)")
    p.add_argument("--workers", type=_int_list, default=[1, 2], metavar="LIST",
                   help="server worker counts (default 1,2; W > 1 needs `armtwin server --workers`, else skipped)")
    p.add_argument("--devices", type=_int_list, default=[1, 10, 100, 1000], metavar="LIST",
                   help="emulated device counts for the server part (default 1,10,100,1000)")
    sub = p.add_subparsers(dest="soak", metavar="SOAK")
    from bench.soak import add_soak_parsers

    add_soak_parsers(sub)
    p.set_defaults(run=run)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="the benchmark suite (device, link, server, zenoh, simulator, viewer) and soaks",
                       description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Windows and repeats of each part: --quick, the defaults, or what was given."""
    q = args.quick
    return {
        "quick": q, "parts": args.only,
        "device_seconds": args.seconds or (2.0 if q else 10.0), "device_repeats": args.repeats or (1 if q else 3),
        "raw_seconds": 1.5 if q else 5.0, "raw_repeats": args.repeats or (2 if q else 3),
        "server_seconds": 1.0 if q else 5.0, "server_repeats": args.repeats or (2 if q else 3),
        "workers": args.workers, "devices": args.devices,
        "sim_hours": 0.02 if q else 1.0, "sim_repeats": args.repeats or 3,
        "viewer_seconds": 1.0 if q else 3.0, "viewer_repeats": args.repeats or (2 if q else 3),
        # 1 000 arms at 2 samples/s each: what one load-generator process paces on this machine next to two edge
        # servers (20 Hz per arm, dead reckoning's ~2 % load, would be 20 000 samples/s).
        "zenoh_arms": 1000, "zenoh_rate_hz": 2.0, "zenoh_seconds": 2.0 if q else 5.0,
        "zenoh_repeats": args.repeats or (1 if q else 3),
    }


def run(args: argparse.Namespace) -> int:
    if getattr(args, "soak", None):
        return int(args.soak_run(args))
    from bench.common import Lab, print_table, temp_lab, write_json
    from bench.device import device_parts, run_devices
    from bench.link import link_part, measure_raw
    from bench.server import capacity
    from bench.simulator import simulator_part
    from bench.viewer import viewer_part

    cfg = settings(args)
    t0 = time.monotonic()
    parts: list[Part] = []
    print(f"armtwin bench{' --quick' if args.quick else ''}: {', '.join(args.only)}", flush=True)
    with temp_lab() as tmp:
        lab = Lab.make(Path(tmp))
        try:
            runs = None
            if "device" in args.only or "link" in args.only:
                runs = run_devices(lab, cfg["device_seconds"], cfg["device_repeats"])
            if "device" in args.only and runs is not None:
                for part in device_parts(runs):
                    parts.append(part)
                    print_table(part)
            if "link" in args.only and runs is not None:
                raw = measure_raw(lab, cfg["raw_seconds"], cfg["raw_repeats"])
                parts.append(link_part(runs, raw, cfg["raw_seconds"], cfg["raw_repeats"]))
                print_table(parts[-1])
            if "server" in args.only:
                parts.append(capacity(lab, cfg["devices"], cfg["workers"], cfg["server_seconds"],
                                      cfg["server_repeats"]))
                print_table(parts[-1])
        finally:
            lab.stop_all()
    if "zenoh" in args.only:
        parts.append(_zenoh(cfg))
        print_table(parts[-1])
    if "simulator" in args.only:
        parts.append(simulator_part(cfg["sim_hours"], cfg["sim_repeats"]))
        print_table(parts[-1])
    if "viewer" in args.only:
        parts.append(viewer_part([1, 10], cfg["viewer_seconds"], cfg["viewer_repeats"]))
        print_table(parts[-1])
    took = time.monotonic() - t0
    print(f"bench done in {took:.0f} s (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: other "
          "jobs share this machine, figures are noisy)", flush=True)
    if args.json is not None:
        write_json(args.json, parts, {**cfg, "took_s": took})
        print(f"wrote {args.json}", flush=True)
    return 0


def _zenoh(cfg: dict[str, Any]) -> Part:
    """The zenoh part, or a row saying why it is skipped."""
    from bench.common import Part

    try:
        import zenoh  # noqa: F401
    except ImportError:
        part = Part("zenoh", "zenoh tier: skipped", ["reason"])
        part.rows.append({"reason": "eclipse-zenoh is not installed (pip install 'armtwin[zenoh]')"})
        return part
    from bench.zenoh_part import zenoh_part

    return zenoh_part(cfg["zenoh_arms"], cfg["zenoh_rate_hz"], cfg["zenoh_seconds"], cfg["zenoh_repeats"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        return 130
