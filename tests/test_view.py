"""``armtwin view`` against a real TwinServer fed by a fake device over DEALER on loopback (headless and GUI)."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgpack
import numpy as np
import pytest
import zmq
from PIL import Image

from armtwin.cli import main
from server.twin_server import TwinServer
from tests.conftest import Proc
from twin.display import Prediction
from twin.schema import Wire, prediction_to_wire
from twin.security import Security
from viewer.cli_view import NOTHING_ARRIVED
from viewer.feed import DeviceView, TwinFeed, local_us

JOINTS = [f"joint_{i + 1}" for i in range(7)]


def arm_pose(t: float, phase: float = 0.0) -> list[float]:
    """The base joint ramps at 0.6 rad/s (wrapping within +-2 rad) with the arm leaning out: any two snapshots
    0.5 s apart show the arm turned by 0.3 rad (or wrapped), never the same pose."""
    return [-2.0 + (0.6 * t + phase) % 4.0, 0.9, 0.0, -0.9, 0.0, 0.6, 0.0]


class FakeDevices(threading.Thread):
    """Devices speaking the real wire protocol (hello, heartbeats with status, samples) until stopped.

    Sockets live and die in this thread. Sending is paced at ~200 Hz by waiting on the sockets for replies.
    """

    def __init__(self, endpoint: str, names: list[str], security: Security) -> None:
        super().__init__(name="fake-devices", daemon=True)
        self.endpoint, self.names, self.security = endpoint, names, security
        self.stop = threading.Event()
        self.welcomed = {n: threading.Event() for n in names}
        self.preds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        wire = Wire()
        socks = {}
        try:
            poller = zmq.Poller()
            for n in self.names:
                s = socks[n] = ctx.socket(zmq.DEALER)
                self.security.client_socket(s)
                s.setsockopt(zmq.LINGER, 0)
                s.connect(self.endpoint)
                poller.register(s, zmq.POLLIN)
            start, seq, last_hb = local_us(), 0, 0
            while not self.stop.is_set():
                now = local_us()
                if now - last_hb > 200_000:
                    for i, (n, s) in enumerate(socks.items()):
                        if not self.welcomed[n].is_set():
                            s.send_multipart(wire.encode("hello", dev=n, joints=JOINTS, rate_hz=1000.0,
                                                         urdf="kuka_iiwa/model.urdf", policy="static:k=5,h=50"))
                        s.send_multipart(wire.encode("hb", ts=now, stats={
                            "load": 0.2 + i / 10, "mse_deg2": 0.004, "k": 5, "h_ms": 50.0, "rtt_ms": 0.15,
                            "link_up": True}))
                    last_hb = now
                seq += 1
                t = (now - start) / 1e6
                for i, (n, s) in enumerate(socks.items()):
                    if self.welcomed[n].is_set():
                        s.send_multipart(wire.encode("sample", seq=seq, t=now, q=arm_pose(t, i), h=50_000, ts=now))
                for s, _ in poller.poll(5):
                    while s.poll(0):
                        msg = wire.decode(s.recv_multipart())
                        if msg["type"] == "welcome":
                            self.welcomed[msg["dev"]].set()
                        self.preds += msg["type"] == "pred"
        except BaseException as exc:  # surfaced by the test
            self.error = exc
        finally:
            for s in socks.values():
                s.close(linger=0)
            ctx.term()


@pytest.fixture
def live_twin(server_security: Security, device_security: Security) -> Iterator[tuple[TwinServer, FakeDevices]]:
    """A TwinServer on random loopback ports (own thread, CURVE: the viewer process gets $ARMTWIN_KEYS) fed by two
    fake devices 'armA' and 'armB'."""
    server = TwinServer("tcp://127.0.0.1:*", "tcp://127.0.0.1:*", security=server_security)
    srv_thread = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 20}, name="twin-server")
    srv_thread.start()
    devices = FakeDevices(server.endpoint, ["armA", "armB"], device_security)
    devices.start()
    try:
        for ev in devices.welcomed.values():
            assert ev.wait(10), "the server never welcomed the fake device"
        yield server, devices
    finally:
        devices.stop.set()
        devices.join(10)
        server.stop()
        srv_thread.join(10)
    assert devices.error is None, devices.error


def snapshot_paths(proc: Proc, out: Path, count: int, timeout: float = 30.0) -> list[Path]:
    """Wait (deadline, no sleeps) for the viewer to announce snapshots 1..count; returns their paths."""
    deadline = time.monotonic() + timeout
    return [Path(proc.wait_line(f"snapshot={out / f'snap_{i:05d}_'}", max(deadline - time.monotonic(), 0.1))
                 .split("=", 1)[1]) for i in range(1, count + 1)]


def changed_fraction(a: Path, b: Path) -> float:
    ia, ib = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in (a, b))
    return float((np.abs(ia - ib).sum(axis=2) > 30).mean())


def orange_pixels(path: Path) -> int:
    img = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    r, g, b = img[..., 0], img[..., 1], img[..., 2]
    return int(((r - b > 80) & (r > g) & (g > b)).sum())


def test_headless_view_follows_the_twin(live_twin: tuple[TwinServer, FakeDevices], procs: list[Proc],
                                        tmp_path: Path) -> None:
    server, _ = live_twin
    assert server.pub_endpoint is not None
    out = tmp_path / "snaps"
    view = Proc("view", "--sub", server.pub_endpoint, "--headless", "--device", "armA", "--snapshot-every", "0.5",
                "--out", str(out), "--width", "320", "--height", "240", "--duration", "60")
    procs.append(view)
    assert "mode=headless" in view.wait_line("view: mode=")
    assert view.wait_line("device=").startswith("device=armA joints=7")
    paths = snapshot_paths(view, out, 3)
    assert all(re.fullmatch(r"snap_\d{5}_armA\.png", p.name) for p in paths), paths
    assert all(orange_pixels(p) > 300 for p in paths), "the twin (orange) should be visible in every snapshot"
    assert changed_fraction(paths[0], paths[1]) > 0.005 and changed_fraction(paths[1], paths[2]) > 0.005
    view.p.terminate()  # SIGTERM: clean exit with a summary
    rc, stdout, _ = view.finish(timeout=20)
    assert rc == 0
    assert "view stopped after" in stdout and "devices=1" in stdout
    assert not list(out.glob("*armB*")), "--device armA must filter armB out"


def test_device_view_evaluates_prediction_at_server_now() -> None:
    """tau = now - rx in server time, clamped to the horizon; the clock offset is the lower envelope."""
    dv = DeviceView("arm", ["a", "b"], "", 0)
    pred = Prediction(t0_us=5_000_000, horizon_us=50_000, coeffs=np.array([[0.1, 0.2], [1.0, -2.0]]))
    dv.observe(now=1_000_300, rx=900_000)  # 300 µs of latency above a clock offset of 100 ms
    dv.observe(now=1_010_100, rx=910_000)  # faster path: offset 100.1 ms
    dv.pred, dv.rx = pred, 910_000
    np.testing.assert_allclose(dv.twin_q(1_010_100 + 20_000), [0.1 + 0.02, 0.2 - 0.04])
    np.testing.assert_allclose(dv.twin_q(1_010_100 + 500_000), [0.1 + 0.05, 0.2 - 0.10])  # clamped at H
    lines = dv.overlay(1_010_100 + 5_000_000, stale_after_s=2.0)
    assert lines[0].startswith("arm") and "STALE" in lines[-1]


def test_feed_drops_malformed_and_keeps_newest() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind("tcp://127.0.0.1:*")
    feed = TwinFeed([pub.getsockopt(zmq.LAST_ENDPOINT).decode()], None)
    try:
        pred = Prediction(10, 0, np.zeros((1, 2)))
        good = {"type": "twin", "dev": "x", "joints": ["a", "b"], "urdf": "", "pred": prediction_to_wire(1, pred),
                "q_last": [0.5, 0.25], "rx": 123, "status": {"load": 0.5}}
        deadline = time.monotonic() + 10
        while "x" not in feed.devices:  # PUB drops until the subscription has arrived: keep publishing
            assert time.monotonic() < deadline, "no message reached the feed"
            pub.send_multipart([b"x", b"\xc1garbage"])
            pub.send_multipart([b"x", msgpack.packb({**good, "q_last": [1.0]})])  # wrong joint count
            pub.send_multipart([b"x", msgpack.packb(good)])
            feed.poll(50)
        assert feed.bad >= 2
        np.testing.assert_allclose(feed.devices["x"].q_last, [0.5, 0.25])
        assert feed.devices["x"].status == {"load": 0.5}
    finally:
        feed.close()
        pub.close(linger=0)
        ctx.term()


@pytest.fixture
def xvfb_display() -> Iterator[str]:
    """A private Xvfb server on a free display number (Xvfb picks it and reports it through -displayfd)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb) - the GUI viewer cannot be tested headless")
    r, w = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(w)
    try:
        buf = b""
        deadline = time.monotonic() + 20
        while not buf.endswith(b"\n"):
            ready, _, _ = select.select([r], [], [], max(deadline - time.monotonic(), 0))
            chunk = os.read(r, 64) if ready else b""
            assert chunk, f"Xvfb did not report a display (exit code {xvfb.poll()})"
            buf += chunk
        yield f":{int(buf)}"
    finally:
        os.close(r)
        xvfb.terminate()
        try:
            xvfb.wait(10)
        except subprocess.TimeoutExpired:
            xvfb.kill()
            xvfb.wait()


