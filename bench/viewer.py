"""Viewer frames/s with 1 and 10 arms: the viewer's own scene (``viewer/scene.py``), every arm posed as the twin
plus its translucent ghost each frame, one image of all arms rendered per frame.

Headless (PyBullet DIRECT, TinyRenderer on the CPU): this machine has no X server; with Xvfb the live viewer's
OpenGL window would be measured instead (not done here). Runs in its own process
(``python -m bench.viewer --arms 1,10 --seconds S --repeats R``, JSON on stdout) so PyBullet never loads into the
bench's process.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from typing import Any

import numpy as np

from bench.common import Part, median, run_quiet

MODE = "headless: PyBullet DIRECT + TinyRenderer (no X server here)"


def frames_per_s(arms: int, seconds: float, repeats: int, width: int, height: int) -> list[float]:
    """``repeats`` windows of ``seconds``: frames rendered per second in each."""
    from twin.constants import DEFAULT_URDF
    from twin.urdf_names import movable_joint_names
    from viewer.scene import MEASURED_RGBA, TWIN_RGBA, Scene

    names = movable_joint_names(DEFAULT_URDF) or [f"joint_{i + 1}" for i in range(7)]
    out = []
    with Scene(gui=False, width=width, height=height) as scene:
        keys = [f"arm{i}" for i in range(arms)]
        for i, k in enumerate(keys):
            scene.add_arm(k, None, names, None, (0.0, 2.0 * i, 0.0), TWIN_RGBA, MEASURED_RGBA)
        scene.frame(keys)
        phase = np.arange(len(names))
        frame = 0
        for _ in range(repeats + 1):  # the first window warms up (first render allocates the buffers)
            t0, n = time.perf_counter(), 0
            while time.perf_counter() - t0 < seconds or n == 0:
                x = frame * 0.02
                for j, k in enumerate(keys):
                    q = 0.6 * np.sin(x + phase + j)
                    scene.set_q(k, q, q - 0.05)
                scene.render()
                frame += 1
                n += 1
            out.append(n / (time.perf_counter() - t0))
    return out[1:]


def viewer_part(arms: list[int], seconds: float, repeats: int, width: int = 640, height: int = 480) -> Part:
    """Run the measurement in a child process; the table row per arm count."""
    r = run_quiet([sys.executable, "-m", "bench.viewer", "--arms", ",".join(map(str, arms)), "--seconds",
                   str(seconds), "--repeats", str(repeats), "--size", f"{width}x{height}"],
                  timeout=120 + 4 * seconds * repeats * len(arms))
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    part = Part("viewer", f"viewer: frames/s, {width}x{height}, twin + ghost per arm, {seconds:g} s windows, median "
                f"of {repeats}", ["arms", "frames_per_s", "ms_per_frame"])
    for n, fps in doc["fps"].items():
        m = median(fps)
        part.rows.append({"arms": int(n), "frames_per_s": m, "ms_per_frame": 1000 / m if m > 0 else math.nan,
                          "windows": fps})
    part.notes.append(doc["mode"])
    return part


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="viewer frames/s (the viewer part of armtwin bench)")
    ap.add_argument("--arms", default="1,10", help="arm counts, comma-separated (default 1,10)")
    ap.add_argument("--seconds", type=float, default=2.0, help="window length (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="windows per arm count (default 3)")
    ap.add_argument("--size", default="640x480", help="image size WxH (default 640x480)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.split("x"))
    from viewer.native_io import native_output_silenced

    fps: dict[str, Any] = {}
    with native_output_silenced():  # PyBullet's start-up chatter on stdout would spoil the JSON line
        for n in (int(a) for a in args.arms.split(",")):
            fps[str(n)] = frames_per_s(n, args.seconds, args.repeats, w, h)
    print(json.dumps({"mode": MODE, "fps": fps, "median": {k: statistics.median(v) for k, v in fps.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
