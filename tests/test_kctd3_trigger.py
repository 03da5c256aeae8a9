"""KC-TD3's trigger action mode: the actor picks the dead-reckoning threshold δ and H; between decisions the policy
is the dead-reckoning trigger itself (docs/kctd3.md)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch

from device.link_emulation import LinkSpec
from device.policies.base import PolicySpecError
from device.policies.event import DeadReckoningPolicy
from device.policies.kctd3.checkpoint import load_checkpoint
from device.policies.kctd3.knowledge import (
    DELTA_MAX_DEG,
    DELTA_MIN_DEG,
    H_MAX_MS,
    MARGIN_CLIP,
    action_to_dh,
    dh_to_action,
    expert_dh,
)
from device.policies.kctd3.policy import DECISION_US, INIT_DELTA_DEG, INIT_H_MS, KCTD3Policy
from device.policies.registry import parse_policy
from lab.kctd3.config import TrainConfig
from lab.kctd3.train import random_checkpoint, train
from lab.simulator import simulate
from tests.conftest import synthetic_session

torch.set_num_threads(1)


@pytest.fixture
def trig(tmp_path: Path) -> Path:
    return random_checkpoint(tmp_path / "trig.pt", eps=0.002, seed=1, action="trigger")


def test_delta_action_mapping_bounds_and_inverse() -> None:
    for a0 in np.linspace(-1.5, 1.5, 31):
        for a1 in (-2.0, -0.3, 0.0, 0.7, 2.0):
            d, h = action_to_dh(np.array([a0, a1]))
            assert DELTA_MIN_DEG - 1e-12 <= d <= DELTA_MAX_DEG + 1e-12 and 0 <= h <= H_MAX_MS
            assert np.allclose(action_to_dh(dh_to_action(d, h)), (d, h))
    assert action_to_dh(np.array([-1.0, -1.0])) == pytest.approx((DELTA_MIN_DEG, 0.0))
    assert action_to_dh(np.array([1.0, 1.0])) == pytest.approx((DELTA_MAX_DEG, H_MAX_MS))


def test_expert_scales_the_searched_delta_by_the_error_margin() -> None:
    table = {"delay_ms": [0.0, 10.0, 20.0], "loss": [0.0, 0.1], "delta_deg": [[0.1, 0.05], [0.2, 0.15], [0.3, 0.25]],
             "h_ms": [[50.0, 200.0], [200.0, 500.0], [500.0, 500.0]]}
    eps = 0.002
    # On target: δ* itself; the nearest link of the grid (RTT 21 ms -> one-way ≈ 10 ms, loss 0.08 -> 0.1).
    assert expert_dh(table, 0.0, 0.0, 0.8 * eps, eps) == pytest.approx((0.1, 50.0))
    assert expert_dh(table, 21.0, 0.08, 0.8 * eps, eps) == pytest.approx((0.15, 500.0))
    # Error 4x under the target: δ x 2 (δ² ∝ MSE); far above it: clipped at x 0.5; no window yet: the upper clip.
    assert expert_dh(table, 0.0, 0.0, 0.2 * eps, eps)[0] == pytest.approx(0.2)
    assert expert_dh(table, 0.0, 0.0, 100 * eps, eps)[0] == pytest.approx(0.1 * MARGIN_CLIP[0])
    assert expert_dh(table, 0.0, 0.0, float("nan"), eps)[0] == pytest.approx(0.1 * MARGIN_CLIP[1])
    assert expert_dh(table, 0.0, 0.0, 0.8 * eps, eps, safety=4.0)[0] == pytest.approx(0.05)


def test_retargeted_kernel_matches_reference_and_keeps_each_sends_horizon() -> None:
    """δ and H changed between chunks: the compiled kernel equals the numpy path on the predictor objects (which
    stores each send's own H), and a prediction already in effect keeps the H it was sent with."""
    s = synthetic_session(seconds=6, joints=4)
    rng = np.random.default_rng(3)
    cuts = np.r_[0, np.sort(rng.choice(np.arange(1, len(s.t_us)), 60, replace=False)), len(s.t_us)]
    params = [(float(rng.uniform(0.01, 0.3)), float(rng.choice([0.0, 5.0, 50.0, 300.0]))) for _ in cuts[1:]]
    kernel, ref = (DeadReckoningPolicy(0.05, "kinematic", 100.0) for _ in range(2))
    out_k, out_r = [], []
    for (a, b), (d, h) in zip(pairwise(cuts), params, strict=True):
        kernel.retarget(d, h)
        ref.retarget(d, h)
        out_k.append(kernel.select(s.t_us[a:b], s.q[a:b]))
        out_r.append(ref.select_reference(s.t_us[a:b], s.q[a:b]))
    assert np.array_equal(np.concatenate(out_k), np.concatenate(out_r))
    assert 50 < np.concatenate(out_k).sum() < len(s.t_us) // 2
    with pytest.raises(PolicySpecError, match="delta"):
        kernel.retarget(0.0, 10.0)


def _dr_following(policy: KCTD3Policy, s_t: np.ndarray, s_q: np.ndarray, chunk: int) -> tuple[np.ndarray, ...]:
    """Run ``policy`` in chunks; a plain ``DeadReckoningPolicy`` retargeted to the policy's (δ, H) at each of
    its decisions must send exactly the same samples with the same horizons."""
    policy.reset()
    dr = DeadReckoningPolicy(INIT_DELTA_DEG, "kinematic", INIT_H_MS, norm=policy.trigger_norm,
                             look="auto" if policy.trigger_look == "auto" else 0.0)
    dr.set_link(policy.rtt_ms, policy.loss)
    sent, hz, ref, ref_hz = [], [], [], []
    t_next = int(s_t[0]) + DECISION_US  # the first decision keeps the initial action
    for a in range(0, len(s_t), chunk):
        b = min(a + chunk, len(s_t))
        sent.append(policy.select(s_t[a:b], s_q[a:b]))
        hz.append(policy.sample_horizons_us.copy())
        i = a
        while i < b:  # the reference, cut at the decision times, retargeted to what the policy chose there
            j = min(b, i + int(np.searchsorted(s_t[i:b], t_next, side="left")))
            if j > i:
                ref.append(dr.select(s_t[i:j], s_q[i:j]))
                ref_hz.append(np.full(j - i, dr.horizon_us, dtype=np.int64))
            if j < b:
                d, h = action_to_dh(next(act for row, _, act, _ in policy.trace if row == j))  # its decision at j
                dr.retarget(d, h)
                t_next += DECISION_US
            i = j
    return tuple(np.concatenate(x) for x in (sent, hz, ref, ref_hz))


@pytest.mark.parametrize(("chunk", "norm", "look"), [(30_000, "max", False), (37, "max", False), (250, "max", False),
                                                   (30_000, "rms", False), (37, "rms", False), (37, "rms", True)])
def test_between_decisions_the_policy_is_dead_reckoning(tmp_path: Path, chunk: int, norm: str, look: bool) -> None:
    s = synthetic_session(seconds=4.0, joints=3)
    path = random_checkpoint(tmp_path / "trig.pt", eps=0.002, seed=1, action="trigger", trigger_norm=norm,
                             trigger_look=look)
    pol = KCTD3Policy(path, record=True, resend=False, rtt_ms=30.0)
    assert pol.trigger and pol.trigger_norm == norm
    assert pol.display_name == ("kc-td3-trigger" if norm == "max" else "kc-td3-trigger-rms") + ("-look" if look else "")
    # trigger_look: the trigger looks one one-way delay (half the RTT estimate) ahead, and follows the estimate.
    assert pol._dr.look_us == (15_000 if look else 0)
    sent, hz, ref, ref_hz = _dr_following(pol, s.t_us, s.q, chunk)
    assert np.array_equal(sent, ref) and np.array_equal(hz, ref_hz)
    deltas = {round(action_to_dh(a)[0], 9) for _, _, a, _ in pol.trace}
    assert len(deltas) > 5 and 0 < sent.sum() < len(sent)  # the actor really moved δ
    assert "delta_deg" in pol.status() and np.isfinite(pol.k)
    pol.set_link(10.0, 0.0)
    assert pol._dr.look_us == (5_000 if look else 0)


def test_trigger_mode_resends_through_the_simulator(trig: Path) -> None:
    s = synthetic_session(seconds=4.0)
    pol = parse_policy(f"kc-td3:{trig.with_suffix('.pt')}")
    assert isinstance(pol, KCTD3Policy) and pol.trigger and pol.resend
    m = simulate(s, pol, link=LinkSpec(loss=0.1, delay_ms=5, seed=2), eps=0.002).metrics
    assert m["resends"] > 0 and 0 < m["sent"] < m["samples"] and np.isfinite(m["mse_deg2"])
    again = simulate(s, pol, link=LinkSpec(loss=0.1, delay_ms=5, seed=2), eps=0.002).metrics
    assert again["sent"] == m["sent"] and again["resends"] == m["resends"]  # reset() restarts the trigger too


def test_checkpoint_action_mode(tmp_path: Path, trig: Path) -> None:
    old = random_checkpoint(tmp_path / "old.pt")
    ck = load_checkpoint(old)
    del ck["meta"]["action"]  # checkpoints written before the trigger mode: (k, H)
    assert not KCTD3Policy(old, checkpoint=ck).trigger
    ck = load_checkpoint(trig)
    del ck["meta"]["trigger_norm"]  # trigger checkpoints written before the option: the max-joint trigger
    assert KCTD3Policy(trig, checkpoint=ck)._dr.norm == "max"
    ck["meta"]["trigger_norm"] = "l7"
    with pytest.raises(PolicySpecError, match="trigger norm"):
        KCTD3Policy(trig, checkpoint=ck)
    ck = load_checkpoint(trig)
    ck["meta"]["trigger_look"] = "sometimes"
    with pytest.raises(PolicySpecError, match="trigger_look"):
        KCTD3Policy(trig, checkpoint=ck)
    ck["meta"]["trigger_look"], ck["meta"]["predictor"] = "auto", "quadratic"
    with pytest.raises(PolicySpecError, match="kinematic"):
        KCTD3Policy(trig, checkpoint=ck)
    ck = load_checkpoint(old)
    ck["meta"]["action"] = "bogus"
    with pytest.raises(PolicySpecError, match="action mode"):
        KCTD3Policy(old, checkpoint=ck)
    ck = load_checkpoint(trig)
    ck["meta"]["predictor"] = "none"
    with pytest.raises(PolicySpecError, match="trigger kernel"):
        KCTD3Policy(trig, checkpoint=ck)


@pytest.mark.parametrize(("norm", "look"), [("max", False), ("rms", False), ("rms", True)])
def test_short_trigger_training_stores_the_mode_and_the_expert_table(tmp_path: Path, norm: str, look: bool) -> None:
    sessions = [synthetic_session(seconds=2.0, seed=s) for s in (0, 1)]
    cfg = TrainConfig(eps=0.002, episodes=4, warmup_episodes=2, episode_s=1.0, updates_per_episode=10,
                      critic_warmup=10, bc_steps=10, bisect_steps=2, batch=32, tail_max=0.05, action="trigger",
                      trigger_norm=norm, trigger_look=look)
    meta, curves = train(sessions, cfg, tmp_path / "t.pt", progress=False)
    assert meta["action"] == "trigger" and meta["delta_range_deg"] == [DELTA_MIN_DEG, DELTA_MAX_DEG]
    assert meta["trigger_norm"] == norm and meta.get("trigger_look", "off") == ("auto" if look else "off")
    table = meta["trigger_expert"]
    # The expert starts from the search over the trigger the actor drives.
    assert table["family"] == ("dead-reckoning" if norm == "max" else "dead-reckoning-rms") + ("-look" if look else "")
    assert np.array(table["delta_deg"]).shape == (3, 3) and np.array(table["h_ms"]).max() <= H_MAX_MS
    pol = parse_policy(f"kc-td3:{tmp_path / 't.pt'}")
    assert isinstance(pol, KCTD3Policy) and pol.trigger and pol.dr_table == table and pol._dr.norm == norm
    assert simulate(sessions[0], pol).metrics["sent"] > 0 and len(curves) == 4


@pytest.mark.parametrize("action", ["trigger", "kh"])
def test_expert_actor_runs_the_expert_rule_in_place_of_the_network(tmp_path: Path, action: str) -> None:
    s = synthetic_session(seconds=3.0, joints=3)
    path = random_checkpoint(tmp_path / "p.pt", eps=0.002, seed=1, action=action)
    spec = f"kc-td3:{path},actor=expert"
    pol = parse_policy(spec)
    assert isinstance(pol, KCTD3Policy) and pol.spec() == spec and pol.display_name.endswith("-expert")
    pol.record = True
    net = KCTD3Policy(path, record=True)
    m, m_net = simulate(s, pol).metrics, simulate(s, net).metrics
    assert len(pol.trace) > 10 and all(np.array_equal(a, np.clip(e, -1, 1)) for _, _, a, e in pol.trace)
    # The random network does not act as the expert, so the two runs really differ.
    assert any(not np.allclose(a, e) for _, _, a, e in net.trace) and m["sent"] != m_net["sent"]
    with pytest.raises(PolicySpecError, match="actor must be"):
        parse_policy(f"kc-td3:{path},actor=oracle")
    with pytest.raises(PolicySpecError, match="online=1 would learn nothing"):
        parse_policy(f"kc-td3:{path},actor=expert,online=1")
    ck = load_checkpoint(path)
    ck["meta"]["expert_knowledge"] = False
    with pytest.raises(PolicySpecError, match="no-knowledge"):
        KCTD3Policy(path, checkpoint=ck, actor="expert")
