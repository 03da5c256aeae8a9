"""device.recorder.Recorder with twin.session.SessionWriter: what the background thread writes ends up in the file,
close() writes the summary, and a failing disk is reported without stopping the device or hanging close()."""

from __future__ import annotations

import contextlib
import errno
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.recorder import Recorder
from twin.session import SessionWriter, load_session

TIMEOUT_S = 5.0
NAMES = ["shoulder", "elbow"]


def block(i: int, n: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Block ``i`` of ``n`` samples at 1 kHz; q on the µrad grid (what the file stores); qhat NaN at first."""
    t = np.arange(i * n, (i + 1) * n, dtype=np.int64) * 1000
    q = np.stack([np.sin(t * 1e-6), np.cos(t * 1e-6)], axis=1).round(6)
    qhat = q + 1e-6
    if i == 0:
        qhat[:10] = np.nan  # before the first prediction
    return t, np.arange(i * n, (i + 1) * n), q, (np.arange(n) % 4 == 0), qhat


def close_within(rec: Recorder, summary: dict[str, Any]) -> None:
    """Recorder.close joins its thread without a timeout: run it where a hang fails the test instead."""
    closer = threading.Thread(target=rec.close, args=(summary,), name="test-closer", daemon=True)
    closer.start()
    closer.join(TIMEOUT_S)
    assert not closer.is_alive(), "Recorder.close() hung"


class ThreadNoting(SessionWriter):
    """A real writer that notes which thread does each write."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: set[str] = set()

    def write_block(self, *args: Any, **kwargs: Any) -> None:
        self.threads.add(threading.current_thread().name)
        super().write_block(*args, **kwargs)

    def write_status(self, *args: Any, **kwargs: Any) -> None:
        self.threads.add(threading.current_thread().name)
        super().write_status(*args, **kwargs)


class DiskFullOnBlock(SessionWriter):
    """A real writer whose ``fail_on``-th block (0-based) hits a full disk."""

    def __init__(self, *args: Any, fail_on: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fail_on = fail_on
        self.calls = 0

    def write_block(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls - 1 == self.fail_on:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        super().write_block(*args, **kwargs)


def test_blocks_statuses_and_summary_reach_the_file(tmp_path: Path) -> None:
    path = tmp_path / "run.mcap"
    writer = ThreadNoting(path, NAMES, {"source": "device", "policy": "static:k=4"})
    rec = Recorder(writer)
    blocks = [block(i) for i in range(3)]
    rec.block(*blocks[0])
    rec.status(50_000, {"t_us": 50_000, "load": 0.25, "link_up": True})
    rec.block(*blocks[1])
    rec.block(*blocks[2])
    rec.status(250_000, {"t_us": 250_000, "load": 0.26, "link_up": False})
    close_within(rec, {"mse_deg2": 0.0021, "samples": 300})
    assert rec.error is None
    assert writer.threads == {"recorder"}  # the device loop never wrote to disk itself

    s = load_session(path)
    assert not s.truncated and s.joint_names == NAMES
    assert s.meta["source"] == "device" and s.meta["policy"] == "static:k=4"
    np.testing.assert_array_equal(s.t_us, np.concatenate([b[0] for b in blocks]))
    assert s.seq is not None and s.sent is not None and s.qhat is not None
    np.testing.assert_array_equal(s.seq, np.arange(300))
    np.testing.assert_allclose(s.q, np.concatenate([b[2] for b in blocks]), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(s.sent, np.concatenate([b[3] for b in blocks]))
    qhat = np.concatenate([b[4] for b in blocks])
    assert np.array_equal(np.isnan(s.qhat), np.isnan(qhat))
    np.testing.assert_allclose(s.qhat, qhat, rtol=0, atol=1e-12)
    assert [st["load"] for st in s.status] == [0.25, 0.26] and s.status[1]["link_up"] is False
    assert s.summary == {"mse_deg2": 0.0021, "samples": 300}


def test_a_failing_write_stops_the_recording_loudly_and_keeps_an_indexed_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "full.mcap"
    writer = DiskFullOnBlock(path, NAMES, {}, fail_on=1)
    rec = Recorder(writer)
    blocks = [block(i) for i in range(3)]
    for b in blocks:
        rec.block(*b)
    rec.status(300_000, {"t_us": 300_000})
    close_within(rec, {"samples": 300})
    assert rec.error is not None
    assert rec.error.startswith("recording failed:") and "No space left on device" in rec.error
    err = capsys.readouterr().err
    assert f"(ENOSPC) writing {path}; recording STOPPED with 100 samples (0.1 s) kept in {path}" in err
    assert rec.report() == {"path": str(path), "samples_kept": 100, "seconds_kept": 0.1, "samples_dropped": 200,
                            "blocks_dropped": 0, "error": rec.error}
    s = load_session(path)
    assert not s.truncated  # the footer was written when the recording stopped
    np.testing.assert_array_equal(s.t_us, blocks[0][0])


class Broken(SessionWriter):
    """A real writer with a bug that is not an OSError on its second block."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def write_block(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            raise ValueError("a bug")
        super().write_block(*args, **kwargs)


def test_any_exception_in_the_recorder_thread_is_reported_and_the_file_keeps_its_footer(tmp_path: Path) -> None:
    path = tmp_path / "bug.mcap"
    rec = Recorder(Broken(path, NAMES, {}))
    for i in range(3):
        rec.block(*block(i))
    close_within(rec, {"samples": 300})
    assert rec.error is not None and "ValueError: a bug" in rec.error
    s = load_session(path)
    assert not s.truncated and len(s.t_us) == 100
    assert rec.samples_dropped == 200


class Stalled(SessionWriter):
    """A disk that hangs until released."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def write_block(self, *args: Any, **kwargs: Any) -> None:
        assert self.release.wait(TIMEOUT_S)
        super().write_block(*args, **kwargs)


def test_the_queue_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    writer = Stalled(tmp_path / "slow.mcap", NAMES, {})
    rec = Recorder(writer, max_queued=3)
    for i in range(10):  # the thread holds one, three wait: the rest are dropped, not queued without bound
        rec.block(*block(i, 10))
    assert rec._q.qsize() <= 3 and rec.blocks_dropped >= 6
    writer.release.set()
    close_within(rec, {})
    assert rec.error is None
    assert rec.report()["samples_kept"] + rec.samples_dropped == 100


def test_an_unwritable_recording_path_is_refused_at_start(tmp_path: Path) -> None:
    from device.recorder import check_writable
    from twin.paths import OutputPathError

    with pytest.raises(OutputPathError, match=r"cannot write the recording /sys/x\.mcap"):
        check_writable(Path("/sys/x.mcap"))  # sysfs refuses new files, even to root
    check_writable(tmp_path / "ok.mcap")
    assert not (tmp_path / "ok.mcap").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (every write fails with ENOSPC)")
def test_a_full_disk_sets_error_and_close_does_not_hang() -> None:
    writer = SessionWriter("/dev/full", NAMES, {})  # opens fine; the header waits in the buffer
    try:
        rec = Recorder(writer)
        for i in range(5):  # more than a 64 KiB chunk: chunks are written (and fail) while recording
            rec.block(*block(i, 1000))
        close_within(rec, {"samples": 5000})
        assert rec.error is not None and "No space left on device" in rec.error
    finally:
        with contextlib.suppress(OSError):
            writer._fh.close()  # already closed by close(); harmless


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (every write fails with ENOSPC)")
def test_a_full_disk_does_not_leak_the_session_file_handle() -> None:
    writer = SessionWriter("/dev/full", NAMES, {})
    try:
        rec = Recorder(writer)
        for i in range(5):
            rec.block(*block(i, 1000))
        close_within(rec, {"samples": 5000})
        assert rec.error is not None
        assert writer._fh.closed
    finally:
        with contextlib.suppress(OSError):
            writer._fh.close()


def test_device_with_an_unwritable_record_path_exits_2_with_a_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "armtwin", "device", "--port", str(tmp_path / "none"), "--server",
                        "tcp://127.0.0.1:1", "--record", "/sys/run.mcap"], capture_output=True, text=True, timeout=60,
                       cwd=Path(__file__).resolve().parents[1])
    assert p.returncode == 2
    assert "error: cannot write the recording /sys/run.mcap: Permission denied" in p.stderr
