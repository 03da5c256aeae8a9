"""Opening serial ports by device path or pyserial URL, with errors that say what to do."""

from __future__ import annotations

import os
import stat

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
