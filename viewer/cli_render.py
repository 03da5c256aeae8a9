"""``armtwin render``: a video (mp4/gif) or picture (png) of the measured arm against the twin from a session."""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from twin.arm_spec import add_arm_args, arm_spec

if TYPE_CHECKING:  # numpy is imported where it is used: `armtwin --help` stays light
    import numpy as np

FORMATS = (".mp4", ".gif", ".png")
SIDE_GAP_M = 0.25  # side layout: the closest the two arms come to each other (m)


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="render measured arm vs twin from a session to mp4/gif/png",
        description="Replay a session's measured joint angles and what the twin displayed (q̂) on the URDF "
        "(headless TinyRenderer): side by side, or overlaid with the measured arm translucent. Each frame "
        "shows the time, the largest joint error and the end-effector error. Frame count = round(duration × "
        "fps). PNG writes the frame at --start, or a contact sheet with --sheet. GIF frame delays are whole "
        "1/100 s, so use fps 25 or 50 for exact timing; mp4 needs the imageio-ffmpeg package. Frames go to the "
        "file as they are rendered: memory does not grow with the duration.",
        epilog="examples:\n  armtwin render demo-out/session.mcap -o twin.gif --duration 5\n"
        "  armtwin render session.mcap -o twin.mp4 --layout overlay --fps 30 --start 10 --duration 20\n"
        "  armtwin render session.mcap -o sheet.png --sheet 3x3\n"
        "  armtwin render session.mcap -o a.gif --urdf my_arm.urdf --joint-map 'j1=shoulder,j2=elbow:-1:90:deg'\n"
        "  armtwin render xarm.mcap -o x.png --urdf xarm/xarm6_robot.urdf --ee-link link6\n\n"
        "The camera is fitted to the arm's link boxes over the poses shown: any arm fills the frame.\n"
        "exit status: 0 = written; 2 = bad options, unreadable session, or the arm (named by the flags or the\n"
        "session, else the KUKA iiwa) does not fit the recording's joints (the error says what to pass).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("session", type=Path)
    p.add_argument("-o", "--out", type=Path, required=True,
                   help="output file: .mp4, .gif or .png (missing parent directories are created)")
    p.add_argument("--fps", type=float, default=30.0, help="frames per second of session time (default 30)")
    p.add_argument("--layout", choices=("side", "overlay"), default="side",
                   help="side: measured (blue) left of the twin (orange); overlay: one arm over the other")
    p.add_argument("--width", type=int, default=640, help="frame width in pixels (default 640)")
    p.add_argument("--height", type=int, default=480, help="frame height in pixels (default 480)")
    p.add_argument("--start", type=float, default=0.0, help="seconds from the session's start (default 0)")
    p.add_argument("--duration", type=float, default=None, help="seconds to render (default: to the end)")
    p.add_argument("--sheet", default=None, metavar="RxC", help="png only: contact sheet of R×C frames")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_arm_args(p)
    p.set_defaults(run=run)


class RenderError(ValueError):
    """Bad options for this session/output (reported as 'error: ...', exit code 2)."""


def _sheet(spec: str | None) -> tuple[int, int] | None:
    if spec is None:
        return None
    try:
        r, c = (int(x) for x in spec.lower().split("x"))
    except ValueError:
        raise RenderError(f"--sheet {spec!r}: expected RxC, e.g. 3x3") from None
    if not (1 <= r <= 10 and 1 <= c <= 10):
        raise RenderError("--sheet: rows and columns must be 1..10")
    return r, c


