"""``armtwin view``: watch the live twin of every device a twin server publishes (PyBullet window or headless).

Per device the viewer shows the twin (opaque orange) = the newest prediction evaluated now, and a translucent
blue ghost at the last sample the server received, "now" being server time (``viewer.feed`` receives the twin
states and maps the clocks). This module is the display loop: frames, snapshots, status lines.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from server.cli import add_zenoh_args
from twin.arm_spec import add_arm_args, arm_spec
from twin.security import add_security_args
from twin.stop_signals import stop_on_signals
from viewer.feed import DeviceView, TwinFeed, local_us
from viewer.text_view import run_text_mode
from viewer.zenoh_feed import zenoh_feed_factory

DEFAULT_SUB = "tcp://127.0.0.1:5556"
STATUS_EVERY_S = 5.0
NOTHING_ARRIVED = 3  # exit code: the view ended before any twin state arrived
ARM_MISMATCH = 2  # exit code: a device's joints do not fit the URDF (bad arguments: --urdf / --joint-map)
FRAME_MEMORY = 20  # snapshots whose poses the camera keeps in view


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="watch the live twin (PyBullet window, or PNG snapshots when headless)",
        description="Subscribe to a twin server's PUB socket and show, for each device, the twin (opaque: the "
        "server's newest prediction evaluated now, clamped to its horizon) and a translucent ghost at the last "
        "received sample, with load, MSE, k, H, RTT and link state. Without a display (no $DISPLAY, or the "
        "window cannot open) it runs headless and writes PNG snapshots into --out. Exits on Ctrl-C, SIGTERM, "
        "closing the window or --duration. It watches a live server: to watch a recorded session, render it "
        "(armtwin render SESSION -o out.mp4).",
        epilog="exit codes:\n  0  twin states arrived\n  2  bad arguments, or a device's joints do not fit the "
        "URDF (the view stops\n     when no other device is shown; the error says what to pass)\n"
        f"  {NOTHING_ARRIVED}  no twin state "
        "arrived before the view ended (check the server's --pub address\n     and that a device is streaming)\n\n"
        "examples:\n  armtwin view --sub tcp://127.0.0.1:5556 --keys keys   (the viewer's cert: keys/clients/viewer)\n"
        "  armtwin view --sub tcp://edge-pc:5556 --device arm1 --device arm2\n"
        "  armtwin view --foxglove --port 8765     (then Foxglove: open connection ws://localhost:8765)\n"
        "  armtwin view --headless --snapshot-every 2 --out view-out --duration 60\n"
        "  armtwin view --zenoh 'armtwin/**' --zenoh-connect tcp/router-host:7447 --text\n"
        "  armtwin view --urdf my_arm.urdf --joint-map 'j1=shoulder,j2=elbow:-1:90:deg'\n"
        "  armtwin view --urdf xarm/xarm6_robot.urdf --ee-link link6 --headless --out view-out\n\n"
        "The camera is fitted to each arm's link boxes (headless: per snapshot, over its recent poses; window: once\n"
        "per arm, with room for a half turn of the base): a small arm fills the frame as the KUKA does.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--sub", action="append", metavar="ENDPOINT",
                   help=f"twin server PUB endpoint, repeatable (default {DEFAULT_SUB})")
    p.add_argument("--device", action="append", metavar="ID", help="show only these devices (repeatable)")
    p.add_argument("--foxglove", action="store_true",
                   help="no PyBullet view: serve the live twin to Foxglove over WebSocket (ws://HOST:PORT; open "
                   "viewer/foxglove_layout.json in Foxglove)")
    p.add_argument("--port", type=int, default=8765, help="--foxglove: WebSocket port (default 8765; 0 = any)")
    p.add_argument("--host", default="127.0.0.1",
                   help="--foxglove: address to listen on (default 127.0.0.1; 0.0.0.0 for other machines)")
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
    add_arm_args(p, "what the device announced, else kuka_iiwa/model.urdf", from_session=False)
    p.add_argument("--text", action="store_true",
                   help="no 3D scene: print a line per arm as it appears and its newest state every "
                   "--snapshot-every S (default 1)")
    z = p.add_argument_group("upper tier (Eclipse Zenoh; pip install 'armtwin[zenoh]')")
    z.add_argument("--zenoh", default=None, metavar="KEYEXPR",
                   help="watch the Zenoh tier instead of one server's PUB: every arm of every edge server the key "
                   "expression matches, e.g. 'armtwin/**' or 'armtwin/site1/*/twin' (arms are named SITE/DEVICE; "
                   "the latest state of each is queried at start)")
    add_zenoh_args(z)
    add_security_args(p, "client", "viewer")
    # Not an option of view: caught so `view s.mcap` points to render instead of the top-level usage.
    p.add_argument("session", nargs="?", help=argparse.SUPPRESS)
    p.set_defaults(run=run)


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


class Viewer:
    """The display loop: absolute frame deadlines, never a busy poll, snapshots, cadence report."""

    def __init__(self, args: argparse.Namespace, gui: bool, stop: threading.Event,
                 make_feed: Any = None) -> None:
        from viewer.overlay import LEGEND_VIEW
        from viewer.scene import Scene

        self.args, self.gui = args, gui
        self.scene = Scene(gui=gui, width=args.width, height=args.height)
        self.scene.legend = list(LEGEND_VIEW)  # which arm is the twin, which the measured ghost
        self._seen: dict[str, deque[Any]] = {}  # device key -> link box corners at the poses of recent frames
        self.feed: TwinFeed | None = None
        self.make_feed = make_feed or (lambda: TwinFeed(args.sub or [DEFAULT_SUB], args.device,
                                                        getattr(args, "security", None)))
        self.stop = stop
        self.frames = self.overruns = self.snapshots = 0
        self.arm_errors = 0  # devices whose joints did not fit the URDF (not shown)
        self.frame_span = (0, 0)  # first and last frame times (µs): fps excludes the window's start-up
        self.update_ms: deque[float] = deque(maxlen=10_000)  # recent per-frame pose/text update times
        self.render_ms: deque[float] = deque(maxlen=1000)

    def _load(self, dv: DeviceView, now: int) -> None:
        import numpy as np

        from twin.arm_spec import check_arm
        from viewer.arm import ArmModelError
        from viewer.scene import MEASURED_RGBA, TWIN_RGBA

        base = (0.0, 2.0 * dv.slot, 0.0)
        spec = arm_spec(self.args).over({"urdf": dv.urdf})
        urdf = spec.urdf
        try:
            check_arm(spec, dv.joints)  # the same rules as every verb, by name (no PyBullet client of its own)
            self.scene.add_arm(dv.key, urdf, dv.joints, self.args.joint_map, base, TWIN_RGBA, MEASURED_RGBA)
        except ArmModelError as exc:
            dv.error = str(exc)
            self.arm_errors += 1
            print(f"error: device {dv.dev}: {exc} (not shown)", file=sys.stderr, flush=True)
            return
        dv.loaded = True
        print(f"device={dv.dev} joints={len(dv.joints)} urdf={urdf or 'default'}", flush=True)
        if self.gui:  # one camera for all arms, which the user may move: fit it once, as each arm comes
            self._pose(dv, now)
            # Room for the motion to come: the zero pose (upright, for most arms) and the pose now turned half a
            # turn about the base (any turn of the base joint stays in view).
            pts = np.concatenate([self.scene.arm_points([dv.key]),
                                  self.scene.arm_points([dv.key], {dv.key: np.zeros((1, len(dv.joints)))})])
            turned = pts.copy()
            turned[:, :2] = 2 * np.asarray(base[:2]) - pts[:, :2]
            self._seen[dv.key] = deque([pts, turned], maxlen=FRAME_MEMORY)
            self._frame([d.key for d in self.feed.devices.values() if d.loaded] if self.feed else [dv.key])

    def _frame(self, keys: list[str]) -> None:
        """Fit the camera to the arms ``keys`` as posed now and in the last ``FRAME_MEMORY`` framings: close on
        the arm, following it without jumping from one snapshot to the next."""
        import numpy as np

        from viewer.camera import Camera

        for k in keys:
            self._seen.setdefault(k, deque(maxlen=FRAME_MEMORY)).append(self.scene.arm_points([k]))
        points = np.concatenate([p for k in keys for p in self._seen[k]])
        self.scene.frame_points(points, yaw=90.0 if len(keys) > 1 else Camera.yaw, keys=keys)

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
            self._frame([dv.key])
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
            self.feed = self.make_feed()
            try:
                print(f"view: mode={'gui' if self.gui else 'headless'} {feed_source(args)}"
                      + (f" snapshots every {every:g} s into {args.out}" if every > 0 else ""), flush=True)
                while not self.stop.is_set():
                    now = local_us()
                    deadlines = [d for d in (next_frame if self.gui else None, next_snap, end) if d is not None]
                    wait_ms = min([100, *(-(-(d - now) // 1000) for d in deadlines)])
                    for dv in self.feed.poll(int(wait_ms)):
                        if not dv.loaded and dv.error is None:
                            self._load(dv, local_us())
                    if self.arm_errors and not any(d.loaded for d in self.feed.devices.values()):
                        break  # the arms that came do not fit their URDF: nothing to show, the error is printed
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
        if self.arm_errors:
            return ARM_MISMATCH
        if not self.feed.devices:
            self._nothing_arrived(elapsed)
            return NOTHING_ARRIVED
        return 0

    def _nothing_arrived(self, elapsed: float) -> None:
        """Say what the view waited for: an empty window or no snapshot alone does not tell what is wrong."""
        assert self.feed is not None
        subs = ",".join(self.args.sub or [DEFAULT_SUB])
        wanted = f" for device {','.join(self.args.device)}" if self.args.device else ""
        got = f" ({self.feed.messages} message(s), none a twin state{wanted})" if self.feed.messages else ""
        print(f"view: no twin state{wanted} arrived from {subs} in {elapsed:.1f} s{got}: check the server's --pub "
              "address, that a device is streaming to that server, and that the server authorises this viewer's key "
              "(both use --keys, or both --insecure)", file=sys.stderr, flush=True)

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
    from twin.security import SecurityError, security_from_args
    from viewer.arm import ArmModelError, JointMap
    from viewer.native_io import native_output_silenced

    if args.session is not None:
        print(f"error: armtwin view watches a live twin server (--sub ENDPOINT), not a session file; to watch "
              f"{args.session} run: armtwin render {args.session} -o out.mp4", file=sys.stderr)
        return 2
    try:
        JointMap.parse(args.joint_map)  # fail early on a bad spec
        args.sub = [endpoint(ep) for ep in (args.sub or [])]  # HOST:PORT is accepted too
        # The Zenoh tier is secured by Zenoh's own config (TLS, access control), not by the ZeroMQ keys.
        args.security = security_from_args(args, "client", "viewer") if args.zenoh is None else None
    except (ArmModelError, EndpointError, SecurityError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.fps <= 0 or (args.snapshot_every is not None and args.snapshot_every < 0):
        print("error: --fps must be > 0 and --snapshot-every >= 0", file=sys.stderr)
        return 2
    try:
        make_feed = zenoh_feed_factory(args)
        if args.zenoh is None and args.text:
            make_feed = lambda: TwinFeed(args.sub or [DEFAULT_SUB], args.device, args.security)  # noqa: E731
    except ValueError as exc:  # ZenohSetupError too: the extra missing, a bad key expression or config
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.text:
        return run_text_mode(args, make_feed, feed_source(args))
    if args.foxglove:
        return run_foxglove(args, make_feed)
    gui = not args.headless
    if gui:
        gui, reason = gui_available()
        if not gui:
            print(f"view: no display ({reason}); running headless, snapshots into {args.out}", flush=True)
    stop = threading.Event()
    with stop_on_signals(stop.set):
        try:
            if not gui:
                return Viewer(args, False, stop, make_feed).run()
            try:
                with native_output_silenced():  # PyBullet's OpenGL/thread chatter
                    return Viewer(args, True, stop, make_feed).run()
            except ArmModelError as exc:
                print(f"view: {exc}; running headless, snapshots into {args.out}", flush=True)
                return Viewer(args, False, stop, make_feed).run()
        except ValueError as exc:  # the Zenoh session could not open (a listen port taken, ...)
            print(f"error: {exc}", file=sys.stderr)
            return 2


def feed_source(args: argparse.Namespace) -> str:
    if args.zenoh is not None:
        return f"zenoh={args.zenoh}"
    return f"sub={','.join(args.sub or [DEFAULT_SUB])}"


def run_foxglove(args: argparse.Namespace, make_feed: Any = None) -> int:
    """``--foxglove``: the twin feed to a Foxglove WebSocket server until Ctrl-C, SIGTERM or --duration."""
    stop = threading.Event()
    with stop_on_signals(stop.set):
        return _foxglove_until_stopped(args, make_feed, stop)


def _foxglove_until_stopped(args: argparse.Namespace, make_feed: Any, stop: threading.Event) -> int:
    from viewer.foxglove_live import FoxgloveBridge

    feed = make_feed() if make_feed else TwinFeed(args.sub or [DEFAULT_SUB], args.device,
                                                   getattr(args, "security", None))  # --keys too
    try:
        try:
            arm = arm_spec(args)
            bridge = FoxgloveBridge(feed, args.host, args.port, min(args.fps, 60.0), arm.urdf, arm.joint_map,
                                    arm.ee_link)
        except RuntimeError as exc:  # the port is taken, or the address cannot be bound
            print(f"error: cannot start the Foxglove server on {args.host}:{args.port}: {exc} (try --port 0)",
                  file=sys.stderr)
            return 2
        print(f"foxglove: ws://{args.host}:{bridge.port} (Foxglove: Open connection > Foxglove WebSocket; layout "
              f"viewer/foxglove_layout.json) sub={','.join(args.sub or [DEFAULT_SUB])}", flush=True)
        try:
            bridge.run(stop, args.duration)
        finally:
            bridge.close()
        print(f"foxglove: {bridge.published} frames to Foxglove, {feed.messages} twin states ({feed.bad} bad), "
              f"devices: {', '.join(sorted(bridge.scenes)) or 'none'}", flush=True)
        if bridge.errors:
            return ARM_MISMATCH
        return 0 if feed.messages else NOTHING_ARRIVED
    finally:
        feed.close()
