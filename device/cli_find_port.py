"""``armtwin find-port``: list serial ports with their stable ids, or find the arm's by unplugging it."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="list serial ports (path, VID:PID, serial number); --replug finds the arm's by unplugging it",
        description="List the serial ports the OS sees with the ids a stable --port selector uses (VID:PID, "
        "VID:PID:SERIAL, serial:SERIAL). With --replug: unplug the arm when asked, press Enter, and the port "
        "that disappeared is the arm's.",
        epilog="examples:\n  armtwin find-port\n  armtwin find-port --replug\n"
        "  armtwin device --port serial:A50285BI --server tcp://edge-pc:5555   (what find-port suggests)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--replug", action="store_true", help="ask to unplug the arm and report the port that vanished")
    p.set_defaults(run=run)


def selector(p: Any) -> str:
    """The most stable --port value for a port: its serial number, else VID:PID, else its path."""
    if p.serial_number:
        return f"serial:{p.serial_number}"
    return p.vid_pid if p.vid is not None else p.device


def run(args: argparse.Namespace) -> int:
    from firmware_interfaces.ports import list_serial_ports

    before = list_serial_ports()
    for p in before:
        print(f"{p.line()}   --port {selector(p)}")
    if not before:
        print("no serial ports found: plug the arm in (and check `dmesg | tail`)")
    if not args.replug:
        return 0
    input("unplug the arm's USB cable, then press Enter... ")
    gone = {p.device for p in before} - {p.device for p in list_serial_ports()}
    arm = [p for p in before if p.device in gone]
    if len(arm) != 1:
        print(f"error: {len(arm)} ports disappeared ({', '.join(sorted(gone)) or 'none'}); try again",
              file=sys.stderr)
        return 1
    print(f"the arm is on {arm[0].device}; plug it back in and use --port {selector(arm[0])}")
    return 0
