"""Bringing another arm: joint names from the URDF, the same --urdf/--joint-map/--ee-link on every verb that uses
the arm, the end-effector error through the arm given, and a clear error (exit 2, the counts, what to pass) when a
session's joints do not fit the URDF. The KUKA iiwa, Franka Panda and xArm6 URDFs that ship in pybullet_data.
(Framing: tests/test_any_arm_framing.py; the device and the live view: tests/test_any_arm_live.py.)"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from armtwin.cli import build_parser, main
from tests.conftest import Proc, synthetic_session
from twin.arm_spec import ArmSpec, check_arm
from twin.joint_map import ArmModelError, JointMap
from twin.session import Session, load_session, write_session
from twin.urdf_names import movable_joint_names

KUKA, PANDA, XARM6 = "kuka_iiwa/model.urdf", "franka_panda/panda.urdf", "xarm/xarm6_robot.urdf"
KUKA_NAMES = [f"lbr_iiwa_joint_{i}" for i in range(1, 8)]
XARM_NAMES = [f"joint{i}" for i in range(1, 7)]
PANDA_MAP = ",".join(f"j{i}=panda_joint{i + 1}" for i in range(7))
# (URDF, recorded joint names, the flags that describe the arm): the Panda is recorded under other names.
ARMS = [
    pytest.param(KUKA, KUKA_NAMES, ["--urdf", KUKA], id="kuka"),
    pytest.param(XARM6, XARM_NAMES, ["--urdf", XARM6, "--ee-link", "link6"], id="xarm6"),
    pytest.param(PANDA, [f"j{i}" for i in range(7)], ["--urdf", PANDA, "--joint-map", PANDA_MAP, "--ee-link",
                                                      "panda_hand"], id="panda"),
]
ARM_VERBS = ("device", "info", "plot", "render", "view", "simulate", "evaluate")


@pytest.fixture(scope="module", autouse=True)
def fonts_loaded(tmp_path_factory: pytest.TempPathFactory) -> None:
    """matplotlib keeps used font files open for the process: load them before the leak check's baseline."""
    from viewer.session_plot import plot_session

    plot_session(tracked(KUKA_NAMES, KUKA), tmp_path_factory.mktemp("fonts") / "warm.png", eps=0.002)
    plot_session(synthetic_session(0.5, joints=2), tmp_path_factory.mktemp("fonts") / "warm2.png")


def tracked(names: list[str], urdf: str | None, seconds: float = 1.0) -> Session:
    """A session whose twin lags 10 ms; ``urdf`` None records no URDF (so only the flags name the arm)."""
    s = synthetic_session(seconds, joints=len(names))
    s.q = s.q * 0.5  # inside every joint's limits
    s.qhat = np.roll(s.q, 10, axis=0)
    s.qhat[:50] = np.nan
    s.sent = np.arange(len(s.t_us)) % 10 == 0
    s.joint_names = names
    if urdf is not None:
        s.meta["urdf"] = urdf
    return s


def test_joint_names_come_from_the_urdf_without_pybullet() -> None:
    assert movable_joint_names(KUKA) == KUKA_NAMES
    assert movable_joint_names(XARM6) == XARM_NAMES
    panda = movable_joint_names(PANDA)
    assert panda is not None and panda[:7] == [f"panda_joint{i}" for i in range(1, 8)] and len(panda) == 9
    assert movable_joint_names("no/such.urdf") is None


def test_every_verb_that_uses_the_arm_has_the_same_three_flags() -> None:
    sub = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for verb in ARM_VERBS:
        flags = {s for a in sub[verb]._actions for s in a.option_strings}
        assert {"--urdf", "--joint-map", "--ee-link"} <= flags, verb
        helps = {a.option_strings[0]: a.help for a in sub[verb]._actions if a.option_strings}
        assert "docs/your_arm.md" in str(helps["--joint-map"]), verb


def test_the_panda_by_its_own_joint_names_needs_no_map() -> None:
    """Recorded joints named as the URDF's drive those joints: the Panda's 7 arm joints leave its 2 fingers at 0."""
    from viewer.arm import ArmModel

    with ArmModel(PANDA, None, [f"panda_joint{i}" for i in range(1, 8)]) as arm:
        assert arm.resolved.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8))
    assert check_arm(ArmSpec(PANDA), [f"panda_joint{i}" for i in range(1, 8)])
    with pytest.raises(ArmModelError, match=r"7 joints .* 9 movable joints .*--joint-map 'j0=panda_joint1,"):
        check_arm(ArmSpec(PANDA), [f"j{i}" for i in range(7)])


