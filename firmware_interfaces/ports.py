"""Opening serial ports by device path, pyserial URL or a stable USB selector (VID:PID, serial number), with
errors that say what to do."""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

import serial

DEFAULT_BAUD = 921_600


class PortError(RuntimeError):
    """The serial port cannot be opened or has gone away; the message says what to check."""


def open_port(path_or_url: str, baudrate: int = DEFAULT_BAUD, timeout: float = 0.05) -> serial.SerialBase:
    """Open ``/dev/ttyACM0``, a pty path, or any pyserial URL (``loop://``, ``spy://...``, ``rfc2217://...``).

    ``serial_for_url`` is used for every port so test URLs and real hardware take the same path.
    """
    try:
        return serial.serial_for_url(path_or_url, baudrate=baudrate, timeout=timeout)
    except serial.SerialException as exc:
        hint = ""
        is_path = "://" not in path_or_url
        if is_path and not os.path.exists(path_or_url):
            hint = " (no such device: is the arm plugged in? `ls /dev/ttyACM* /dev/ttyUSB*`)"
        elif is_path and not os.access(path_or_url, os.R_OK | os.W_OK):
            hint = (" (permission denied: add yourself to the 'dialout' group or install the udev rule in "
                    "hardware_setup.md)")
        raise PortError(f"cannot open serial port {path_or_url!r}: {exc}{hint}") from exc
    except ValueError as exc:
        raise PortError(f"bad serial port URL or setting {path_or_url!r}: {exc}") from exc


def port_problem(path_or_url: str) -> str | None:
    """Why ``path_or_url`` can never be the arm's serial port (a directory, a regular file, a character device that
    is not a terminal such as /dev/null), or None: a URL, a serial device, or a path that does not exist yet (a USB
    adapter may still be plugged in, so that one is worth waiting for)."""
    if "://" in path_or_url:
        return None
    try:
        st = os.stat(path_or_url)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"cannot use {path_or_url!r} as a serial port: {exc}"
    if stat.S_ISDIR(st.st_mode):
        return f"{path_or_url} is a directory, not a serial device (the arm is e.g. /dev/ttyACM0)"
    if stat.S_ISREG(st.st_mode):
        return (f"{path_or_url} is a regular file, not a serial device; to replay a recording run "
                f"'armtwin mock-arm {path_or_url}' and give the device the port it prints")
    if not stat.S_ISCHR(st.st_mode):
        return f"{path_or_url} is not a serial device"
    # The kernel says which subsystem a character device belongs to (ptys have no entry): asked without opening
    # the port, since opening a real one toggles DTR and resets many boards.
    sysfs = f"/sys/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/subsystem"
    if os.path.exists(sysfs) and os.path.basename(os.path.realpath(sysfs)) != "tty":
        return f"{path_or_url} is not a serial device (a {os.path.basename(os.path.realpath(sysfs))} device)"
    return None


# --- stable port selectors: a replugged arm may come back as /dev/ttyACM1, but its USB ids stay --------------------

_VIDPID = re.compile(r"^([0-9a-fA-F]{4}):([0-9a-fA-F]{4})(?::(.+))?$")


@dataclass(frozen=True)
class PortInfo:
    """One serial port as pyserial's ``list_ports`` reports it (USB ids are None for non-USB ports)."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    description: str = ""
    manufacturer: str | None = None

    @property
    def vid_pid(self) -> str:
        return f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "-"

    def line(self) -> str:
        return (f"{self.device}  {self.vid_pid}  serial={self.serial_number or '-'}  "
                f"{self.description or '-'}")


def list_serial_ports() -> list[PortInfo]:
    """Every serial port the OS lists (USB adapters, native CDC, on-board UARTs), sorted by path."""
    from serial.tools import list_ports

    return sorted((PortInfo(p.device, p.vid, p.pid, p.serial_number, p.description or "", p.manufacturer)
                   for p in list_ports.comports()), key=lambda p: p.device)


def is_selector(spec: str) -> bool:
    """True for ``VID:PID[:SERIAL]`` and ``serial:SERIAL``; paths (``/dev/...``, ``COM3``) and URLs are not."""
    return bool(_VIDPID.match(spec)) or spec.startswith("serial:")


def resolve_port(spec: str, ports: list[PortInfo] | None = None) -> str:
    """The device path for ``spec``: a path or pyserial URL unchanged; ``VID:PID`` (hex, e.g. ``2341:0043``),
    ``VID:PID:SERIAL`` or ``serial:SERIAL`` (the USB serial number) looked up in ``ports`` (default: what the OS
    lists now). Raises ``PortError`` saying what was found when nothing, or more than one port, matches."""
    if not is_selector(spec):
        return spec
    ports = list_serial_ports() if ports is None else ports
    m = _VIDPID.match(spec)
    if m:
        vid, pid, serial_no = int(m.group(1), 16), int(m.group(2), 16), m.group(3)
        hits = [p for p in ports if p.vid == vid and p.pid == pid
                and (serial_no is None or p.serial_number == serial_no)]
    else:
        serial_no = spec.split(":", 1)[1]
        hits = [p for p in ports if p.serial_number == serial_no]
    found = "; ".join(p.line() for p in ports) or "no serial ports at all (is the arm plugged in?)"
    if not hits:
        raise PortError(f"no serial port matches {spec!r}; found: {found} (`armtwin find-port` lists them)")
    if len(hits) > 1:
        raise PortError(f"{len(hits)} ports match {spec!r}: {', '.join(p.device for p in hits)}; add the serial "
                        "number (VID:PID:SERIAL or serial:SERIAL) to pick one")
    return hits[0].device
