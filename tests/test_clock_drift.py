"""twin.clock: the drift-aware clock map, and a simulated day of device scoring on a drifting firmware clock.

The day is simulated (no sleeping, no pty): the firmware stamps samples on a crystal ``ppm`` off the host's, the
host receives them with a latency floor plus jitter, every 4th is sent, its prediction reaches the server after an
uplink delay and comes back after a long downlink delay (0.3-0.6 s, under the 1 s scoring lag): samples measured
meanwhile must wait for it. 5 Hz samples keep a simulated day at a few seconds; the map does not depend on the rate.
The device side is the agent's own code path: the reader's
``ClockMap`` observes (firmware stamp, host receive) and ``TrackingMonitor.advance`` maps the clocks and scores.
The reference is the offline recomputation with the true arrival times (``twin.display`` + ``ErrorAccumulator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from device.scoring import TrackingMonitor
from twin.clock import ClockMap, TwoWayClockMap, envelope_line
from twin.display import Prediction, displayed, in_effect
from twin.metrics import ErrorAccumulator

LAG_US = 1_000_000  # the scoring lag; replies take 0.3-0.6 s, so later samples arrive while one is in flight
SERVER_MINUS_HOST = 12_345_678
FLOOR_US = 400  # serial latency floor (host receive - emission)


class GlobalMinClock:
    """The map before issue 10: the minimum of host - firmware over the whole run, no rate term."""

    rate = 0.0

    def __init__(self) -> None:
        self.off: int | None = None

    @property
    def ready(self) -> bool:
        return self.off is not None

    def observe(self, a_us: int, b_us: int) -> None:
        self.off = b_us - a_us if self.off is None else min(self.off, b_us - a_us)

    def offset_at(self, a_us: int) -> int:
        return self.off or 0

    def to_a(self, b_us: int) -> int:
        return b_us - (self.off or 0)


class Capture:
    """Stands in for the recorder: keeps what was scored, in order."""

    def __init__(self) -> None:
        self.t: list[np.ndarray] = []
        self.qhat: list[np.ndarray] = []

    def timing(self, t_us: int, timing: Any) -> None:
        pass

    def block(self, t: np.ndarray, seq: Any, q: Any, sent: Any, qhat: np.ndarray) -> None:
        self.t.append(t)
        self.qhat.append(qhat)


@dataclass
class DayResult:
    late_scored: int  # predictions that came back after a sample they could have been displayed for was scored
    device_mse: float
    offline_mse: float
    device_scored: int
    offline_scored: int
    qhat_mismatch: int
    max_map_err_us: float  # |mapped device now - true device now| beyond the constant latency floor


def simulate_day(clock: Any, ppm: float, hours: float = 24.0, period_us: int = 200_000, k: int = 4,
                 step_us: int = 20_000_000, seed: int = 0) -> DayResult:
    rng = np.random.default_rng(seed)
    rho = ppm * 1e-6  # the firmware counts (1 + rho) µs per host µs
    n = int(hours * 3600e6 / period_us)
    t0_dev, h0 = 3_000_000, 1_000_000_000
    t = t0_dev + np.arange(n, dtype=np.int64) * period_us
    host_emit = h0 + (t - t0_dev) / (1 + rho)
    host_rx = np.rint(host_emit + FLOOR_US + rng.exponential(30.0, n)).astype(np.int64)
    q = 0.4 * np.sin(2 * np.pi * 0.05 * t * 1e-6)[:, None]
    v = 0.4 * 2 * np.pi * 0.05 * np.cos(2 * np.pi * 0.05 * t * 1e-6)[:, None]
    sent = np.arange(n) % k == 0
    si = np.flatnonzero(sent)
    up = rng.uniform(1000, 3000, len(si))
    srv_host = host_rx[si] + up  # host-clock moment the server receives the sample
    srv_rx = np.rint(srv_host + SERVER_MINUS_HOST).astype(np.int64)
    back_host = srv_host + 200 + rng.uniform(300_000, 600_000, len(si))
    arrival_dev = np.rint(t0_dev + (srv_host - h0) * (1 + rho)).astype(np.int64)  # true device time
    coeffs = np.stack([q[si], v[si] * 1.02], axis=1)  # (M, 2, 1): a slightly wrong velocity, so MSE > 0
    horizon = np.full(len(si), 1_000_000, dtype=np.int64)

    # Offline: every prediction at its true arrival, every sample scored.
    keep = in_effect(arrival_dev, t[si])
    ref = displayed(t, arrival_dev[keep], t[si][keep], horizon[keep], coeffs[keep])
    offline = ErrorAccumulator()
    offline.add(t, q, ref)

    cap = Capture()
    tr = TrackingMonitor(1, LAG_US, cap)  # type: ignore[arg-type]
    order = np.argsort(back_host, kind="stable")
    ns = npred = 0
    scored_to = -1
    late = 0
    max_err = 0.0
    # Score 0.25 s after a send (every ~step_us): its prediction is in flight then and a later sample is in, as on a
    # live device, so a map that runs ahead would score that sample before the prediction is back.
    nominal = np.arange(int(host_rx[0]) + step_us, int(host_rx[-1]), step_us)
    nows = (np.unique(host_rx[si][np.searchsorted(host_rx[si], nominal).clip(0, len(si) - 1)]) + 250_000).tolist()
    for now in [*nows, int(max(host_rx[-1], back_host.max())) + 1]:  # the last: everything is in
        while npred < len(order) and back_host[order[npred]] <= now:
            j = order[npred]
            late += int(arrival_dev[j] <= scored_to)
            tr.add_prediction(int(j), int(srv_rx[j]), Prediction(int(t[si[j]]), int(horizon[j]), coeffs[j]))
            npred += 1
        end = int(np.searchsorted(host_rx, now, side="right"))
        if end > ns:
            for a, b in zip(t[ns:end].tolist(), host_rx[ns:end].tolist(), strict=True):
                clock.observe(a, b)
            tr.add_samples(t[ns:end].tolist(), list(range(ns, end)), list(q[ns:end]), sent[ns:end])
            ns = end
        if clock.ready:
            true_now = t0_dev + (now - h0) * (1 + rho)
            if now - host_rx[0] > 60_000_000:  # the first minute maps with a plain minimum (no rate fitted yet)
                max_err = max(max_err, abs(clock.to_a(now) - (true_now - FLOOR_US)))
            tr.advance(now, SERVER_MINUS_HOST, clock)
            if cap.t:
                scored_to = int(cap.t[-1][-1])
    tr.advance(int(host_rx[-1]) + 2 * step_us, SERVER_MINUS_HOST, clock, final=True)
    dev_qhat = np.concatenate(cap.qhat)
    assert len(dev_qhat) == n  # nothing measured is lost
    mismatch = int(np.count_nonzero(~np.isclose(dev_qhat, ref, rtol=0, atol=1e-12, equal_nan=True)))
    return DayResult(late, tr.acc.mse_deg2, offline.mse_deg2, tr.acc.samples, offline.samples, mismatch, max_err)


@pytest.mark.parametrize("ppm", [100.0, -100.0])
def test_a_day_at_100_ppm_scores_every_sample_after_its_predictions_and_matches_offline(ppm: float) -> None:
    r = simulate_day(ClockMap(), ppm)
    assert r.late_scored == 0
    assert r.device_scored == r.offline_scored
    assert r.qhat_mismatch == 0
    assert r.device_mse == pytest.approx(r.offline_mse, rel=1e-12)
    assert r.max_map_err_us < 200  # 24 h at 100 ppm is 8.6 s of drift


def test_the_drift_blind_map_of_before_fails_the_same_day() -> None:
    """The regression the day test guards against: a slow firmware clock leaves a plain minimum behind."""
    r = simulate_day(GlobalMinClock(), -100.0, hours=6.0)
    assert r.late_scored > 0
    assert r.qhat_mismatch > 0
    assert r.max_map_err_us > 1_000_000


def test_clock_map_follows_a_rate_and_ignores_jitter() -> None:
    rng = np.random.default_rng(3)
    m = ClockMap()
    rho = 250e-6
    for a in range(0, 600_000_000, 1000):  # 10 min at 1 kHz, receiver 250 ppm slower
        m.observe(a, 50_000 + round(a * (1 - rho)) + 300 + int(rng.exponential(80)))
    assert m.rate == pytest.approx(-rho, abs=5e-6)
    for a in (100_000_000, 599_000_000):
        assert abs(m.offset_at(a) - (50_000 + 300 - a * rho)) < 50
    b = m.to_b(599_000_000)
    assert abs(m.to_a(b) - 599_000_000) <= 1


def test_clock_map_is_the_plain_minimum_before_it_can_fit_a_rate() -> None:
    m = ClockMap()
    assert not m.ready and m.to_a(123) == 123
    m.observe(1_000, 5_000)
    m.observe(2_000, 5_900)
    assert m.ready and m.offset_at(10_000) == 3_900 and m.rate == 0.0


def test_envelope_line_is_under_every_point_and_clamps_absurd_slopes() -> None:
    pts = [(0, 10), (10, 3), (20, 9), (30, 2), (40, 12)]  # mean x 20: the hull edge there is (10, 3)-(30, 2)
    x_ref, c, r = envelope_line(pts, max_rate=1.0)
    assert (x_ref, c, r) == pytest.approx((20.0, 2.5, -0.05))
    assert all(y >= c + r * (x - x_ref) - 1e-9 for x, y in pts)
    assert envelope_line(pts, max_rate=0.01)[2] == -0.01  # a slope past max_rate is clamped
    x2, c2, r2 = envelope_line([(0, 0), (10, 1000)], max_rate=0.01)
    assert r2 == 0.01 and c2 + r2 * (0 - x2) == pytest.approx(0.0)  # lowered until under (0, 0)


def test_two_way_map_recovers_the_offset_of_a_drifting_peer() -> None:
    rng = np.random.default_rng(5)
    m = TwoWayClockMap()
    theta0, rho = 7_000_000, 80e-6
    for t1 in range(0, 300_000_000, 200_000):  # heartbeats at 5 Hz for 5 min
        d_up, d_down = 150 + rng.exponential(100), 150 + rng.exponential(100)
        t2 = t1 + d_up + theta0 + rho * (t1 + d_up)
        t3 = t2 + 50
        t4 = (t3 - theta0) / (1 + rho) + d_down
        m.observe(t1, round(t2), round(t3), round(t4))
    at = 299_000_000
    assert abs(m.peer_minus_ours(at) - (theta0 + rho * at)) < 60
