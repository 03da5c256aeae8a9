"""Ack-based resend (device.acks): loss detection, resend scheduling, and the same decisions live and simulated."""

from __future__ import annotations

import numpy as np
import pytest

from device.acks import MAX_MISSES, AckTracker, SimulatedAcks, ack_timeout_us, periodic_sends
from device.link_emulation import LinkModel, LinkSpec
from device.policies.base import Policy, PolicySpecError
from device.policies.registry import parse_policy
from device.policies.static import StaticPolicy
from lab.recorded_run import recorded_run
from lab.simulator import PIPELINE_LATENCY_US, simulate
from tests.conftest import synthetic_session
from twin.session import Session


def test_tracker_declares_only_unacknowledged_sends_lost() -> None:
    acks = AckTracker(rtt_ms=1.0)
    tau = ack_timeout_us(1.0)
    acks.sent(0)
    acks.sent(10_000)
    acks.ack(0)
    assert acks.next_deadline_us() == tau
    assert not acks.expire(tau - 1) and acks.declared_lost == 0
    assert not acks.expire(tau)  # the first was acknowledged: retired, not lost
    assert acks.next_deadline_us() == 10_000 + tau
    assert acks.expire(10_000 + tau) and acks.declared_lost == 1
    assert acks.next_deadline_us() is None
    acks.ack(12_345)  # an ack for something never sent (or long retired) is ignored
    assert acks.next_deadline_us() is None


def test_dead_server_gets_at_most_max_misses_resends() -> None:
    """Nobody acknowledges anything: resends stop after MAX_MISSES misses in a row (no flood)."""
    t = np.arange(0, 2_000_000, 1000, dtype=np.int64)
    acks = AckTracker(rtt_ms=1.0)
    out = np.zeros(len(t), dtype=bool)
    periodic_sends(t, out, 0, len(t), 0, 50, acks)
    assert acks.resends == MAX_MISSES
    assert out.sum() == acks.sends <= len(t) // 50 + MAX_MISSES + 1


def test_perfect_link_resend_changes_nothing() -> None:
    s = synthetic_session(seconds=3.0)
    plain = simulate(s, StaticPolicy(25, 50), keep=True)
    resend = simulate(s, StaticPolicy(25, 50, resend=True), keep=True)
    assert plain.sent is not None and resend.sent is not None
    assert np.array_equal(plain.sent, resend.sent) and resend.metrics["resends"] == 0


def test_every_lost_sample_is_followed_by_a_resend_within_the_timeout() -> None:
    s = synthetic_session(seconds=10.0)
    link = LinkSpec(loss=0.2, seed=3)
    res = simulate(s, StaticPolicy(40, 50, resend=True), link=link, keep=True)
    assert res.sent is not None
    idx = np.flatnonzero(res.sent)
    model = LinkModel(link)
    lost, _ = model.up.fates(model.keys(s.t_us[idx]))  # the fates the simulator drew for these sends
    assert lost.sum() > 20 and res.metrics["resends"] >= lost.sum() * 0.9
    tau = ack_timeout_us(2 * PIPELINE_LATENCY_US / 1000)
    lost_i = np.flatnonzero(lost[:-1])
    repaired = s.t_us[idx[lost_i + 1]] <= s.t_us[idx[lost_i]] + tau + 1000
    # Not all: after MAX_MISSES unacknowledged sends in a row (here 20 % loss each way) resending pauses.
    assert repaired.mean() >= 0.98, "lost sends were not repaired within the ack timeout"
    # And it pays: the same static policy without resend shows a far larger error under this loss.
    plain = simulate(s, StaticPolicy(40, 50), link=link)
    assert res.metrics["mse_deg2"] < 0.5 * plain.metrics["mse_deg2"]


