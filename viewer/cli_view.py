"""``armtwin view``: watch the live twin of every device a twin server publishes (PyBullet window or headless).

Per device the viewer shows the twin (opaque orange) = the newest prediction evaluated now, and a translucent
blue ghost at the last sample the server received. "Now" is server time: the viewer keeps the lower envelope of
(local receive time - server ``rx``) per device, so the same code is right on the server's machine (offset ~ the
PUB latency) and on another one (offset = clock difference + the smallest latency; followed at up to 100 ppm).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_SUB = "tcp://127.0.0.1:5556"
STATUS_EVERY_S = 5.0
DRIFT_PPM = 100
MAX_DRAIN = 2000


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="watch the live twin (PyBullet window, or PNG snapshots when headless)",
        description="Subscribe to a twin server's PUB socket and show, for each device, the twin (opaque: the "
        "server's newest prediction evaluated now, clamped to its horizon) and a translucent ghost at the last "
        "received sample, with load, MSE, k, H, RTT and link state. Without a display (no $DISPLAY, or the "
        "window cannot open) it runs headless and writes PNG snapshots into --out. Exits on Ctrl-C, SIGTERM, "
        "closing the window or --duration.",
        epilog="examples:\n  armtwin view --sub tcp://127.0.0.1:5556\n"
        "  armtwin view --sub tcp://edge-pc:5556 --device arm1 --device arm2\n"
        "  armtwin view --headless --snapshot-every 2 --out view-out --duration 60\n"
        "  armtwin view --urdf my_arm.urdf --joint-map 'j1=shoulder,j2=elbow:-1:90:deg'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sub", action="append", metavar="ENDPOINT",
                   help=f"twin server PUB endpoint, repeatable (default {DEFAULT_SUB})")
    p.add_argument("--device", action="append", metavar="ID", help="show only these devices (repeatable)")
    p.add_argument("--urdf", default=None, help="URDF path or pybullet_data id (default: what the device announced)")
    p.add_argument("--joint-map", default=None, metavar="SPEC",
                   help="RECORDED=URDF_JOINT[:SIGN[:OFFSET[:UNITS]]],... or a JSON file (default: i-th joint)")
    p.add_argument("--headless", action="store_true", help="no window: render PNG snapshots (TinyRenderer)")
    p.add_argument("--snapshot-every", type=float, default=None, metavar="S",
                   help="write a PNG every S seconds (default: 1 headless, never in the window)")
    p.add_argument("--out", type=Path, default=Path("view-out"), help="snapshot directory (default view-out)")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="exit after S seconds of viewing (counted once the window is open)")
    p.add_argument("--fps", type=float, default=60.0, help="window update rate (default 60)")
    p.add_argument("--width", type=int, default=800, help="window / snapshot width (default 800)")
    p.add_argument("--height", type=int, default=600, help="window / snapshot height (default 600)")
    p.add_argument("--stale-after", type=float, default=2.0, metavar="S",
                   help="mark a device STALE after S seconds without an update (default 2)")
    p.set_defaults(run=run)


def local_us() -> int:
    return time.monotonic_ns() // 1000


def gui_available() -> tuple[bool, str]:
    """Can a PyBullet window open here? (PyBullet exits the whole process if the X server is unreachable.)"""
    import ctypes
    import ctypes.util

    display = os.environ.get("DISPLAY")
    if not display:
        return False, "$DISPLAY is not set"
    try:
        x11 = ctypes.CDLL(ctypes.util.find_library("X11") or "libX11.so.6")
    except OSError:
        return False, "libX11 is not installed"
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    handle = x11.XOpenDisplay(None)
    if not handle:
        return False, f"cannot open display {display}"
    x11.XCloseDisplay(handle)
    if ctypes.util.find_library("GL") is None:
        return False, "no OpenGL library (libGL)"
    return True, ""


@dataclass
class DeviceView:
    """Newest twin state of one device, and where it sits in the scene."""

    dev: str
    joints: list[str]
    urdf: str
    slot: int
    pred: Any = None  # twin.display.Prediction
    rx: int = 0
    q_last: Any = None  # np.ndarray (J,)
    status: dict[str, Any] = field(default_factory=dict)
    offset_us: int | None = None  # local clock - server clock (lower envelope)
    last_local_us: int = 0
    messages: int = 0
    loaded: bool = False
    error: str | None = None
    ghost_dirty: bool = True

    @property
    def key(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", self.dev) or "device"

    def observe(self, now: int, rx: int) -> None:
        cand = now - rx
        if self.offset_us is None or cand < self.offset_us or cand - self.offset_us > 1_000_000:
            self.offset_us = cand  # first message, a faster path, or a server restarted with another clock
        else:  # follow a slowly drifting clock upward too
            self.offset_us += min(cand - self.offset_us, (now - self.last_local_us) * DRIFT_PPM // 1_000_000)
        self.last_local_us = now

    def twin_q(self, now: int) -> Any:
        """The prediction evaluated at server time now (clamped to its horizon by Prediction.evaluate)."""
        server_now = now - (self.offset_us or 0)
        return self.pred.evaluate(self.pred.t0_us + server_now - self.rx)

    def overlay(self, now: int, stale_after_s: float) -> list[str]:
        st = self.status

        def num(key: str, fmt: str) -> str:
            v = st.get(key)
            return format(v, fmt) if isinstance(v, int | float) and v == v else "-"

        age = (now - self.last_local_us) / 1e6
        link = {True: "up", False: "DOWN"}.get(bool(st["link_up"])) if "link_up" in st else "-"
        lines = [f"{self.dev}   load {num('load', '.3f')}   MSE {num('mse_deg2', '.3g')} deg^2",
                 f"k {num('k', '.3g')}   H {num('h_ms', '.4g')} ms   RTT {num('rtt_ms', '.2f')} ms   link {link}"]
        if age > stale_after_s:
            lines.append(f"STALE: no update for {age:.0f} s")
        return lines


class TwinFeed:
    """SUB socket(s) to twin servers; keeps the newest state per device, counts what it drops."""

    def __init__(self, endpoints: list[str], devices: list[str] | None) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.MAXMSGSIZE, 1 << 20)  # twin states are ~300 bytes: refuse absurd ones
        self.wanted = set(devices) if devices else None
        for topic in sorted(self.wanted) if self.wanted else [""]:
            self.sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        for ep in endpoints:
            self.sock.connect(ep)
        self.poller = zmq.Poller()
        self.poller.register(self.sock, zmq.POLLIN)
        self.devices: dict[str, DeviceView] = {}
        self.messages = 0
        self.bad = 0

    def poll(self, timeout_ms: int) -> list[DeviceView]:
        """Wait up to ``timeout_ms`` for messages, take what is queued (at most ``MAX_DRAIN``, so a flood cannot
        starve the display); returns the devices seen for the first time."""
        new: list[DeviceView] = []
        if not self.poller.poll(max(timeout_ms, 0)):
            return new
        for _ in range(MAX_DRAIN):
            try:
                frames = self.sock.recv_multipart(flags=self.zmq.NOBLOCK)
            except self.zmq.Again:
                return new
            now = local_us()
            self.messages += 1
            try:
                dv = self._apply(frames, now)
            except (ValueError, TypeError, KeyError, IndexError):
                self.bad += 1
                continue
            if dv is not None:
                new.append(dv)
        return new

    def _apply(self, frames: list[bytes], now: int) -> DeviceView | None:
        import msgpack
        import numpy as np

        from twin.schema import ProtocolError, prediction_from_wire

        if len(frames) != 2:
            raise ValueError("expected [topic, body]")
        msg = msgpack.unpackb(frames[1], raw=False)
        if not isinstance(msg, dict) or msg.get("type") != "twin" or not isinstance(msg.get("dev"), str):
            raise ValueError("not a twin state")
        dev = msg["dev"]
        if self.wanted is not None and dev not in self.wanted:
            return None  # SUBSCRIBE matches prefixes: "arm1" also lets "arm10" through
        joints = [str(j) for j in msg["joints"]]
        try:
            _, pred = prediction_from_wire(msg["pred"], len(joints))
        except ProtocolError as exc:
            raise ValueError(str(exc)) from None
        q_last = np.asarray(msg["q_last"], dtype=np.float64)
        rx = msg["rx"]
        if q_last.shape != (len(joints),) or not isinstance(rx, int):
            raise ValueError("bad q_last/rx")
        dv = self.devices.get(dev)
        is_new = dv is None or dv.joints != joints
        if dv is None or dv.joints != joints:
            dv = DeviceView(dev, joints, str(msg.get("urdf") or ""), dv.slot if dv else len(self.devices))
            self.devices[dev] = dv
        dv.observe(now, rx)
        dv.pred, dv.rx, dv.q_last, dv.ghost_dirty = pred, rx, q_last, True
        if isinstance(msg.get("status"), dict):
            dv.status = msg["status"]
        dv.messages += 1
        return dv if is_new else None

    def close(self) -> None:
        self.sock.close(linger=0)
        self.ctx.term()


class Viewer:
    """The display loop: absolute frame deadlines, never a busy poll, snapshots, cadence report."""

    def __init__(self, args: argparse.Namespace, gui: bool, stop: threading.Event) -> None:
        from viewer.scene import Scene

        self.args, self.gui = args, gui
        self.scene = Scene(gui=gui, width=args.width, height=args.height)
        self.feed: TwinFeed | None = None
        self.stop = stop
        self.frames = self.overruns = self.snapshots = 0
        self.frame_span = (0, 0)  # first and last frame times (µs): fps excludes the window's start-up
        self.update_ms: deque[float] = deque(maxlen=10_000)  # recent per-frame pose/text update times
        self.render_ms: deque[float] = deque(maxlen=1000)

    def _load(self, dv: DeviceView) -> None:
        from viewer.arm import ArmModelError
        from viewer.scene import MEASURED_RGBA, TWIN_RGBA

        base = (0.0, 2.0 * dv.slot, 0.0)
        urdf = self.args.urdf or dv.urdf or None
        try:
            self.scene.add_arm(dv.key, urdf, dv.joints, self.args.joint_map, base, TWIN_RGBA, MEASURED_RGBA)
        except ArmModelError as exc:
            dv.error = str(exc)
            print(f"view: device {dv.dev}: {exc} (not shown)", file=sys.stderr, flush=True)
            return
        dv.loaded = True
        print(f"device={dv.dev} joints={len(dv.joints)} urdf={urdf or 'default'}", flush=True)
        self.scene.frame()

    def _pose(self, dv: DeviceView, now: int) -> None:
        self.scene.set_q(dv.key, dv.twin_q(now), dv.q_last if dv.ghost_dirty else None)  # one reset in the GUI
        dv.ghost_dirty = False

    def _snapshot(self, now: int) -> None:
        from PIL import Image

        assert self.feed is not None
        shown = [dv for dv in self.feed.devices.values() if dv.loaded]
        if not shown:
            return
        self.args.out.mkdir(parents=True, exist_ok=True)
        self.snapshots += 1
        t0 = time.perf_counter()
        if self.gui:
            path = self.args.out / f"snap_{self.snapshots:05d}_all.png"
            Image.fromarray(self.scene.screenshot()).save(path)
            print(f"snapshot={path}", flush=True)
        for dv in [] if self.gui else shown:
            self._pose(dv, now)
            self.scene.set_text(dv.key, dv.overlay(now, self.args.stale_after))
            self.scene.frame([dv.key])
            path = self.args.out / f"snap_{self.snapshots:05d}_{dv.key}.png"
            Image.fromarray(self.scene.render(keys=[dv.key])).save(path)
            print(f"snapshot={path}", flush=True)
        self.render_ms.append((time.perf_counter() - t0) * 1e3)

    def run(self) -> int:
        args = self.args
        every = args.snapshot_every if args.snapshot_every is not None else (0.0 if self.gui else 1.0)
        period_us = int(1e6 / max(args.fps, 1.0))
        with self.scene:  # --duration counts from here: opening a window can take seconds on a busy machine
            start = local_us()
            end = start + int(args.duration * 1e6) if args.duration is not None else None
            next_frame, next_snap = start, start + int(every * 1e6) if every > 0 else None
            next_status, last_status = start + int(STATUS_EVERY_S * 1e6), (start, 0)
            next_text = start
            self.feed = TwinFeed(args.sub or [DEFAULT_SUB], args.device)
            try:
                print(f"view: mode={'gui' if self.gui else 'headless'} sub={','.join(args.sub or [DEFAULT_SUB])}"
                      + (f" snapshots every {every:g} s into {args.out}" if every > 0 else ""), flush=True)
                while not self.stop.is_set():
                    now = local_us()
                    deadlines = [d for d in (next_frame if self.gui else None, next_snap, end) if d is not None]
                    wait_ms = min([100, *(-(-(d - now) // 1000) for d in deadlines)])
                    for dv in self.feed.poll(int(wait_ms)):
                        if not dv.loaded and dv.error is None:
                            self._load(dv)
                    now = local_us()
                    if end is not None and now >= end:
                        break
                    if self.gui and now >= next_frame:
                        t0 = time.perf_counter()
                        shown = [dv for dv in self.feed.devices.values() if dv.loaded]
                        for dv in shown:
                            self._pose(dv, now)
                        if now >= next_text:  # every GUI call waits for a window frame: text at 2 Hz
                            for dv in shown:
                                self.scene.set_text(dv.key, dv.overlay(now, args.stale_after))
                            next_text = now + 500_000
                            if not self.scene.is_open():
                                print("view: window closed", flush=True)
                                break
                        self.update_ms.append((time.perf_counter() - t0) * 1e3)
                        if self.frames and now - self.frame_span[1] > 1.5 * period_us:
                            self.overruns += 1
                        self.frames += 1
                        self.frame_span = (self.frame_span[0] or now, now)
                        # PyBullet calls block until the window's render loop takes them: when that paced this
                        # frame, the next may go right away (waiting for our own deadline too would skip a tick).
                        done = local_us()
                        next_frame = done if done - now >= period_us // 2 else max(next_frame + period_us, now)
                    if next_snap is not None and now >= next_snap:
                        self._snapshot(now)
                        next_snap += int(every * 1e6)
                        if next_snap <= now:
                            next_snap = now + int(every * 1e6)
                    if now >= next_status:
                        since = max(last_status[0], self.frame_span[0] or now)  # not the window's start-up
                        self._report("view:", (self.frames - last_status[1]) / max((now - since) / 1e6, 1e-9))
                        last_status = (now, self.frames)
                        next_status += int(STATUS_EVERY_S * 1e6)
            finally:
                elapsed = (local_us() - start) / 1e6
                fps = max(self.frames - 1, 0) / max((self.frame_span[1] - self.frame_span[0]) / 1e6, 1e-9)
                self._report(f"view stopped after {elapsed:.1f} s:", fps)
                self.feed.close()
        return 0

    def _report(self, head: str, fps: float) -> None:
        import numpy as np

        feed = self.feed
        assert feed is not None
        up = f" update_ms p50={np.median(self.update_ms):.2f} max={max(self.update_ms):.2f}" if self.update_ms else ""
        snap = f" snapshot_ms p50={np.median(self.render_ms):.1f}" if self.render_ms else ""
        fps_txt = f" fps={fps:.1f} overruns={self.overruns}" if self.gui else ""
        print(f"{head}{fps_txt} devices={sum(d.loaded for d in feed.devices.values())} msgs={feed.messages} "
              f"bad={feed.bad} snapshots={self.snapshots}{up}{snap}", flush=True)


def run(args: argparse.Namespace) -> int:
    from twin.endpoints import EndpointError, endpoint
    from viewer.arm import ArmModelError, JointMap
    from viewer.scene import native_output_silenced

    try:
        JointMap.parse(args.joint_map)  # fail early on a bad spec
        args.sub = [endpoint(ep) for ep in (args.sub or [])]  # HOST:PORT is accepted too
    except (ArmModelError, EndpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fps <= 0 or (args.snapshot_every is not None and args.snapshot_every < 0):
        print("error: --fps must be > 0 and --snapshot-every >= 0", file=sys.stderr)
        return 2
    gui = not args.headless
    if gui:
        gui, reason = gui_available()
        if not gui:
            print(f"view: no display ({reason}); running headless, snapshots into {args.out}", flush=True)
    stop = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if not gui:
            return Viewer(args, False, stop).run()
        try:
            with native_output_silenced():  # PyBullet's OpenGL/thread chatter
                return Viewer(args, True, stop).run()
        except ArmModelError as exc:
            print(f"view: {exc}; running headless, snapshots into {args.out}", flush=True)
            return Viewer(args, False, stop).run()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
