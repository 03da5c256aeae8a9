"""The clairvoyant bound (lab/oracle.py): pinned against brute force on a tiny trajectory, and never above the
best tuned policies on a real recording."""

from __future__ import annotations

import numpy as np
import pytest

from device.link_emulation import LinkSpec
from device.policies.registry import parse_policy
from lab.evaluate import DR_H_MS, STATIC_H_MS, candidates
from lab.oracle import (
    FORESIGHT_REFINE,
    H_CANDIDATES_MS,
    ClairvoyantBound,
    OracleUndefined,
    refine_grid,
    undefined_reason,
)
from lab.simulator import simulate
from lab.twin_display import TwinDisplay
from tests.conftest import REPO
from twin.session import Session, load_session

_RAD2DEG = 180.0 / np.pi
TINY_H_MS = (0.0, 2.0, 1000.0)


def tiny_session(n: int = 12, joints: int = 2, seed: int = 3) -> Session:
    """A short jerky trajectory: the choice of send instants and horizons matters at every sample."""
    rng = np.random.default_rng(seed)
    t_us = np.arange(n, dtype=np.int64) * 1000 + rng.integers(-5, 6, n)
    acc = rng.normal(0.0, 400.0, (n, joints))  # rad/s², changing every ms
    v = np.cumsum(acc, axis=0) * 1e-3
    q = np.cumsum(v, axis=0) * 1e-3
    return Session(t_us=t_us, q=q, joint_names=[f"j{i}" for i in range(joints)], meta={})


