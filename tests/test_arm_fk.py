"""viewer/arm.py: batched FK against PyBullet's own getLinkState, end-effector error, joint maps, limits."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from twin.session import Session
from viewer.arm import ArmModel, ArmModelError, JointLimitWarning, ee_error_summary, import_pybullet

KUKA = [f"joint_{i + 1}" for i in range(7)]


def pybullet_fk(arm: ArmModel, q_urdf: np.ndarray) -> np.ndarray:
    """Reference: PyBullet's own FK, one pose at a time (URDF joint values, mapped joints in URDF order)."""
    pb = import_pybullet()
    out = []
    for row in np.atleast_2d(q_urdf):
        pb.resetJointStatesMultiDof(arm.body, arm.resolved.joint_index.tolist(), [[v] for v in row.tolist()],
                                    physicsClientId=arm.client)
        out.append(pb.getLinkState(arm.body, arm.ee_index, computeForwardKinematics=True,
                                   physicsClientId=arm.client)[4])
    return np.asarray(out)


@pytest.fixture
def kuka() -> ArmModel:
    with ArmModel(joint_names=KUKA) as arm:
        yield arm


def test_zero_pose_matches_pybullet(kuka: ArmModel) -> None:
    ref = pybullet_fk(kuka, np.zeros(7))
    got = kuka.fk(np.zeros((1, 7)))
    assert got.shape == (1, 3)
    np.testing.assert_allclose(got, ref, atol=1e-6)
    assert got[0, 2] == pytest.approx(1.261, abs=1e-3)  # the iiwa's flange height when stretched upright


def test_random_poses_match_pybullet(kuka: ArmModel) -> None:
    q = np.random.default_rng(3).uniform(-2.0, 2.0, (300, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JointLimitWarning)
        np.testing.assert_allclose(kuka.fk(q), pybullet_fk(kuka, kuka.urdf_q(q)), atol=1e-6)


@pytest.mark.parametrize("urdf", ["franka_panda/panda.urdf", "xarm/xarm6_robot.urdf"])
def test_other_arms_match_pybullet(urdf: str) -> None:
    """Other chains (prismatic fingers, different axes) through the same numpy FK."""
    with ArmModel(urdf) as arm:
        lo, hi = np.maximum(arm.resolved.lower, -3), np.minimum(arm.resolved.upper, 3)
        q = np.random.default_rng(4).uniform(lo, hi, (50, len(lo)))  # inside the limits: no warning
        np.testing.assert_allclose(arm.fk(q), pybullet_fk(arm, arm.urdf_q(q)), atol=1e-6)


def test_fk_stride_and_large_batches(kuka: ArmModel) -> None:
    q = np.random.default_rng(5).uniform(-1, 1, (20_001, 7))
    full = kuka.fk(q)
    assert full.shape == (20_001, 3)
    np.testing.assert_array_equal(kuka.fk(q, stride=100), full[::100])


def test_ee_error(kuka: ArmModel) -> None:
    q = np.random.default_rng(6).uniform(-1, 1, (100, 7))
    np.testing.assert_array_equal(kuka.ee_error_mm(q, q), np.zeros(100))
    qhat = q.copy()
    qhat[:, 0] += 0.01  # 0.01 rad about the base axis: the flange moves by 10 mm per metre of radius
    qhat[:10] = np.nan  # nothing displayed yet: not scored
    err = kuka.ee_error_mm(q, qhat)
    assert np.isnan(err[:10]).all()
    assert (err[10:] > 0).all()
    radius = np.linalg.norm(kuka.fk(q[10:])[:, :2], axis=1) * 1000
    np.testing.assert_allclose(err[10:], 2 * radius * np.sin(0.005), rtol=1e-6, atol=1e-6)


def test_ee_error_summary_session_and_arrays() -> None:
    t = np.arange(2000) * 1000
    q = np.stack([0.5 * np.sin(2 * np.pi * 0.5 * t * 1e-6 + j) for j in range(7)], axis=1)
    qhat = q + 0.002
    qhat[:100] = np.nan
    s = Session(t_us=t, q=q, joint_names=KUKA, qhat=qhat, meta={"urdf": "kuka_iiwa/model.urdf"})
    summary = ee_error_summary(s)
    assert set(summary) == {"ee_err_mean_mm", "ee_err_p99_mm", "ee_err_max_mm", "ee_err_samples", "ee_urdf"}
    assert summary["ee_urdf"] == "kuka_iiwa/model.urdf"
    assert summary["ee_err_samples"] == 1900
    assert 0 < summary["ee_err_mean_mm"] <= summary["ee_err_p99_mm"] <= summary["ee_err_max_mm"] < 20
    arrays = ee_error_summary(q=q, qhat=qhat, joint_names=KUKA, stride=10)
    assert arrays["ee_err_samples"] == 190 and "assumed" in str(arrays["ee_urdf"])  # no URDF named: said so
    none = ee_error_summary(Session(t_us=t, q=q, joint_names=KUKA))  # never sent: no qhat
    assert none["ee_err_mean_mm"] is None and none["ee_err_samples"] == 0
    json.dumps(none, allow_nan=False)  # JSON-safe for `armtwin info --json`


def test_joint_map_spec_sign_offset() -> None:
    spec = ",".join(f"joint_{i + 1}=lbr_iiwa_joint_{i + 1}" for i in range(7) if i != 1)
    spec += ",joint_2=lbr_iiwa_joint_2:-1:90:deg"
    with ArmModel(joint_map=spec, joint_names=KUKA) as mapped, ArmModel(joint_names=KUKA) as plain:
        q = np.random.default_rng(7).uniform(-0.5, 0.5, (20, 7))
        q_plain = q.copy()
        q_plain[:, 1] = -q[:, 1] + np.pi / 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", JointLimitWarning)
            np.testing.assert_allclose(mapped.fk(q), plain.fk(q_plain), atol=1e-12)


def test_joint_map_json_subset_and_ignored(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"units": "deg", "joints": {
        "shoulder": "lbr_iiwa_joint_2", "elbow": {"urdf": "lbr_iiwa_joint_4", "sign": -1, "offset": 10},
        "gripper": None}}))
    with ArmModel(joint_map=str(path), joint_names=["shoulder", "elbow", "gripper"]) as arm:
        m = arm.resolved
        assert m.joint_names == ("lbr_iiwa_joint_2", "lbr_iiwa_joint_4")
        np.testing.assert_allclose(m.apply(np.array([0.1, 0.2, 5.0])), [0.1, -0.2 + np.radians(10)])
        assert arm.fk(np.zeros((1, 3))).shape == (1, 3)