class _Sink:
    """Where frames go: a gif/mp4 writer streaming each frame to the file (memory flat in the render's length),
    or png (one frame / a contact sheet of at most 100)."""

    def __init__(self, path: Path, fps: float, sheet: tuple[int, int] | None) -> None:
        self.path, self.fps, self.sheet = path, fps, sheet
        self.ext = path.suffix.lower()
        self.frames: list[np.ndarray] = []
        self._w: Any = None
        if self.ext == ".mp4":
            try:
                import imageio_ffmpeg  # noqa: F401  (bundles its own ffmpeg binary)
            except ImportError:
                raise RenderError("mp4 needs the imageio-ffmpeg package (pip install imageio-ffmpeg); "
                                  "or write a .gif instead") from None
            import imageio.v2 as iio2

            self._w = iio2.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=7,
                                      pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error")
        elif self.ext == ".gif":
            from viewer.gif_writer import GifWriter

            # GIF delays are centiseconds.
            self._w = GifWriter(path, duration_ms=max(round(100 / fps), 1) * 10, loop=0)

    def add(self, frame: np.ndarray) -> None:
        if self._w is not None:
            self._w.append_data(frame)
        else:
            self.frames.append(frame)

    def close(self) -> None:
        import numpy as np

        if self._w is not None:
            self._w.close()
            self._w = None
        elif self.frames:
            from PIL import Image

            if self.sheet is None:
                Image.fromarray(self.frames[0]).save(self.path)
                return
            rows, cols = self.sheet
            h, w = self.frames[0].shape[:2]
            sheet = np.full((rows * h, cols * w, 3), 255, dtype=np.uint8)
            for i, fr in enumerate(self.frames):
                r, c = divmod(i, cols)
                sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = fr
            Image.fromarray(sheet).save(self.path)


def frame_indices(t_us: np.ndarray, start_s: float, duration_s: float, fps: float) -> tuple[np.ndarray, np.ndarray]:
    """Frame times (s from session start) and the index of the newest sample at or before each."""
    import numpy as np

    n = round(float(duration_s) * float(fps))
    times = start_s + np.arange(n) / fps
    rel = t_us - t_us[0]
    idx = np.clip(np.searchsorted(rel, np.rint(times * 1e6).astype(np.int64), side="right") - 1, 0, len(rel) - 1)
    return times, idx