def test_gui_view_under_xvfb(xvfb_display: str, live_twin: tuple[TwinServer, FakeDevices], procs: list[Proc],
                             tmp_path: Path) -> None:
    server, _ = live_twin
    assert server.pub_endpoint is not None
    view = Proc("view", "--sub", server.pub_endpoint, "--device", "armA", "--snapshot-every", "2", "--out",
                str(tmp_path), "--width", "640", "--height", "480", "--duration", "5", env={"DISPLAY": xvfb_display})
    procs.append(view)
    assert "mode=gui" in view.wait_line("view: mode=", timeout=30)
    path = snapshot_paths(view, tmp_path, 1)[0]
    assert path.name.endswith("_all.png")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (480, 640, 3)
    assert orange_pixels(path) > 200, "the twin should be visible in the window screenshot"
    rc, stdout, stderr = view.finish(timeout=30)
    assert rc == 0, stderr
    summary = re.search(r"view stopped after [\d.]+ s: fps=([\d.]+)", stdout)
    assert summary, stdout
    assert "devices=1" in summary.string
    print(f"GUI view under Xvfb: {summary.group(0)}")
    # 60 fps on a quiet machine, 9 with software OpenGL on a 2-core box at load 10: speed is the viewer bench's
    # figure. A stuck or blocked loop renders (almost) nothing in 5 s; that is what this catches.
    assert float(summary.group(1)) > 1, f"the window should keep updating: {stdout}"


