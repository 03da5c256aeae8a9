"""``import armtwin``: the documented surface, and a program feeding joint samples without serial frames through
the real device agent to a real twin server on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import armtwin


def test_the_surface_is_there_and_lazy() -> None:
    for name in armtwin.__all__:
        assert getattr(armtwin, name) is not None
    with pytest.raises(AttributeError):
        armtwin.no_such_thing  # noqa: B018


def test_sample_source_refuses_and_counts_bad_samples() -> None:
    src = armtwin.SampleSource(joints=2)
    assert src.push(1000, [0.1, 0.2])
    assert not src.push(1000, [0.1, 0.2]) and not src.push(2000, [0.1]) and not src.push(3000, [0.1, np.nan])
    assert src.rejected == {"time-not-increasing": 1, "joint-count": 1, "non-finite": 1}
    assert [s.t_us for s in src.drain()] == [1000] and src.decoder.stats.frames_ok == 1


def run_program(tmp_path: Path, n: int, **cfg: Any) -> dict[str, Any]:
    """A program pushes ``n`` samples of 3 joints at 1 kHz into a real agent talking to a real server."""
    srv = armtwin.TwinServer("tcp://127.0.0.1:*", None, "kinematic")
    sth = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 10}, name="test-twin-server")
    sth.start()
    src = armtwin.SampleSource(joints=3)
    config = armtwin.DeviceConfig(port="program", server=srv.endpoint,
                                  policy=armtwin.parse_policy("static:k=10,h=20"), record=tmp_path / "s.mcap", **cfg)
    agent = armtwin.DeviceAgent(config, out=open(tmp_path / "status.txt", "w"), source=src)  # noqa: SIM115
    stop = threading.Event()

    def feed() -> None:  # a vendor SDK's 1 kHz callback, paced on absolute deadlines as an arm would be
        start = time.monotonic()
        for i in range(n):
            if stop.wait(max(0.0, start + i * 1e-3 - time.monotonic())):
                return
            t = i * 1e-3
            src.push(i * 1000, [0.3 * np.sin(2 * t), 0.2 * np.cos(3 * t), 0.1 * t])
        src.end()

    fth = threading.Thread(target=feed, name="test-program-feed")
    try:
        fth.start()
        return agent.run()
    finally:
        stop.set()
        fth.join(timeout=10)
        agent.out.close()
        srv.stop()
        sth.join(timeout=10)


def test_a_program_feeds_the_agent_and_the_twin_is_scored(tmp_path: Path) -> None:
    n = 1500
    summary = run_program(tmp_path, n, joint_names=["a", "b", "c"])
    assert summary["samples"] == n and summary["load"] == pytest.approx(0.1, abs=0.01)
    assert summary["mse_deg2"] < 1.0, "a 10x-subsampled smooth motion is tracked"
    s = armtwin.load_session(tmp_path / "s.mcap")
    assert len(s.t_us) == n and s.joint_names == ["a", "b", "c"]
    np.testing.assert_allclose(s.q[-1], [0.3 * np.sin(2 * 1.499), 0.2 * np.cos(3 * 1.499), 0.1499], atol=1e-6)


@pytest.mark.parametrize(("urdf_names", "expected"), [
    (["shoulder", "elbow", "wrist"], ["shoulder", "elbow", "wrist"]),
    ([f"lbr_iiwa_joint_{i}" for i in range(1, 8)], ["joint_1", "joint_2", "joint_3"]),  # 7 names, 3 joints
])
def test_joint_names_from_the_urdf_when_none_are_given(tmp_path: Path, urdf_names: list[str],
                                                       expected: list[str]) -> None:
    run_program(tmp_path, 400, urdf_joint_names=urdf_names)
    assert armtwin.load_session(tmp_path / "s.mcap").joint_names == expected
