"""tools/trigger_variants.py: its variants are the RMS dead-reckoning trigger plus only what they claim to add."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from device.policies.event import DeadReckoningPolicy
from tests.conftest import REPO, synthetic_session, write_results_json


@pytest.fixture(scope="module")
def tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trigger_variants", REPO / "tools" / "trigger_variants.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_unscaled_unsteered_variant_sends_what_the_rms_trigger_sends(tool: ModuleType) -> None:
    s = synthetic_session(4, 3, seed=5)
    for d in (0.01, 0.05, 0.2, 50.0):  # 50 deg: only the 500 ms heartbeat sends
        ref = DeadReckoningPolicy(d, horizon_ms=200, norm="rms").select(s.t_us, s.q)
        assert np.array_equal(tool.VariantTrigger(d).select(s.t_us, s.q), ref)
        assert ref.sum() > 2
        if d == 50.0:
            assert np.diff(s.t_us[ref]).min() >= 500_000
            continue
        # Each refinement changes the sends (so the sweep measures something).
        assert not np.array_equal(tool.VariantTrigger(d, p=0.3, j0=10.0).select(s.t_us, s.q), ref)
        steered = tool.VariantTrigger(d, a=0.2, g=1.0, eps=1e-6).select(s.t_us, s.q)
        assert steered.sum() > ref.sum()  # a tiny window target drives δ down: more sends
        # The lookahead variant is the policy's own look=L (the live kernel), not a second formulation.
        looked = DeadReckoningPolicy(d, horizon_ms=200, norm="rms", look=10).select(s.t_us, s.q)
        assert np.array_equal(tool.VariantTrigger(d, look_ms=10).select(s.t_us, s.q), looked)
        assert not np.array_equal(looked, ref)


def test_jerk_figure_is_causal_and_in_deg_per_s3(tool: ModuleType) -> None:
    t = np.arange(2000, dtype=np.int64) * 1000
    tau = t * 1e-6
    q = np.radians(np.column_stack([100.0 * tau**3, np.zeros_like(tau)]))  # jerk 600 deg/s³ on joint 0
    j = tool.jerk_rms(t, q)
    assert j[500:] == pytest.approx(600 / np.sqrt(2), rel=1e-3)  # RMS over two joints
    q2 = q.copy()
    q2[1500:] += 0.1
    assert np.array_equal(tool.jerk_rms(t, q2)[:1500], j[:1500])  # later samples do not change earlier values


def test_tool_runs_on_an_evaluate_results_file(tmp_path: Path) -> None:
    res = write_results_json(tmp_path)
    out = subprocess.run([sys.executable, str(REPO / "tools" / "trigger_variants.py"), str(res), "--deltas", "5"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    names = [ln.split(" | ")[2] for ln in out.stdout.splitlines() if ln.startswith("| perfect")]
    assert "jerk p=0" in names and "steer g=0.5" in names and "look 20 ms" in names and len(names) == 16
