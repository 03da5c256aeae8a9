"""``armtwin render`` and the headless scene: the arm is visible, poses show, frame counts match duration × fps."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from armtwin.cli import main
from tests.conftest import REPO
from twin.session import Session, write_session
from viewer.cli_render import frame_indices
from viewer.scene import MEASURED_RGBA, Scene

JOINTS = [f"joint_{i + 1}" for i in range(7)]


def kuka_session(seconds: float = 3.0, twin: bool = True) -> Session:
    """Synthetic 1 kHz motion of the 7-joint iiwa; the twin lags and misses the first 0.3 s."""
    t_us = np.arange(int(seconds * 1000), dtype=np.int64) * 1000
    t = t_us * 1e-6
    q = np.stack([(1.0 if j % 2 == 0 else 0.6) * np.sin(2 * np.pi * 0.3 * t + j) for j in range(7)], axis=1)
    qhat = None
    if twin:
        qhat = np.roll(q, 40, axis=0)
        qhat[:300] = np.nan
    return Session(t_us=t_us, q=q, joint_names=JOINTS, qhat=qhat, sent=np.arange(len(t)) % 10 == 0,
                   meta={"source": "synthetic test motion", "urdf": "kuka_iiwa/model.urdf"})


@pytest.fixture
def kuka_file(tmp_path: Path) -> Path:
    path = tmp_path / "kuka.mcap"
    write_session(path, kuka_session())
    return path


def colour_pixels(img: np.ndarray) -> tuple[int, int]:
    """(orange, blue) pixel counts: the twin's and the measured arm's colours under TinyRenderer's shading."""
    r, g, b = (img[..., i].astype(np.int16) for i in range(3))
    return int(((r - b > 80) & (r > g) & (g > b)).sum()), int(((b - r > 25) & (b > g)).sum())


def test_scene_renders_arm_and_poses_differ() -> None:
    with Scene(width=320, height=240) as scene:
        scene.add_arm("a", None, JOINTS)
        scene.frame()
        upright = scene.render()
        scene.set_q("a", [0.0, 1.2, 0.0, -1.0, 0.0, 0.8, 0.0])
        bent = scene.render()
        scene.set_q("a", [np.nan] * 7)  # nothing to show: hidden
        empty = scene.render(text=False)
    assert upright.shape == (240, 320, 3) and upright.dtype == np.uint8
    assert colour_pixels(upright)[0] > 1000
    assert colour_pixels(bent)[0] > 1000
    assert (np.abs(upright.astype(int) - bent.astype(int)).sum(axis=2) > 30).mean() > 0.01
    assert colour_pixels(empty)[0] == 0 and (empty == 255).all()


def test_ghost_is_translucent_and_hides_nothing() -> None:
    """The measured ghost is blended (lighter blue), never hiding the opaque twin at the same pose."""
    with Scene(width=320, height=240) as scene:
        scene.add_arm("a", None, JOINTS, ghost_rgba=MEASURED_RGBA)
        scene.frame()
        scene.set_q("a", [0.0] * 7, ghost_q=[0.0] * 7)
        same = scene.render(text=False)
        scene.set_q("a", [np.nan] * 7, ghost_q=[0.0] * 7)
        ghost_only = scene.render(text=False)
    assert colour_pixels(same)[1] == 0, "at the same pose the ghost must stay behind the twin (no z-fighting)"
    orange, blue = colour_pixels(ghost_only)
    assert orange == 0 and blue > 500
    arm = ghost_only[(ghost_only != 255).any(axis=2)]
    assert arm.min() > 60, "a translucent ghost over white is light, not the opaque blue"


def test_frame_indices_count_and_alignment() -> None:
    t_us = np.arange(5000, dtype=np.int64) * 1000 + 123
    times, idx = frame_indices(t_us, 1.0, 2.0, 30.0)
    assert len(times) == 60 and idx[0] == 1000 and idx[-1] == 1000 + int(59 / 30 * 1000)
    assert len(frame_indices(t_us, 0.0, 0.5, 25.0)[1]) == round(0.5 * 25)


