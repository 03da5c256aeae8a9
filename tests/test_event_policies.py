"""Event-triggered policies and the link model: kernel == reference, chunking invariance, semantics."""

from __future__ import annotations

import numpy as np
import pytest

from device.link_emulation import LinkModel, LinkSpec, LinkSpecError
from device.policies.base import PolicySpecError
from device.policies.event import DeadReckoningPolicy, SendOnDeltaPolicy
from device.policies.registry import parse_policy
from device.policies.static import StaticPolicy
from tests.conftest import synthetic_session
from twin.predictors import OnlinePredictor, make_predictor


@pytest.mark.parametrize("spec", [
    "dead-reckoning:delta=0.05,h=200",
    "dead-reckoning:delta=0.02,pred=quadratic,h=50,hb=100",
    "dead-reckoning:delta=0.1,pred=hold",
    "send-on-delta:delta=0.1",
    "dead-reckoning:delta=0.05,h=200,look=20",
    "dead-reckoning:delta=0.03,h=50,norm=rms,look=5",
])
def test_kernel_matches_reference_and_chunking(spec: str) -> None:
    s = synthetic_session(seconds=8, joints=4)
    whole = parse_policy(spec).select(s.t_us, s.q)
    ref = parse_policy(spec)
    assert isinstance(ref, DeadReckoningPolicy)
    assert np.array_equal(whole, ref.select_reference(s.t_us, s.q))
    chunked_policy = parse_policy(spec)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, len(s.t_us)), size=500, replace=False))
    bounds = zip(np.r_[0, cuts], np.r_[cuts, len(s.t_us)], strict=True)
    parts = [chunked_policy.select(s.t_us[a:b], s.q[a:b]) for a, b in bounds]
    assert np.array_equal(whole, np.concatenate(parts))
    assert 0 < whole.sum() < len(whole)


def test_dead_reckoning_bounds_the_mirrored_error() -> None:
    s = synthetic_session(seconds=5, joints=3)
    delta = 0.05
    pol = DeadReckoningPolicy(delta, "linear", horizon_ms=1e6, heartbeat_ms=1e6)
    sent = pol.select(s.t_us, s.q)
    # Rebuild the mirror with the server's own predictor: between sends the twin stays within delta.
    mirror = OnlinePredictor(make_predictor("linear"))
    pred = None
    for i in range(len(s.t_us)):
        if sent[i]:
            pred = mirror.update(int(s.t_us[i]), s.q[i], pol.horizon_us)
            continue
        assert pred is not None
        assert np.degrees(np.abs(s.q[i] - pred.evaluate(int(s.t_us[i])))).max() <= delta + 1e-9


def test_heartbeat_and_send_on_delta_semantics() -> None:
    t = np.arange(3000, dtype=np.int64) * 1000
    q = np.zeros((3000, 2))
    sent = SendOnDeltaPolicy(0.1, heartbeat_ms=500).select(t, q)
    assert np.flatnonzero(sent).tolist() == [0, 500, 1000, 1500, 2000, 2500]
    q[1200:, 1] = np.radians(0.2)  # a step larger than delta is sent at once
    sent = SendOnDeltaPolicy(0.1, heartbeat_ms=500).select(t, q)
    assert sent[1200]


def test_lookahead_fires_about_one_lookahead_sooner() -> None:
    """After an acceleration onset the error grows as a/2·τ²; a trigger looking L ahead fires up to L sooner (less
    while the device's 20 ms acceleration estimate catches up), and never on motion the twin predicts exactly."""
    t = np.arange(3000, dtype=np.int64) * 1000
    tau = t * 1e-6
    ramp = 10.0 * tau + 100.0 * np.clip(tau - 1.0, 0, None) ** 2  # deg: 10 deg/s, then 200 deg/s² from t = 1 s
    q = np.radians(np.column_stack([ramp, 0.5 * ramp]))

    def first_after_onset(look: float) -> int:
        sent = DeadReckoningPolicy(0.05, horizon_ms=5000, heartbeat_ms=5000, look=look).select(t, q)
        return int(np.flatnonzero(sent[1000:])[0])

    plain, look10, look20 = first_after_onset(0), first_after_onset(10), first_after_onset(20)
    assert 5 <= plain - look10 <= 11 and look20 < look10
    parabola = np.radians(np.column_stack([50 * tau**2 + 3 * tau, -20 * tau**2]))  # what the kinematic twin shows
    for look in (0, 20):
        pol = DeadReckoningPolicy(0.01, horizon_ms=1000, heartbeat_ms=500, look=look)
        sent = np.flatnonzero(pol.select(t, parabola))
        assert np.all(np.diff(sent[sent >= 10]) == 500)  # after the start-up estimates: heartbeats only


