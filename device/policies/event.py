"""Event-triggered policies: send-on-delta and model-based triggering (dead reckoning, IEEE 1278 DIS style).

Both mirror on the device what the twin will display from the samples sent so far, and send a sample only when
the measured arm drifts more than ``delta`` degrees (any joint) from it, or when ``heartbeat_ms`` has passed since
the last send. Send-on-delta mirrors a hold-last-sample twin; dead reckoning mirrors the server's predictor
(the same ``OnlinePredictor`` code the server runs), so the twin is only corrected when it would be wrong.

The search jumps from send to send over numpy windows, so a whole session costs O(number of sends) Python steps:
this is what makes the simulator fast, and the live device runs the very same ``select`` on each new chunk.
"""

from __future__ import annotations

import numpy as np

from device.acks import AckTracker
from device.policies import trigger_kernel
from device.policies.base import Policy, PolicySpecError
from twin.display import Prediction
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.predictors import DEFAULT_PREDICTOR, OnlinePredictor, make_predictor

_W0 = 32  # first search window (samples); doubles while no trigger is found
_ACK_WINDOW = 256  # with resend: samples scanned ahead before looking at acknowledgements again
LOOK_MAX_MS = 1000.0  # past the 500 ms heartbeat a lookahead forecasts beyond any prediction the twin still shows
_NO_FORECAST = np.zeros((1, 3, 1))  # the kernel's forecast argument when there is no lookahead (never read)