def test_render_gif_frame_count_and_content(kuka_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "twin.gif"
    assert main(["render", str(kuka_file), "-o", str(out), "--fps", "10", "--duration", "1.5", "--width", "240",
                 "--height", "180", "--layout", "overlay", "--no-progress"]) == 0
    with Image.open(out) as gif:
        assert gif.n_frames == round(1.5 * 10)
        assert gif.info["duration"] == 100 and gif.info["loop"] == 0
        gif.seek(0)
        first = np.asarray(gif.convert("RGB"))
        gif.seek(gif.n_frames - 1)
        last = np.asarray(gif.convert("RGB"))
    assert first.shape == (180, 240, 3)
    assert colour_pixels(first)[0] == 0, "no twin before its first prediction (qhat NaN for 0.3 s)"
    assert colour_pixels(last)[0] > 300, "the twin is visible once predictions arrive"
    assert (np.abs(first.astype(int) - last.astype(int)).sum(axis=2) > 30).mean() > 0.01


def test_render_png_frame_and_contact_sheet(kuka_file: Path, tmp_path: Path) -> None:
    single, sheet = tmp_path / "one.png", tmp_path / "sheet.png"
    assert main(["render", str(kuka_file), "-o", str(single), "--start", "1", "--width", "320", "--height",
                 "240"]) == 0
    img = np.asarray(Image.open(single).convert("RGB"))
    assert img.shape == (240, 320, 3)
    orange, blue = colour_pixels(img)
    assert orange > 500 and blue > 500, "side layout: measured (blue) and twin (orange) both visible"
    assert main(["render", str(kuka_file), "-o", str(sheet), "--sheet", "2x3", "--width", "160", "--height",
                 "120"]) == 0
    assert Image.open(sheet).size == (3 * 160, 2 * 120)


def test_render_session_without_twin(tmp_path: Path) -> None:
    path, out = tmp_path / "imported.mcap", tmp_path / "m.png"
    write_session(path, kuka_session(1.0, twin=False))
    assert main(["render", str(path), "-o", str(out), "--width", "200", "--height", "150"]) == 0
    orange, blue = colour_pixels(np.asarray(Image.open(out).convert("RGB")))
    assert orange == 0 and blue > 200


def test_render_mp4(kuka_file: Path, tmp_path: Path) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="mp4 needs the imageio-ffmpeg package")
    import imageio.v2 as iio

    out = tmp_path / "twin.mp4"
    assert main(["render", str(kuka_file), "-o", str(out), "--fps", "20", "--duration", "1", "--width", "161",
                 "--height", "120", "--no-progress"]) == 0
    reader = iio.get_reader(out, format="FFMPEG")
    try:
        assert reader.count_frames() == 20
        assert reader.get_meta_data()["size"] == (160, 120)  # odd widths are rounded down for yuv420p
    finally:
        reader.close()


