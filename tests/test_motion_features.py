"""The causal motion features and the prediction life (lab/motion_features.py), and tools/prediction_life.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lab.motion_features import fit_residual_rms, prediction_life
from lab.twin_display import TwinDisplay
from tests.conftest import REPO, synthetic_session
from twin.session import Session, write_session


def test_prediction_life_is_what_the_twin_would_show() -> None:
    """Life at i: the samples the twin, shown only send i (kinematic, H = 200 ms), stays within δ RMS over joints."""
    s = synthetic_session(1.2, 3, seed=4)
    n, delta, cap = len(s.t_us), 0.05, 400
    life = prediction_life(s.t_us, s.q, delta, 200.0, cap)
    twin = TwinDisplay("kinematic", latency_us=0)
    for i in range(0, n - cap, 37):
        qhat = twin.display(s.t_us, s.q, np.array([i]), np.zeros(1, bool), np.zeros(1, np.int64),
                            np.array([200_000]), s.t_us)
        rms = np.sqrt((np.degrees(s.q - qhat) ** 2).mean(axis=1))
        beyond = np.flatnonzero(rms[i + 1:i + cap] > delta)
        assert life[i] == (beyond[0] + 1 if len(beyond) else cap), i
    assert 1 < np.median(life[: n - cap]) < cap  # the bound bites on this motion


def test_fit_residual_is_zero_on_a_parabola_and_causal() -> None:
    t = np.arange(500, dtype=np.int64) * 1000
    ts = t * 1e-6
    q = np.stack([0.3 + 2 * ts - 4 * ts**2, -1.5 * ts**2], axis=1)
    s = Session(t_us=t, q=q, joint_names=["a", "b"], meta={})
    assert np.abs(fit_residual_rms(s.t_us, s.q)[3:]).max() < 1e-7
    noisy = q + np.random.default_rng(1).normal(0, 1e-4, q.shape)
    r = fit_residual_rms(t, noisy)
    assert np.median(r[30:]) > 1e-3  # deg: 1e-4 rad of noise shows
    later = noisy.copy()
    later[300:] += 0.01
    assert np.array_equal(fit_residual_rms(t, later)[:300], r[:300])


def test_prediction_life_tool(tmp_path: Path) -> None:
    files = []
    for i in range(2):
        path = tmp_path / f"s{i}.mcap"
        write_session(path, synthetic_session(4.0, 3, seed=i))
        files.append(str(path))
    tool = [sys.executable, str(REPO / "tools" / "prediction_life.py"), "--train", files[0], "--test", files[1]]
    out = subprocess.run([*tool, "--wait-ms", "3,10"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [ln.split(" | ") for ln in out.stdout.splitlines() if ln.startswith("| 3 ") or ln.startswith("| 10 ")]
    assert len(rows) == 2
    for r in rows:
        assert int(r[1]) > 1000 and float(r[2]) <= 1.0 and 0.0 <= float(r[3]) <= 1.0
    bad = subprocess.run([*tool, "--delta", "0"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "--delta" in bad.stderr
    short = tmp_path / "short.mcap"
    write_session(short, synthetic_session(1.5, 3, seed=2))
    bad = subprocess.run([*tool[:-1], str(short)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "short.mcap: 1500 samples" in bad.stderr


@pytest.mark.parametrize("bad", ["x", "0,3"])
def test_prediction_life_tool_refuses_bad_waits(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, synthetic_session(3.0, 2, seed=0))
    out = subprocess.run([sys.executable, str(REPO / "tools" / "prediction_life.py"), "--train", str(path),
                          "--test", str(path), "--wait-ms", bad], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 2 and "--wait-ms" in out.stderr