def test_a_joint_map_round_trips_through_its_recorded_spec(tmp_path: Path) -> None:
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"units": "deg", "joints": {"a": "joint1", "b": {"urdf": "joint2", "sign": -1,
                                                                                 "offset": 90}, "c": None}}))
    jmap = JointMap.parse(str(path))
    assert jmap.recorded == ["a", "b", "c"]
    assert JointMap.parse(jmap.spec()) == jmap


def ee_through(urdf: str, names: list[str], flags: list[str], q: np.ndarray, qhat: np.ndarray,
               stride: int = 1) -> float:
    """The mean end-effector error (mm) computed directly through the arm the flags describe."""
    from viewer.arm import ArmModel, JointLimitWarning

    opts = dict(zip(flags[::2], flags[1::2], strict=True))
    with ArmModel(urdf, opts.get("--joint-map"), names, opts.get("--ee-link")) as arm, warnings.catch_warnings():
        warnings.simplefilter("ignore", JointLimitWarning)  # the synthetic motion leaves some joints' limits
        return float(np.nanmean(arm.ee_error_mm(q, qhat, stride)))


@pytest.mark.parametrize(("urdf", "names", "flags"), ARMS)
def test_verbs_take_the_arm_from_the_flags(tmp_path: Path, capsys: pytest.CaptureFixture[str], urdf: str,
                                           names: list[str], flags: list[str]) -> None:
    """A session that records no URDF: info, plot, render and simulate compute the end-effector error through
    the arm the flags name, the same figure FK through that arm gives."""
    from device.policies.registry import parse_policy
    from lab.simulator import simulate_many

    path = tmp_path / "s.mcap"
    write_session(path, tracked(names, None))
    s = load_session(path)  # as stored
    assert main(["info", str(path), "--json", *flags]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["ee_err_mean_mm"] == pytest.approx(ee_through(urdf, names, flags, s.q, s.qhat), rel=1e-9)
    assert 0.01 < got["ee_err_mean_mm"] < 100, "a 10 ms lag of a half-amplitude motion: millimetres"
    assert main(["plot", str(path), "-o", str(tmp_path / "s.png"), *flags]) == 0
    assert main(["render", str(path), "-o", str(tmp_path / "r.png"), "--width", "64", "--height", "48",
                 *flags]) == 0
    out = tmp_path / "sim.json"
    assert main(["simulate", str(path), "--policy", "static:k=10,h=50", "--json", str(out), *flags]) == 0
    sim = json.loads(out.read_text())
    _, results = simulate_many([s], parse_policy("static:k=10,h=50"), keep=True, eps=0.002)
    assert sim["ee_err_mean_mm"] == pytest.approx(ee_through(urdf, names, flags, s.q, results[0].qhat), rel=1e-9)
    capsys.readouterr()
    # Without the flags: no URDF anywhere. The xArm6's 6 joints fit no default (joint-space figures only); the
    # Panda's 7 fit the assumed KUKA, a different figure, and both say so (exit 0).
    assert main(["simulate", str(path), "--policy", "static:k=10,h=50", "--json", str(out)]) == 0
    err = capsys.readouterr().err
    if urdf == XARM6:
        assert "ee_err_mean_mm" not in json.loads(out.read_text()) and "no end-effector error" in err, err
    else:
        assert f"end-effector error through the default {KUKA}" in err, err
        assert (json.loads(out.read_text())["ee_err_mean_mm"] == pytest.approx(sim["ee_err_mean_mm"])) == (
            urdf == KUKA)


def test_evaluate_gives_the_end_effector_error_of_the_arm_given(tmp_path: Path, procs: list[Proc],
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """The xArm6's link6 error in evaluate's rows: the figure `armtwin simulate ... --ee-stride 10` reproduces."""
    files = []
    for i in range(2):
        files.append(tmp_path / f"x{i}.mcap")
        write_session(files[-1], tracked(XARM_NAMES, None, seconds=1.5))
    flags = ["--urdf", XARM6, "--ee-link", "link6"]
    ev = Proc("evaluate", "--train", str(files[0]), "--test", str(files[1]), "--constraints", "0.007", "--links",
              "loss=0", "--policies", "static", "--no-oracle", "--out", str(tmp_path / "ev"), *flags)
    procs.append(ev)  # a process of its own: tqdm's monitor thread stays out of this one
    code, _, err = ev.finish(timeout=300)
    assert code == 0, err
    row = next(r for r in json.loads((tmp_path / "ev" / "results.json").read_text())["records"]
               if r["policy"] == "static")
    capsys.readouterr()
    out = tmp_path / "sim.json"
    assert main(["simulate", str(files[1]), "--policy", row["spec"], "--link", row["link"], "--ee-stride", "10",
                 "--json", str(out), *flags]) == 0
    assert row["ee_err_mean_mm"] == pytest.approx(json.loads(out.read_text())["ee_err_mean_mm"], rel=1e-9)
    assert row["ee_err_mean_mm"] > 0


@pytest.fixture
def xarm_session(tmp_path: Path) -> Path:
    """An xArm6 session (6 joints, its URDF recorded) to be given the KUKA's URDF by mistake."""
    path = tmp_path / "xarm.mcap"
    write_session(path, tracked(XARM_NAMES, XARM6))
    return path


def mismatch_argv(verb: str, session: Path, out: Path) -> list[str]:
    return {
        "info": ["info", str(session)],
        "plot": ["plot", str(session), "-o", str(out / "p.png")],
        "render": ["render", str(session), "-o", str(out / "r.png"), "--width", "64", "--height", "48"],
        "simulate": ["simulate", str(session), "--policy", "static:k=10,h=0"],
        "evaluate": ["evaluate", "--train", str(session), "--test", str(session), "--out", str(out / "ev")],
    }[verb]


@pytest.mark.parametrize("verb", ["info", "plot", "render", "simulate", "evaluate"])
def test_a_session_that_does_not_fit_the_urdf_is_an_error(xarm_session: Path, tmp_path: Path, verb: str,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The KUKA's URDF for an xArm6 recording: exit 2, the counts, and which options to pass; nothing written.
    The session's own URDF (no flags) fits; so does a joint map that leaves the 7th KUKA joint at 0."""
    out = tmp_path / "out"
    argv = mismatch_argv(verb, xarm_session, out)
    assert main([*argv, "--urdf", KUKA]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "6 joints" in err and f"{KUKA} has 7 movable joints" in err, err
    assert "--urdf" in err and "--joint-map 'joint1=lbr_iiwa_joint_1," in err, err
    assert not out.exists(), "a refused verb writes nothing"
    if verb in ("info", "plot", "render"):  # quick enough to show the two ways out
        assert main(argv) == 0
        jmap = ",".join(f"joint{i}=lbr_iiwa_joint_{i}" for i in range(1, 7))
        assert main([*argv, "--urdf", KUKA, "--joint-map", jmap]) == 0
    with pytest.raises(SystemExit):
        main([*argv, "--ee-link"])  # argparse: the option needs a value
    capsys.readouterr()
    assert main([*argv, "--ee-link", "no_such_link"]) == 2
    assert "no end-effector link 'no_such_link'" in capsys.readouterr().err


def test_info_without_any_arm_summarises_and_says_what_to_pass(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """No URDF recorded nor given, and 3 joints (not the default KUKA's 7): a summary without the end-effector
    error, exit 0, and the note says to pass --urdf."""
    path = tmp_path / "three.mcap"
    write_session(path, tracked(["a", "b", "c"], None))
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "end-effector error: not computed" in out and "pass --urdf" in out


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


def test_a_recorded_arm_is_used_by_every_verb_without_flags(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """What a device records (urdf, joint_map, ee_link in the metadata) names the arm for later verbs."""
    s = tracked([f"j{i}" for i in range(7)], PANDA)
    s.meta.update(joint_map=JointMap.parse(PANDA_MAP).spec(), ee_link="panda_hand")
    path = tmp_path / "panda.mcap"
    write_session(path, s)
    s = load_session(path)
    assert s.meta["ee_link"] == "panda_hand"
    assert main(["info", str(path), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    flags = ["--joint-map", PANDA_MAP, "--ee-link", "panda_hand"]
    assert got["ee_err_mean_mm"] == pytest.approx(ee_through(PANDA, s.joint_names, flags, s.q, s.qhat), rel=1e-9)
    assert main(["info", str(path), "--json", "--ee-link", "panda_link1"]) == 0  # a flag overrides the session
    assert json.loads(capsys.readouterr().out)["ee_err_mean_mm"] < 0.5 * got["ee_err_mean_mm"]
