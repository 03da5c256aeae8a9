"""tools/make_busy_motion.py: the bundled busy sessions are what its documented command makes, and the motion is
what the README says (busy, within the arm's speed limit)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import REPO
from twin.session import load_session


def _make(tmp_path: Path, seed: int, seconds: float = 30.0) -> np.ndarray:
    out = tmp_path / f"busy{seed}.csv"
    res = subprocess.run([sys.executable, str(REPO / "tools" / "make_busy_motion.py"), "--seconds", str(seconds),
                          "--seed", str(seed), "-o", str(out)], capture_output=True, text=True, timeout=120,
                         cwd=REPO)
    assert res.returncode == 0, res.stderr
    return np.loadtxt(out, delimiter=",", skiprows=1)


def test_bundled_session_is_reproduced_from_its_seed(tmp_path: Path) -> None:
    rows = _make(tmp_path, 13)
    bundled = load_session(REPO / "data" / "sessions" / "busy_test_a.mcap")
    assert bundled.joint_names == ["joint1", "joint2", "joint3", "joint4", "joint5", "joint6"]
    assert np.array_equal(np.rint(rows[:, 0] * 1e6).astype(np.int64), bundled.t_us)
    assert np.abs(np.radians(rows[:, 1:]) - bundled.q).max() <= 1e-6  # the session stores µrad


def test_motion_is_busy_within_the_speed_limit(tmp_path: Path) -> None:
    rows = _make(tmp_path, 11)
    t, deg = rows[:, 0], rows[:, 1:]
    # 20 ms mean velocity: the encoder's noise averages out, the controller's motion does not
    v = (deg[20:] - deg[:-20]) / (t[20:] - t[:-20])[:, None]
    rms = np.sqrt((v**2).mean(axis=0))
    assert 30.0 <= rms.mean() <= 70.0
    assert 150.0 <= np.abs(v).max() <= 181.0
    assert (np.abs(v).max(axis=1) < 10.0).mean() > 0.05  # pauses
