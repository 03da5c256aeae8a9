"""Session files (MCAP), crash safety, CSV import/export and the info verb."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from armtwin.cli import main
from tests.conftest import Proc, synthetic_session
from twin.csv_io import CsvError, export_csv, import_csv
from twin.session import SessionError, SessionWriter, load_session, write_session


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    s = synthetic_session(3, 4)
    s.sent = np.arange(len(s.t_us)) % 7 == 0
    s.qhat = s.q + 1e-4
    s.qhat[:10] = np.nan
    s.status = [{"t_us": 1000, "load": 0.1}]
    s.summary = {"samples": len(s.t_us)}
    write_session(tmp_path / "s.mcap", s)
    back = load_session(tmp_path / "s.mcap")
    assert np.array_equal(back.t_us, s.t_us) and back.joint_names == s.joint_names
    assert np.max(np.abs(back.q - s.q)) <= 0.5e-6  # int µrad storage
    assert np.array_equal(back.sent, s.sent)
    assert np.isnan(back.qhat[:10]).all() and np.max(np.abs(back.qhat[10:] - s.qhat[10:])) <= 0.5e-6
    assert back.status == s.status and back.summary == s.summary and not back.truncated
    assert back.meta["source"] == "synthetic test motion"


def test_killed_recorder_leaves_a_readable_file(tmp_path: Path) -> None:
    s = synthetic_session(20, 3)
    path = tmp_path / "crash.mcap"
    w = SessionWriter(path, s.joint_names, {"source": "crash test"})
    for a in range(0, len(s.t_us), 100):
        w.write_block(s.t_us[a:a + 100], np.arange(a, a + 100), s.q[a:a + 100])
    w.flush()
    size = path.stat().st_size
    # Simulate a SIGKILL: the writer never finishes; cut the file in the middle of its last chunk too (a flush
    # closes the chunk and writes its message index after it: cut past that, into the chunk's compressed data).
    data = path.read_bytes()[: size - 3000]
    path.write_bytes(data)
    back = load_session(path)
    assert back.truncated
    assert 0 < len(back.t_us) < len(s.t_us)
    idx = np.searchsorted(s.t_us, back.t_us)
    assert np.max(np.abs(s.q[idx] - back.q)) <= 0.5e-6  # what was kept is intact


def test_not_a_session(tmp_path: Path) -> None:
    (tmp_path / "x.mcap").write_bytes(b"hello world")
    with pytest.raises(SessionError):
        load_session(tmp_path / "x.mcap")
    with pytest.raises(SessionError, match="no such file"):
        load_session(tmp_path / "missing.mcap")


def _write_csv(path: Path, t: np.ndarray, q: np.ndarray) -> None:
    with open(path, "w") as fh:
        fh.write("t_s,a,b\n")
        for ti, row in zip(t, q, strict=True):
            fh.write(f"{ti:.6f},{row[0]:.6f},{row[1]:.6f}\n")


def test_csv_import_export_round_trip(tmp_path: Path) -> None:
    t = np.arange(2000) * 1e-3 + np.random.default_rng(0).uniform(-5e-6, 5e-6, 2000)
    q = np.stack([30 * np.sin(t), 10 * np.cos(3 * t)], axis=1)
    _write_csv(tmp_path / "in.csv", t, q)
    s = import_csv(tmp_path / "in.csv")
    assert not s.meta["resampled"] and len(s.t_us) == 2000
    export_csv(s, tmp_path / "out.csv")
    rows = np.genfromtxt(tmp_path / "out.csv", delimiter=",", names=True)
    np.testing.assert_allclose(rows["q_a"], q[:, 0], atol=6e-5)  # 1 µrad = 5.7e-5 deg
    assert np.isnan(rows["qhat_a"]).all()


def test_slow_csv_needs_resample(tmp_path: Path) -> None:
    t = np.arange(0, 2, 1 / 60)
    q = np.stack([np.sin(t), np.cos(t)], axis=1) * 20
    _write_csv(tmp_path / "slow.csv", t, q)
    with pytest.raises(CsvError, match="--resample"):
        import_csv(tmp_path / "slow.csv")
    s = import_csv(tmp_path / "slow.csv", resample=True)
    assert s.meta["resampled"] and np.all(np.diff(s.t_us) == 1000)
    np.testing.assert_allclose(np.degrees(s.q[::1000][:, 0]), 20 * np.sin(np.arange(len(s.t_us[::1000]))), atol=1e-3)


@pytest.mark.parametrize(("text", "message"), [
    ("x,a\n0,1\n", "header"), ("t_s,a\n0,1\n0.001,zz\n", "non-numeric"), ("t_s,a\n0,1\n0,2\n", "does not increase"),
    ("t_s,a\n0,1\n0.001,nan\n", "NaN"), ("t_s,a,a\n0,1,1\n", "unique"),
])
def test_csv_errors_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(CsvError, match=message):
        import_csv(tmp_path / "bad.csv")


def test_import_info_export_cli(tmp_path: Path, procs: list[Proc]) -> None:
    t = np.arange(1500) * 1e-3
    _write_csv(tmp_path / "in.csv", t, np.stack([np.sin(t), t], axis=1))
    imp = Proc("import", str(tmp_path / "in.csv"), "-o", str(tmp_path / "s.mcap"))
    procs.append(imp)
    assert imp.finish()[0] == 0
    info = Proc("info", str(tmp_path / "s.mcap"), "--json")
    procs.append(info)
    code, out, _ = info.finish()
    assert code == 0
    data = json.loads(out)
    assert data["samples"] == 1500 and data["joints"] == ["a", "b"] and data["rate_hz"] == pytest.approx(1000)
    bad = Proc("import", str(tmp_path / "missing.csv"), "-o", str(tmp_path / "x.mcap"))
    procs.append(bad)
    code, _, err = bad.finish()
    assert code == 2 and "error:" in err


def test_export_writes_lf_and_imports_back(tmp_path: Path) -> None:
    """``export`` writes LF lines (awk's $NF sees '1', not '1\\r') and ``import`` reads its own export back:
    t_s and q_<joint> are read, qhat_<joint> (empty before the first prediction) and sent are ignored."""
    src = synthetic_session(2.0, joints=3)
    src.t_us = src.t_us + 7_000_123  # device time does not start at 0
    src.qhat = np.roll(src.q, 20, axis=0)
    src.qhat[:50] = np.nan
    src.sent = np.arange(len(src.t_us)) % 25 == 0
    path, csv_path, back = tmp_path / "s.mcap", tmp_path / "s.csv", tmp_path / "back.mcap"
    write_session(path, src)
    assert main(["export", str(path), "--csv", str(csv_path)]) == 0
    raw = csv_path.read_bytes()
    assert b"\r" not in raw
    rows = raw.decode().splitlines()
    assert sum(line.split(",")[-1] == "1" for line in rows[1:]) == int(src.sent.sum())  # awk -F, '$NF==1'
    assert main(["import", str(csv_path), "-o", str(back)]) == 0
    s = load_session(back)
    assert s.joint_names == src.joint_names
    assert s.sent is None and s.qhat is None
    # Time is counted from the first row; t_s is printed with 6 decimals (1 µs), angles with 7 (1e-7 deg).
    np.testing.assert_allclose(s.t_us, src.t_us - src.t_us[0], atol=1)
    np.testing.assert_allclose(np.degrees(s.q), np.degrees(src.q), atol=1e-7)


def _verb_args(verb: str, tmp_path: Path, out: Path) -> list[str]:
    """argv writing ``out`` with ``verb`` (render: one small PNG frame)."""
    session, csv_in = tmp_path / "s.mcap", tmp_path / "in.csv"
    if not session.exists():
        write_session(session, synthetic_session(1.0, joints=7))
        t = np.arange(1000) * 1e-3
        _write_csv(csv_in, t, np.stack([np.sin(t), t], axis=1))
    return {"render": ["render", str(session), "-o", str(out), "--width", "32", "--height", "32"],
            "export": ["export", str(session), "--csv", str(out)],
            "import": ["import", str(csv_in), "-o", str(out)]}[verb]


@pytest.mark.parametrize(("verb", "name"), [("render", "x.png"), ("export", "x.csv"), ("import", "x.mcap")])
def test_output_parent_directory_is_created_or_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       verb: str, name: str) -> None:
    """One rule for every verb that writes a file: missing parents are created; a parent that cannot be (a
    regular file is in the way) is a one-line 'error: ...' with exit code 2, not a traceback."""
    out = tmp_path / "new" / "dir" / name
    assert main(_verb_args(verb, tmp_path, out)) == 0
    assert out.is_file() and out.stat().st_size > 0
    capsys.readouterr()
    (tmp_path / "plain").write_text("a file, not a directory")
    blocked = tmp_path / "plain" / "sub" / name
    assert main(_verb_args(verb, tmp_path, blocked)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert str(tmp_path / "plain") in err and "not a directory" in err


def test_joint_states_text_is_what_json_writes() -> None:
    """The recorder's foxglove.JointStates messages come from a %-template (about a third of json.dumps's cost
    per message: python bench/bench_session_io.py): the same bytes, for names that need escaping (or hold a %)
    and positions across the µrad range."""
    from twin.session import joint_states_template

    names = ["shoulder_pan", 'el"bow', "wr%ist", "ünïcode", "back\\slash"]
    template = joint_states_template(names)
    rng = np.random.default_rng(7)
    for _ in range(2000):
        row = [int(v) for v in rng.integers(-2**31, 2**31, len(names))]
        ns, t = int(rng.integers(0, 2**62)), int(rng.integers(-2**40, 2**62))
        expected = json.dumps({"timestamp": {"sec": ns // 1_000_000_000, "nsec": ns % 1_000_000_000},
                               "device_t_us": t,
                               "joints": [{"name": n, "position": v * 1e-6} for n, v in zip(names, row, strict=True)]})
        assert template % (ns // 1_000_000_000, ns % 1_000_000_000, t, *[v * 1e-6 for v in row]) == expected
