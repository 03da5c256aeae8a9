"""Fault on real parts: the disk fills while the device records (issue 10, item 2).

The ``armtwin device`` process runs under a real kernel limit on file size (``RLIMIT_FSIZE``, with ``SIGXFSZ``
ignored so a write past it fails with ``EFBIG`` instead of killing the process): the recording's writes start
failing after ``LIMIT`` bytes, as on a full disk. The arm is an ``armtwin mock-arm`` process on a real pty, the server
an ``armtwin server`` process on loopback TCP with CURVE keys. The device must go on reading, sending and scoring,
stop the recording loudly, say how much it kept, and leave a file that ``armtwin info`` reads and ``armtwin recover``
completes.
"""

from __future__ import annotations

import json
import re
import resource
import signal
from pathlib import Path

import numpy as np

from tests.conftest import Proc, synthetic_session
from twin.session import load_session, write_session

LIMIT = 160 * 1024  # bytes per file: ~2 s of this recording
RUN_S = 6.0


def _limit_file_size() -> None:
    """In the device's child process: files it writes may not grow past LIMIT (the summary JSON stays far below)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_disk_full_mid_run_stops_the_recording_loudly_and_the_loop_goes_on(
        procs: list[Proc], tmp_path: Path) -> None:
    src = tmp_path / "motion.mcap"
    write_session(src, synthetic_session(seconds=20.0))
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none")
    procs.append(srv)
    arm = Proc("mock-arm", str(src))
    procs.append(arm)
    rec, js = tmp_path / "full.mcap", tmp_path / "full.json"
    dev = Proc("device", "--port", arm.value("port"), "--server", srv.value("bind"), "--policy", "static:k=5,h=20",
               "--duration", str(RUN_S), "--record", str(rec), "--summary-json", str(js), preexec_fn=_limit_file_size)
    procs.append(dev)
    code, out, err = dev.finish(timeout=60)
    assert code == 4, f"device exit {code} (4 = the recording stopped early): {err[-2000:]}"
    assert "Traceback" not in err

    # Loud, once, naming the file and the kernel's error, and saying how much the file kept.
    m = re.search(r"error: recording failed: \[Errno 27\] File too large \(EFBIG\) writing (\S+); recording "
                  r"STOPPED with (\d+) samples \(([\d.]+) s\) kept in (\S+) ", err)
    assert m, err[-2000:]
    assert m.group(1) == m.group(4) == str(rec)
    kept, kept_s = int(m.group(2)), float(m.group(3))
    assert f"`armtwin recover {rec} -o FIXED.mcap`" in err

    # The loop went on: a status line every second at 1 kHz to the end, the recording marked stopped on them.
    status = [ln for ln in out.splitlines() if ln.startswith("rate=")]
    stopped = [ln for ln in status if "REC=STOPPED" in ln]
    assert len(status) >= RUN_S - 1 and len(stopped) >= 3, status
    assert stopped == status[len(status) - len(stopped):], "a status line after the failure lost REC=STOPPED"
    assert f"recorded={kept}/" in out and f"({kept_s:.1f}s,STOPPED)" in out  # the one-line summary

    summary = json.loads(js.read_text())
    n = summary["samples"]
    assert n >= 0.95 * RUN_S * 1000 and summary["frames_lost"] == 0
    assert summary["samples_scored"] >= n - 500  # scored to the end (the last ~0.25 s wait for predictions)
    assert abs(summary["load"] - 0.2) < 0.01 and summary["sent"] >= 0.19 * n  # sending never stopped
    report = summary["recording"]
    assert report["path"] == str(rec) and "EFBIG" in report["error"]
    assert report["samples_kept"] == kept and abs(report["seconds_kept"] - kept_s) <= 0.05
    kept_s = report["seconds_kept"]
    assert report["samples_kept"] + report["samples_dropped"] == n  # every measured sample: kept or counted
    assert kept >= 1000 and n - kept >= 3000, "the loop should measure >= 3 s after the disk filled"
    assert rec.stat().st_size <= LIMIT

    # What was kept is readable as it is (no footer: the disk took none) and recoverable into a complete file.
    info = Proc("info", str(rec), "--json")
    procs.append(info)
    icode, iout, ierr = info.finish()
    assert icode == 0, ierr
    got = json.loads(iout)
    assert got["samples"] == kept and got["truncated"] is True
    assert abs(got["duration_s"] + 0.001 - kept_s) < 1e-6  # info: first to last stamp; the report adds one period
    s = load_session(rec)
    assert np.all(np.diff(s.t_us) == 1000), "the kept part has a hole"
    fixed = tmp_path / "fixed.mcap"
    rc = Proc("recover", str(rec), "-o", str(fixed))
    procs.append(rc)
    rcode, _, rerr = rc.finish()
    assert rcode == 0, rerr
    whole = load_session(fixed)
    assert not whole.truncated and np.array_equal(whole.t_us, s.t_us)
