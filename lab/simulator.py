"""Offline simulator: what the live system would do on a recording, fast.

It runs the live code, not a model of it: the same ``Policy.select`` decides the sends, the same ``LinkModel``
draws losses and delays, the same predictor ``fit_all`` makes the server's predictions, the same
``twin.display`` rule gives what the twin showed, and the same ``ErrorAccumulator`` scores it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.acks import SimulatedAcks
from device.link_emulation import LinkModel, LinkSpec
from device.policies.base import Policy
from lab.recorded_run import RecordedRun, recorded_run
from lab.sim_stepped import select_stepped
from lab.twin_display import TwinDisplay
from twin.constants import PIPELINE_LATENCY_US
from twin.metrics import ErrorAccumulator
from twin.predictors import DEFAULT_PREDICTOR
from twin.schema import Wire
from twin.session import Session


@dataclass
class SimResult:
    """Figures of one simulated run, plus (optionally) the display for plots and agreement checks."""

    metrics: dict[str, Any]
    qhat: np.ndarray | None = None
    sent: np.ndarray | None = None
    acc: ErrorAccumulator = field(default_factory=ErrorAccumulator)
    duration_s: float = 0.0
    status_lambdas: list[float] = field(default_factory=list)  # stepped runs (lab.sim_stepped): λ per status


def sample_message_bytes(joints: int, derivatives: bool = False) -> int:
    """Bytes of one sample message on the wire (msgpack body + ZeroMQ framing), as the device sends it."""
    extra = {"d": [0.123456789] * (2 * joints)} if derivatives else {}
    body = Wire().encode("sample", seq=2**31, t=2**40, q=[0.123456789] * joints, h=50_000, ts=2**40, k=10.0,
                         **extra)
    return len(body[0]) + 2


def prepare(policy: Policy, link: LinkSpec, latency_us: int = PIPELINE_LATENCY_US,
            ack_timeouts: list[tuple[int, int]] | None = None,
            retired: dict[int, tuple[int, bool]] | None = None) -> None:
    """Reset ``policy`` for a run over ``link``: link estimates as the live uplink would measure them, and for a
    resending policy acknowledgements drawn from the emulated link (the draws the simulator's fates repeat)."""
    rtt_ms = 2 * (link.delay_ms + link.jitter_ms / 2) + 2 * latency_us / 1000  # what the live uplink measures
    policy.set_link(rtt_ms, link.loss)  # what the live uplink would measure
    policy.reset()
    if policy.acks is not None:
        rtt_p99_ms = 2 * (link.delay_ms + link.jitter_ms) + 2 * latency_us / 1000
        policy.acks = SimulatedAcks(LinkModel(link), rtt_p99_ms, latency_us, ack_timeouts, retired)


def simulate(
    session: Session,
    policy: Policy,
    predictor: str = DEFAULT_PREDICTOR,
    link: LinkSpec | None = None,
    eps: float | None = None,
    keep: bool = False,
    latency_us: int = PIPELINE_LATENCY_US,
    replay: RecordedRun | None = None,
) -> SimResult:
    """Replay ``session`` through ``policy`` -> link -> server predictor -> display rule; score the twin.

    ``replay`` (``lab.recorded_run.recorded_run``): replay a live run as it happened (its resend timeouts, link
    estimates and online-learning steps) instead of from the link's nominal figures."""
    link = link or LinkSpec()
    mirrored = policy.predictor_name
    # With H = 0 every predictor shows the sample itself, so a hold mirror (send-on-delta) is exact.
    if mirrored is not None and mirrored != predictor and policy.horizon_us > 0:
        warnings.warn(f"policy {policy.spec()} mirrors predictor {mirrored!r} but the server runs {predictor!r}; "
                      "its sends are based on a twin the server does not show", stacklevel=2)
    t, q = session.t_us, session.q
    n = len(t)
    replay = replay or RecordedRun()
    if replay.pipeline_latency_us is not None:  # the latency that run measured
        latency_us = replay.pipeline_latency_us
    prepare(policy, link, latency_us, replay.ack_timeouts, replay.retired)
    # A recording made with KC-TD3 may be replayed with another policy: only policies that use link estimates
    # follow them.
    if replay.link_estimates and policy.uses_link:  # the first holds from the start (the estimate the run began with)
        policy.set_link(*replay.link_estimates[0][1:])
    learner = policy.make_learner() if policy.online else None
    if learner is not None or (policy.uses_link and len(replay.link_estimates) > 1):
        sent, horizons, status_lambdas = select_stepped(session, policy, link, predictor, latency_us, learner, replay)
    else:
        status_lambdas = []
        sent = policy.select(t, q)
        horizons = policy.horizons_us(n)  # KC-TD3 changes H on the fly
    if replay.selected_until_us is not None:  # samples the live device drained at shutdown, unselected
        sent = sent & (t <= replay.selected_until_us)
    idx = np.flatnonzero(sent)
    model = LinkModel(link)
    lost, delay = model.up.fates(model.keys(t[idx]))
    twin = TwinDisplay(predictor, latency_us, replay.arrivals)
    qhat = twin.display(t, q, idx, lost, delay, horizons[idx], t)
    acc = ErrorAccumulator()
    acc.add(t, q, qhat)
    duration_s = max((t[-1] - t[0]) * 1e-6, 1e-9)
    metrics: dict[str, Any] = {
        "policy": policy.spec(),
        "predictor": predictor,
        "link": link.label(),
        "delay_ms": link.delay_ms,
        "loss": link.loss,
        "samples": n,
        "sent": len(idx),
        "load": len(idx) / n if n else float("nan"),
        "delivered": int((~lost).sum()),
        "resends": policy.acks.resends if policy.acks is not None else 0,
        "bytes_per_s": len(idx) * sample_message_bytes(session.joints, twin.deriv_used) / duration_s,
        **acc.summary(eps),
    }
    return SimResult(metrics, qhat if keep else None, sent if keep else None, acc, duration_s, status_lambdas)


def simulate_many(
    sessions: list[Session],
    policy: Policy,
    predictor: str = DEFAULT_PREDICTOR,
    link: LinkSpec | None = None,
    eps: float | None = None,
    keep: bool = False,
    as_recorded: bool = False,
) -> tuple[dict[str, Any], list[SimResult]]:
    """Simulate each session (fresh policy state, same link seed) and pool the figures over all samples
    (``as_recorded``: replaying each recording's device run, ``lab.recorded_run.recorded_run``)."""
    results = [simulate(s, policy, predictor, link, eps, keep,
                        replay=recorded_run(s) if as_recorded else None) for s in sessions]
    acc = ErrorAccumulator()
    for r in results:
        acc.merge(r.acc)
    samples = sum(r.metrics["samples"] for r in results)
    sent = sum(r.metrics["sent"] for r in results)
    duration = sum(r.duration_s for r in results)
    pooled = {**results[0].metrics, "samples": samples, "sent": sent, "load": sent / samples,
              "delivered": sum(r.metrics["delivered"] for r in results),
              "resends": sum(r.metrics["resends"] for r in results),
              "bytes_per_s": sum(r.metrics["bytes_per_s"] * r.duration_s for r in results) / max(duration, 1e-9),
              "sessions": len(results), **acc.summary(eps)}
    return pooled, results
