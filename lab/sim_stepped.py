"""Stepped simulation: what changes a live device's policy *during* a run, replayed at the right device time.

Two things do: the link estimates the device hands the policy at each status (RTT, loss; recorded, see
``lab.recorded_run``) and on-device online learning (``kc-td3:P.pt,online=1``), which
reads the device-scored 100 ms windows (the twin as it really showed, losses included) about once a second and
nudges λ. Selection therefore runs in steps: recorded estimates are applied when their time comes, and every
second of device time the twin's display for that second is computed from the sends so far and their link fates
(the ``LinkModel`` stream the simulator's final pass draws again, so the same packets are lost), scored by the
same ``ErrorAccumulator`` and handed to the learner, which then steps.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import numpy as np

from device.acks import SimulatedAcks
from device.link_emulation import LinkModel, LinkSpec
from device.policies.base import Learner, Policy
from device.scoring import score_lag_us as device_score_lag_us
from lab.recorded_run import RecordedRun
from lab.twin_display import TwinDisplay
from twin.metrics import WINDOW_US, ErrorAccumulator
from twin.session import Session

_END = np.iinfo(np.int64).max
LEARNER_PERIOD_US = 1_000_000  # the live device's status (link estimates, a learner step) comes once a second


class Stepped(NamedTuple):
    sent: np.ndarray  # send mask
    horizons: np.ndarray  # horizon each sample was sent with, µs
    status_lambdas: list[float]  # the policy's λ at each status, before the learner's step (as the device records)


def select_stepped(session: Session, policy: Policy, link: LinkSpec, predictor: str, latency_us: int,
                   learner: Learner | None = None, replay: RecordedRun | None = None,
                   score_lag_us: int | None = None) -> Stepped:
    """``policy.select`` over the session in steps (see the module). Status times, link estimates and the
    scoring lag come from ``replay`` when given; otherwise a status every second and ``score_lag_us`` (default:
    the device's default, ``device.scoring.score_lag_us``)."""
    t, q = session.t_us, session.q
    n = len(t)
    replay = replay or RecordedRun()
    if score_lag_us is None:
        score_lag_us = replay.score_lag_us if replay.score_lag_us is not None else device_score_lag_us(link)
    times = replay.status_us or list(range(int(t[0]) + LEARNER_PERIOD_US, int(t[-1]) + 1, LEARNER_PERIOD_US))
    scored_counts = replay.windows_scored or [None] * len(times)
    statuses: deque[tuple[int, int | None]] = deque(zip(times, scored_counts, strict=True))
    estimates = deque(replay.link_estimates[1:])  # the first was applied before the run
    sent = np.zeros(n, dtype=bool)
    horizons = np.zeros(n, dtype=np.int64)
    model = LinkModel(link)
    lost, delay = np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    twin = TwinDisplay(predictor, latency_us, replay.arrivals)
    acc = ErrorAccumulator()
    lambdas: list[float] = []

    def apply_estimates(until_us: int) -> None:
        while estimates and estimates[0][0] <= until_us:
            _, rtt_ms, loss = estimates.popleft()
            if policy.uses_link:
                policy.set_link(rtt_ms, loss)

    s = fed = 0

    def feed(t_status: int, windows: int | None) -> None:
        """Hand the learner the windows scored by the status at ``t_status``: the device's recorded count of closed
        windows, else those of samples older than the scoring lag (of the samples selected so far, ``[:s]``)."""
        nonlocal fed, lost, delay
        assert learner is not None
        stop = s if windows is not None else int(np.searchsorted(t, t_status - score_lag_us, side="left"))
        if stop <= fed:
            return
        idx = np.flatnonzero(sent[:s])
        more_lost, more_delay = model.up.fates(model.keys(t[idx[len(lost):]]))  # the sends since the last status
        lost, delay = np.concatenate([lost, more_lost]), np.concatenate([delay, more_delay])
        qhat = twin.display(t, q, idx, lost, delay, horizons[idx], t[fed:stop])
        done = len(acc.window_mse)
        if windows is None:
            acc.add(t[fed:stop], q[fed:stop], qhat)
            fed = stop
        else:  # whole 100 ms windows until as many are closed as the device had (one closes when a later starts)
            pos = fed
            while pos < stop and len(acc.window_mse) < windows:
                boundary = int(t[0]) + ((int(t[pos]) - int(t[0])) // WINDOW_US + 1) * WINDOW_US
                nxt = min(max(int(np.searchsorted(t, boundary, side="left")), pos + 1), stop)
                acc.add(t[pos:nxt], q[pos:nxt], qhat[pos - fed:nxt - fed])
                pos = nxt
            fed = pos
        learner.observe(acc.window_mse[done:])

    while s < n:
        end = min(int(t[-1]) + 1, statuses[0][0] if statuses else _END, estimates[0][0] if estimates else _END)
        e = max(s + 1, int(np.searchsorted(t, end, side="left")))
        sent[s:e] = policy.select(t[s:e], q[s:e])
        horizons[s:e] = policy.horizons_us(e - s)
        s = e
        now = int(t[s]) if s < n else int(t[-1]) + 1
        while statuses and statuses[0][0] <= now:  # each status in turn (a stalled device can run two at once)
            t_status, windows = statuses.popleft()
            apply_estimates(t_status)  # the status hands the policy its link estimates...
            if isinstance(policy.acks, SimulatedAcks):  # ...and its resend tracker the new timeout
                policy.acks.follow(t_status)
            lambdas.append(float(policy.lam))
            if learner is not None:  # ...and the learner the windows scored by then, then it steps
                feed(t_status, windows)
                learner.step()
        apply_estimates(now)
    return Stepped(sent, horizons, lambdas)
