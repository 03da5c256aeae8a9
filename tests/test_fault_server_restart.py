"""Fault on real parts: the twin server is SIGKILLed and restarted on the same port while a device streams.

The mock arm streams through a real pty, the server is an ``armtwin server`` process on loopback TCP (CURVE keys
from conftest), the device agent runs in this process so its counters can be watched while it streams. A restarted
server numbers its predictions from 1 again (a new session epoch); the device must place them after the old ones,
or de-duplication drops them, latency stops being measured and KC-TD3's loss estimate goes to 1 (issue 10, defect 3).
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from device.agent import DeviceAgent, DeviceConfig
from device.policies.registry import parse_policy
from tests.conftest import Proc
from twin.security import Security
from twin.session import load_session

RECOVERY_S = 2.0  # issue 10: predictions, de-dup and link estimates recover within 2 s of the restart


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout:g} s"
        threading.Event().wait(0.01)
    return time.monotonic() - start


def test_server_sigkill_and_restart_recovers_within_2_s(procs: list[Proc], session_file: Path, tmp_path: Path,
                                                        curve_keys: Path) -> None:
    bind = f"tcp://127.0.0.1:{_free_port()}"
    first = Proc("server", "--bind", bind, "--pub", "none")
    procs.append(first)
    first.value("bind")
    arm = Proc("mock-arm", str(session_file), "--loop")
    procs.append(arm)
    rec = tmp_path / "restart.mcap"
    cfg = DeviceConfig(port=arm.value("port"), server=bind, policy=parse_policy("static:k=5,h=20"), record=rec,
                       security=Security.for_client(curve_keys, "device"))
    agent = DeviceAgent(cfg, out=io.StringIO())
    runner = threading.Thread(target=agent.run, name="device-agent")
    runner.start()
    try:
        # ~3 s of predictions (200/s) from the first server: its pred_seq reaches ~600.
        _wait(lambda: agent.tracking is not None and agent.tracking.predictions_back >= 600, 20,
              "predictions from the first server")
        tracking, uplink = agent.tracking, agent.uplink
        assert tracking is not None and uplink is not None
        first.p.kill()  # SIGKILL: no bye, no summary, the socket just goes away
        first.stop()
        back_before, acked_before = tracking.predictions_back, tracking.preds.acked
        second = Proc("server", "--bind", bind, "--pub", "none")
        procs.append(second)
        second.value("bind")
        took = _wait(lambda: tracking.predictions_back >= back_before + 20, RECOVERY_S,
                     "latency measured again after the restart (new predictions not de-duplicated away)")
        assert tracking.preds.acked > acked_before, "acknowledgements did not move on in the new session"
        assert uplink.stats.epochs == 2
        # The link estimate KC-TD3 is fed (sends with a prediction back) is healthy again over the next ~0.5 s.
        sent0, back0 = tracking.sent, tracking.predictions_back
        _wait(lambda: tracking.sent >= sent0 + 100, 5, "sends after the restart")
        sent1, back1 = tracking.sent, tracking.predictions_back
        loss = 1 - (back1 - back0) / (sent1 - sent0)
        assert loss < 0.1, f"loss estimate {loss:.2f} after the restart (took {took:.2f} s to resume)"
    finally:
        agent.stop()
        runner.join(timeout=30)
    assert not runner.is_alive()
    second.wait_line("device arm0 left (bye)", timeout=10)  # defect 8: the bye arrives
    summary = agent.summary
    assert summary["frames_lost"] == 0
    s = load_session(rec)
    assert len(s.t_us) == summary["samples"]
    assert np.all(np.diff(s.t_us) == 1000), "a measured sample is missing from the recording"
