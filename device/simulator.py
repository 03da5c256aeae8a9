"""Offline simulator: what the live system would do on a recording, fast (DESIGN.md rule 6).

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
from device.link import LinkModel, LinkSpec
from device.policies import Policy
from twin.display import displayed, in_effect
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.metrics import ErrorAccumulator
from twin.predictors import DEFAULT_PREDICTOR, make_predictor
from twin.schema import Wire
from twin.session import Session

# Serial + device loop + loopback latency of the live pipeline (device time -> server receipt): the device reports
# it as `uplink_latency_p50_ms` (0.4-0.5 ms here; printed by `pytest tests/test_agreement.py -s`). The simulator
# adds it so live and simulated arrivals line up.
PIPELINE_LATENCY_US = 500


@dataclass
class SimResult:
    """Figures of one simulated run, plus (optionally) the display for plots and agreement checks."""

    metrics: dict[str, Any]
    qhat: np.ndarray | None = None
    sent: np.ndarray | None = None
    acc: ErrorAccumulator = field(default_factory=ErrorAccumulator)
    duration_s: float = 0.0


def sample_message_bytes(joints: int, derivatives: bool = False) -> int:
    """Bytes of one sample message on the wire (msgpack body + ZeroMQ framing), as the device sends it."""
    extra = {"d": [0.123456789] * (2 * joints)} if derivatives else {}
    body = Wire().encode("sample", seq=2**31, t=2**40, q=[0.123456789] * joints, h=50_000, ts=2**40, k=10.0,
                         **extra)
    return len(body[0]) + 2


def recorded_ack_timeouts(session: Session) -> list[tuple[int, int]] | None:
    """The resend timeouts a live device used, as (device time µs, timeout µs), from its recording: the one from
    the hello round trip (metadata) and each status update. None if the recording has none (no resend policy)."""
    first = session.meta.get("ack_timeout_us")
    if first is None:
        return None
    out = [(int(session.t_us[0]), int(first))] if len(session.t_us) else []
    out += [(int(st["t_us"]), int(st["ack_timeout_us"])) for st in session.status
            if "t_us" in st and "ack_timeout_us" in st]
    return out


def simulate(
    session: Session,
    policy: Policy,
    predictor: str = DEFAULT_PREDICTOR,
    link: LinkSpec | None = None,
    eps: float | None = None,
    keep: bool = False,
    latency_us: int = PIPELINE_LATENCY_US,
    ack_timeouts: list[tuple[int, int]] | None = None,
) -> SimResult:
    """Replay ``session`` through ``policy`` -> link -> server predictor -> display rule; score the twin.

    ``ack_timeouts``: (device time, µs) resend timeouts to use instead of the link's nominal RTT, e.g. the ones a
    live device used (``recorded_ack_timeouts``)."""
    link = link or LinkSpec()
    mirrored = getattr(policy, "predictor_name", None)
    # With H = 0 every predictor shows the sample itself, so a hold mirror (send-on-delta) is exact.
    if mirrored is not None and mirrored != predictor and policy.horizon_us > 0:
        warnings.warn(f"policy {policy.spec()} mirrors predictor {mirrored!r} but the server runs {predictor!r}; "
                      "its sends are based on a twin the server does not show", stacklevel=2)
    t, q = session.t_us, session.q
    n = len(t)
    rtt_ms = 2 * (link.delay_ms + link.jitter_ms / 2) + 2 * latency_us / 1000  # what the live uplink measures
    set_link = getattr(policy, "set_link", None)
    if set_link is not None:  # policies that use link estimates get what the live uplink would measure
        set_link(rtt_ms, link.loss)
    policy.reset()
    if policy.acks is not None:  # resending policies hear back from the emulated link (same draws as below)
        rtt_p99_ms = 2 * (link.delay_ms + link.jitter_ms) + 2 * latency_us / 1000
        policy.acks = SimulatedAcks(LinkModel(link), rtt_p99_ms, latency_us, ack_timeouts)
    sent = policy.select(t, q)
    # Policies that change H on the fly (KC-TD3) say which horizon each sample was sent with.
    per_sample = getattr(policy, "sample_horizons_us", None)
    idx = np.flatnonzero(sent)
    lost, delay = LinkModel(link).up.fates(len(idx))
    recv = idx[~lost]
    arrival = t[recv] + delay[~lost] + latency_us
    order = in_effect(arrival, t[recv])  # the server ignores samples older than what it shows (reordering)
    recv, arrival = recv[order], arrival[order]
    pred_obj = make_predictor(predictor)
    deriv_used = bool(getattr(pred_obj, "uses_derivatives", False))
    if deriv_used:
        # The device sends its own velocity/acceleration estimate with each sample (same quad_fit as live).
        deriv = quad_fit(t, q, recv, DERIV_WINDOW)[:, 1:]
        coeffs = pred_obj.fit_with_derivatives(t[recv], q[recv], deriv)  # type: ignore[attr-defined]
    else:
        coeffs = pred_obj.fit_all(t[recv], q[recv])
    if per_sample is not None and len(per_sample) == n:
        horizon = np.asarray(per_sample, dtype=np.int64)[recv]
    else:
        horizon = np.full(len(recv), policy.horizon_us, dtype=np.int64)
    qhat = displayed(t, arrival, t[recv], horizon, coeffs)
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
        "delivered": len(recv),
        "resends": policy.acks.resends if policy.acks is not None else 0,
        "bytes_per_s": len(idx) * sample_message_bytes(session.joints, deriv_used) / duration_s,
        **acc.summary(eps),
    }
    return SimResult(metrics, qhat if keep else None, sent if keep else None, acc, duration_s)


def simulate_many(
    sessions: list[Session],
    policy: Policy,
    predictor: str = DEFAULT_PREDICTOR,
    link: LinkSpec | None = None,
    eps: float | None = None,
    keep: bool = False,
    recorded_timeouts: bool = False,
) -> tuple[dict[str, Any], list[SimResult]]:
    """Simulate each session (fresh policy state, same link seed) and pool the figures over all samples
    (``recorded_timeouts``: resend with the timeouts each recording's device used, ``recorded_ack_timeouts``)."""
    results = [simulate(s, policy, predictor, link, eps, keep,
                        ack_timeouts=recorded_ack_timeouts(s) if recorded_timeouts else None) for s in sessions]
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
