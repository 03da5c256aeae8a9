"""device.scoring: the prediction log (dedup, acknowledgement, pruning, clock mapping) and the tracking monitor
(samples held for the scoring lag, then scored and recorded; load)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pytest

from device.recorder import Recorder
from device.scoring import PredictionLog, TrackingMonitor
from twin.constants import REPEAT_MAX
from twin.display import Prediction

RAD2DEG = 180.0 / np.pi


def pred(t0: int, q: float, v: float = 0.0, h: int = 1_000_000, joints: int = 1) -> Prediction:
    """q(t) = q + v * (t - t0) [s], frozen at t0 + h."""
    return Prediction(t0_us=t0, horizon_us=h, coeffs=np.array([[q] * joints, [v] * joints], dtype=np.float64))


class BlockSink:
    """Stands in for the Recorder: keeps the blocks the monitor hands over."""

    def __init__(self) -> None:
        self.blocks: list[tuple[np.ndarray, ...]] = []
        self.timings: list[dict[str, list[int]]] = []

    def block(self, *arrays: Any) -> None:
        self.blocks.append(tuple(np.asarray(a) for a in arrays))

    def timing(self, t_us: int, timing: dict[str, list[int]]) -> None:
        self.timings.append(timing)

    def timing_column(self, name: str) -> list[int]:
        return [v for tm in self.timings for v in tm[name]]

    def column(self, i: int) -> np.ndarray:
        return np.concatenate([b[i] for b in self.blocks])


def add_all(log: PredictionLog, seqs: list[int]) -> None:
    for s in seqs:
        log.add(s, 1000 * s, pred(1000 * s - 500, 0.0))


# -- PredictionLog ---------------------------------------------------------------------------------------------
def test_duplicate_pred_seq_from_redundant_replies_is_ignored() -> None:
    log = PredictionLog(joints=1)
    log.add(1, 100, pred(50, 1.0))
    log.add(1, 300, pred(50, 9.0))  # the same prediction repeated in a later reply: first arrival counts
    assert len(log) == 1 and log.acked == 1
    np.testing.assert_array_equal(log.evaluate(np.array([99, 100, 400])), [[np.nan], [1.0], [1.0]])


def test_a_jump_to_a_huge_pred_seq_gives_up_the_holes_in_one_step() -> None:
    """A broken server's pred_seq 2^62 used to be walked one number at a time (the device hung); found by
    tests/test_fuzz_device_replies.py."""
    log = PredictionLog(joints=1)
    add_all(log, [1, 2, 4])
    log.add(2**62, 0, pred(0, 0.0))
    assert log.acked == 2**62 - REPEAT_MAX
    assert log.never_received == 2**62 - REPEAT_MAX - 3  # 3 of the numbers below the new floor did come
    log.add(2**62 - REPEAT_MAX + 1, 0, pred(0, 0.0))
    assert log.acked == 2**62 - REPEAT_MAX + 1


def test_acked_advances_over_contiguous_seqs_and_waits_at_a_hole() -> None:
    log = PredictionLog(joints=1)
    add_all(log, [1, 2, 3])
    assert log.acked == 3
    add_all(log, [5, 6])
    assert log.acked == 3  # 4 is missing: the server will repeat it
    add_all(log, [4])
    assert log.acked == 6 and log.never_received == 0


def test_a_hole_is_given_up_once_the_server_no_longer_repeats_it() -> None:
    log = PredictionLog(joints=1)
    add_all(log, [1])
    add_all(log, list(range(3, 2 + REPEAT_MAX)))  # 2 is missing; newest = REPEAT_MAX + 1
    assert log.acked == 1  # newest - acked == REPEAT_MAX: 2 is still in the server's last REPEAT_MAX
    add_all(log, [2 + REPEAT_MAX])  # now 2 has left the server's window: it can never come
    assert log.acked == 2 + REPEAT_MAX and log.never_received == 1


def test_several_holes_far_behind_are_all_given_up() -> None:
    log = PredictionLog(joints=1)
    add_all(log, [1, 4])
    add_all(log, [40])
    # 2, 3 and 5..24 are out of reach: the server repeats only its last REPEAT_MAX (25..40).
    assert log.acked == 40 - REPEAT_MAX
    assert log.never_received == 40 - REPEAT_MAX - 2
    add_all(log, list(range(41 - REPEAT_MAX, 40)))
    assert log.acked == 40 and log.never_received == 40 - REPEAT_MAX - 2


def test_evaluate_maps_server_arrivals_with_the_clock_offset() -> None:
    log = PredictionLog(joints=2)
    assert np.isnan(log.evaluate(np.array([0, 1]))).all() and log.evaluate(np.array([0, 1])).shape == (2, 2)
    log.add(1, 1_000_500, pred(0, 0.5, v=2.0, joints=2))  # arrival in the server's clock
    t = np.array([0, 499, 500, 1000])
    assert np.isnan(log.evaluate(t)).all()  # offset 0: it arrives in ~1 s of device time
    log.clock_offset_us = 1_000_000  # server = device + 1 s: it was there at device time 500
    out = log.evaluate(t)
    assert np.isnan(out[:2]).all()
    np.testing.assert_allclose(out[2:], [[0.5 + 2.0 * 500e-6] * 2, [0.5 + 2.0 * 1000e-6] * 2])


def test_prune_before_keeps_the_prediction_in_effect() -> None:
    log = PredictionLog(joints=1)
    log.clock_offset_us = 10_000  # arrivals below are server clock = device + 10 ms
    log.add(1, 10_000 + 1000, pred(0, 1.0, v=1.0))
    log.add(2, 10_000 + 3000, pred(2000, 2.0, v=-1.0))
    log.add(3, 10_000 + 3200, pred(1500, 7.0))  # reordered: older sample, arrived later: never in effect
    log.add(4, 10_000 + 5000, pred(4000, 3.0, v=0.5))
    t = np.arange(3500, 9000, 250)
    before = log.evaluate(t)
    log.prune_before(3500)
    assert len(log) == 2  # 2 (newest sample among those back by 3500) and 4 (not back yet)
    np.testing.assert_array_equal(log.evaluate(t), before)
    log.prune_before(3500)  # idempotent
    assert len(log) == 2
    log.prune_before(5000)
    assert len(log) == 1
    np.testing.assert_array_equal(log.evaluate(t[t >= 5000]), before[t >= 5000])


def test_prune_before_with_one_or_no_old_prediction_keeps_everything() -> None:
    log = PredictionLog(joints=1)
    log.prune_before(10**9)
    log.add(1, 1000, pred(0, 1.0))
    log.add(2, 9000, pred(8000, 2.0))
    log.prune_before(5000)
    assert len(log) == 2


def test_a_prediction_keeps_the_arrival_it_was_first_scored_with() -> None:
    # A sample scored once is final: a later clock estimate must not move a prediction already in use, or the
    # recording (and the simulator replaying it) would hold a display the device never scored.
    log = PredictionLog(joints=1)
    log.add(1, 1000, pred(0, 1.0))
    assert np.isnan(log.evaluate(np.array([999])))[0, 0]
    assert log.freeze() == [(0, 1000)]
    log.clock_offset_us = 500  # the estimate improves: the arrival would now be device time 500
    assert np.isnan(log.evaluate(np.array([600])))[0, 0]  # still 1000: fixed at first scoring
    log.add(2, 3000, pred(2000, 2.0))
    assert log.freeze() == [(2000, 2500)]  # new predictions use the newest estimate
    assert log.freeze() == []


# -- TrackingMonitor -------------------------------------------------------------------------------------------
def test_samples_wait_for_the_lag_then_are_scored_and_recorded() -> None:
    sink = BlockSink()
    mon = TrackingMonitor(joints=1, lag_us=10_000, recorder=cast(Recorder, sink))
    t = list(range(0, 50_000, 1000))
    q = [np.array([1e-3 * i]) for i in range(50)]
    sent = np.zeros(50, dtype=bool)
    sent[::5] = True
    mon.add_samples(t, list(range(50)), q, sent)
    mon.add_prediction(1, 5000, pred(4000, 0.004, v=0.5))  # back after the samples, within their lag
    assert mon.finalize(14_999) == 5  # t <= 4999 only
    assert mon.finalize(15_000) == 1  # t = 5000 now
    assert mon.finalize(15_000) == 0
    assert mon.finalize(30_000) == 15  # up to t = 20000
    assert mon.finalize(None) == 29  # shutdown: everything left
    assert mon.finalize(None) == 0
    assert [len(b[0]) for b in sink.blocks] == [5, 1, 15, 29]
    np.testing.assert_array_equal(sink.column(0), t)
    np.testing.assert_array_equal(sink.column(1), np.arange(50))
    np.testing.assert_array_equal(sink.column(2), np.stack(q))
    np.testing.assert_array_equal(sink.column(3), sent)
    qhat = sink.column(4)
    assert np.isnan(qhat[:5]).all()  # nothing displayed before the first arrival
    expect = 0.004 + 0.5 * (np.asarray(t[5:]) - 4000) * 1e-6
    np.testing.assert_allclose(qhat[5:, 0], expect, rtol=0, atol=1e-15)
    assert (mon.acc.samples, mon.acc.uncounted) == (45, 5)
    err = (np.stack(q)[5:, 0] - expect) * RAD2DEG
    assert mon.acc.mse_deg2 == pytest.approx(float(np.mean(err**2)), rel=1e-12)
    assert mon.measured == 50 and mon.sent == 10 and mon.load == pytest.approx(0.2)


def test_chunked_scoring_with_pruning_equals_scoring_everything_at_once() -> None:
    sink = BlockSink()
    mon = TrackingMonitor(joints=2, lag_us=3000, recorder=cast(Recorder, sink))
    ref = PredictionLog(joints=2)
    rng = np.random.default_rng(1)
    t = np.arange(0, 60_000, 1000)
    mon.add_samples(t.tolist(), t.tolist(), list(rng.normal(size=(len(t), 2))), np.zeros(len(t), dtype=bool))
    for s, t0 in enumerate(range(0, 55_000, 7000), start=1):
        p = pred(t0, float(rng.normal()), v=float(rng.normal()), h=4000, joints=2)
        mon.add_prediction(s, t0 + 800, p)
        ref.add(s, t0 + 800, p)
        mon.finalize(t0 + 800)  # scored as the loop goes; old predictions are pruned on the way
    mon.finalize(None)
    assert len(mon.preds) < len(ref)  # pruning happened...
    np.testing.assert_array_equal(sink.column(4), ref.evaluate(t))  # ...and changed nothing that was scored
    np.testing.assert_array_equal(sink.column(0), t)


def test_the_newest_clock_estimate_applies_when_samples_are_scored() -> None:
    mon = TrackingMonitor(joints=1, lag_us=0)
    mon.add_samples([0, 1000, 2000], [0, 1, 2], [np.zeros(1)] * 3, np.ones(3, dtype=bool))
    mon.add_prediction(1, 2_000_500, pred(0, 0.0))  # server clock
    mon.set_clock(2_000_000)  # learnt after the prediction came: arrival at device time 500
    mon.finalize(None)
    assert (mon.acc.samples, mon.acc.uncounted) == (2, 1)
    assert mon.load == 1.0


def test_load_is_sent_over_measured() -> None:
    mon = TrackingMonitor(joints=1, lag_us=0)
    assert np.isnan(mon.load)
    mon.add_samples([0, 1, 2, 3], [0, 1, 2, 3], [np.zeros(1)] * 4, np.array([1, 0, 0, 0], dtype=bool))
    mon.add_samples([4, 5], [4, 5], [np.zeros(1)] * 2, np.array([0, 1], dtype=bool))
    assert mon.measured == 6 and mon.sent == 2 and mon.load == pytest.approx(1 / 3)
    mon.finalize(None)
    assert mon.load == pytest.approx(1 / 3)  # scoring does not change what was measured and sent


def test_uplink_latency_counts_each_prediction_once() -> None:
    mon = TrackingMonitor(joints=1, lag_us=0)
    mon.add_prediction(2, 10_700, pred(10_000, 0.0))
    mon.add_prediction(1, 9_900, pred(9_000, 0.0))  # an older one repeated in a reply: already counted
    mon.add_prediction(2, 10_700, pred(10_000, 0.0))  # redundant copy
    mon.add_prediction(3, 12_500, pred(11_000, 0.0))
    assert mon.predictions_back == 2
    mon.set_clock(200)  # those that came before the clocks were mapped are mapped now
    assert mon.latency_percentiles_ms() == pytest.approx((0.9, np.percentile([0.5, 1.3], 99)))


def test_the_monitor_records_when_each_send_took_effect_and_each_resend_check() -> None:
    sink = BlockSink()
    mon = TrackingMonitor(joints=1, lag_us=10_000, recorder=cast(Recorder, sink))
    t = list(range(0, 30_000, 1000))
    sent = np.zeros(30, dtype=bool)
    sent[[2, 5, 20]] = True
    mon.add_samples(t, list(range(30)), [np.array([0.0])] * 30, sent)
    mon.add_prediction(1, 2600, pred(2000, 0.0))
    mon.finalize(9_000, [(2000, 4500, True)])  # nothing older than the lag yet: the check waits for a block
    mon.finalize(16_000)  # samples <= 6000 scored: 5000's prediction is not back
    mon.add_prediction(2, 7200, pred(5000, 0.0))  # it comes back late: its record replaces the -1
    mon.finalize(None, [(5000, 8000, False)])
    assert sink.timing_column("pred_t0_us") == [2000, 5000, 5000, 20000]
    assert sink.timing_column("pred_arrival_us") == [2600, -1, 7200, -1]
    assert sink.timing_column("ack_t_us") == [2000, 5000]
    assert sink.timing_column("ack_check_us") == [4500, 8000]
    assert sink.timing_column("ack_ok") == [1, 0]


def test_diagnostics_stay_bounded_on_an_endless_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 5 of issue 10: with no --duration nothing may grow with the run (caps shrunk to test quickly)."""
    import device.scoring as scoring

    monkeypatch.setattr(scoring, "MAX_LATENCIES", 50)
    monkeypatch.setattr(scoring, "MAX_WINDOWS", 20)
    mon = TrackingMonitor(joints=1, lag_us=0)
    mon.set_clock(0)
    got: list[float] = []
    start = 0
    for b in range(100):  # 100 blocks of 100 ms at 1 kHz, a prediction for every 10th sample
        t = np.arange(b * 100, (b + 1) * 100, dtype=np.int64) * 1000
        for i in range(0, 100, 10):
            mon.add_prediction(b * 10 + i // 10, int(t[i]) + 500, pred(int(t[i]), 0.0))
        mon.add_samples(t.tolist(), list(range(len(t))), list(np.zeros((100, 1))), np.zeros(100, dtype=bool))
        mon.finalize(None)
        new, start = mon.windows_from(start)
        got += new
    assert mon.predictions_back == 1000 and len(mon._lat) == 50
    assert len(mon.acc.window_mse) <= 20 and mon.windows_trimmed >= 79
    assert len(got) == 99  # the reader of the windows saw every closed one
    assert len(mon.preds) <= 2
    assert mon.latency_percentiles_ms() == pytest.approx((0.5, 0.5))