def test_simulator_follows_the_timeouts_a_device_recorded() -> None:
    """A recording carries the device's resend timeouts (hello: metadata; then each status): replayed with them,
    every resend leaves exactly that long after the lost send, the value switching at the recorded time."""
    s = synthetic_session(seconds=10.0)
    s.meta["ack_timeout_us"] = 9_000
    s.status = [{"t_us": 5_000_000, "ack_timeout_us": 4_000}, {"t_us": 6_000_000, "rate_hz": 1000.0}]
    replay = recorded_run(s)
    assert replay.ack_timeouts == [(0, 9_000), (5_000_000, 4_000)] and replay.status_us == [5_000_000, 6_000_000]
    link = LinkSpec(loss=0.2, seed=3)
    res = simulate(s, StaticPolicy(40, 50, resend=True), link=link, keep=True, replay=replay)
    assert res.sent is not None
    idx = np.flatnonzero(res.sent)
    model = LinkModel(link)
    lost, _ = model.up.fates(model.keys(s.t_us[idx]))
    resent = np.flatnonzero(lost[:-1] & (np.diff(idx) < 40))  # lost sends followed by a resend
    t_lost, gap = s.t_us[idx[resent]], s.t_us[idx[resent + 1]] - s.t_us[idx[resent]]
    assert set(gap[t_lost < 5_000_000 - 9_000]) == {9_000} and set(gap[t_lost >= 5_000_000]) == {4_000}
    # A send lost within 9 ms before the switch waits for the switch (its 4 ms deadline has passed by then).
    late = (t_lost >= 5_000_000 - 9_000) & (t_lost < 5_000_000)
    assert np.all(t_lost[late] + gap[late] == np.maximum(5_000_000, t_lost[late] + 4_000))
    assert recorded_run(synthetic_session(seconds=1.0)).ack_timeouts == []  # no resend policy recorded


def test_a_shorter_recorded_timeout_applies_to_the_sends_already_waiting() -> None:
    """Live, a status that lowers the timeout makes a waiting send overdue at once; the replay does the same."""
    t = np.arange(0, 300_000, 1000, dtype=np.int64)
    acks = SimulatedAcks(LinkModel(LinkSpec(loss=0.99, seed=1)), 1.0, PIPELINE_LATENCY_US,
                         timeouts=[(0, 30_000), (100_000, 5_000)])
    out = np.zeros(len(t), dtype=bool)
    periodic_sends(t, out, 0, len(t), 90, 1000, acks)
    sends = t[out] // 1000
    assert sends[0] == 90 and sends[1] == 100  # not 120 (90 + the old 30 ms)


def _whole_and_chunked(pol: Policy, s: Session, link: LinkSpec, rtt_ms: float, seed: int) -> tuple[np.ndarray, ...]:
    """Sends of ``pol`` on ``s`` in one call and in random chunks of 1-8 samples (as the live device calls it),
    each from a fresh state with acknowledgements drawn from ``link``."""
    out = []
    for chunked in (False, True):
        pol.reset()
        pol.acks = SimulatedAcks(LinkModel(link), rtt_ms, PIPELINE_LATENCY_US)
        if not chunked:
            out.append(pol.select(s.t_us, s.q))
            continue
        rng = np.random.default_rng(seed)
        parts, i = [], 0
        while i < len(s.t_us):
            j = i + int(rng.integers(1, 9))
            parts.append(pol.select(s.t_us[i:j], s.q[i:j]))
            i = j
        out.append(np.concatenate(parts))
    return tuple(out)


def test_chunked_select_with_acks_equals_whole_session() -> None:
    """The live device calls select on chunks of a few samples; the decisions must not depend on chunking."""
    s = synthetic_session(seconds=5.0)
    pol = StaticPolicy(30, 50, resend=True)
    whole, chunked = _whole_and_chunked(pol, s, LinkSpec(delay_ms=3, jitter_ms=1, loss=0.15, seed=5), 7.0, 1)
    assert np.array_equal(chunked, whole)
    assert pol.acks is not None and pol.acks.resends > 0


def test_resend_in_policy_specs() -> None:
    assert parse_policy("static:k=10,h=20,resend=1").spec() == "static:k=10,h=20,resend=1"
    assert parse_policy("static:k=10,h=20,resend=0").spec() == "static:k=10,h=20"
    with pytest.raises(PolicySpecError, match="expected 0 or 1"):
        parse_policy("static:k=10,resend=maybe")