def _single_send_tables(s: Session, delay_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """Through the simulator's display: err[i, h, j] (deg², summed over joints) if send i with horizon h were
    shown at sample j, and first[i], the first sample the send is shown on."""
    twin = TwinDisplay("kinematic")
    n = len(s.t_us)
    err = np.zeros((n, len(TINY_H_MS), n))
    first = np.full(n, n)
    for i in range(n):
        for h, h_ms in enumerate(TINY_H_MS):
            qhat = twin.display(s.t_us, s.q, np.array([i]), np.zeros(1, bool), np.array([round(delay_ms * 1000)]),
                                np.array([round(h_ms * 1000)]), s.t_us)
            shown = ~np.isnan(qhat[:, 0])
            err[i, h] = np.where(shown, (((s.q - np.nan_to_num(qhat)) * _RAD2DEG) ** 2).sum(1), 0.0)
            first[i] = int(np.argmax(shown)) if shown.any() else n
    return err, first


def _brute_force(s: Session, delay_ms: float, max_gap: int) -> tuple[dict[int, float], int]:
    """Every send pattern (sample 0 always sent, gaps <= max_gap samples, also to the end) and every horizon of
    every send: the least SSE for each number of sends, and the scored count (samples x joints)."""
    err, first = _single_send_tables(s, delay_ms)
    n = len(s.t_us)
    best: dict[int, float] = {}
    for bits in range(2 ** (n - 1)):
        sends = [0] + [i for i in range(1, n) if bits >> (i - 1) & 1]
        gaps = np.diff([*sends, n])
        if gaps.max() > max_gap:
            continue
        m = len(sends)
        stops = [*(first[k] for k in sends[1:]), n]
        # seg[r, h]: error of send r's segment with horizon h; then every assignment of horizons to sends.
        seg = np.array([[err[i, h, first[i]:stop].sum() for h in range(len(TINY_H_MS))]
                        for i, stop in zip(sends, stops, strict=True)])
        assign = np.indices((len(TINY_H_MS),) * m).reshape(m, -1)
        sse = seg[np.arange(m)[:, None], assign].sum(0).min()
        best[m] = min(best.get(m, np.inf), float(sse))
    return best, (n - int(first[0])) * s.joints


def test_horizon_candidates_are_the_policies() -> None:
    assert sorted(H_CANDIDATES_MS) == sorted(set(STATIC_H_MS) | set(DR_H_MS))


@pytest.mark.parametrize(("delay_ms", "max_gap"), [(0.0, 12), (3.0, 12), (0.0, 4)])
def test_dp_matches_brute_force(delay_ms: float, max_gap: int) -> None:
    s = tiny_session()
    brute, scored = _brute_force(s, delay_ms, max_gap)
    bound = ClairvoyantBound([s], LinkSpec(delay_ms=delay_ms), "kinematic", max_gap_ms=max_gap,
                             horizons_ms=TINY_H_MS)
    prep = bound._prep[0]
    for lam in (1e-4, 1e-2, 0.1, 1.0, 10.0, 1e3):  # the Lagrangian optimum, against every schedule
        sends, sse = prep.path(lam)
        assert len(sends) + lam * sse == pytest.approx(min(m + lam * v for m, v in brute.items()), rel=1e-6)
        assert prep.value[0] == pytest.approx(len(sends) + lam * sse, rel=1e-6)
    for m, sse in brute.items():  # every exact (sends, MSE) point between the bound and the schedule found
        eps = sse / scored * (1 + 1e-6)
        exact = min(k for k, v in brute.items() if v <= eps * scored)
        r = bound.solve(eps)
        assert r["feasible"] and r["mse_deg2"] <= eps
        assert r["load_lower_bound"] * r["samples"] <= exact + 1e-9 <= r["sent"] + 1e-9, m
        assert r["mse_deg2"] == pytest.approx(r["dp_mse_deg2"], rel=1e-5)  # the DP's tables = the simulator's
        idx, hz = r["schedules"][0]
        assert idx[0] == 0 and np.diff([*idx, len(s.t_us)]).max() <= max_gap
        assert set(hz) <= {round(h * 1000) for h in TINY_H_MS}


def test_hull_points_are_found_exactly() -> None:
    """On the lower convex hull of the exact trade-off the schedule found is the exact optimum."""
    s = tiny_session(seed=5)
    brute, scored = _brute_force(s, 0.0, 12)
    pts = sorted(brute.items())
    bound = ClairvoyantBound([s], LinkSpec(), "kinematic", max_gap_ms=12, horizons_ms=TINY_H_MS)
    on_hull = 0
    for m, sse in pts:
        # (m, sse) is on the lower hull when some λ makes it the minimiser of m + λ·sse.
        ok = any(all(m + lam * sse <= k + lam * v + 1e-12 for k, v in pts) for lam in np.logspace(-5, 5, 400))
        if not ok:
            continue
        on_hull += 1
        r = bound.solve(sse / scored * (1 + 1e-7))
        assert r["sent"] == m
    assert on_hull >= 3


def test_undefined_with_loss_jitter_or_history_predictors() -> None:
    assert undefined_reason(LinkSpec(delay_ms=20), "kinematic") is None
    assert "loss" in (undefined_reason(LinkSpec(loss=0.1), "kinematic") or "")
    assert "jitter" in (undefined_reason(LinkSpec(jitter_ms=2), "kinematic") or "")
    assert "linear" in (undefined_reason(LinkSpec(), "linear") or "")
    with pytest.raises(OracleUndefined, match="loss"):
        ClairvoyantBound([tiny_session()], LinkSpec(loss=0.1))
    long = Session(t_us=np.arange(300_000, dtype=np.int64) * 1000, q=np.zeros((300_000, 1)), joint_names=["j"])
    with pytest.raises(OracleUndefined, match="--oracle-gap-ms"):  # refused before its 2.2 GB table is made
        ClairvoyantBound([long])


def _best_load(session: Session, family: str, eps: float, link: LinkSpec) -> float:
    loads = []
    for cand in candidates(family):
        m = simulate(session, parse_policy(cand.spec), "kinematic", link).metrics
        if m["mse_deg2"] <= eps:
            loads.append(m["load"])
    return min(loads)


@pytest.mark.parametrize("delay_ms", [0.0, 20.0])
def test_oracle_below_best_static_and_dead_reckoning(delay_ms: float) -> None:
    """On a real recording, tuned on itself: the bound is never above the best of either family."""
    full = load_session(REPO / "data" / "sessions" / "test_a.mcap")
    s = Session(t_us=full.t_us[:6000], q=full.q[:6000], joint_names=full.joint_names, meta=full.meta)
    link = LinkSpec(delay_ms=delay_ms)
    bound = ClairvoyantBound([s], link)
    for eps in (0.002, 0.007):
        r = bound.solve(eps)
        assert r["feasible"] and r["mse_deg2"] <= eps
        for family in ("static", "dead-reckoning", "dead-reckoning-rms"):
            assert r["load"] <= _best_load(s, family, eps, link), (family, eps)


@pytest.mark.parametrize(("delay_ms", "max_gap"), [(0.0, 12), (3.0, 12), (0.0, 4)])
def test_foresight_sender_picks_the_best_segment_end(delay_ms: float, max_gap: int) -> None:
    """After each send, the one-segment foresight sender's next send maximises θ·length - SSE over every
    allowed next send (or the session's end), the SSE computed through the simulator's display."""
    s = tiny_session()
    n = len(s.t_us)
    h = len(TINY_H_MS) - 1  # one horizon, so a segment's error does not depend on a choice of H
    err, first = _single_send_tables(s, delay_ms)
    bound = ClairvoyantBound([s], LinkSpec(delay_ms=delay_ms), "kinematic", max_gap_ms=max_gap,
                             horizons_ms=(TINY_H_MS[h],))
    for theta in (1e-3, 0.1, 1.0, 10.0, 1e3):
        sends, sse = bound._prep[0].foresight(theta)
        assert sends[0] == 0 and np.all(np.diff(sends) > 0)
        nxt = [*sends[1:], n]
        for i, k in zip(sends, nxt, strict=True):
            options = {kk: theta * (kk - i) - err[i, h, first[i]:first[kk] if kk < n else n].sum()
                       for kk in range(i + 1, min(i + max_gap, n - 1) + 1)}
            if n - i <= max_gap:
                options[n] = theta * (n - i) - err[i, h, first[i]:n].sum()
            assert options[k] == pytest.approx(max(options.values()), rel=1e-5, abs=1e-9), (theta, i)
        total = sum(err[i, h, first[i]:first[k] if k < n else n].sum() for i, k in zip(sends, nxt, strict=True))
        assert sse == pytest.approx(total, rel=1e-5)


def test_foresight_sender_on_growing_error_is_the_rms_trigger() -> None:
    """On constant-jerk motion the twin's error only grows after each send: the foresight sender then ends each
    segment where the RMS trigger does, one sample sooner (it keeps the last sample within θ = J·δ², the
    trigger sends the first one beyond δ)."""
    n, joints = 3000, 3
    t = np.arange(n, dtype=np.int64) * 1000
    ts = t * 1e-6
    q = np.stack([0.5 * ts**3, -0.3 * ts**3 + 0.1 * ts, 0.2 * ts**3], axis=1)
    s = Session(t_us=t, q=q, joint_names=[f"j{i}" for i in range(joints)], meta={})
    bound = ClairvoyantBound([s], LinkSpec(), "kinematic", horizons_ms=(200.0,))
    for delta in (0.01, 0.03, 0.1):
        trig = np.flatnonzero(parse_policy(f"dead-reckoning:delta={delta},h=200,norm=rms").select(t, q))
        fore, _ = bound._prep[0].foresight(joints * delta**2)
        assert len(fore) == len(trig) > 15
        # past the first two segments (whose derivative fits see fewer than 20 samples)
        assert np.array_equal(np.diff(fore)[2:], np.diff(trig)[2:] - 1), delta


@pytest.mark.parametrize("delay_ms", [0.0, 20.0])
def test_foresight_sender_meets_eps_above_the_bound(delay_ms: float) -> None:
    """On a real recording: the foresight schedule meets ε, its simulator-scored MSE is the tables', and it
    needs at least the oracle's (lower-bound) load with the same horizon."""
    full = load_session(REPO / "data" / "sessions" / "test_a.mcap")
    s = Session(t_us=full.t_us[:6000], q=full.q[:6000], joint_names=full.joint_names, meta=full.meta)
    bound = ClairvoyantBound([s], LinkSpec(delay_ms=delay_ms), horizons_ms=(200.0,))
    for eps in (0.002, 0.007):
        r, o = bound.solve_foresight(eps), bound.solve(eps)
        assert r["feasible"] and r["mse_deg2"] <= eps
        assert r["mse_deg2"] == pytest.approx(r["dp_mse_deg2"], rel=1e-5)
        assert np.isnan(r["load_lower_bound"]) and "hull" not in r
        assert r["load"] >= o["load_lower_bound"]
        # no θ it tried around the bisection does better, nor any of a coarse grid over the whole range
        assert r["sent"] <= _fewest_foresight_sends(bound, eps, refine_grid(r["theta_bisected"], FORESIGHT_REFINE))
        assert r["sent"] <= _fewest_foresight_sends(bound, eps, np.geomspace(1e-6, 1e3, 100))


def _fewest_foresight_sends(bound: ClairvoyantBound, eps: float, thetas: np.ndarray) -> int:
    prep = bound._prep[0]
    runs = [prep.foresight(float(th)) for th in thetas]
    return min(len(sends) for sends, sse in runs if sse <= eps * prep.scored)
