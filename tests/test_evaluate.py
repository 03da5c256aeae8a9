"""The evaluation harness: tuned on train, scored on test, and every record reproducible by simulate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device.link_emulation import LinkSpec
from device.policies.registry import parse_policy
from lab.evaluate import candidates, choose, evaluate
from lab.oracle import ClairvoyantBound
from lab.simulator import simulate_many
from tests.conftest import REPO, Proc, synthetic_session, write_results_json
from twin.session import Session, write_session


def test_records_are_reproduced_by_simulate() -> None:
    train = [synthetic_session(4, 3, seed=1), synthetic_session(4, 3, seed=2)]
    test = [synthetic_session(4, 3, seed=3)]
    links = [LinkSpec(), LinkSpec(loss=0.1, seed=5)]
    records, cloud = evaluate(train, test, [0.0005, 0.005], links, ["static", "dead-reckoning"], oracle=False)
    assert len(records) == 2 * 2 * 2
    assert len(cloud) == 2 * (len(candidates("static")) + len(candidates("dead-reckoning")))
    for rec in records:
        assert rec["policy"] in ("static", "dead-reckoning")
        link = LinkSpec.parse(rec["link"])  # the label is a complete --link spec, seed included
        pooled, _ = simulate_many(test, parse_policy(rec["spec"]), rec["predictor"], link, rec["constraint"])
        for key in ("load", "mse_deg2", "p99_abs_err_deg", "tail_fraction"):
            assert pooled[key] == pytest.approx(rec[key], rel=1e-12), key
        assert rec["meets_constraint"] == (rec["mse_deg2"] <= rec["constraint"])


def test_rms_dead_reckoning_family_bounds_the_rms_over_joints() -> None:
    cands = candidates("dead-reckoning-rms")
    assert len(cands) == len(candidates("dead-reckoning"))
    for c in cands:
        pol = parse_policy(c.spec)
        assert pol.norm == "rms" and pol.delta_deg == c.params["delta_deg"]
    records, _ = evaluate([synthetic_session(3, 3, seed=1)], [synthetic_session(3, 3, seed=3)], [0.005],
                          [LinkSpec()], ["dead-reckoning-rms"], oracle=False)
    assert records[0]["policy"] == "dead-reckoning-rms" and "norm=rms" in records[0]["spec"]


def test_oracle_rows_and_ratios() -> None:
    """The oracle row is the clairvoyant bound on the pooled test sessions; every load is also a ratio to it."""
    train, test = [synthetic_session(3, 3, seed=1)], [synthetic_session(3, 3, seed=3), synthetic_session(3, 3, seed=4)]
    links = [LinkSpec(delay_ms=20), LinkSpec(loss=0.1, seed=5)]
    def ee(sessions: list[Session], qhats: list[np.ndarray | None]) -> dict[str, int]:  # what the EE figure gets
        return {"displays": sum(q is not None and q.shape == s.q.shape for s, q in zip(sessions, qhats, strict=True))}

    records, _ = evaluate(train, test, [0.0005, 0.005], links, ["static"], ee=ee)
    oracle = {(r["link"], r["constraint"]): r for r in records if r["policy"] == "oracle"}
    assert all(r["displays"] == len(test) for r in oracle.values() if r["oracle_defined"])
    assert len(oracle) == 4
    for (link, eps), r in oracle.items():
        if LinkSpec.parse(link).loss > 0:
            assert not r["oracle_defined"] and r["load"] is None and "loss" in r["oracle_note"]
            continue
        bound = ClairvoyantBound(test, LinkSpec.parse(link)).solve(eps)
        assert r["load"] == bound["load"] and r["mse_deg2"] == pytest.approx(bound["mse_deg2"], rel=1e-12)
        assert r["meets_constraint"] == r["oracle_feasible"] == bound["feasible"]
        if r["oracle_feasible"]:
            assert r["load_lower_bound"] <= r["load"]
    assert {r["oracle_feasible"] for r in oracle.values() if r["oracle_defined"]} == {True, False}  # both cases
    for r in records:
        o = oracle[(r["link"], r["constraint"])]
        assert r["load_vs_oracle"] == (r["load"] / o["load"] if o.get("oracle_feasible") else None)


def test_choose_prefers_lowest_training_load_that_meets() -> None:
    rows = [{"train": {"load": 0.1, "mse_deg2": 0.001}}, {"train": {"load": 0.05, "mse_deg2": 0.003}},
            {"train": {"load": 0.2, "mse_deg2": 0.0001}}]
    assert choose(rows, 0.002)["train"]["load"] == 0.1
    assert choose(rows, 0.00001)["train"]["mse_deg2"] == 0.0001  # none meets: the most accurate one


def test_evaluate_cli_writes_results(tmp_path: Path, procs: list[Proc]) -> None:
    files = []
    for i in range(3):
        path = tmp_path / f"s{i}.mcap"
        write_session(path, synthetic_session(3, 3, seed=i))
        files.append(str(path))
    out = tmp_path / "eval"
    ev = Proc("evaluate", "--train", files[0], files[1], "--test", files[2], "--constraints", "0.002,0.007",
              "--links", "loss=0", "loss=0.1", "--policies", "static,send-on-delta,dead-reckoning", "--no-ee",
              "--out", str(out))
    procs.append(ev)
    code, out_text, err = ev.finish(timeout=300)
    assert code == 0, err
    data = json.loads((out / "results.json").read_text())
    keys = {"policy", "constraint", "delay_ms", "loss", "load", "mse_deg2", "p99_abs_err_deg", "tail_fraction",
            "meets_constraint", "params"}
    assert len(data["records"]) == 3 * 2 * 2 + 2 * 2  # and one oracle row per link and ε
    assert all(keys <= set(r) for r in data["records"])
    oracle = [r for r in data["records"] if r["policy"] == "oracle"]
    assert [r["oracle_defined"] for r in oracle] == [True, True, False, False]  # undefined with loss
    assert all(r["load_vs_oracle"] >= 1.0 for r in data["records"] if r["loss"] == 0 and r["meets_constraint"])
    assert all(r["load_vs_oracle"] is None for r in data["records"] if r["loss"] > 0)
    assert (out / "results.csv").read_text().count("\n") == 17
    assert "oracle" in out_text and "/oracle" in out_text
    assert list(out.glob("tradeoff_*.png")) and list(out.glob("errors_*.png"))


def test_trigger_frontier_tool(tmp_path: Path) -> None:
    """tools/trigger_frontier.py: its sweep is the simulator's, its pick the lowest load meeting ε (and the tail
    bound), and it runs end to end on an evaluate results.json."""
    import importlib.util
    import subprocess
    import sys

    spec = importlib.util.spec_from_file_location("trigger_frontier", REPO / "tools" / "trigger_frontier.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    sessions = [synthetic_session(3, 3, seed=3)]
    deltas = np.geomspace(0.01, 1.0, 7)
    rows = tool.sweep(sessions, LinkSpec(), "rms", deltas, [0.002])
    for r in rows:
        m, _ = simulate_many(sessions, parse_policy(f"dead-reckoning:delta={r['delta']:.5g},h=200,norm=rms"),
                             link=LinkSpec(), eps=0.002)
        assert r["load"] == m["load"] and r["mse"] == m["mse_deg2"] and r["tail"][0.002] == m["tail_fraction"]
    meeting = [r for r in rows if r["mse"] <= 0.002]
    assert meeting and tool.lowest_meeting(rows, 0.002)["load"] == min(r["load"] for r in meeting)
    thin = [r for r in meeting if r["tail"][0.002] <= 0.01]
    best = tool.lowest_meeting(rows, 0.002, 0.01)
    assert (best is None) == (not thin) and (best is None or best["load"] == min(r["load"] for r in thin))

    res = write_results_json(tmp_path)
    out = subprocess.run([sys.executable, str(REPO / "tools" / "trigger_frontier.py"), str(res), "--deltas", "6"],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("| perfect")]
    assert [ln.split(" | ")[2] for ln in lines] == ["max", "rms"]


def test_oracle_gap_tool(tmp_path: Path) -> None:
    """tools/oracle_gap.py end to end: each cell's ratio is its load over the oracle's, the three factors multiply
    to the trigger's distance from the oracle; a lossy link is refused with a message."""
    import subprocess
    import sys

    res = write_results_json(tmp_path)
    tool = [sys.executable, str(REPO / "tools" / "oracle_gap.py"), str(res), "--deltas", "6"]
    out = subprocess.run(tool, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    rows = [ln.split(" | ") for ln in out.stdout.splitlines() if ln.startswith("| perfect")]
    assert len(rows) == 1
    cells = rows[0]
    load = [float(c.split(" ")[0]) for c in cells[2:6]]  # oracle, one H, foresight, trigger
    ratios = [float(c.split("(")[1].split("×")[0]) for c in cells[2:6]]
    assert all(x > 0 for x in load) and ratios == pytest.approx([x / load[0] for x in load], abs=0.006)
    factors = [float(x) for x in cells[7].rstrip(" |").split(", ")]
    assert np.prod(factors) == pytest.approx(load[3] / load[0], rel=0.02)
    bad = subprocess.run([*tool, "--link", "loss=0.1"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and "lossless" in bad.stderr


def test_learnt_rows_carry_the_eps_they_were_trained_for(tmp_path: Path) -> None:
    from lab.kctd3.train import random_checkpoint

    ck = random_checkpoint(tmp_path / "p_eps0.007.pt", eps=0.007, action="trigger")
    records, _ = evaluate([synthetic_session(2, 3, seed=1)], [synthetic_session(2, 3, seed=3)], [0.002, 0.007],
                          [LinkSpec()], ["static", f"kc-td3:{ck}"], oracle=False)
    learnt = [r for r in records if r["spec"].startswith("kc-td3:")]
    assert len(learnt) == 2 and all(r["trained_for_eps"] == 0.007 for r in learnt)
    assert all(r["trained_for_eps"] is None for r in records if r["policy"] == "static")
