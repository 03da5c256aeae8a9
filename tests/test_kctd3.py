"""KC-TD3: action mapping, expert rule, device inference (no torch), chunking invariance, training, live loop."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from device.link_emulation import LinkSpec
from device.policies.base import PolicySpecError
from device.policies.kctd3.checkpoint import lambda_at, load_checkpoint
from device.policies.kctd3.knowledge import H_MAX_MS, K_MAX, K_MIN, action_to_kh, expert_kh, kh_to_action, motion_stats
from device.policies.kctd3.online import OnlineLearner
from device.policies.kctd3.policy import DECISION_US, STATE_DIM, KCTD3Policy, _Mirror
from device.policies.registry import parse_policy
from lab.kctd3.config import TrainConfig
from lab.kctd3.export import export_npz
from lab.kctd3.train import random_checkpoint, train
from lab.simulator import simulate
from tests.conftest import REPO, Proc, synthetic_session
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.predictors import OnlinePredictor, make_predictor
from twin.session import write_session

torch.set_num_threads(1)


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    return random_checkpoint(tmp_path / "rand.pt", eps=0.002, seed=1)


def test_action_mapping_bounds_and_inverse() -> None:
    grid = np.linspace(-1.5, 1.5, 61)
    for a0 in grid:
        for a1 in grid:
            k, h = action_to_kh(np.array([a0, a1]))
            assert isinstance(k, int) and K_MIN <= k <= K_MAX
            assert 0.0 <= h <= H_MAX_MS
    assert action_to_kh(np.array([-1.0, -1.0])) == (1, 0.0)
    assert action_to_kh(np.array([1.0, 1.0])) == (200, 500.0)
    ks = [action_to_kh(np.array([a, 0.0]))[0] for a in np.linspace(-1, 1, 101)]
    assert ks == sorted(ks)  # log-scale, monotone
    for k in (1, 7, 40, 200):
        assert action_to_kh(kh_to_action(k, 123.0)) == (k, pytest.approx(123.0))


def test_expert_rule_monotonic() -> None:
    jerk = np.logspace(1, 6, 60)
    stats = np.stack([np.full_like(jerk, 20.0), np.full_like(jerk, 100.0), jerk], axis=1)
    k, h = expert_kh(stats, eps=0.002, rtt_ms=1.0, loss=0.0)
    assert k.shape == (60,) and np.all(np.diff(k) <= 0), "more jerk must never allow a larger k"
    assert k[0] > k[-1]
    assert np.all((k >= K_MIN) & (k <= K_MAX)) and np.all((h >= 0) & (h <= H_MAX_MS))
    assert np.all(h >= k)  # the horizon covers the gap
    # Stricter constraint, longer delay, more loss or a more cautious safety factor: never a larger k.
    s = np.array([20.0, 100.0, 3000.0])
    base = expert_kh(s, 0.007, 1.0, 0.0)[0]
    assert expert_kh(s, 0.002, 1.0, 0.0)[0] <= base
    assert expert_kh(s, 0.007, 30.0, 0.0)[0] <= base
    assert expert_kh(s, 0.007, 1.0, 0.1)[0] <= base
    assert expert_kh(s, 0.007, 1.0, 0.0, safety=10)[0] <= base
    # Other predictors use their own error growth (hold: velocity, linear: acceleration).
    assert expert_kh(np.array([200.0, 100.0, 3000.0]), 0.002, 1.0, 0.0, "hold")[0] < base


def test_motion_stats_recovers_a_cubic() -> None:
    t = np.arange(100, dtype=np.int64) * 1000
    tau = (t - t[-1]) * 1e-6
    jerk_deg = 600.0
    q = np.radians(jerk_deg / 6 * tau**3)[:, None] * np.ones((1, 3))
    v, a, j = motion_stats(t, q)
    assert j == pytest.approx(jerk_deg, rel=1e-6)
    assert a > 0 and v > 0


def test_inference_through_parse_policy_and_simulate(ckpt: Path, tmp_path: Path) -> None:
    pol = parse_policy(f"kc-td3:{ckpt.with_suffix('.pt')}")
    assert isinstance(pol, KCTD3Policy) and pol.spec() == f"kc-td3:{ckpt.with_suffix('.pt')}"
    s = synthetic_session(seconds=3.0)
    res = simulate(s, pol, link=LinkSpec(loss=0.1, delay_ms=5), eps=0.002, keep=True)
    m = res.metrics
    assert 0 < m["sent"] <= m["samples"] and np.isfinite(m["mse_deg2"])
    assert pol.rtt_ms == pytest.approx(11.0)  # the simulator hands the policy the emulated link
    assert len(pol.sample_horizons_us) == len(s.t_us)
    assert np.all((pol.sample_horizons_us >= 0) & (pol.sample_horizons_us <= H_MAX_MS * 1000))
    assert np.isfinite(pol.avg_mse) and set(pol.status()) == {"k", "h_ms", "lambda", "avg_mse", "eps"}
    # A checkpoint without expert knowledge is the TD3 ablation: same class, family from the checkpoint.
    ck = load_checkpoint(ckpt)
    ck["meta"]["expert_knowledge"] = False
    td3 = KCTD3Policy(tmp_path / "x.pt", checkpoint=ck)
    assert td3.family == "td3" and td3.spec().startswith("td3:")


def test_chunked_select_equals_whole_session(ckpt: Path) -> None:
    s = synthetic_session(seconds=2.5)
    pol = KCTD3Policy(ckpt, rtt_ms=4.0, loss=0.05, record=True)
    whole = pol.select(s.t_us, s.q)
    h_whole = pol.sample_horizons_us.copy()
    trace = [(i, raw.copy()) for i, raw, _, _ in pol.trace]
    pol.reset()
    rng = np.random.default_rng(0)
    masks, hs, i = [], [], 0
    while i < len(s.t_us):
        j = i + int(rng.integers(1, 37))
        masks.append(pol.select(s.t_us[i:j], s.q[i:j]))
        hs.append(pol.sample_horizons_us.copy())
        i = j
    assert np.array_equal(np.concatenate(masks), whole)
    assert np.array_equal(np.concatenate(hs), h_whole)
    assert len(pol.trace) == len(trace) == len(range(100, 2500, DECISION_US // 1000))  # first: initial action
    for (i0, r0), (i1, r1, _, _) in zip(trace, pol.trace, strict=True):
        assert i0 == i1 and np.allclose(r0, r1)


def test_mirror_equals_online_predictor() -> None:
    """The vectorised mirror gives the rows OnlinePredictor.update gives, send by send (what the server runs)."""
    s = synthetic_session(seconds=1.0)
    idx = np.arange(3, 1000, 37)
    d = quad_fit(s.t_us, s.q, idx, DERIV_WINDOW)[:, 1:]
    for name in ("kinematic", "quadratic", "linear", "hold"):
        mirror, online = _Mirror(name), OnlinePredictor(make_predictor(name))
        for part in np.array_split(np.arange(len(idx)), 4):
            mirror.add(s.t_us[idx[part]], s.q[idx[part]], d[part], np.full(len(part), 50_000), 0)
        assert mirror.p is not None
        rows = [online.update(int(s.t_us[i]), s.q[i], 50_000, d[n] if online.uses_derivatives else None).coeffs
                for n, i in enumerate(idx)]
        assert np.allclose(mirror.p[3], np.stack(rows)), name


def test_lambda_grid_interpolation() -> None:
    grid = {"delay_ms": [0.0, 10.0, 20.0], "loss": [0.0, 0.1], "values": [[1.0, 4.0], [2.0, 8.0], [4.0, 16.0]]}
    assert lambda_at(grid, rtt_ms=1.0, loss=0.0) == pytest.approx(1.0)
    assert lambda_at(grid, rtt_ms=21.0, loss=0.1) == pytest.approx(8.0)
    assert lambda_at(grid, rtt_ms=11.0, loss=0.05) == pytest.approx(np.sqrt(2.0) * 2.0)  # log-bilinear
    assert lambda_at(grid, rtt_ms=500.0, loss=0.5) == pytest.approx(16.0)  # clamped


def test_online_learner_moves_lambda_and_stops(ckpt: Path) -> None:
    pol = KCTD3Policy(ckpt)
    learner = OnlineLearner(pol, lr=0.2, period_s=0.01)
    lam0 = pol.lam
    learner.observe([10 * pol.eps] * 20)  # far above the constraint: be more careful
    learner.step()
    assert pol.lam > lam0
    raised = pol.lam
    learner.observe([0.0] * 20)  # far below: less careful
    learner.step()
    assert pol.lam < raised
    lowered = pol.lam
    learner.step()  # nothing queued and no mirrored windows: no change
    assert pol.lam == lowered
    learner.start()
    learner.stop()  # joins: the leak check fails the test otherwise


def test_device_module_does_not_import_torch(ckpt: Path) -> None:
    code = ("import sys, numpy as np; from device.policies.registry import parse_policy; "
            f"p = parse_policy('kc-td3:{ckpt}'); p.select(np.arange(500) * 1000, np.zeros((500, 3))); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_decision_latency_measured(ckpt: Path) -> None:
    """Prints the time per decision (perf targets live in bench/bench_kctd3.py)."""
    pol = KCTD3Policy(ckpt)
    s = synthetic_session(seconds=5.0, joints=7)
    pol.select(s.t_us[:200], s.q[:200])
    x = np.zeros(STATE_DIM)
    t0 = time.perf_counter()
    for _ in range(2000):
        pol.act(x)
    mlp_us = (time.perf_counter() - t0) / 2000 * 1e6
    t0 = time.perf_counter()
    pol.select(s.t_us[200:], s.q[200:])
    per_decision_us = (time.perf_counter() - t0) / 48 * 1e6
    print(f"\nKC-TD3 MLP forward {mlp_us:.1f} µs; whole decision window (mirror, features, expert, MLP, "
          f"100 samples of select) {per_decision_us:.0f} µs")


def test_short_training_writes_checkpoint_and_curves(tmp_path: Path) -> None:
    sessions = [synthetic_session(seconds=3.0, seed=s) for s in (0, 1)]
    cfg = TrainConfig(eps=0.002, episodes=4, warmup_episodes=2, episode_s=1.0, updates_per_episode=10,
                      critic_warmup=10, bc_steps=10, bisect_steps=2, batch=32, tail_max=0.05)
    meta, curves = train(sessions, cfg, tmp_path / "p.pt", progress=False)
    assert len(curves) == 4 and meta["training"]["episodes"] == 4
    assert np.array(meta["lambda_grid"]["values"]).shape == (3, 3)
    pol = parse_policy(f"kc-td3:{tmp_path / 'p.pt'}")
    assert simulate(sessions[0], pol).metrics["sent"] > 0
    # Same seed, same checkpoint.
    train(sessions, cfg, tmp_path / "q.pt", progress=False)
    a, b = np.load(tmp_path / "p.npz"), np.load(tmp_path / "q.npz")
    assert all(np.array_equal(a[k], b[k]) for k in ("W0", "W2", "obs_mean"))
    a.close()
    b.close()
    # The device never loads the .pt (torch): without its .npz it says how to write one, and the lab does.
    kept = load_checkpoint(tmp_path / "p.pt")
    (tmp_path / "p.npz").unlink()
    with pytest.raises(PolicySpecError, match=r"python -m lab\.kctd3\.export"):
        load_checkpoint(tmp_path / "p.pt")
    assert export_npz(tmp_path / "p.pt") == tmp_path / "p.npz"
    again = load_checkpoint(tmp_path / "p.pt")
    assert again["meta"] == kept["meta"] and np.array_equal(again["W0"], kept["W0"])


# The cost knobs shrink behaviour cloning, critic warm-up and the λ bisections (which do not shrink with
# --episodes); the guard is for a hang, not for speed: a 2-core box shared with other jobs is several times slower.
@pytest.mark.timeout(900)
def test_train_cli_writes_checkpoint_and_curves(tmp_path: Path) -> None:
    path = tmp_path / "s.mcap"
    write_session(path, synthetic_session(seconds=3.0))
    out = tmp_path / "pol.pt"
    p = Proc("train", str(path), "--constraint", "0.002", "--episodes", "2", "--seed", "3", "-o", str(out), "--quiet",
             "--tail-max", "0.05", "--seeds", "2", "--bc-steps", "20", "--critic-warmup", "20", "--bisect-steps", "2")
    code, text, err = p.finish(timeout=840)
    assert code == 0, err
    assert "trained kc-td3" in text and "<- kept" in text
    for f in (out, out.with_suffix(".npz"), tmp_path / "pol_curves.csv", tmp_path / "pol_curves.png"):
        assert f.exists() and f.stat().st_size > 0, f
    seeds = json.loads((tmp_path / "pol_seeds.json").read_text())
    assert [r["seed"] for r in seeds] == [3, 4]
    assert sorted(f.name for f in tmp_path.iterdir() if ".seed" in f.name) == []  # the other seed is removed
    meta = json.loads(str(np.load(out.with_suffix(".npz"))["meta_json"]))
    assert meta["schema"] == 1 and meta["expert_knowledge"] and meta["predictor"] == "kinematic"
    config = meta["training"]["config"]  # the knobs reached the trainer and are recorded with the checkpoint
    assert (config["bc_steps"], config["critic_warmup"], config["bisect_steps"]) == (20, 20, 2)


def test_live_device_with_online_learning(procs: list[Proc], ckpt: Path, tmp_path: Path) -> None:
    session = tmp_path / "arm.mcap"
    write_session(session, synthetic_session(seconds=4.0))
    srv = Proc("server", "--bind", "tcp://127.0.0.1:*", "--pub", "none", "--predictor", "kinematic")
    procs.append(srv)
    endpoint = srv.value("bind")
    arm = Proc("mock-arm", str(session))
    procs.append(arm)
    port = arm.value("port")
    summ = tmp_path / "dev.json"
    dev = Proc("device", "--port", port, "--server", endpoint, "--policy", f"kc-td3:{ckpt}", "--duration", "2.5",
               "--online-learning", "--link", "loss=0.1,seed=2", "--summary-json", str(summ))
    procs.append(dev)
    line = dev.wait_line("rate=", contains="lam=", timeout=30)
    assert "mirror_avg_mse=" in line and "k=" in line and "H=" in line and "resent=" in line
    code, _, err = dev.finish()
    assert code == 0, err
    summary = json.loads(summ.read_text())
    assert summary["sent"] > 0 and np.isfinite(summary["mse_deg2"])
    # The checkpoint resends: emulated losses were noticed from the missing predictions and repaired.
    assert summary["emulated_lost_up"] > 0 and summary["declared_lost"] >= summary["emulated_lost_up"]
    assert 0 < summary["resends"] <= summary["declared_lost"]


def test_auto_tail_max_is_the_best_static_policys_tail() -> None:
    """``--tail-max auto``: per (delay, loss) of the λ grid, margin x the tail fraction of the static (k, H) that
    the evaluation harness picks on the training sessions on that link."""
    from lab.evaluate import evaluate
    from lab.kctd3.calibrate import GRID_DELAY_MS, GRID_LOSS, static_tail_table, tail_bound

    sessions = [synthetic_session(seconds=2.0, seed=4)]
    cfg = TrainConfig(eps=0.002, seed=5)  # the loss patterns do not depend on the training seed
    table = static_tail_table(sessions, cfg, realisations=1)
    assert len(table) == len(GRID_DELAY_MS) and all(len(row) == len(GRID_LOSS) for row in table)
    for d, row in zip(GRID_DELAY_MS, table, strict=True):
        records, _ = evaluate(sessions, sessions, [cfg.eps], [LinkSpec(delay_ms=d, loss=p, seed=0) for p in GRID_LOSS],
                              ["static"], oracle=False)
        assert row == pytest.approx([cfg.tail_margin * r["tail_fraction"] for r in records])
    pooled = static_tail_table(sessions, cfg)  # three loss patterns per lossy level
    assert pooled[0][0] == table[0][0]
    cfg.tail_table = table
    assert tail_bound(cfg, 0.025) == pytest.approx((table[0][0] + table[0][1]) / 2)
    assert tail_bound(cfg, 0.0, delay_ms=15.0) == pytest.approx((table[1][0] + table[2][0]) / 2)
    cfg.tail_max = 0.01
    assert tail_bound(cfg, 0.025) == 0.01
