"""Fault on real parts: the arm's serial port vanishes mid-run and comes back (issue 10, item 2).

An ``armtwin mock-arm`` process streams through a real pty reached by a stable symlink (what a udev rule's
``/dev/armtwin`` is); it pulls the cable (the pty goes away, the link leads nowhere), then plugs back in on a *new*
pty that the link follows. An ``armtwin device`` process records through an ``armtwin server`` process on loopback
TCP with CURVE keys (conftest). The mock arm prints its firmware clock at both events; the device's recording keeps
that clock, so the reconnect delay is read from the data, not from a stopwatch around sleeps.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from tests.conftest import Proc, synthetic_session
from twin.session import load_session, write_session

RECONNECT_S = 1.0  # issue 10: the device reads again within 1 s of the port's return


def _fw_us(stderr: str, event: str) -> int:
    m = re.search(rf"mock arm: {event}.* at fw_us=(\d+)", stderr)
    assert m, f"no {event!r} line from the mock arm: {stderr[-1000:]}"
    return int(m.group(1))


def test_port_vanishes_and_returns_on_a_new_pty_the_device_reconnects_within_1_s(
        procs: list[Proc], tmp_path: Path) -> None:
    src = tmp_path / "motion.mcap"
    write_session(src, synthetic_session(seconds=10.0))
    link = tmp_path / "ttyARM"
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none")
    procs.append(srv)
    arm = Proc("mock-arm", str(src), "--bounce", "--link", str(link), "--unplug-after", "2", "--unplug-for", "1")
    procs.append(arm)
    assert arm.value("port") == str(link)
    first_pty = link.resolve()
    rec, js = tmp_path / "unplug.mcap", tmp_path / "unplug.json"
    dev = Proc("device", "--port", str(link), "--server", srv.value("bind"), "--policy", "static:k=5,h=20",
               "--duration", "6", "--record", str(rec), "--summary-json", str(js))
    procs.append(dev)
    code, out, err = dev.finish(timeout=60)
    assert code == 0, f"device exit {code}: {err[-2000:]}"
    assert "Traceback" not in err
    arm.p.terminate()
    _, _, arm_err = arm.finish(timeout=20)
    pulled, back = _fw_us(arm_err, "cable pulled"), _fw_us(arm_err, "plugged back in")
    assert link.resolve() != first_pty, "the replugged arm should be on a new pty (the link follows it)"
    assert "port=DOWN" in out, "no status line said the port was down"

    summary = json.loads(js.read_text())
    assert summary["port_reconnects"] == 1
    gaps = summary["gaps"]
    assert [g["reason"] for g in gaps] == ["reconnect"], gaps
    gap = gaps[0]
    # The gap starts at the last frame read before the cable went and ends at the first frame read after it came
    # back (device time = the firmware's clock here: no wrap, no restart).
    assert gap["after_t_us"] <= pulled < gap["t_us"]
    assert back <= gap["t_us"], "first frame after the gap predates the replug"
    delay_s = (gap["t_us"] - back) / 1e6
    assert delay_s <= RECONNECT_S, f"reconnected {delay_s:.3f} s after the port came back"
    print(f"reconnect delay {delay_s * 1000:.0f} ms after the port came back; gap {gap}")  # seen with -s
    # Nothing was lost but the gap itself and, on a starved host, frames the arm could not write into a pty the
    # device had not drained (the arm counts those: like a UART, it never waits). Some of the arm's drops may come
    # before the device's first read (no sequence gap to count then), so its count bounds the other losses.
    missing = (gap["t_us"] - gap["after_t_us"]) // 1000 - 1
    m = re.search(r"frames_dropped=(\d+)", arm_err)
    assert m, arm_err[-1000:]
    arm_dropped = int(m.group(1))
    overflow = summary["frames_lost"] - missing
    assert 0 <= overflow <= arm_dropped, f"{missing} lost in the gap, {overflow} elsewhere, {arm_dropped} dropped " \
        "by the arm"
    assert summary["crc_errors"] == 0 and summary["time_resets"] == 0
    assert "port_reconnects=1" in out  # the one-line summary counts it

    s = load_session(rec)
    assert not s.truncated and len(s.t_us) == summary["samples"]
    assert s.summary is not None and s.summary["gaps"] == gaps  # the gap is marked in the recording itself
    steps = np.diff(s.t_us)
    assert np.all(steps >= 1000) and np.all(steps % 1000 == 0)
    holes = np.flatnonzero(steps != 1000)
    at_gap = [i for i in holes if (s.t_us[i], s.t_us[i + 1]) == (gap["after_t_us"], gap["t_us"])]
    assert len(at_gap) == 1, f"the gap is not in the recording: holes at {s.t_us[holes]}"
    # Every frame the device read is in the file, in order: the only holes are the gap and the counted losses.
    assert int((steps[holes] // 1000 - 1).sum()) == summary["frames_lost"]
    after = s.t_us >= gap["t_us"]
    if overflow == 0:  # the usual case: after the return, every frame the arm made is in the file
        assert np.all(np.diff(s.t_us[after]) == 1000) and np.all(np.diff(s.seq[after]) == 1)
    assert after.sum() >= 2000, "the run went on for less than 2 s after the reconnect"
    # The status records written during the run count the reconnect too.
    assert s.status and max(st.get("port_reconnects", 0) for st in s.status) == 1
