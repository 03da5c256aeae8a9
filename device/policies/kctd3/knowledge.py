"""KC-TD3's action space and its expert knowledge (the "K"): the analytic safe action from motion statistics.

Shared by the device policy (``device.policies.kctd3.policy``), the training (``lab.kctd3.train``) and its calibration.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

K_MIN, K_MAX = 1, 200  # sampling interval (samples), log-scale action
H_MAX_MS = 500.0
_RAD2DEG = 180.0 / np.pi
_LOG_KR = math.log(K_MAX / K_MIN)
_KGRID = np.arange(K_MIN, K_MAX + 1, dtype=np.float64)


def action_to_kh(a: np.ndarray) -> tuple[int, float]:
    """Actor output in [-1, 1]^2 -> (k in [1, 200] log-scale rounded, H in [0, 500] ms)."""
    a0, a1 = np.clip(np.asarray(a, dtype=np.float64)[:2], -1.0, 1.0)
    k = int(np.clip(round(K_MIN * (K_MAX / K_MIN) ** ((a0 + 1) / 2)), K_MIN, K_MAX))
    return k, float((a1 + 1) / 2 * H_MAX_MS)


def kh_to_action(k: float, h_ms: float) -> np.ndarray:
    """Inverse of ``action_to_kh`` (scalar math: it runs at every decision)."""
    ak = 2 * math.log(min(max(k, K_MIN), K_MAX) / K_MIN) / _LOG_KR - 1
    return np.array([ak, 2 * min(max(h_ms, 0.0), H_MAX_MS) / H_MAX_MS - 1])


def motion_stats(t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
    """RMS velocity (deg/s), acceleration (deg/s²) and jerk (deg/s³) over joints of one window.

    A least-squares cubic per joint over the window: the 1 kHz encoder noise makes finite-difference jerk
    meaningless, the fit averages it out. The fit assumes the nominal uniform sample spacing (timestamp jitter
    of a few µs is irrelevant here), so its pseudo-inverse is cached per window length. Under 8 samples: zeros.
    """
    n = len(t_us)
    if n < 8:
        return np.zeros(3)
    span = max((int(t_us[-1]) - int(t_us[0])) * 1e-6, 1e-3)
    pinv, s = _cubic_pinv(n)
    c = pinv @ (np.asarray(q, dtype=np.float64) * _RAD2DEG)  # (4, J) in units of the window span
    v = (c[1] + 2 * c[2] * s[:, None] + 3 * c[3] * (s * s)[:, None]) / span
    a = (2 * c[2] + 6 * c[3] * s[:, None]) / span**2
    j = 6 * c[3] / span**3
    return np.array([np.sqrt(np.mean(v * v)), np.sqrt(np.mean(a * a)), np.sqrt(np.mean(j * j))])


_PINV: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _cubic_pinv(n: int) -> tuple[np.ndarray, np.ndarray]:
    if n not in _PINV:
        s = np.linspace(-1.0, 0.0, n)
        _PINV[n] = (np.linalg.pinv(np.stack([np.ones(n), s, s * s, s * s * s], axis=1)), s)
    return _PINV[n]


def expert_kh(stats: np.ndarray, eps: float, rtt_ms: float, loss: float, predictor: str = "kinematic",
              safety: float = 1.0, resend_ms: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The analytic rule ("K"): largest k whose predicted window MSE x ``safety`` <= eps, and H* = gap + margin.

    The extrapolation error t after a sample grows as jerk·t³/6 (kinematic / quadratic predictors), ½·acc·t²
    (linear) or vel·t (hold). Sending every k ms with one-way delay d, the twin runs t in [d, d + k], so the
    window MSE is the mean of err(t)² over that range (closed form). A lost packet (weight ``loss``) stretches the
    gap to 2k, or, when the device resends after ``resend_ms`` without a reply, to k + resend_ms. ``stats``
    (..., 3) -> k (...,), H ms (...,), vectorised over a grid of all k. The horizon must outlast the longest
    gap: H* = gap·(1 + 40·loss) + 5 ms without resend (extrapolating across a lost sample beats holding),
    gap + resend_ms + 5 ms with it.
    """
    stats = np.asarray(stats, dtype=np.float64)
    power, coef = ((1, stats[..., 0]) if predictor == "hold" else
                   (2, stats[..., 1] / 2) if predictor == "linear" else (3, stats[..., 2] / 6))
    d = max(rtt_ms, 0.0) / 2 * 1e-3
    m = 2 * power  # err² ∝ t^m; mean over [d, d+g] = ((d+g)^(m+1) - d^(m+1)) / ((m+1) g)

    def mean_sq(g: np.ndarray) -> np.ndarray:
        return ((d + g) ** (m + 1) - d ** (m + 1)) / ((m + 1) * g)

    g = _KGRID * 1e-3
    lost_g = 2 * g if resend_ms is None else g + resend_ms * 1e-3
    shape = mean_sq(g) * (1 - loss) + mean_sq(lost_g) * loss * lost_g / g  # time-weighted: a lost interval lasts
    shape /= 1 + loss * (lost_g / g - 1)  # longer
    mse = safety * (coef[..., None] ** 2) * shape  # (..., 200)
    ok = mse <= eps
    k = np.where(ok.any(-1), K_MIN + (K_MAX - K_MIN) - np.argmax(ok[..., ::-1], axis=-1), K_MIN).astype(np.float64)
    gap_ms = k + d * 1e3
    h = gap_ms * (1 + 40 * loss) + 5.0 if resend_ms is None else gap_ms + resend_ms + 5.0
    return k, np.clip(h, 0.0, H_MAX_MS)