def render_session(args: argparse.Namespace, out: Any = None) -> dict[str, Any]:
    """Render per ``args`` (the verb's options); returns frames, size and timing; the summary line goes to ``out``
    (default: sys.stdout as it is at the call). Raises RenderError."""
    import numpy as np

    out = out if out is not None else sys.stdout

    from twin.paths import prepare_output
    from twin.session import load_session
    from viewer.arm import JointLimitWarning, JointMap, open_arm
    from viewer.overlay import LEGEND_GHOST, LEGEND_SIDE
    from viewer.scene import MEASURED_RGBA, TWIN_RGBA, Scene

    ext = args.out.suffix.lower()
    if ext not in FORMATS:
        raise RenderError(f"output {args.out}: unknown format {ext!r}; use one of {', '.join(FORMATS)}")
    sheet = _sheet(args.sheet)
    if sheet is not None and ext != ".png":
        raise RenderError("--sheet only applies to .png output")
    if args.fps <= 0 or args.width < 16 or args.height < 16:
        raise RenderError("--fps must be > 0 and --width/--height at least 16 pixels")
    width, height = (args.width // 2 * 2, args.height // 2 * 2) if ext == ".mp4" else (args.width, args.height)
    s = load_session(args.session)
    if not 0 <= args.start < max(s.duration_s, 1e-9):
        raise RenderError(f"--start {args.start:g} s is outside the session (0 .. {s.duration_s:.3f} s)")
    duration = s.duration_s - args.start if args.duration is None else args.duration
    if ext == ".png":
        count = 1 if sheet is None else sheet[0] * sheet[1]
        fps = count / duration if sheet is not None and duration > 0 else args.fps
        duration = count / fps
    else:
        fps = args.fps
    times, idx = frame_indices(s.t_us, args.start, duration, fps)
    if len(idx) == 0:
        raise RenderError(f"--duration {duration:g} s at {fps:g} fps is no frame at all")
    spec = arm_spec(args)
    q = s.q[idx]
    qhat = s.qhat[idx] if s.qhat is not None else None
    with warnings.catch_warnings(record=True) as caught, open_arm(spec, s.joint_names, s.meta) as arm:
        warnings.simplefilter("always", JointLimitWarning)
        ee = arm.ee_error_mm(q, qhat) if qhat is not None else np.full(len(q), np.nan)
    urdf, jmap = arm.urdf_id, JointMap.parse(spec.over(s.meta).joint_map)  # the arm that fitted
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    err_deg = np.degrees(np.abs(q - qhat)).max(axis=1) if qhat is not None else np.full(len(q), np.nan)

    prepare_output(args.out)  # after every check: a refused render leaves no directory behind
    sink = _Sink(args.out, fps, sheet)
    t_start = time.perf_counter()
    side = args.layout == "side"
    # Which colour is which arm (the twin's entry goes when there is no twin), and what changes per frame.
    legend = [e for e in (LEGEND_SIDE if side else LEGEND_GHOST) if qhat is not None or "measured" in e]

    def caption(i: int) -> list[str]:
        head = f"{args.session.name}   t = {times[i]:7.2f} s"
        if qhat is None:
            return [head, "measured only: this session has no twin display (qhat) recorded"]
        return [head, "twin: nothing displayed yet" if np.isnan(ee[i]) else
                f"max |e| {err_deg[i]:.3f} deg   end-effector error {ee[i]:.1f} mm"]

    # The camera is fitted once, to every pose the video will show (up to 60 of them): a steady view.
    some = np.unique(np.linspace(0, len(idx) - 1, min(len(idx), 60)).astype(int))
    shown = np.concatenate([q[some], qhat[some]]) if qhat is not None else q[some]
    try:
        with Scene(width=width, height=height) as scene:
            if side:  # two opaque arms next to each other, as close as their poses allow (bigger in the frame)
                scene.add_arm("probe", urdf, s.joint_names, jmap)
                y = scene.arm_points(["probe"], {"probe": shown})[:, 1]
                scene.remove_arm("probe")
                half = max((float(y.max() - y.min()) + SIDE_GAP_M) / 2, SIDE_GAP_M) if len(y) else 0.7
                scene.add_arm("measured", urdf, s.joint_names, jmap, (0.0, -half, 0.0), MEASURED_RGBA,
                              label="measured")
                scene.add_arm("twin", urdf, s.joint_names, jmap, (0.0, half, 0.0), TWIN_RGBA, label="twin")
                poses = {"measured": q[some], "twin": shown}
            else:  # the twin with the measured arm as its translucent ghost, as in `armtwin view`
                scene.add_arm("arm", urdf, s.joint_names, jmap, (0.0, 0.0, 0.0), TWIN_RGBA, MEASURED_RGBA)
                poses = {"arm": shown}
            scene.legend, scene.caption = legend, caption(0)
            scene.frame(yaw=90.0 if side else None, poses=poses)
            nan = np.full(q.shape[1], np.nan)
            frames: Iterable[int] = range(len(idx))
            if not args.no_progress and sys.stderr.isatty():  # no bar (nor tqdm's monitor thread) in logs/pipes
                from tqdm import tqdm

                frames = tqdm(frames, total=len(idx), unit="frame", desc=args.out.name, file=sys.stderr)
            for i in frames:
                twin_q = qhat[i] if qhat is not None else nan
                if side:
                    scene.set_q("measured", q[i])
                    scene.set_q("twin", twin_q)
                else:
                    scene.set_q("arm", twin_q, ghost_q=q[i])
                scene.caption = caption(i)
                sink.add(scene.render())
            overlay = scene.overlay_lines()
    finally:
        sink.close()
    elapsed = time.perf_counter() - t_start
    info = {"frames": len(idx), "width": width, "height": height, "fps": fps, "seconds": elapsed, "overlay": overlay,
            "frames_per_s": len(idx) / elapsed if elapsed > 0 else float("inf")}
    print(f"wrote {args.out}: {len(idx)} frame(s) {width}x{height} in {elapsed:.1f} s "
          f"({info['frames_per_s']:.1f} frames/s)", file=out)
    return info


def run(args: argparse.Namespace) -> int:
    from twin.paths import OutputPathError
    from twin.session import SessionError
    from viewer.arm import ArmModelError

    try:
        render_session(args)
    except (RenderError, ArmModelError, SessionError, OutputPathError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
