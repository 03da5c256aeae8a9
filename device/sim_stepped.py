"""Stepped simulation: what changes a live device's policy *during* a run, replayed at the right device time.

Two things do: the link estimates the device hands the policy at each status (RTT, loss; recorded, see
``device.simulator.recorded_link_estimates``) and on-device online learning (``kc-td3:P.pt,online=1``), which
reads the device-scored 100 ms windows (the twin as it really showed, losses included) about once a second and
nudges λ. Selection therefore runs in steps: recorded estimates are applied when their time comes, and every
second of device time the twin's display for that second is computed from the sends so far and their link fates
(the ``LinkModel`` stream the simulator's final pass draws again, so the same packets are lost), scored by the
same ``ErrorAccumulator`` and handed to the learner, which then steps.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple, Protocol

import numpy as np

from device.link import LinkModel, LinkSpec
from device.policies import Policy
from device.replay import RecordedRun
from device.tracking import DEFAULT_SCORE_LAG_MS
from twin.metrics import WINDOW_US, ErrorAccumulator
from twin.session import Session

_END = np.iinfo(np.int64).max
LEARNER_PERIOD_US = 1_000_000  # the live device's status (link estimates, a learner step) comes once a second


class Learner(Protocol):
    def observe(self, window_mse: list[float]) -> None: ...

    def step(self) -> None: ...


class Stepped(NamedTuple):
    sent: np.ndarray  # send mask
    horizons: np.ndarray  # horizon each sample was sent with, µs
    status_lambdas: list[float]  # the policy's λ at each status, before the learner's step (as the device records)


def select_stepped(session: Session, policy: Policy, link: LinkSpec, predictor: str, latency_us: int,
                   learner: Learner | None = None, replay: RecordedRun | None = None,
                   score_lag_us: int | None = None) -> Stepped:
    """``policy.select`` over the session in steps (see the module). Status times, link estimates and the
    scoring lag come from ``replay`` when given; otherwise a status every second and ``score_lag_us`` (default:
    the device's, DEFAULT_SCORE_LAG_MS plus the emulated round trip)."""
    from device.simulator import TwinDisplay  # the simulator imports this module lazily: no cycle at load

    t, q = session.t_us, session.q
    n = len(t)
    replay = replay or RecordedRun()
    if score_lag_us is None:
        score_lag_us = replay.score_lag_us if replay.score_lag_us is not None else \
            round(1000 * (DEFAULT_SCORE_LAG_MS + 2 * (link.delay_ms + link.jitter_ms)))
    times = replay.status_us or list(range(int(t[0]) + LEARNER_PERIOD_US, int(t[-1]) + 1, LEARNER_PERIOD_US))
    scored_counts = replay.windows_scored or [None] * len(times)
    statuses: deque[tuple[int, int | None]] = deque(zip(times, scored_counts, strict=True))
    estimates = deque(replay.link_estimates[1:])  # the first was applied before the run
    sent = np.zeros(n, dtype=bool)
    horizons = np.zeros(n, dtype=np.int64)
    up = LinkModel(link).up
    lost, delay = np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    twin = TwinDisplay(predictor, latency_us)
    acc = ErrorAccumulator()
    lambdas: list[float] = []
    s = fed = 0
    while s < n:
        end = min(int(t[-1]) + 1, statuses[0][0] if statuses else _END, estimates[0][0] if estimates else _END)
        e = max(s + 1, int(np.searchsorted(t, end, side="left")))
        sent[s:e] = policy.select(t[s:e], q[s:e])
        per_sample: Any = getattr(policy, "sample_horizons_us", None)
        horizons[s:e] = per_sample if per_sample is not None and len(per_sample) == e - s else policy.horizon_us
        s = e
        now = int(t[s]) if s < n else int(t[-1]) + 1
        while estimates and estimates[0][0] <= now:  # the status hands the policy the link estimates...
            _, rtt_ms, loss = estimates.popleft()
            policy.set_link(rtt_ms, loss)  # type: ignore[attr-defined]
        if not statuses or statuses[0][0] > now:
            continue
        while statuses and statuses[0][0] <= now:
            windows = statuses.popleft()[1]
        lambdas.append(float(getattr(policy, "lam", np.nan)))
        if learner is None:
            continue
        # ...and the learner the windows scored by then: the recorded count, else samples older than the lag.
        if windows is not None:  # up to the first sample of window `windows`, which closes the one before
            scored = min(s, int(np.searchsorted(t, int(t[0]) + windows * WINDOW_US, side="left")) + 1)
        else:
            scored = int(np.searchsorted(t, now - score_lag_us, side="left"))
        if scored > fed:
            idx = np.flatnonzero(sent[:s])
            more_lost, more_delay = up.fates(len(idx) - len(lost))  # the stream continues where it stopped
            lost, delay = np.concatenate([lost, more_lost]), np.concatenate([delay, more_delay])
            qhat = twin.display(t, q, idx, lost, delay, horizons[idx], t[fed:scored])
            done = len(acc.window_mse)
            acc.add(t[fed:scored], q[fed:scored], qhat)
            learner.observe(acc.window_mse[done:])
            fed = scored
        learner.step()
    return Stepped(sent, horizons, lambdas)
