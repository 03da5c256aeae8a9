"""A device killed with SIGKILL while recording: `armtwin info` reads the file up to its last chunk (the recorder
closes one every second) and `armtwin recover` writes a complete, indexed file with the same samples."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from mcap.reader import make_reader

from tests.conftest import Proc, synthetic_session
from twin.session import load_session, write_session


def test_sigkill_while_recording_then_info_and_recover(procs: list[Proc], tmp_path: Path) -> None:
    src = tmp_path / "long.mcap"
    write_session(src, synthetic_session(seconds=30.0))
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none", "--predictor", "linear")
    procs.append(srv)
    arm = Proc("mock-arm", str(src))
    procs.append(arm)
    rec = tmp_path / "crashed.mcap"
    dev = Proc("device", "--port", arm.value("port"), "--server", srv.value("bind"), "--policy", "static:k=10,h=0",
               "--record", str(rec))
    procs.append(dev)
    for _ in range(4):  # four status lines: ~4 s recorded, 3+ chunks closed
        dev.wait_line("rate=", new=True)
    dev.p.send_signal(signal.SIGKILL)
    dev.p.wait(timeout=10)
    last_status = dev.lines[-1]
    assert last_status.startswith("rate=")

    info = Proc("info", str(rec), "--json")
    procs.append(info)
    code, out, err = info.finish()
    assert code == 0, err
    got = json.loads(out)
    assert got["truncated"] is True
    # Killed >= 4 s after the first sample; the recorder closes a chunk every second and scores 250 ms behind:
    # at most ~1.5 s are missing.
    assert got["samples"] >= 2500, got["samples"]
    text = Proc("info", str(rec))
    procs.append(text)
    assert "armtwin recover" in text.finish()[1]

    fixed = tmp_path / "fixed.mcap"
    rc = Proc("recover", str(rec), "-o", str(fixed))
    procs.append(rc)
    code, out, err = rc.finish()
    assert code == 0, err
    assert "recovered" in out and "damaged" in out
    broken, whole = load_session(rec), load_session(fixed)
    assert not whole.truncated and len(whole.t_us) == len(broken.t_us)
    assert (whole.t_us == broken.t_us).all() and whole.meta == broken.meta
    with open(fixed, "rb") as fh:
        summary = make_reader(fh).get_summary()
    assert summary is not None and summary.chunk_indexes  # indexed: tools can seek in it
    assert sum(summary.statistics.channel_message_counts.values()) > 0

    again = Proc("recover", str(rec), "-o", str(fixed))
    procs.append(again)
    code, _, err = again.finish()
    assert code == 2 and "exists" in err


def test_what_was_flushed_survives_a_kill(tmp_path: Path) -> None:
    """The recorder flushes every second; a flush must close the open chunk, or a kill loses up to 64 KiB."""
    from twin.session import SessionWriter

    s = synthetic_session(seconds=0.5)
    w = SessionWriter(tmp_path / "k.mcap", s.joint_names, s.meta)
    try:
        w.write_block(s.t_us, s.seq if s.seq is not None else list(range(len(s.t_us))), s.q)
        w.flush()
        got = load_session(tmp_path / "k.mcap")  # read as a kill would leave it: no close, no footer
        assert got.truncated and len(got.t_us) == len(s.t_us)
    finally:
        w._fh.close()
