"""Checks of a real set-up, each a pass / warn / fail line with what to fix (``armtwin doctor``).

Serial ports (pyserial's list), the FTDI latency timer (sysfs), the baud budget for N joints, frames read from the
port for a few seconds (rate, CRC errors, jitter), and the twin server (hello/welcome handshake, heartbeat RTT).
Every check is a function returning ``Check`` rows so a test can run it against the mock arm's pty and a real
server on loopback.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from firmware_interfaces.codec import FrameDecoder, TimestampUnwrapper
from firmware_interfaces.ports import PortError, PortInfo, list_serial_ports, open_port, resolve_port
from firmware_interfaces.realtime import realtime

PASS, WARN, FAIL = "pass", "warn", "fail"
SYSFS_USB_SERIAL = "/sys/bus/usb-serial/devices"
FRAME_RATE_HZ = 1000  # the firmware contract (FRAME_SPEC.md)
BAUD_WARN, BAUD_FAIL = 0.70, 0.95  # share of the UART's bit rate the frames use


@dataclass
class Check:
    """One line of the doctor's report: ``level`` pass/warn/fail, what was seen, and what to do about it."""

    name: str
    level: str
    detail: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        fix = f"\n        fix: {self.fix}" if self.fix and self.level != PASS else ""
        return f"{self.level.upper():4}  {self.name}: {self.detail}{fix}"


def frame_bytes(joints: int) -> int:
    """Bytes one frame takes on the wire: 4n + 11 payload, CRC 2, COBS 1, delimiter 1 (FRAME_SPEC.md)."""
    return 4 * joints + 15


def check_ports(ports: list[PortInfo] | None = None) -> list[Check]:
    """What serial ports exist, with the ids a stable ``--port`` selector can use."""
    ports = list_serial_ports() if ports is None else ports
    if not ports:
        return [Check("ports", WARN, "no serial ports listed by the OS",
                      "plug the arm in; check `dmesg | tail` for the adapter, and the cable (some are power-only)")]
    return [Check("port", PASS, p.line(), data={"device": p.device, "vid_pid": p.vid_pid,
                                                 "serial_number": p.serial_number}) for p in ports]


def check_latency_timer(device: str, sysfs: str = SYSFS_USB_SERIAL) -> Check | None:
    """The FTDI latency timer of ``device`` (ms; FTDI holds bytes up to this long): None if it has none (native
    CDC ``ttyACM``, CP210x, ptys)."""
    name = os.path.basename(os.path.realpath(device))
    path = Path(sysfs) / name / "latency_timer"
    if not path.exists():
        return None
    try:
        ms = int(path.read_text().strip())
    except (OSError, ValueError) as exc:
        return Check("latency timer", WARN, f"{path} unreadable ({exc})", "read it with sudo cat")
    fix = (f"echo 1 | sudo tee {path}   (until unplugged; the udev rule in hardware_setup.md section 4 makes it "
           "permanent)")
    if ms <= 1:
        return Check("latency timer", PASS, f"{name}: {ms} ms", data={"ms": ms})
    level = WARN if ms <= 4 else FAIL
    return Check("latency timer", level, f"{name}: {ms} ms: frames arrive in bursts of ~{ms} ms", fix,
                 data={"ms": ms})


def check_baud(joints: int, baud: int, native_usb: bool = False) -> Check:
    """Whether ``joints`` per frame at 1 kHz fit the UART's bit rate (10 bits per byte with 8N1)."""
    bits = frame_bytes(joints) * 10 * FRAME_RATE_HZ
    share = bits / baud
    detail = f"{joints} joints: {frame_bytes(joints)} B/frame, {bits / 1000:.0f} kbit/s = {share:.0%} of {baud} baud"
    if native_usb:
        return Check("baud budget", PASS, f"{detail} (native USB CDC: the baud rate does not limit it)",
                     data={"share": share})
    fix = "raise --baud on both sides (2000000), or use a board with native USB (hardware_setup.md section 2)"
    level = PASS if share < BAUD_WARN else WARN if share < BAUD_FAIL else FAIL
    return Check("baud budget", level, detail, fix, data={"share": share})


