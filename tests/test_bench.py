"""The benchmark suite's code paths on tiny configurations (``armtwin bench``, ``python -m bench``): each part's
table and JSON have their shape and every figure is finite and plausible. No timing thresholds: the figures
themselves come from ``armtwin bench`` runs, never from tests."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from bench.common import Lab, Part, table, write_json
from bench.device import device_parts, run_devices
from bench.link import link_part, measure_raw
from bench.server import capacity
from device.stages import STAGES

REPO = Path(__file__).resolve().parents[1]
CORES = os.cpu_count() or 1


def finite(*values: object) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


def test_device_and_link_parts(tmp_path: Path) -> None:
    """One policy through the real mock arm, device and server processes; the link's raw echo beside it."""
    lab = Lab.make(tmp_path)
    try:
        runs = run_devices(lab, seconds=1, repeats=1, policies=["static:k=20"])
        raw = measure_raw(lab, seconds=0.3, repeats=1)
    finally:
        lab.stop_all()
    main, stages = device_parts(runs)
    (row,) = main.rows
    assert row["policy"] == "static:k=20"
    assert abs(row["load"] - 0.05) < 0.01  # every 20th sample: exact up to the run's edges
    assert row["frames_lost"] >= 0 and 0 < row["cpu_%core"] <= 100 * CORES
    assert finite(row["server_cpu_%"], row["arr->sent_p50_ms"], row["arr->sent_p99_ms"], row["mse_deg2"])
    assert 0 <= row["arr->sent_p50_ms"] <= row["arr->sent_p99_ms"]
    (srow,) = stages.rows
    assert all(finite(srow[s]) and srow[s] >= 0 for s in STAGES)
    assert srow["read"] > 0 and srow["decode"] > 0 and srow["policy"] > 0 and srow["send"] > 0  # all timed
    assert finite(srow["other"], srow["total"])
    link = link_part(runs, raw, 0.3, 1)
    assert [r["path"] for r in link.rows][-3:] == ["raw pyzmq+msgpack, CURVE", "raw pyzmq+msgpack, plaintext",
                                                   "raw pyzmq+msgpack, CURVE, 20 Hz"]
    for r in link.rows:
        assert finite(r["p50_ms"], r["p99_ms"], r["x_raw_p50"], r["x_raw_p99"]) and 0 < r["p50_ms"] <= r["p99_ms"]
    assert link.rows[-3]["x_raw_p50"] == 1.0
    text = table(link)
    assert text.splitlines()[0].startswith("== link") and "x_raw_p99" in text


def test_server_part(tmp_path: Path) -> None:
    """Two emulated devices, closed loop; a worker count the server refuses is skipped with the reason."""
    lab = Lab.make(tmp_path)
    try:
        part = capacity(lab, devices=[2], workers=[1, 2], seconds=0.3, repeats=1)
    finally:
        lab.stop_all()
    one = [r for r in part.rows if r["workers"] == 1]
    assert len(one) == 1 and one[0]["devices"] == 2
    assert one[0]["answered_per_s"] > 0 and one[0]["sessions_lost"] == 0 and one[0]["errors"] == {}
    assert 0 < one[0]["server_cpu_%"] <= 100 * CORES and finite(one[0]["loadgen_cpu_%"], one[0]["connect_s"])
    if not any(r["workers"] == 2 for r in part.rows):  # no --workers in this server yet
        assert any(n.startswith("2 workers: skipped") for n in part.notes)


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=timeout, check=False)


