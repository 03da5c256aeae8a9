"""Bringing another arm: joint names from the URDF, --urdf/--joint-map/--ee-link on info and plot, the URDF's own
package:// meshes served to Foxglove. The KUKA iiwa, Franka Panda and xArm6 URDFs that ship in pybullet_data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from armtwin.cli import main
from tests.conftest import synthetic_session
from twin.session import Session, write_session
from twin.urdf_names import movable_joint_names

KUKA, PANDA, XARM6 = "kuka_iiwa/model.urdf", "franka_panda/panda.urdf", "xarm/xarm6_robot.urdf"


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """matplotlib keeps used font files open for the process: load them before the leak check's baseline."""
    from viewer.session_plot import plot_session

    plot_session(tracked(7, [f"lbr_iiwa_joint_{i}" for i in range(1, 8)], KUKA),
                 tmp_path_factory.mktemp("fonts") / "warm.png", eps=0.002)
    plot_session(synthetic_session(0.5, joints=2), tmp_path_factory.mktemp("fonts") / "warm2.png")


def test_joint_names_come_from_the_urdf_without_pybullet() -> None:
    assert movable_joint_names(KUKA) == [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
    assert movable_joint_names(XARM6) == [f"joint{i}" for i in range(1, 7)]
    panda = movable_joint_names(PANDA)
    assert panda is not None and panda[:7] == [f"panda_joint{i}" for i in range(1, 8)] and len(panda) == 9
    assert movable_joint_names("no/such.urdf") is None


def tracked(joints: int, names: list[str], urdf: str) -> Session:
    s = synthetic_session(1.0, joints=joints)
    s.q = s.q * 0.5  # inside every joint's limits
    s.qhat = np.roll(s.q, 10, axis=0)
    s.qhat[:50] = np.nan
    s.sent = np.arange(len(s.t_us)) % 10 == 0
    s.joint_names, s.meta["urdf"] = names, urdf
    return s


def info(path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main(["info", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("urdf", "joints", "names", "extra"), [
    (KUKA, 7, [f"lbr_iiwa_joint_{i}" for i in range(1, 8)], []),
    (XARM6, 6, [f"joint{i}" for i in range(1, 7)], ["--ee-link", "link6"]),
    (PANDA, 7, [f"j{i}" for i in range(7)], ["--joint-map", ",".join(f"j{i}=panda_joint{i + 1}" for i in range(7)),
                                              "--ee-link", "panda_hand"]),
])
def test_info_computes_the_end_effector_error_of_each_arm(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          urdf: str, joints: int, names: list[str],
                                                          extra: list[str]) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, tracked(joints, names, urdf))
    got = info(path, capsys, *extra)
    assert got.get("ee_err_error") is None, got.get("ee_err_error")
    assert 0.01 < got["ee_err_mean_mm"] < 100, "a 10 ms lag of a half-amplitude motion: millimetres"
    assert main(["plot", str(path), "-o", str(tmp_path / "s.png"), *extra]) == 0


def test_a_session_that_does_not_fit_the_urdf_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "kuka.mcap"
    write_session(path, tracked(7, [f"lbr_iiwa_joint_{i}" for i in range(1, 8)], KUKA))
    got = info(path, capsys, "--urdf", XARM6)
    assert got["ee_err_mean_mm"] is None and "joint" in got["ee_err_error"]
    with pytest.raises(SystemExit):
        main(["info", str(path), "--ee-link"])  # argparse: the option needs a value


def test_foxglove_assets_follow_the_urdfs_own_package_paths() -> None:
    pytest.importorskip("foxglove")
    from viewer.arm import resolve_urdf
    from viewer.foxglove_live import UrdfAssets

    assets = UrdfAssets()
    url = assets.add("arm0", resolve_urdf(XARM6))
    body = assets(url)
    assert body is not None and b"package://xarm_description/meshes/xarm6/visual/base.stl" in body
    mesh = assets("package://xarm_description/meshes/xarm6/visual/base.stl")
    assert mesh is not None and len(mesh) > 1000
    assert assets("package://xarm_description/../../../etc/passwd") is None