# Trigger action mode (meta["action"] == "trigger"): the actor picks the dead-reckoning threshold δ and H.
# δ spans the range ``armtwin evaluate``'s dead-reckoning search covers (lab.evaluate.DELTAS_DEG) on a log scale.
DELTA_MIN_DEG, DELTA_MAX_DEG = 0.005, 2.0
_LOG_DR = math.log(DELTA_MAX_DEG / DELTA_MIN_DEG)
MARGIN_CLIP = (0.5, 2.0)  # the expert moves δ at most this far from the searched δ*


def action_to_dh(a: np.ndarray) -> tuple[float, float]:
    """Actor output in [-1, 1]^2 -> (δ in [0.005, 2] deg log-scale, H in [0, 500] ms)."""
    a0, a1 = np.clip(np.asarray(a, dtype=np.float64)[:2], -1.0, 1.0)
    return float(DELTA_MIN_DEG * math.exp(_LOG_DR * (a0 + 1) / 2)), float((a1 + 1) / 2 * H_MAX_MS)


def dh_to_action(delta_deg: float, h_ms: float) -> np.ndarray:
    """Inverse of ``action_to_dh``."""
    ad = 2 * math.log(min(max(delta_deg, DELTA_MIN_DEG), DELTA_MAX_DEG) / DELTA_MIN_DEG) / _LOG_DR - 1
    return np.array([ad, 2 * min(max(h_ms, 0.0), H_MAX_MS) / H_MAX_MS - 1])


def expert_dh(table: dict[str, list[Any]], rtt_ms: float, loss: float, mse_ema: float, eps: float,
              target: float = 0.8, safety: float = 1.0) -> tuple[float, float]:
    """The trigger mode's rule: the (δ*, H*) the dead-reckoning search chose on the training sessions for this
    constraint at the nearest link of its grid (``table``, from ``lab.kctd3.calibrate.dr_expert_table``),
    with δ scaled by the observed error margin: the mirrored window MSE (an EMA) against target·ε, square root
    since a trigger's error grows about as δ², clipped to ``MARGIN_CLIP``, and divided by √safety (fitted on the
    training data like the static rule's safety factor)."""
    delays, losses = np.asarray(table["delay_ms"]), np.asarray(table["loss"])
    i = int(np.argmin(np.abs(delays - max(rtt_ms / 2, 0.0))))
    j = int(np.argmin(np.abs(losses - loss)))
    delta, h = float(table["delta_deg"][i][j]), float(table["h_ms"][i][j])
    margin = math.sqrt(target * eps / mse_ema) if mse_ema > 0 else MARGIN_CLIP[1]
    return delta * min(max(margin, MARGIN_CLIP[0]), MARGIN_CLIP[1]) / math.sqrt(safety), h