@pytest.mark.parametrize(("spec", "names", "needle"), [
    ("joint_1=no_such_joint", ["joint_1"], "no movable joint 'no_such_joint'"),
    ("joint_1=lbr_iiwa_joint_1", ["joint_1", "joint_2"], "not mapped: ['joint_2']"),
    ("elbow=lbr_iiwa_joint_1", ["joint_1"], "not recorded: ['elbow']"),
    ("a=lbr_iiwa_joint_1,b=lbr_iiwa_joint_1", ["a", "b"], "mapped more than once"),
    ("joint_1=lbr_iiwa_joint_1:2", ["joint_1"], "sign must be 1 or -1"),
    ("joint_1=lbr_iiwa_joint_1:1:5:grad", ["joint_1"], "units must be 'rad' or 'deg'"),
    ("joint_1", ["joint_1"], "expected RECORDED=URDF_JOINT"),
    (None, ["a", "b", "c"], "the recording has 3 joints"),  # default map, count mismatch
])
def test_bad_joint_maps(spec: str | None, names: list[str], needle: str) -> None:
    with pytest.raises(ArmModelError) as info:
        ArmModel(joint_map=spec, joint_names=names).connect()
    assert needle in str(info.value)
    assert isinstance(info.value, ValueError)


def test_bad_urdf_is_a_clear_error() -> None:
    with pytest.raises(ArmModelError, match="not found"):
        ArmModel("no/such/arm.urdf")
    with pytest.raises(ArmModelError, match="no end-effector link 'hand'"):
        ArmModel(ee_link="hand").connect()


def test_out_of_limits_warns_with_count_not_crash(kuka: ArmModel) -> None:
    q = np.zeros((10, 7))
    q[3:6, 1] = 2.5  # lbr_iiwa_joint_2 is limited to +-2.094 rad
    with pytest.warns(JointLimitWarning, match="3 of 10 poses .* lbr_iiwa_joint_2"):
        pos = kuka.fk(q)
    assert np.isfinite(pos).all()
    assert kuka.limit_violations == 3


def test_import_prints_no_banner_on_stdout() -> None:
    """`armtwin info --json` must stay valid JSON: importing pybullet through viewer.arm prints nothing."""
    code = "from viewer.arm import ArmModel; ArmModel().connect().disconnect(); print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                         check=True)
    assert res.stdout == "ok\n"
    assert "pybullet build time" not in res.stderr
