"""Compiled inner loop of the event-triggered policies (numba), shared by the live device and the simulator.

Event triggering is sequential by nature (each send changes what the twin will show next), so a whole hour costs
one step per sample; in numpy that is ~50 µs per send, far from the simulator's 1000x real-time target. This
kernel walks the samples in compiled code and re-fits the mirrored predictor after each send with the same
arithmetic as ``twin.predictors`` (hold / linear / quadratic through the newest sample);
``tests/test_event_policies.py`` checks it against those classes and against the pure-Python path.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from twin.kinematics import fit_row

KINDS = {"hold": 0, "linear": 1, "quadratic": 2, "kinematic": 3}
QUAD_WINDOW = 5  # QuadraticPredictor.history
NORMS = {"max": 0, "rms": 1, "energy": 2}
ENERGY_SAMPLES = 100  # energy budget = delta² over this many samples (100 ms at 1 kHz)


@njit(cache=True)
def _fit(tt: np.ndarray, qq: np.ndarray, first: int, last: int, kind: int, coeffs: np.ndarray) -> None:
    """Coefficients from rows first..last (newest last), as ``twin.predictors`` computes them.

    kind 0 hold, 1 two-point velocity, 2 and 3 the parabola of ``twin.kinematics.fit_row`` (the same code).
    """
    if kind == 0:
        for j in range(qq.shape[1]):
            coeffs[0, j] = qq[last, j]
            coeffs[1, j] = 0.0
            coeffs[2, j] = 0.0
    elif kind == 1:
        fit_row(tt, qq, max(first, last - 1), last, coeffs)
    else:
        fit_row(tt, qq, first, last, coeffs)


@njit(cache=True)
def scan(
    t: np.ndarray,
    q: np.ndarray,
    out: np.ndarray,
    kind: int,
    delta_rad: float,
    heartbeat_us: int,
    horizon_us: int,
    hist_t: np.ndarray,
    hist_q: np.ndarray,
    state: np.ndarray,
    coeffs: np.ndarray,
    energy: np.ndarray,
    norm: int,
    start: int,
    window: int,
    fc: np.ndarray,
    look_us: int,
) -> int:
    """Mark in ``out`` the samples to send; returns the number sent.

    ``state`` = [n_hist, t0 of the current prediction, has_prediction, horizon of the current prediction µs] and
    ``energy`` = [accumulated squared error]; they and the history arrays (last sends, newest last) are updated in
    place so a scan continues across chunks. ``horizon_us`` is the horizon a send made in this scan carries; the
    prediction already in effect keeps the one it was sent with (the server honours each sample's own H), so a
    policy may change H between chunks (KC-TD3's trigger mode does).
    ``norm`` 0: send when the largest joint error exceeds delta; 1: when the RMS over joints
    does; 2 ("energy"): when the squared error accumulated since the last send (mean over joints, summed over
    samples) exceeds delta² x ENERGY_SAMPLES. For an average-MSE constraint the energy trigger is the optimal
    one (send interval ~ acceleration^-2/5, against ^-1/2 for a bound on the error itself).
    Rows before ``start`` are measured history only (kind 3 fits velocity and acceleration over the last
    ``window`` measured rows, the device-side estimate the kinematic predictor receives).
    ``look_us`` > 0 (lookahead): the error tested is the one the twin would show ``look_us`` from now if nothing
    were sent, i.e. the device's forecast of the arm (``fc[i - start]`` = [q, v, a/2] of
    ``twin.kinematics.quad_fit`` at row i) against the prediction in effect, both carried forward. A send reaches
    the twin one link delay after its sample, so with ``look_us`` = that delay the trigger fires when a correction
    is still in time.
    """
    n = t.shape[0]
    joints = q.shape[1]
    cap = hist_t.shape[0]
    n_hist = state[0]
    t0 = state[1]
    sent = 0
    budget = delta_rad * delta_rad * ENERGY_SAMPLES
    lk = look_us * 1e-6
    for i in range(start, n):
        send = state[2] == 0
        if not send:
            age = t[i] - t0
            if age >= heartbeat_us:
                send = True
            else:
                tau = min(max(age + look_us, 0), state[3]) * 1e-6
                acc = 0.0
                for j in range(joints):
                    r = i - start
                    arm = q[i, j] if look_us == 0 else fc[r, 0, j] + lk * (fc[r, 1, j] + lk * fc[r, 2, j])
                    err = arm - (coeffs[0, j] + tau * (coeffs[1, j] + tau * coeffs[2, j]))
                    if norm == 0:
                        if abs(err) > delta_rad:
                            send = True
                            break
                    else:
                        acc += err * err
                if norm == 1 and acc > delta_rad * delta_rad * joints:
                    send = True
                elif norm == 2:
                    energy[0] += acc / joints
                    if energy[0] > budget:
                        send = True
        if send:
            out[i] = True
            sent += 1
            energy[0] = 0.0
            if n_hist == cap:
                for r in range(cap - 1):
                    hist_t[r] = hist_t[r + 1]
                    for j in range(joints):
                        hist_q[r, j] = hist_q[r + 1, j]
                n_hist -= 1
            hist_t[n_hist] = t[i]
            for j in range(joints):
                hist_q[n_hist, j] = q[i, j]
            n_hist += 1
            if kind == 3:
                _fit(t, q, max(0, i - window + 1), i, 3, coeffs)
            else:
                _fit(hist_t, hist_q, max(0, n_hist - QUAD_WINDOW), n_hist - 1, kind, coeffs)
            t0 = t[i]
            state[2] = 1
            state[3] = horizon_us
    state[0] = n_hist
    state[1] = t0
    return sent
