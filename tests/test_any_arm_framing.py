"""Render and the headless viewer frame any arm from its bounding box: an xArm6 or a Panda fills the frame as the
KUKA iiwa does (the old fixed camera, aimed at the KUKA's middle from 2.3 m, showed an xArm6 at ~1 % of the
pixels, low in the frame). Pixels of the rendered frames are checked against the KUKA's and the fixed camera's."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from armtwin.cli import build_parser
from tests.test_any_arm import KUKA, KUKA_NAMES, PANDA, XARM6, XARM_NAMES, tracked
from tests.test_render import arm_coverage
from twin.display import Prediction
from twin.session import write_session
from viewer.camera import Camera
from viewer.feed import DeviceView, TwinFeed, local_us

PANDA_NAMES = [f"panda_joint{i}" for i in range(1, 8)]
ARMS = {"kuka": (KUKA, KUKA_NAMES), "xarm6": (XARM6, XARM_NAMES), "panda": (PANDA, PANDA_NAMES)}
W, H = 320, 240


def extent(img: np.ndarray) -> tuple[float, float, float, float]:
    """(fraction of pixels, height of their bounding box / H, centroid x / W, centroid y / H) of the arm."""
    fraction, cy, cx = arm_coverage(img)
    rgb = img.astype(np.int16)
    rows = np.flatnonzero(((rgb.max(axis=2) - rgb.min(axis=2)) > 40).any(axis=1))
    return fraction, float((rows[-1] - rows[0] + 1) / img.shape[0]), cx, cy


def framed_like_the_kuka(got: tuple[float, float, float, float], kuka: tuple[float, float, float, float]) -> bool:
    """At least half the KUKA's pixels, at least 80 % of its height in the frame, centred within 10 %."""
    fraction, height, cx, cy = got
    return fraction >= 0.5 * kuka[0] and height >= 0.8 * kuka[1] and abs(cx - 0.5) < 0.1 and abs(cy - 0.5) < 0.1


def render(tmp_path: Path, name: str, layout: str) -> np.ndarray:
    from viewer.cli_render import render_session

    urdf, names = ARMS[name]
    path, out = tmp_path / f"{name}.mcap", tmp_path / f"{name}_{layout}.png"
    write_session(path, tracked(names, None))
    args = build_parser().parse_args(["render", str(path), "-o", str(out), "--start", "0.5", "--width", str(W),
                                      "--height", str(H), "--layout", layout, "--urdf", urdf])
    render_session(args, out=io.StringIO())
    return np.asarray(Image.open(out).convert("RGB"))


def fixed_camera_frame(name: str) -> np.ndarray:
    """The arm at the same pose seen by the camera render used before it was fitted (``Camera()``)."""
    from viewer.scene import MEASURED_RGBA, TWIN_RGBA, Scene

    urdf, names = ARMS[name]
    s = tracked(names, None)
    with Scene(width=W, height=H) as scene:
        scene.add_arm("arm", urdf, names, None, (0.0, 0.0, 0.0), TWIN_RGBA, MEASURED_RGBA)
        scene.set_q("arm", s.qhat[500], ghost_q=s.q[500])
        scene.set_camera(Camera())
        return scene.render(text=False)


@pytest.mark.parametrize("layout", ["overlay", "side"])
def test_render_frames_each_arm_like_the_kuka(tmp_path: Path, layout: str) -> None:
    kuka = extent(render(tmp_path, "kuka", layout))
    assert kuka[0] > 0.02 and kuka[1] > 0.4, f"the KUKA itself is badly framed: {kuka}"
    for name in ("xarm6", "panda"):
        got = extent(render(tmp_path, name, layout))
        assert framed_like_the_kuka(got, kuka), f"{name} {layout}: {got} vs the KUKA's {kuka}"
    # The check tells a fitted camera from the old fixed one: there the xArm6 is small and low.
    old = extent(fixed_camera_frame("xarm6"))
    assert not framed_like_the_kuka(old, extent(fixed_camera_frame("kuka"))), old


def snapshot(tmp_path: Path, name: str) -> np.ndarray:
    """One headless `armtwin view` snapshot of arm ``name`` (the Viewer's own load, pose and framing code)."""
    from viewer.cli_view import Viewer

    urdf, names = ARMS[name]
    out = tmp_path / name
    args = build_parser().parse_args(["view", "--headless", "--out", str(out), "--width", str(W), "--height",
                                      str(H), "--sub", "tcp://127.0.0.1:9", "--urdf", urdf])
    viewer = Viewer(args, False, threading.Event())
    viewer.feed = TwinFeed(["tcp://127.0.0.1:9"], None)
    s = tracked(names, None)
    try:
        with viewer.scene:
            now = local_us()
            dv = viewer.feed.devices["armA"] = DeviceView("armA", names, "", 0)
            dv.observe(now, now)
            dv.pred, dv.rx, dv.q_last = Prediction(now, 50_000, s.qhat[500][None, :]), now, s.q[500]
            viewer._load(dv, now)
            assert dv.loaded, dv.error
            viewer._snapshot(now)
    finally:
        viewer.feed.close()
    return np.asarray(Image.open(out / "snap_00001_armA.png").convert("RGB"))


def test_headless_view_frames_each_arm_like_the_kuka(tmp_path: Path) -> None:
    kuka = extent(snapshot(tmp_path, "kuka"))
    assert kuka[0] > 0.02 and kuka[1] > 0.4, f"the KUKA itself is badly framed: {kuka}"
    for name in ("xarm6", "panda"):
        got = extent(snapshot(tmp_path, name))
        assert framed_like_the_kuka(got, kuka), f"{name}: {got} vs the KUKA's {kuka}"