def test_lookahead_auto_follows_the_link_estimate() -> None:
    from lab.simulator import simulate

    pol = parse_policy("dead-reckoning:delta=0.1,norm=rms,look=auto")
    assert isinstance(pol, DeadReckoningPolicy) and pol.uses_link and pol.look_us == 0
    pol.set_link(41.0, 0.1)  # one-way: half the RTT
    assert pol.look_us == 20_500 and pol.link_estimate() == (41.0, 0.1)
    assert parse_policy(pol.spec()).spec() == pol.spec() and pol.spec().endswith(",look=auto")
    simulate(synthetic_session(seconds=2, joints=3), pol, "kinematic", LinkSpec(delay_ms=20), eps=0.002)
    assert 20_000 < pol.look_us < 21_000  # the simulator's RTT: twice the delay plus the pipeline
    for bad in ("look=-1", "look=x", "look=inf", "look=5,pred=linear", "look=auto,pred=hold"):
        with pytest.raises(PolicySpecError):
            parse_policy(f"dead-reckoning:delta=0.1,{bad}")


def test_static_policy_every_kth_across_chunks() -> None:
    pol = StaticPolicy(7)
    t = np.arange(100)
    out = np.concatenate([pol.select(t[a:a + 3], np.zeros((len(t[a:a + 3]), 1))) for a in range(0, 100, 3)])
    assert np.flatnonzero(out).tolist() == list(range(0, 100, 7))


def test_bad_policy_specs() -> None:
    for spec in ("nope", "static:k=0", "dead-reckoning", "dead-reckoning:delta=-1", "static:k=x"):
        with pytest.raises(PolicySpecError):
            parse_policy(spec)


def test_link_draws_are_chunk_invariant_and_match_rates() -> None:
    spec = LinkSpec.parse("delay_ms=20,jitter_ms=4,loss=0.1,seed=3")
    keys = np.arange(20000) * 1000
    lost_all, delay_all = LinkModel(spec).up.fates(keys)
    one = LinkModel(spec).up
    singles = [one.fates([k]) for k in keys]
    assert np.array_equal(lost_all, np.array([s[0][0] for s in singles]))
    assert np.array_equal(delay_all, np.array([s[1][0] for s in singles]))
    assert abs(lost_all.mean() - 0.1) < 0.01
    assert delay_all.min() >= 20000 and delay_all.max() <= 24000
    # Uniform jitter: the keyed hash has no visible structure (each tenth of the range gets ~10 %).
    counts = np.histogram(delay_all, bins=10, range=(20000, 24001))[0]
    assert counts.min() > 0.08 * len(keys)


def _fates(spec: LinkSpec, t_us: np.ndarray) -> np.ndarray:
    model = LinkModel(spec)
    return model.up.fates(model.keys(t_us))[0]


def test_link_fates_follow_the_send_not_the_send_order() -> None:
    """Live and simulated runs that differ in one send (an extra resend, or a periodic schedule moved by a sample
    from there on) still deal the other sends the same fates, except those of the slot where they differ. Fates
    drawn in send order used to give the whole rest of the run another loss pattern: the agreement test's MSE
    spread."""
    spec = LinkSpec(loss=0.2, jitter_ms=2, seed=7)
    t = np.arange(1000, 30_000_000, 40_000)
    base = _fates(spec, t)
    extra = np.insert(t, 10, t[10] - 3000)  # one more send early in the run
    assert (np.delete(_fates(spec, extra), 10) != base).sum() <= 3
    shifted = np.r_[t[:10], t[10:] + 1000]  # the schedule moves by one sample from send 10 on
    assert (_fates(spec, shifted) != base).sum() <= 0.05 * len(t)
    # Chunking does not matter (the live device asks send by send, the stepped simulator per status).
    model = LinkModel(spec)
    one_by_one = np.concatenate([model.up.fates(model.keys([x]))[0] for x in t])
    assert np.array_equal(one_by_one, base)
    # At 1 kHz every send of a slot has its own draw: the loss rate holds and is not bunched per slot.
    dense = _fates(spec, np.arange(0, 20_000_000, 1000))
    assert abs(dense.mean() - 0.2) < 0.01
    per_slot = dense.reshape(-1, 100).mean(axis=1)
    assert per_slot.std() < 0.06  # binomial(100, 0.2)/100: 0.04; a shared draw per slot would give 0.4
    # Bursty loss: the chains meet again within a few packets.
    bursty = LinkSpec(loss=0.1, burst=4, seed=7)
    assert np.array_equal(np.delete(_fates(bursty, extra), 10)[40:], _fates(bursty, t)[40:])


def test_gilbert_elliott_bursts_keep_the_average_loss() -> None:
    lost, _ = LinkModel(LinkSpec(loss=0.1, burst=4, seed=1)).up.fates(np.arange(200_000) * 1000)
    assert abs(lost.mean() - 0.1) < 0.01
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, lost.astype(int), 0])))[::2]
    assert 3.0 < runs.mean() < 5.0


def test_bad_link_specs() -> None:
    for text in ("loss=1.5", "delay=3", "delay_ms=x", "burst=0.5"):
        with pytest.raises(LinkSpecError):
            LinkSpec.parse(text)
