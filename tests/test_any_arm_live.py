"""The arm on the live side, through the real `armtwin` processes: the device names the joints from the URDF (or
the joint map), records the arm it ran with, and stops with exit 2 when the arm's frames do not fit the URDF it was
given; the viewer refuses a device whose joints do not fit its --urdf (exit 2, the counts, what to pass)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.twin_server import TwinServer
from tests.conftest import Proc
from tests.test_any_arm import KUKA, PANDA, PANDA_MAP, XARM6, XARM_NAMES, tracked
from tests.test_view import FakeDevices, live_twin  # noqa: F401  (the fixture)
from twin.joint_map import JointMap
from twin.session import load_session, write_session


def run_device(tmp_path: Path, procs: list[Proc], joints: int, *flags: str) -> tuple[int, str, Path]:
    """A mock arm replaying 1 s of ``joints`` joints (the replay's end ends the run), a server, the device."""
    src, rec = tmp_path / f"motion{joints}.mcap", tmp_path / "rec.mcap"
    write_session(src, tracked([f"m{i}" for i in range(joints)], None))
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none")
    procs.append(srv)
    arm = Proc("mock-arm", str(src))
    procs.append(arm)
    dev = Proc("device", "--port", arm.value("port"), "--server", srv.value("bind"), "--policy", "static:k=10,h=0",
               "--record", str(rec), "--force", *flags)
    procs.append(dev)
    code, _, err = dev.finish(timeout=60)
    return code, err, rec


def test_device_names_the_joints_from_the_urdf_and_records_the_arm(tmp_path: Path, procs: list[Proc]) -> None:
    code, err, rec = run_device(tmp_path, procs, 6, "--urdf", XARM6, "--ee-link", "link6")
    assert code == 0, err
    s = load_session(rec)
    assert s.joint_names == XARM_NAMES and s.meta["urdf"] == XARM6 and s.meta["ee_link"] == "link6"
    info = Proc("info", str(rec), "--json")  # no flags: the session names its arm
    procs.append(info)
    code, out, err = info.finish()
    got = json.loads(out)
    assert code == 0 and got["ee_err_mean_mm"] is not None and got["ee_urdf"] == XARM6, err


def test_device_with_a_joint_map_records_it(tmp_path: Path, procs: list[Proc]) -> None:
    """The Panda's 9 movable joints (two fingers) and an arm sending 7: the map names and binds them."""
    code, err, rec = run_device(tmp_path, procs, 7, "--urdf", PANDA, "--joint-map", PANDA_MAP, "--ee-link",
                                "panda_hand")
    assert code == 0, err
    s = load_session(rec)
    assert s.joint_names == [f"j{i}" for i in range(7)]
    assert JointMap.parse(s.meta["joint_map"]) == JointMap.parse(PANDA_MAP) and s.meta["ee_link"] == "panda_hand"


def test_device_stops_when_the_arm_does_not_fit_the_urdf_given(tmp_path: Path, procs: list[Proc]) -> None:
    code, err, rec = run_device(tmp_path, procs, 7, "--urdf", XARM6)
    assert code == 2, err
    assert "error: the arm's frames do not fit" in err and f"7 joints but {XARM6} has 6 movable joints" in err, err
    assert "--joint-map 'joint_1=joint1," in err and "joint_7=none" in err, err
    assert not rec.exists(), "nothing recorded under a wrong arm"


def test_device_with_no_urdf_given_records_none_that_does_not_fit(tmp_path: Path, procs: list[Proc]) -> None:
    """The default KUKA was never asked for: a 3-joint arm runs (exit 0), with no URDF announced or recorded."""
    code, err, rec = run_device(tmp_path, procs, 3)
    assert code == 0, err
    assert f"the default URDF {KUKA} does not fit" in err and "pass --urdf" in err, err
    assert load_session(rec).meta["urdf"] == ""


def test_device_refuses_an_ee_link_the_urdf_lacks(procs: list[Proc]) -> None:
    dev = Proc("device", "--port", "/dev/null", "--server", "tcp://127.0.0.1:9", "--urdf", XARM6, "--ee-link",
               "hand")
    procs.append(dev)
    code, _, err = dev.finish()
    assert code == 2 and "--ee-link hand" in err and "link6" in err, err


def test_view_refuses_a_device_whose_joints_do_not_fit_its_urdf(live_twin: tuple[TwinServer, FakeDevices],  # noqa: F811
                                                                procs: list[Proc], tmp_path: Path) -> None:
    """Two 7-joint KUKA devices stream; the viewer is told they are xArm6s: each is refused with the counts, and
    with no device left to show the view stops with exit 2 (it waits no --duration)."""
    server, _ = live_twin
    assert server.pub_endpoint is not None
    view = Proc("view", "--sub", server.pub_endpoint, "--headless", "--out", str(tmp_path / "snaps"), "--width",
                "160", "--height", "120", "--duration", "60", "--urdf", XARM6)
    procs.append(view)
    code, out, err = view.finish(timeout=60)
    assert code == 2, (out, err)
    assert "error: device arm" in err and "7 joints" in err and f"{XARM6} has 6 movable joints" in err, err
    assert "--joint-map" in err, err
    assert not list(tmp_path.glob("snaps/*.png")), "nothing shown"


def test_foxglove_view_refuses_them_too(live_twin: tuple[TwinServer, FakeDevices],  # noqa: F811
                                        procs: list[Proc]) -> None:
    """The same through `view --foxglove`, on the CURVE-keyed feed (the viewer's keys reach that mode too: before,
    it subscribed without them and never saw a twin state from a keyed server)."""
    pytest.importorskip("foxglove")
    server, _ = live_twin
    assert server.pub_endpoint is not None
    view = Proc("view", "--sub", server.pub_endpoint, "--foxglove", "--port", "0", "--duration", "60", "--urdf",
                XARM6)
    procs.append(view)
    code, out, err = view.finish(timeout=60)
    assert code == 2, (out, err)
    assert "error: device arm" in err and f"7 joints but {XARM6} has 6 movable joints" in err, err
