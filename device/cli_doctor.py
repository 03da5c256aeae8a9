"""``armtwin doctor``: check ports, USB latency timer, baud budget, frames from the arm and the twin server."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_FAILED = 1  # a check failed (the report says what to fix)


def add_parser(sub: Any, name: str) -> None:
    from firmware_interfaces.ports import DEFAULT_BAUD

    p = sub.add_parser(
        name,
        help="check the set-up: serial ports, FTDI latency timer, baud budget, frames from the arm, the server",
        description="Run the checks a first hour on real hardware needs, each printed as PASS / WARN / FAIL with "
        "what to fix: the serial ports the OS lists (path, VID:PID, serial number, description), the FTDI "
        "latency timer, whether N joints at 1 kHz fit the baud rate, frames read from --port for --seconds "
        "(rate, CRC errors, lost frames, period jitter, arrival gaps) and, with --server, the twin server's "
        "handshake and heartbeat RTT.",
        epilog="exit codes:\n  0  nothing failed (warnings may remain)\n  1  a check failed\n  2  bad arguments\n\n"
        "examples:\n  armtwin doctor\n  armtwin doctor --port /dev/ttyUSB0 --server tcp://edge-pc:5555\n"
        "  armtwin doctor --port 0403:6014 --baud 2000000 --joints 12\n"
        "  armtwin doctor --port serial:A50285BI --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", default=None,
                   help="serial path, pyserial URL, VID:PID[:SERIAL] or serial:SERIAL (default: the only USB "
                   "serial port, if exactly one is plugged in)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD, help=f"UART baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--joints", type=int, default=None,
                   help="joints per frame for the baud budget (default: what the frames carry, else 7)")
    p.add_argument("--seconds", type=float, default=2.0, help="how long to read frames (default 2)")
    p.add_argument("--server", default=None, metavar="ENDPOINT", help="twin server to check (tcp://HOST:PORT)")
    p.add_argument("--key-env", default="ARMTWIN_KEY", metavar="VAR",
                   help="environment variable holding the shared HMAC key, if the server uses one")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from device.doctor import WARN, Check, check_baud, check_latency_timer, check_ports, check_server, read_frames
    from firmware_interfaces.ports import PortError, list_serial_ports, resolve_port
    from twin.endpoints import EndpointError, endpoint

    if args.seconds <= 0 or (args.joints is not None and not 1 <= args.joints <= 32):
        print("error: --seconds must be > 0 and --joints 1..32", file=sys.stderr)
        return 2
    try:
        server = endpoint(args.server) if args.server else None
    except EndpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ports = list_serial_ports()
    checks: list[Check] = check_ports(ports)
    port = args.port
    if port is None:
        usb = [p for p in ports if p.vid is not None]
        if len(usb) == 1:
            port = usb[0].device
        else:
            checks.append(Check("frames", WARN, f"not read: {len(usb)} USB serial ports, give --port",
                                "armtwin doctor --port /dev/ttyACM0 (or VID:PID, serial:SERIAL)"))
    joints = args.joints
    path = None
    if port is not None:
        frames = read_frames(port, args.seconds, args.baud)
        checks += frames
        joints = joints or next((int(c.data["joints"]) for c in frames if c.data.get("joints")), None)
        path = next((c.data["path"] for c in frames if "path" in c.data), None)
        if path is None:
            try:
                path = resolve_port(port)
            except PortError:  # already reported by read_frames
                path = None
    if path is not None and "://" not in path:
        lt = check_latency_timer(path)
        if lt is not None:
            checks.append(lt)
    native = path is not None and os.path.basename(os.path.realpath(path)).startswith("ttyACM")
    checks.append(check_baud(joints or 7, args.baud, native_usb=native))
    if server is not None:
        key = os.environ.get(args.key_env)
        checks += check_server(server, key.encode() if key else None, joints=joints or 1)
    failed = any(c.level == "fail" for c in checks)
    if args.json:
        print(json.dumps([{"name": c.name, "level": c.level, "detail": c.detail, "fix": c.fix, **c.data}
                          for c in checks], indent=2, default=float))
    else:
        for c in checks:
            print(c.line())
        worst = "FAIL" if failed else "WARN" if any(c.level == "warn" for c in checks) else "PASS"
        print(f"doctor: {worst} ({sum(c.level == 'fail' for c in checks)} failed, "
              f"{sum(c.level == 'warn' for c in checks)} warnings, {len(checks)} checks)")
    return EXIT_FAILED if failed else 0