def test_dead_reckoning_resend_is_chunk_invariant_and_repairs_loss() -> None:
    s = synthetic_session(seconds=6.0)
    link = LinkSpec(loss=0.15, seed=3)
    spec = "dead-reckoning:delta=0.05,h=200,resend=1"
    pol = parse_policy(spec)
    whole, chunked = _whole_and_chunked(pol, s, link, 1.0, 2)
    assert np.array_equal(chunked, whole) and pol.acks is not None and pol.acks.resends > 0
    plain = "dead-reckoning:delta=0.05,h=200"
    assert np.array_equal(simulate(s, parse_policy(spec), keep=True).sent,  # perfect link: nothing to resend
                          simulate(s, parse_policy(plain), keep=True).sent)
    lossy = simulate(s, parse_policy(spec), link=link).metrics
    assert lossy["mse_deg2"] < 0.5 * simulate(s, parse_policy(plain), link=link).metrics["mse_deg2"]


def test_a_replay_uses_the_pipeline_latency_the_device_measured() -> None:
    """The device's median sample -> server latency, less the emulated link delay, replaces the nominal 0.5 ms."""
    s = synthetic_session(seconds=2.0)
    assert recorded_run(s).pipeline_latency_us is None
    s.meta["link"] = "delay_ms=20,jitter_ms=2,loss=0"
    s.summary = {"uplink_latency_p50_ms": 22.1}
    assert recorded_run(s).pipeline_latency_us == 1100
    late = simulate(s, StaticPolicy(40, 100), link=LinkSpec(delay_ms=20, jitter_ms=2), replay=recorded_run(s))
    s.summary = {"uplink_latency_p50_ms": 21.5}
    nominal = simulate(s, StaticPolicy(40, 100), link=LinkSpec(delay_ms=20, jitter_ms=2), replay=recorded_run(s))
    assert late.metrics["mse_deg2"] != nominal.metrics["mse_deg2"]


def test_recorded_resend_checks_override_the_link_model() -> None:
    """A live device records each resend check (send, sample checked at, reply back?); the simulator retires
    those sends as recorded - a reply the host delayed past the deadline is a loss even when the link model
    delivered it - and sends it never checked (the run ended) stay pending."""
    t = np.arange(0, 400_000, 1000, dtype=np.int64)
    perfect = LinkModel(LinkSpec())
    retired = {0: (6_000, True), 100_000: (107_000, False), 200_000: (205_000, True), 300_000: (-1, False)}
    acks = SimulatedAcks(perfect, 1.0, PIPELINE_LATENCY_US, timeouts=[(0, 5_000)], retired=retired)
    out = np.zeros(len(t), dtype=bool)
    periodic_sends(t, out, 0, len(t), 0, 100, acks)
    # The send at 100 ms was declared lost at 107 ms (2 ms after its nominal deadline): a resend there, and the
    # period restarts from it; 300 ms was never checked, so no resend follows it.
    np.testing.assert_array_equal(t[out] // 1000, [0, 100, 107, 207, 307])
    assert acks.resends == 1 and acks.declared_lost == 1


def test_recorded_arrivals_are_where_the_twin_took_each_prediction() -> None:
    """Recorded arrivals replace the modelled ones for the sends they name (-1: never came back), and the last
    record of a sample wins; sends the recording does not name follow the link model."""
    s = synthetic_session(seconds=1.0, joints=1)
    s.summary = {"last_selected_t_us": int(s.t_us[-1])}
    s.timing = {"pred_t0_us": np.array([0, 100_000, 100_000, 200_000]),
                "pred_arrival_us": np.array([500, -1, 150_000, -1]),
                "ack_t_us": np.zeros(0, dtype=np.int64), "ack_check_us": np.zeros(0, dtype=np.int64),
                "ack_ok": np.zeros(0, dtype=np.int64)}
    replay = recorded_run(s)
    res = simulate(s, StaticPolicy(100, 0), "hold", keep=True, replay=replay)
    assert res.qhat is not None
    q, qhat, t = s.q[:, 0], res.qhat[:, 0], s.t_us
    assert qhat[(t >= 100_000) & (t < 150_000)] == pytest.approx(q[0])  # 100 ms's sample arrived at 150 ms
    assert qhat[(t >= 150_000) & (t < 300_500)] == pytest.approx(q[100])  # 200 ms's never came back
    assert qhat[(t >= 300_500) & (t < 400_500)] == pytest.approx(q[300])  # 300 ms: the modelled 0.5 ms