@pytest.mark.parametrize(("display", "reason"), [("", "$DISPLAY is not set"), (":987", "cannot open display :987")])
def test_no_display_falls_back_to_headless(procs: list[Proc], tmp_path: Path, display: str, reason: str) -> None:
    """PyBullet would exit the process on an unreachable X server: the viewer checks first and goes headless."""
    view = Proc("view", "--sub", "tcp://127.0.0.1:9", "--duration", "0.5", "--out", str(tmp_path),
                env={"DISPLAY": display})
    procs.append(view)
    assert reason in view.wait_line("view: no display")
    assert "mode=headless" in view.wait_line("view: mode=")
    rc, stdout, _ = view.finish(timeout=30)
    assert rc == NOTHING_ARRIVED and "view stopped after" in stdout  # nothing listens on port 9


def test_view_given_a_session_file_points_to_render(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """view watches a live server; a session path gets one line saying so and the render command, exit 2."""
    session = tmp_path / "s.mcap"
    assert main(["view", "--headless", str(session)]) == 2
    out = capsys.readouterr()
    assert out.err.count("\n") == 1 and out.err.startswith("error: ") and not out.out, out
    assert "live" in out.err and "--sub" in out.err
    assert f"armtwin render {session} -o out.mp4" in out.err


def test_headless_view_that_received_nothing_says_what_it_waited_for(procs: list[Proc], tmp_path: Path) -> None:
    """No twin state before --duration ended: name the endpoint, what to check, and exit non-zero."""
    endpoint = "tcp://127.0.0.1:9"  # nothing publishes there
    view = Proc("view", "--sub", endpoint, "--headless", "--duration", "0.3", "--out", str(tmp_path / "snaps"))
    procs.append(view)
    rc, _, err = view.finish(timeout=30)
    assert rc == NOTHING_ARRIVED != 0
    line = next(ln for ln in err.splitlines() if "no twin state" in ln)
    assert endpoint in line and "--pub" in line and "device is streaming" in line, line
    assert not (tmp_path / "snaps").exists()


def test_headless_snapshot_frames_the_arm_and_explains_the_ghost(tmp_path: Path) -> None:
    """A snapshot of an arm leaning far out: the camera fits the arm (home pose and the poses seen), and the
    overlay says the opaque arm is the twin and the translucent ghost the measured arm."""
    from armtwin.cli import build_parser
    from tests.test_render import arm_coverage
    from viewer.cli_view import Viewer

    args = build_parser().parse_args(["view", "--headless", "--out", str(tmp_path), "--width", "320", "--height",
                                      "240", "--sub", "tcp://127.0.0.1:9"])
    viewer = Viewer(args, False, threading.Event())
    viewer.feed = TwinFeed(["tcp://127.0.0.1:9"], None)
    try:
        with viewer.scene:
            now = local_us()
            lean = np.array([0.4, 1.1, 0.0, -0.7, 0.0, 0.6, 0.0])
            dv = viewer.feed.devices["armA"] = DeviceView("armA", JOINTS, "kuka_iiwa/model.urdf", 0)
            dv.observe(now, now)
            dv.pred, dv.rx, dv.q_last = Prediction(now, 50_000, (lean + 0.1)[None, :]), now, lean
            viewer._load(dv, now)
            viewer._snapshot(now)
            overlay = "\n".join(viewer.scene.overlay_lines())
    finally:
        viewer.feed.close()
    fraction, cy, cx = arm_coverage(np.asarray(Image.open(tmp_path / "snap_00001_armA.png").convert("RGB")))
    assert fraction > 0.08, f"the arm covers only {fraction:.1%} of the snapshot"
    assert abs(cy - 0.5) < 0.1 and abs(cx - 0.5) < 0.1, f"arm centroid at ({cx:.2f}, {cy:.2f}) of the snapshot"
    assert re.search(r"twin.*prediction", overlay) and re.search(r"ghost.*measured", overlay), overlay
