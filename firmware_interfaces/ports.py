"""Opening serial ports by device path or pyserial URL, with errors that say what to do."""

from __future__ import annotations

import os

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