def test_simulator_and_viewer_parts_through_the_cli(tmp_path: Path) -> None:
    """``python -m bench --only simulator,viewer``: the printed tables and the JSON file."""
    out = tmp_path / "bench.json"
    r = bench("--quick", "--repeats", "1", "--only", "simulator,viewer", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "== simulator" in r.stdout and "== viewer" in r.stdout
    doc = json.loads(out.read_text())
    assert set(doc["parts"]) == {"simulator", "viewer"} and doc["settings"]["quick"] is True
    sim = doc["parts"]["simulator"]
    assert sim["columns"][0] == "policy" and len(sim["rows"]) >= 3
    assert all(finite(row["x_real_time"]) and row["x_real_time"] > 0 and 0 < row["load"] <= 1 for row in sim["rows"])
    view = doc["parts"]["viewer"]
    assert [row["arms"] for row in view["rows"]] == [1, 10]
    assert all(row["frames_per_s"] > 0 for row in view["rows"]) and "headless" in view["notes"][0]


def test_soak_server_summary() -> None:
    r = bench("soak-server", "--minutes", "0.03", "--every", "1", "--devices", "3", "--rate", "50")
    assert r.returncode == 0, r.stderr
    (summary,) = [ln for ln in r.stdout.splitlines() if ln.startswith("summary: soak-server")]
    assert "sessions_lost=0" in summary and "server_rss_mb first=" in summary


def test_bad_arguments_say_what_to_do() -> None:
    r = bench("--only", "gpu")
    assert r.returncode == 2 and "choose from device, link, server, zenoh, simulator, viewer" in r.stderr
    r = bench("soak-device", "--minutes", "0")
    assert r.returncode == 2 and "must be > 0" in r.stderr


def test_json_writes_nan_as_null(tmp_path: Path) -> None:
    part = Part("x", "x", ["a", "b"], [{"a": 1.0, "b": float("nan")}])
    write_json(tmp_path / "x.json", [part], {"quick": True})
    doc = json.loads((tmp_path / "x.json").read_text())
    assert doc["parts"]["x"]["rows"] == [{"a": 1.0, "b": None}] and doc["machine"]["cpus"] == CORES


def test_armtwin_bench_is_the_same_entry() -> None:
    r = subprocess.run([sys.executable, "-m", "armtwin", "bench", "--help"], capture_output=True, text=True,
                       cwd=REPO, timeout=60, check=False)
    assert r.returncode == 0 and "device,link,server,zenoh,simulator,viewer" in r.stdout and "soak-device" in r.stdout


def test_server_max_sessions(tmp_path: Path) -> None:
    """``armtwin server --max-sessions N`` (the server part needs 1000+): device N+1 is told server-full."""
    import time

    from bench.loadgen import LoadGen
    from twin.security import Security

    lab = Lab.make(tmp_path)
    try:
        _, endpoint = lab.server("cap", ["--max-sessions", "1"])
        gen = LoadGen(endpoint, Security.for_client(lab.keys, "bench"), 2)
        try:
            for i in range(2):
                gen._hello(i)
            deadline = time.monotonic() + 30
            while not (sum(gen.welcomed) == 1 and gen.errors["server-full"]) and time.monotonic() < deadline:
                for s, _ in gen.poller.poll(100):
                    gen._drain(s, closed_loop=False)
            assert sum(gen.welcomed) == 1 and gen.errors["server-full"] >= 1
        finally:
            gen.close()
        bad = lab.start(["server", "--keys", str(lab.keys), "--max-sessions", "0"], "bad")
        assert bad.wait(timeout=60) == 2 and "--max-sessions must be >= 1" in bad.stderr_tail()
    finally:
        lab.stop_all()


def test_zenoh_part_measures_states_reaching_the_global_subscriber() -> None:
    """Two real edge servers and a subscriber as Zenoh peers on loopback; a few arms; the latency is measured on
    states that arrived, and 1 000 arms get enough workers that no process holds more than its 256 sessions."""
    from bench.zenoh_part import workers_for, zenoh_part

    assert workers_for(4) == 1 and workers_for(512) == 1 and workers_for(1000) == 2 and workers_for(2000) == 4
    part = zenoh_part(arms=4, rate_hz=20.0, seconds=0.5, repeats=1)
    (row,) = part.rows
    assert row["workers_each"] == 1 and 0 < row["arrived"] <= row["sent"]
    assert finite(row["p50_ms"], row["p99_ms"]) and 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