class DeadReckoningPolicy(Policy):
    """Send when |q - mirrored twin| > delta (deg) on any joint (``norm=rms``: the RMS over joints), or after
    ``heartbeat_ms`` of silence. ``look`` (ms, or ``auto`` = the measured one-way delay) tests the error the twin
    would show that far ahead instead (``trigger_kernel.scan``): under delay a correction then lands in time."""

    family = "dead-reckoning"
    predictor_name: str

    def __init__(self, delta_deg: float, predictor: str = DEFAULT_PREDICTOR, horizon_ms: float = 200.0,
                 heartbeat_ms: float = 500.0, norm: str = "max", resend: bool = False,
                 look: float | str = 0.0) -> None:
        super().__init__(horizon_ms)
        if delta_deg <= 0:
            raise PolicySpecError("delta must be > 0 degrees")
        if heartbeat_ms <= 0:
            raise PolicySpecError("heartbeat must be > 0 ms")
        if norm not in trigger_kernel.NORMS:
            raise PolicySpecError("norm must be 'max' (largest joint error), 'rms' (over joints) or 'energy' "
                                  "(squared error accumulated since the last send)")
        if resend and predictor not in trigger_kernel.KINDS:
            # Resend runs inside the compiled trigger kernel; the numpy path of other predictors has none, and
            # accepting resend=1 there would silently run without it (issue 10, defect 10).
            raise PolicySpecError(f"resend=1 needs a predictor with a compiled trigger kernel "
                                  f"({', '.join(trigger_kernel.KINDS)}); pred={predictor} has none: drop resend=1")
        self.norm = norm
        self.resend = resend
        self.look_auto = isinstance(look, str) and look.strip().lower() == "auto"
        look_ms = 0.0 if self.look_auto else float(look)
        if not 0 <= look_ms <= LOOK_MAX_MS:
            raise PolicySpecError(f"look must be 'auto' (the one-way delay the device measures) or 0-{LOOK_MAX_MS:g} "
                                  f"ms, not {look}")
        if (self.look_auto or look_ms > 0) and predictor != "kinematic":
            # The lookahead forecasts the arm from the device's derivative estimate, which only the kinematic
            # mirror keeps across chunks.
            raise PolicySpecError(f"look needs pred=kinematic (it forecasts the arm from the device's velocity and "
                                  f"acceleration estimate), not pred={predictor}")
        self.uses_link = self.look_auto  # look=auto follows the link estimate (set_link)
        self.look_us = round(look_ms * 1000)
        self._link = (0.0, 0.0)  # (RTT ms, loss) last given to set_link; a reset keeps it, as KC-TD3's does
        self.delta_deg = float(delta_deg)
        self.predictor_name = predictor
        self.heartbeat_us = int(heartbeat_ms * 1000)
        self._delta_rad = np.radians(self.delta_deg)
        self.reset()

    def reset(self) -> None:
        predictor = make_predictor(self.predictor_name)
        self._mirror = OnlinePredictor(predictor)
        self._pred: Prediction | None = None
        self._measured = 0
        self._sent = 0
        # Built-in polynomial predictors run in the compiled kernel; others (learned) take the numpy path.
        self._kind = trigger_kernel.KINDS.get(self.predictor_name, -1)
        self._hist_cap = max(predictor.history, 1)
        self._kstate: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._energy = 0.0
        # Derivative-fed predictors need the last measured samples before each chunk (device-side estimate).
        self._tail_t = np.zeros(0, dtype=np.int64)
        self._tail_q: np.ndarray | None = None
        # Resend (device.acks) runs on the compiled path only (the constructor refuses resend=1 without it).
        self.acks = AckTracker() if self.resend and self._kind >= 0 else None

    def retarget(self, delta_deg: float, horizon_ms: float) -> None:
        """New threshold and horizon from the next sample on (between ``select`` calls): KC-TD3's trigger mode
        sets them every 100 ms. Sends made so far keep the horizon they carried (the kernel mirrors each
        prediction with its own H, as the server shows it)."""
        if delta_deg <= 0:
            raise PolicySpecError("delta must be > 0 degrees")
        self.delta_deg = float(delta_deg)
        self._delta_rad = np.radians(self.delta_deg)
        self.horizon_us = round(horizon_ms * 1000)

    def set_link(self, rtt_ms: float, loss: float) -> None:
        """With ``look=auto`` the lookahead is the one-way delay: half the measured RTT, pipeline included (the
        time a send takes to reach the twin, as KC-TD3's mirror models it)."""
        if self.look_auto:
            self._link = (float(np.nan_to_num(rtt_ms, nan=0.0)), float(np.nan_to_num(loss, nan=0.0)))
            self.look_us = max(round(self._link[0] * 500), 0)

    def link_estimate(self) -> tuple[float, float] | None:
        return self._link if self.look_auto else None

    @property
    def k(self) -> float:
        """Achieved mean sampling interval so far (samples per send), for status lines."""
        return self._measured / self._sent if self._sent else float("nan")

    def _send(self, t_us: int, q: np.ndarray, deriv: np.ndarray | None = None) -> None:
        self._pred = self._mirror.update(t_us, q, self.horizon_us, deriv)
        self._sent += 1

    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self._kind >= 0:
            t, qq = np.ascontiguousarray(t_us, dtype=np.int64), np.ascontiguousarray(q, dtype=np.float64)
            return self._select_kernel(t, qq) if self.acks is None else self._select_resending(t, qq)
        return self.select_reference(t_us, q)

    def _select_resending(self, t: np.ndarray, q: np.ndarray) -> np.ndarray:
        """The kernel's triggers plus ack-based resends: scan up to the next ack deadline, check it, force a send
        there if the oldest outstanding send was lost. A scan that finds a send whose own deadline falls inside
        the scanned stretch is undone and redone up to that send, so every deadline is checked on time."""
        acks = self.acks
        assert acks is not None
        n = len(t)
        out = np.zeros(n, dtype=bool)
        i = 0
        while i < n:
            deadline = acks.next_deadline_us()
            if deadline is not None:
                r = i + int(np.searchsorted(t[i:], deadline, side="left"))
                out[i:r] = self._scan_registering(t, q, i, r)
                if r < n and acks.expire(int(t[r])):
                    heartbeat, self.heartbeat_us = self.heartbeat_us, 0  # heartbeat 0: the kernel sends row r
                    out[r] = self._select_kernel(t[r:r + 1], q[r:r + 1])[0]
                    self.heartbeat_us = heartbeat
                    acks.sent(int(t[r]), resend=True)
                    r += 1
                i = r
                continue
            j = min(n, i + _ACK_WINDOW)
            snap = self._snapshot()
            part = self._select_kernel(t[i:j], q[i:j])
            hits = np.flatnonzero(part)
            if len(hits) and acks.deadline_of(int(t[i + hits[0]])) <= t[j - 1]:
                self._restore(snap)  # the first send's deadline is inside: stop right after that send
                j = i + int(hits[0]) + 1
                part = self._select_kernel(t[i:j], q[i:j])
            out[i:j] = self._register(t, i, part)
            i = j
        return out

    def _scan_registering(self, t: np.ndarray, q: np.ndarray, i: int, j: int) -> np.ndarray:
        """Kernel scan of rows i..j-1 with every send registered for acknowledgement (their deadlines come after
        the one being waited for, so none is missed)."""
        return self._register(t, i, self._select_kernel(t[i:j], q[i:j]))

    def _register(self, t: np.ndarray, i: int, part: np.ndarray) -> np.ndarray:
        """Hand the sends of ``part`` (rows i.. of ``t``) to the ack tracker, in order; returns ``part``."""
        assert self.acks is not None
        for h in np.flatnonzero(part):
            self.acks.sent(int(t[i + h]))
        return part

    def _snapshot(self) -> tuple[object, ...]:
        k = tuple(a.copy() for a in self._kstate) if self._kstate is not None else None
        tail_q = None if self._tail_q is None else self._tail_q.copy()
        return k, self._tail_t.copy(), tail_q, self._sent, self._measured

    def _restore(self, snap: tuple[object, ...]) -> None:
        k, self._tail_t, self._tail_q, self._sent, self._measured = snap  # type: ignore[assignment]
        self._kstate = k  # type: ignore[assignment]

    def _with_tail(self, t_us: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """Prepend the last measured samples of earlier chunks; keep this chunk's tail for the next one."""
        if not self._mirror.uses_derivatives:
            return t_us, q, 0
        tail_q = self._tail_q if self._tail_q is not None else np.zeros((0, q.shape[1]))
        tt = np.concatenate([self._tail_t, t_us])
        qq = np.concatenate([tail_q, q])
        self._tail_t, self._tail_q = tt[-(DERIV_WINDOW - 1):].copy(), qq[-(DERIV_WINDOW - 1):].copy()
        return np.ascontiguousarray(tt), np.ascontiguousarray(qq), len(tt) - len(t_us)

    def _select_kernel(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self._kstate is None:
            joints = q.shape[1]
            self._kstate = (np.zeros(self._hist_cap, dtype=np.int64), np.zeros((self._hist_cap, joints)),
                            np.zeros(4, dtype=np.int64), np.zeros((3, joints)), np.zeros(1))
        hist_t, hist_q, state, coeffs, energy = self._kstate
        tt, qq, start = self._with_tail(t_us, q)
        out = np.zeros(len(tt), dtype=np.bool_)
        # The forecast of the rows scanned (not the history rows before ``start``): live chunks are a few samples.
        fc = quad_fit(tt, qq, np.arange(start, len(tt)), DERIV_WINDOW) if self.look_us else _NO_FORECAST
        self._sent += trigger_kernel.scan(tt, qq, out, self._kind, self._delta_rad, self.heartbeat_us,
                                          self.horizon_us, hist_t, hist_q, state, coeffs, energy,
                                          trigger_kernel.NORMS[self.norm], start, DERIV_WINDOW, fc, self.look_us)
        self._measured += len(t_us)
        return out[start:]

    def select_reference(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Numpy implementation on the predictor objects themselves (any predictor; the kernel's reference)."""
        n = len(t_us)
        out = np.zeros(n, dtype=bool)
        self._measured += n
        tt_all, qq_all, start = self._with_tail(t_us, q)
        i = 0
        if n and self._pred is None:
            out[0] = True
            self._send(int(t_us[0]), q[0], self._deriv(tt_all, qq_all, start))
            i = 1
        w = _W0
        while i < n:
            assert self._pred is not None
            j = min(i + w, n)
            pred = self._pred
            tt = t_us[i:j]
            if self.look_us:
                c = quad_fit(tt_all, qq_all, np.arange(i, j) + start, DERIV_WINDOW)
                lk = self.look_us * 1e-6
                err = c[:, 0] + lk * (c[:, 1] + lk * c[:, 2]) - pred.evaluate(tt + self.look_us)
            else:
                err = q[i:j] - pred.evaluate(tt)
            if self.norm == "energy":
                energy = self._energy + np.cumsum(np.mean(err**2, axis=1))
                drift = energy > self._delta_rad**2 * trigger_kernel.ENERGY_SAMPLES
            elif self.norm == "rms":
                drift = np.sqrt(np.mean(err**2, axis=1)) > self._delta_rad
            else:
                drift = np.abs(err).max(axis=1) > self._delta_rad
            trig = drift | (tt - pred.t0_us >= self.heartbeat_us)
            hit = int(np.argmax(trig))
            if not trig[hit]:
                if self.norm == "energy":
                    self._energy = float(energy[-1])
                i = j
                w *= 2
                continue
            m = i + hit
            out[m] = True
            self._energy = 0.0
            self._send(int(t_us[m]), q[m], self._deriv(tt_all, qq_all, m + start))
            i = m + 1
            w = _W0
        return out

    def _deriv(self, t_us: np.ndarray, q: np.ndarray, i: int) -> np.ndarray | None:
        """The device's [velocity, acceleration / 2] at measured row i, if the mirrored predictor uses them."""
        if not self._mirror.uses_derivatives:
            return None
        return quad_fit(t_us, q, np.array([i]), DERIV_WINDOW)[0, 1:]

    def spec(self) -> str:
        return (f"{self.family}:delta={self.delta_deg:g},pred={self.predictor_name},h={self.horizon_us / 1000:g},"
                f"hb={self.heartbeat_us / 1000:g}" + (f",norm={self.norm}" if self.norm != "max" else "")
                + (",resend=1" if self.resend else "")
                + (",look=auto" if self.look_auto else f",look={self.look_us / 1000:g}" if self.look_us else ""))


class SendOnDeltaPolicy(DeadReckoningPolicy):
    """Classic send-on-delta: threshold against the last sent value (the twin holds it, H = 0 by default)."""

    family = "send-on-delta"

    def __init__(self, delta_deg: float, horizon_ms: float = 0.0, heartbeat_ms: float = 500.0,
                 resend: bool = False) -> None:
        super().__init__(delta_deg, "hold", horizon_ms, heartbeat_ms, resend=resend)

    def spec(self) -> str:
        return (f"{self.family}:delta={self.delta_deg:g},h={self.horizon_us / 1000:g},hb={self.heartbeat_us / 1000:g}"
                + (",resend=1" if self.resend else ""))
