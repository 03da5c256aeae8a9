"""What a live device recorded about its own run, so the simulator can replay the run as it happened.

A live run's decisions depend on more than the samples: the resend timeout follows the measured RTT, the policy's
link estimates (RTT, loss) are updated at each status, and online learning steps at status times on the windows
scored by then. The device records all of it (session metadata for the start, the status channel after that),
down to how many 100 ms windows it had scored at each status (scoring runs in blocks, so that count is not
exactly "everything older than the lag"). ``simulate(..., replay=recorded_run(session))`` uses it instead of
the link's nominal figures; that is how live/offline agreement is checked (tests/test_agreement.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from device.link_emulation import LinkSpec, LinkSpecError
from twin.session import Session


@dataclass
class RecordedRun:
    """Replay inputs: (device time µs, value) steps; empty when the run had none of that kind."""

    ack_timeouts: list[tuple[int, int]] = field(default_factory=list)  # resend timeout, µs
    link_estimates: list[tuple[int, float, float]] = field(default_factory=list)  # (t, RTT ms, loss)
    status_us: list[int] = field(default_factory=list)  # when each status ran (online learning stepped)
    windows_scored: list[int | None] = field(default_factory=list)  # per status: 100 ms windows scored by then
    score_lag_us: int | None = None  # how long samples waited for predictions before being scored
    # Median sample -> server latency the device measured, less the emulated link delay: the pipeline latency of
    # that run (0.4 ms on a quiet host, 1 ms and more on a busy one), in place of the simulator's nominal 0.5 ms.
    pipeline_latency_us: int | None = None
    # The host's timing, as it fell (twin.session TIMING_TOPIC): when each live send's prediction took effect
    # (sample time sorted -> device time, -1 never), and each resend check (send time -> (checked at, acked?)).
    arrivals: tuple[np.ndarray, np.ndarray] | None = None
    retired: dict[int, tuple[int, bool]] = field(default_factory=dict)
    selected_until_us: int | None = None  # the last sample the live policy saw (later ones were drained at the end)


def recorded_run(session: Session) -> RecordedRun:
    """Read the replay inputs from a device recording (the first values hold from the first sample)."""
    meta, t0 = session.meta, int(session.t_us[0]) if len(session.t_us) else 0
    statuses = [st for st in session.status if "t_us" in st]

    def applied(st: dict[str, object]) -> int:
        """When a status changed the policy: right after the last sample it had selected (older recordings:
        the status's own time)."""
        return int(st["policy_t_us"]) + 1 if "policy_t_us" in st else int(st["t_us"])  # type: ignore[call-overload]

    run = RecordedRun(status_us=[applied(st) for st in statuses], score_lag_us=meta.get("score_lag_us"),
                      windows_scored=[st.get("windows_scored") for st in statuses])
    if "ack_timeout_us" in meta:
        run.ack_timeouts = [(t0, int(meta["ack_timeout_us"]))] + [
            (applied(st), int(st["ack_timeout_us"])) for st in statuses if "ack_timeout_us" in st]
    if "link_estimate" in meta:
        run.link_estimates = [(t0, float(meta["link_estimate"][0]), float(meta["link_estimate"][1]))] + [
            (applied(st), float(st["link_estimate"][0]), float(st["link_estimate"][1]))
            for st in statuses if "link_estimate" in st]
    p50 = (session.summary or {}).get("uplink_latency_p50_ms")
    if isinstance(p50, int | float) and p50 == p50:  # not NaN
        try:
            link = LinkSpec.parse(str(meta.get("link", "")))
        except LinkSpecError:
            link = LinkSpec()
        run.pipeline_latency_us = max(0, round(1000 * (p50 - link.delay_ms - link.jitter_ms / 2)))
    until = (session.summary or {}).get("last_selected_t_us")
    if isinstance(until, int) and until > 0:
        run.selected_until_us = until
    if session.timing is not None:
        tm = session.timing
        # The last record of a sample wins (a prediction first missing may still have come back later).
        newest_first_t0, newest_first_arr = tm["pred_t0_us"][::-1], tm["pred_arrival_us"][::-1]
        pred_t0, first = np.unique(newest_first_t0, return_index=True)
        run.arrivals = (pred_t0, newest_first_arr[first])
        run.retired = {int(a): (int(c), bool(ok))
                       for a, c, ok in zip(tm["ack_t_us"], tm["ack_check_us"], tm["ack_ok"], strict=True)}
    return run