@pytest.mark.parametrize(("args", "needle"), [
    (["-o", "x.avi"], "unknown format '.avi'"),
    (["-o", "x.gif", "--sheet", "2x2"], "--sheet only applies to .png"),
    (["-o", "x.gif", "--start", "99"], "outside the session"),
    (["-o", "x.gif", "--joint-map", "joint_1=nope"], "joint map does not match"),
    (["-o", "x.gif", "--urdf", "missing.urdf"], "not found"),
])
def test_render_errors_are_clear(kuka_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 args: list[str], needle: str) -> None:
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    assert main(["render", str(kuka_file), *args, "--no-progress"]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("urdf", ["kuka_iiwa/model.urdf", "franka_panda/panda.urdf"])
def test_merged_twin_ghost_urdf_loads(urdf: str, tmp_path: Path) -> None:
    """The GUI poses twin + ghost with one call: both copies live in one multibody (meshes still found)."""
    from viewer.arm import import_pybullet, read_joints, resolve_urdf
    from viewer.scene import merged_urdf

    pb = import_pybullet()
    path = tmp_path / "pair.urdf"
    path.write_text(merged_urdf(resolve_urdf(urdf), ("twin__", "ghost__")))
    client = pb.connect(pb.DIRECT)
    try:
        single = pb.loadURDF(str(resolve_urdf(urdf)), useFixedBase=True, physicsClientId=client)
        pair = pb.loadURDF(str(path), useFixedBase=True, physicsClientId=client)
        one = [j.name for j in read_joints(pb, single, client) if j.movable]
        both = [j.name for j in read_joints(pb, pair, client) if j.movable]
        assert sorted(both) == sorted([f"twin__{n}" for n in one] + [f"ghost__{n}" for n in one])
        shapes = len(pb.getVisualShapeData(single, physicsClientId=client))
        assert len(pb.getVisualShapeData(pair, physicsClientId=client)) == 2 * shapes
    finally:
        pb.disconnect(physicsClientId=client)


# Runs argv as a child of a fresh interpreter and prints that child's peak RSS (KiB): RUSAGE_CHILDREN of this
# process is the render alone (and the ffmpeg it waits for), not whatever the test process started before.
_PEAK_RSS = """
import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def render_peak_rss_kib(session: Path, out: Path) -> int:
    argv = [sys.executable, "-m", "armtwin", "render", str(session), "-o", str(out), "--fps", "2", "--width", "320",
            "--height", "240", "--layout", "overlay", "--no-progress"]
    done = subprocess.run([sys.executable, "-c", _PEAK_RSS, *argv], cwd=REPO, capture_output=True, text=True,
                          check=True, timeout=240)
    return int(done.stdout.split()[-1])


@pytest.mark.parametrize("ext", [".gif", ".mp4"])
def test_render_memory_is_flat_in_session_length(tmp_path: Path, ext: str) -> None:
    """Frames stream to the file: a 60 s render peaks no higher than a 10 s one plus 10 %. (The old GIF path kept
    every frame until the end and every path kept the session's decoded JSON: +39 MB (gif) and +32 MB (mp4) here,
    1.76 GB for 60 s at 640x480 and 30 fps; now +7 MB, the session's arrays.)"""
    if ext == ".mp4":
        pytest.importorskip("imageio_ffmpeg", reason="mp4 needs the imageio-ffmpeg package")
    peaks = {}
    for seconds in (10, 60):
        path = tmp_path / f"s{seconds}.mcap"
        write_session(path, kuka_session(float(seconds)))
        peaks[seconds] = render_peak_rss_kib(path, tmp_path / f"s{seconds}{ext}")
    print(f"peak RSS {ext}: 10 s {peaks[10] / 1024:.0f} MB, 60 s {peaks[60] / 1024:.0f} MB")
    assert peaks[60] <= 1.1 * peaks[10], f"60 s costs {(peaks[60] - peaks[10]) / 1024:.0f} MB more than 10 s"


def leaning_session(seconds: float = 2.0) -> Session:
    """The iiwa leaning far out to one side (shoulder pitched 1.1 rad), swaying a little; the twin lags."""
    t_us = np.arange(int(seconds * 1000), dtype=np.int64) * 1000
    sway = 0.1 * np.sin(2 * np.pi * 0.5 * t_us * 1e-6)[:, None]
    q = np.array([0.4, 1.1, 0.0, -0.7, 0.0, 0.6, 0.0]) + sway
    qhat = np.roll(q, 40, axis=0)
    qhat[:100] = np.nan
    return Session(t_us=t_us, q=q, joint_names=JOINTS, qhat=qhat, meta={"urdf": "kuka_iiwa/model.urdf"})


def arm_coverage(img: np.ndarray) -> tuple[float, float, float]:
    """(fraction of the image, centroid row / height, centroid column / width) of the arm's pixels: coloured ones
    (the black/grey overlay text is not counted)."""
    rgb = img.astype(np.int16)
    arm = (rgb.max(axis=2) - rgb.min(axis=2)) > 40
    ys, xs = np.nonzero(arm)
    return float(arm.mean()), float(ys.mean() / img.shape[0]), float(xs.mean() / img.shape[1])


@pytest.mark.parametrize("layout", ["overlay", "side"])
def test_render_frames_the_arm_and_explains_the_ghost(tmp_path: Path, layout: str) -> None:
    """The camera is fitted to the arm's bounding box over the session's poses (it used to aim at a fixed point:
    4 % of the image, off to one side), and the overlay says which arm is measured and which the twin."""
    from armtwin.cli import build_parser
    from viewer.cli_render import render_session

    path, out = tmp_path / "lean.mcap", tmp_path / "frame.png"
    write_session(path, leaning_session())
    args = build_parser().parse_args(["render", str(path), "-o", str(out), "--start", "1", "--width", "320",
                                      "--height", "240", "--layout", layout])
    info = render_session(args, out=io.StringIO())
    fraction, cy, cx = arm_coverage(np.asarray(Image.open(out).convert("RGB")))
    # Two arms share a side-by-side frame: each gets about half of what one arm gets (both were ~4 % before).
    assert fraction > (0.10 if layout == "overlay" else 0.08), f"the arms cover only {fraction:.1%} of the frame"
    assert abs(cy - 0.5) < 0.08 and abs(cx - 0.5) < 0.08, f"arm centroid at ({cx:.2f}, {cy:.2f}) of the frame"
    text = "\n".join(info["overlay"])
    if layout == "overlay":
        assert re.search(r"twin.*prediction", text) and re.search(r"ghost.*measured", text), text
    else:
        assert re.search(r"measured.*left", text) and re.search(r"twin.*prediction.*right", text), text
