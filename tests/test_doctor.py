"""``armtwin doctor`` / ``find-port`` and the stable ``--port`` selectors, against the mock arm's pty and a real
twin server on loopback."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from armtwin.cli import main
from device.doctor import FAIL, PASS, WARN, check_baud, check_latency_timer, check_server, read_frames
from firmware_interfaces.mock_arm import MockArm
from firmware_interfaces.ports import PortError, PortInfo, resolve_port
from server.twin_server import TwinServer
from tests.conftest import synthetic_session
from twin.session import to_urad


@pytest.fixture
def mock_arm() -> Iterator[Callable[..., MockArm]]:
    running: list[tuple[MockArm, threading.Event, threading.Thread]] = []

    def start(**kwargs: Any) -> MockArm:
        s = synthetic_session(2.0, joints=7)
        arm = MockArm(s.t_us, to_urad(s.q), loop=True, **kwargs)
        stop = threading.Event()

        def stream() -> None:
            if arm.wait_for_reader(stop, boot_s=0.0):
                arm.run(stop)

        th = threading.Thread(target=stream, name="test-mock-arm")
        th.start()
        running.append((arm, stop, th))
        return arm

    yield start
    for arm, stop, th in running:
        stop.set()
        th.join(timeout=10)
        assert not th.is_alive()
        arm.close()


@pytest.fixture
def server() -> Iterator[TwinServer]:
    srv = TwinServer("tcp://127.0.0.1:*", None, "linear")
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 10}, name="test-twin-server")
    th.start()
    yield srv
    srv.stop()
    th.join(timeout=10)
    assert not th.is_alive()


def test_doctor_reads_the_arm_and_greets_the_server(mock_arm: Callable[..., MockArm], server: TwinServer,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    arm = mock_arm()
    rc = main(["doctor", "--port", arm.port, "--seconds", "1", "--server", server.endpoint, "--json"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)}
    assert rc == 0, checks
    rate = checks["frame rate"]
    assert rate["joints"] == 7 and rate["crc_errors"] == 0
    assert 500 < rate["rate_hz"] < 1100, "the mock streams at 1 kHz (a loaded machine reads late, never faster)"
    assert checks["frame errors"]["level"] == PASS
    assert checks["baud budget"]["level"] == PASS and "7 joints" in checks["baud budget"]["detail"]
    assert checks["server"]["level"] == PASS and checks["server"]["predictor"] == "linear"
    assert len(checks["server RTT"]["rtt_ms"]) == 5 and all(0 < r < 2000 for r in checks["server RTT"]["rtt_ms"])
    done = threading.Event()
    for _ in range(500):  # the doctor said bye: its session is gone again
        if server.stats.sessions_closed == 1:
            break
        done.wait(0.01)
    assert server.stats.sessions_opened == 1 and server.stats.sessions_closed == 1


def test_corrupt_frames_are_counted_and_flagged(mock_arm: Callable[..., MockArm]) -> None:
    arm = mock_arm(corrupt_rate=0.003, seed=1)
    checks = {c.name: c for c in read_frames(arm.port, 1.0, 921_600)}
    errors = checks["frame errors"]
    assert errors.level in (WARN, FAIL) and "CRC" in errors.detail and errors.fix
    assert checks["frame rate"].data["crc_errors"] + checks["frame rate"].data["cobs_errors"] > 0


def test_silent_port_and_garbage_say_what_to_fix() -> None:
    master, slave = os.openpty()
    try:
        path = os.ttyname(slave)
        [silent] = read_frames(path, 0.2, 921_600)
        assert silent.level == FAIL and "no bytes" in silent.detail and "wrong port" in silent.fix
        stop = threading.Event()

        def babble() -> None:  # bytes that never frame (a baud mismatch looks so), all the time the port is open
            while not stop.wait(0.01):
                os.write(master, bytes(range(1, 200)))

        th = threading.Thread(target=babble, name="test-garbage")
        th.start()
        try:
            [garbage] = read_frames(path, 0.3, 921_600)
        finally:
            stop.set()
            th.join(timeout=5)
        assert garbage.level == FAIL and "baud mismatch" in garbage.fix and garbage.data["bytes_in"] > 0
    finally:
        os.close(master)
        os.close(slave)


def test_server_that_never_answers_fails_with_a_fix(ctx: zmq.Context[Any]) -> None:
    mute = ctx.socket(zmq.ROUTER)
    mute.setsockopt(zmq.LINGER, 0)
    port = mute.bind_to_random_port("tcp://127.0.0.1")
    try:
        [c] = check_server(f"tcp://127.0.0.1:{port}", timeout_s=0.3)
        assert c.level == FAIL and "armtwin server" in c.fix
    finally:
        mute.close()


@pytest.mark.parametrize(("ms", "level"), [("1\n", PASS), ("4\n", WARN), ("16\n", FAIL)])
def test_ftdi_latency_timer_is_read_from_sysfs(tmp_path: Path, ms: str, level: str) -> None:
    (tmp_path / "ttyUSB0").mkdir()
    (tmp_path / "ttyUSB0" / "latency_timer").write_text(ms)
    c = check_latency_timer("/dev/ttyUSB0", sysfs=str(tmp_path))
    assert c is not None and c.level == level and c.data["ms"] == int(ms)
    if level != PASS:
        assert "echo 1 | sudo tee" in c.fix and str(tmp_path / "ttyUSB0" / "latency_timer") in c.fix
    assert check_latency_timer("/dev/ttyACM0", sysfs=str(tmp_path)) is None, "native CDC has no timer"


@pytest.mark.parametrize(("joints", "baud", "level"), [(7, 921_600, PASS), (7, 460_800, WARN), (12, 460_800, FAIL),
                                                       (12, 2_000_000, PASS)])
def test_baud_budget(joints: int, baud: int, level: str) -> None:
    assert check_baud(joints, baud).level == level
    assert check_baud(joints, 115_200, native_usb=True).level == PASS


PORTS = [PortInfo("/dev/ttyACM0", 0x2341, 0x0043, "A1", "Arduino Uno"),
         PortInfo("/dev/ttyUSB0", 0x0403, 0x6014, "FT1", "FT232H"),
         PortInfo("/dev/ttyUSB1", 0x0403, 0x6014, "FT2", "FT232H"),
         PortInfo("/dev/ttyS0")]


def test_stable_selectors_resolve_to_the_port_path() -> None:
    assert resolve_port("2341:0043", PORTS) == "/dev/ttyACM0"
    assert resolve_port("0403:6014:FT2", PORTS) == "/dev/ttyUSB1"
    assert resolve_port("serial:FT1", PORTS) == "/dev/ttyUSB0"
    for unchanged in ("/dev/ttyUSB7", "loop://", "COM3", "./pty"):
        assert resolve_port(unchanged, PORTS) == unchanged
    with pytest.raises(PortError, match=r"2 ports match.*ttyUSB0, /dev/ttyUSB1"):
        resolve_port("0403:6014", PORTS)
    with pytest.raises(PortError, match=r"no serial port matches 'serial:NOPE'.*ttyACM0.*find-port"):
        resolve_port("serial:NOPE", PORTS)


def test_device_refuses_a_selector_that_matches_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["device", "--port", "serial:NO-SUCH-ARM", "--server", "127.0.0.1:5555"]) == 2
    assert "no serial port matches 'serial:NO-SUCH-ARM'" in capsys.readouterr().err


def test_find_port_lists_ports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["find-port"]) == 0
    assert capsys.readouterr().out.strip()