def read_frames(port: str, seconds: float, baud: int) -> list[Check]:
    """Open the port and decode frames for ``seconds``: rate, CRC and other bad frames, lost frames, the
    firmware's period jitter and the host's arrival gaps (an FTDI latency timer shows as gaps of its length)."""
    try:
        path = resolve_port(port)
        ser = open_port(path, baud, timeout=0.02)
    except PortError as exc:
        return [Check("frames", FAIL, str(exc), "check the path with `armtwin find-port`")]
    dec, unwrap = FrameDecoder(), TimestampUnwrapper()
    t_fw: list[int] = []
    arrivals: list[float] = []
    joints = 0
    start = time.monotonic()
    try:
        # As the device's reader does: a read loop left off the CPU by other jobs would lose frames and report
        # the arm's stream as broken (firmware_interfaces/realtime.py).
        with realtime():
            while time.monotonic() - start < seconds:
                chunk = ser.read(4096)
                if not chunk:
                    continue
                frames = dec.feed(chunk)
                if frames:
                    arrivals.append(time.monotonic())
                    joints = len(frames[-1].angles_urad)
                    t_fw.extend(unwrap.unwrap(f.t_us) for f in frames)
    except OSError as exc:
        return [Check("frames", FAIL, f"reading {path} failed: {exc}", "is the arm still plugged in?")]
    finally:
        ser.close()
    st = dec.stats
    elapsed = time.monotonic() - start
    data: dict[str, Any] = {"path": path, "joints": joints, **st.as_dict()}
    if st.frames_ok == 0:
        if st.bytes_in == 0:
            return [Check("frames", FAIL, f"no bytes from {path} in {elapsed:.1f} s",
                          "wrong port, firmware not flashed/streaming, or the board is held in reset", data)]
        return [Check("frames", FAIL, f"{st.bytes_in} bytes from {path} but no valid frame",
                      "almost always a baud mismatch: give --baud the firmware's Serial.begin() value", data)]
    rate = st.frames_ok / elapsed
    period = np.diff(np.asarray(t_fw, dtype=np.int64))
    gaps = np.diff(np.asarray(arrivals)) * 1e3
    jitter_us = float(np.percentile(np.abs(period - np.median(period)), 99)) if len(period) else 0.0
    gap_p99 = float(np.percentile(gaps, 99)) if len(gaps) else 0.0
    data.update(rate_hz=rate, firmware_jitter_p99_us=jitter_us, arrival_gap_p99_ms=gap_p99)
    out = []
    level = PASS if abs(rate - FRAME_RATE_HZ) <= 0.05 * FRAME_RATE_HZ else WARN
    out.append(Check("frame rate", level, f"{st.frames_ok} frames in {elapsed:.1f} s = {rate:.0f} Hz, {joints} "
                     f"joints, lost {st.frames_lost}", "the firmware must send every 1 ms (PERIOD_US = 1000); "
                     "if frames are lost, the baud budget or a blocked Serial.write is the usual cause", data))
    bad = st.bad_frames
    share = bad / max(st.frames_ok + bad, 1)
    out.append(Check("frame errors", PASS if bad == 0 else WARN if share < 0.01 else FAIL,
                     f"{st.crc_errors} CRC, {st.cobs_errors + st.length_errors + st.version_errors} other bad frames "
                     f"({share:.2%})", "noise or a marginal baud rate: shorter/shielded cable, common ground, "
                     "a lower --baud on both sides (hardware_setup.md)"))
    out.append(Check("timing", PASS if jitter_us < 100 and gap_p99 < 8 else WARN,
                     f"firmware period jitter p99 {jitter_us:.0f} µs, host arrival gaps p99 {gap_p99:.1f} ms",
                     "bursty arrivals: set the FTDI latency timer to 1 ms; period jitter: the firmware loop "
                     "must not block (read the encoders in well under 1 ms)"))
    return out


def check_server(endpoint: str, key: bytes | None = None, timeout_s: float = 2.0, pings: int = 5,
                 joints: int = 1) -> list[Check]:
    """Say hello to the twin server as a device would, wait for its welcome, time ``pings`` heartbeats, say bye."""
    import zmq

    from twin.schema import ProtocolError, Wire

    wire = Wire(key)
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def recv(kind: str, deadline: float) -> dict[str, Any] | None:
        while (left := deadline - time.monotonic()) > 0:
            if not sock.poll(int(left * 1000) + 1):
                return None
            try:
                msg = wire.decode(sock.recv_multipart())
            except ProtocolError:
                continue
            if msg["type"] == kind:
                return msg
        return None

    try:
        t0 = time.monotonic()
        sock.send_multipart(wire.encode("hello", dev=f"armtwin-doctor-{os.getpid()}", joints=[
            f"joint_{i + 1}" for i in range(joints)], rate_hz=float(FRAME_RATE_HZ), urdf="", policy="doctor",
            ts=time.monotonic_ns() // 1000))
        welcome = recv("welcome", t0 + timeout_s)
        if welcome is None:
            return [Check("server", FAIL, f"no welcome from {endpoint} within {timeout_s:g} s",
                          "start `armtwin server --bind tcp://*:5555` on the edge PC; check the host, port and "
                          "firewall; with a key, the same ARMTWIN_KEY on both sides")]
        rtts = []
        for _ in range(pings):
            ts = time.monotonic_ns() // 1000
            sock.send_multipart(wire.encode("hb", ts=ts))
            if recv("pong", time.monotonic() + timeout_s) is not None:
                rtts.append((time.monotonic_ns() // 1000 - ts) / 1000)
        sock.send_multipart(wire.encode("bye"))
    finally:
        sock.close(linger=100)  # let the bye leave
        ctx.term()
    out = [Check("server", PASS, f"{endpoint}: welcome in {(time.monotonic() - t0) * 1000:.0f} ms, predictor "
                 f"{welcome['predictor']}", data={"predictor": welcome["predictor"]})]
    if not rtts:
        out.append(Check("server RTT", FAIL, "no heartbeat answered", "the server is overloaded or the link drops"))
    else:
        p50 = float(np.median(rtts))
        out.append(Check("server RTT", PASS if p50 < 20 else WARN, f"{len(rtts)}/{pings} heartbeats, RTT p50 "
                         f"{p50:.2f} ms, max {max(rtts):.2f} ms", "a slow or congested network: use wired Ethernet "
                         "to the edge PC", data={"rtt_ms": rtts}))
    return out
