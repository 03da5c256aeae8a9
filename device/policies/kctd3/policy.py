"""KC-TD3 on the device (docs/kctd3.md): every T = 100 ms a small MLP picks the action (k, H); numpy only.

Between decisions the policy behaves like ``StaticPolicy(k, H)`` with a continuous send phase (the next send
comes k samples after the previous one, whatever k was). In the trigger action mode (checkpoint
``meta["action"] == "trigger"``) the action is the dead-reckoning threshold δ and H instead, and between decisions
the policy *is* a ``DeadReckoningPolicy`` (the same object and compiled kernel, retargeted at each decision).

At a decision it scores the window that just ended against the twin *as mirrored on the device*: the server's
predictor fitted to the samples this policy sent (device-side velocity/acceleration via ``quad_fit(DERIV_WINDOW)``,
as the uplink sends them), each prediction taking effect half an RTT after its sample and evaluated with the §3
display rule. That needs no network feedback, so the live device, the simulator and the training environment
compute the same state.

Checkpoints (``device/policies/kctd3/checkpoint.py``): the device reads the ``.npz`` beside ``POLICY.pt`` and
never imports torch.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.acks import AckTracker, periodic_sends
from device.policies import trigger_kernel
from device.policies.base import Policy, PolicySpecError
from device.policies.event import DeadReckoningPolicy
from device.policies.kctd3.checkpoint import lambda_at, load_checkpoint, tail_constraint
from device.policies.kctd3.knowledge import (
    action_to_dh,
    action_to_kh,
    dh_to_action,
    expert_dh,
    expert_kh,
    kh_to_action,
    motion_stats,
)
from device.policies.kctd3.online import DEFAULT_LR, OnlineLearner
from twin.display import displayed
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.predictors import make_predictor

DECISION_US = 100_000  # T
INIT_K, INIT_H_MS = 10, 20.0  # action before the first window has been seen
INIT_DELTA_DEG = 0.05  # trigger mode: threshold before the first window
MSE_EMA = 0.2  # trigger mode: weight of the newest window in the expert's error-margin estimate
ACTION_MODES = ("kh", "trigger")
STATE_NAMES = ("win_mse/eps", "avg_mse/eps", "load", "lambda", "v_rms", "a_rms", "j_rms", "v_rms_50ms",
               "a_rms_50ms", "j_rms_50ms", "rtt", "loss", "prev_k", "prev_h", "expert_k", "expert_h")
STATE_DIM = len(STATE_NAMES)
_RAD2DEG = 180.0 / np.pi
Behaviour = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (normalised state, expert action) -> action
ACTORS = ("net", "expert")  # who decides: the trained network, or the checkpoint's expert rule alone (ablation)


def _expert_behaviour(state: np.ndarray, a_exp: np.ndarray) -> np.ndarray:
    """``actor=expert``: the expert's action, whatever the state."""
    return a_exp


class _Mirror:
    """The twin as the server will show it, from the samples this device sent (the server predictor's own fit)."""

    def __init__(self, predictor: str) -> None:
        self.predictor = make_predictor(predictor)
        self.uses_d = self.predictor.uses_derivatives
        self.hist = max(self.predictor.history, 1)
        self._h: list[np.ndarray] | None = None  # the last ``hist`` sends: t, q, derivatives
        self.p: list[np.ndarray] | None = None  # predictions in effect or pending: arrival, t0, H, coeffs

    def add(self, t: np.ndarray, q: np.ndarray, d: np.ndarray, h_us: np.ndarray, delay_us: int) -> None:
        """New sends (time order): the same rows ``OnlinePredictor.update`` gives, one fit for the whole batch."""
        tt, qq, dd = (np.concatenate([o, n]) for o, n in zip(self._h or (t[:0], q[:0], d[:0]), (t, q, d), strict=True))
        if self.uses_d:
            c = self.predictor.fit_with_derivatives(tt, qq, dd)[-len(t):]
        else:
            c = self.predictor.fit_all(tt, qq)[-len(t):]
        self._h = [tt[-self.hist:], qq[-self.hist:], dd[-self.hist:]]
        new = [t + delay_us, t, h_us, c]
        self.p = new if self.p is None else [np.concatenate([o, n]) for o, n in zip(self.p, new, strict=True)]

    def display(self, t: np.ndarray) -> np.ndarray:
        """Mirrored twin at ``t`` (NaN before the first arrival); forgets predictions superseded before t[0]."""
        if self.p is None:
            return np.full((len(t), 1), np.nan)
        keep = max(int(np.searchsorted(self.p[0], t[0], side="right")) - 1, 0)
        self.p = [x[keep:] for x in self.p]
        return displayed(t, *self.p)


class KCTD3Policy(Policy):
    """``kc-td3:POLICY.pt[,pred=kinematic][,rtt=MS][,loss=P][,resend=0|1][,online=0|1][,actor=net|expert]``: (k, H)
    chosen every 100 ms by a trained actor; with ``resend`` (default: as trained) a lost send is repaired at once
    (``device.acks``); with ``online`` λ adapts on the device (``device.policies.kctd3.online``; the simulator runs it
    closed-loop, ``lab.sim_stepped``). ``actor=expert`` runs the checkpoint's expert rule in place of the network
    (the "knowledge alone" ablation: same state, trigger, resend and safety factor, no learnt decisions)."""

    family = "kc-td3"
    uses_link = True
    supports_online = True
    predictor_name: str

    def __init__(self, path: str | Path, pred: str | None = None, rtt_ms: float = 0.0, loss: float = 0.0,
                 behaviour: Behaviour | None = None, record: bool = False,
                 checkpoint: dict[str, Any] | None = None, resend: bool | None = None, online: bool = False,
                 actor: str = "net") -> None:
        super().__init__(INIT_H_MS)
        self.path = str(path)
        ck = checkpoint if checkpoint is not None else load_checkpoint(path)
        self.meta: dict[str, Any] = ck["meta"]
        self.family = "kc-td3" if self.meta["expert_knowledge"] else "td3"
        self.weights = [(ck[f"W{i}"], ck[f"b{i}"]) for i in range(3)]
        self.obs_mean, self.obs_std = ck["obs_mean"], ck["obs_std"]
        self.eps, self.lam = float(self.meta["eps"]), float(self.meta["lambda"])
        self.lam_grid: dict[str, Any] | None = self.meta.get("lambda_grid")
        self.lam_scale = 1.0  # online dual ascent multiplies the trained λ(link) by this
        self.lam_lock = threading.Lock()  # λ is recomputed under it: here (status) and by the online learner
        self.safety = float(self.meta.get("expert_safety", 1.0))
        self._pred_arg, self.predictor_name = pred, pred or str(self.meta["predictor"])
        self.behaviour, self.record = behaviour, record
        self._resend_arg, self.online = resend, online
        if actor not in ACTORS:
            raise PolicySpecError(f"actor must be one of {', '.join(ACTORS)} (the trained network or its expert rule), "
                                  f"not {actor!r}")
        if actor == "expert" and online:
            # The expert rule does not read λ, so an online λ learner would change nothing: refuse rather than mislead.
            raise PolicySpecError("actor=expert ignores λ, so online=1 would learn nothing: drop one of them")
        if actor == "expert" and not self.meta["expert_knowledge"]:
            raise PolicySpecError(f"{path}: actor=expert needs a checkpoint trained with expert knowledge "
                                  "(this one is the --no-knowledge TD3 ablation)")
        self.actor = actor
        if actor == "expert" and behaviour is None:
            self.behaviour = _expert_behaviour
        self.online_lr: float | None = None  # online learning rate (None: kctd3_online.DEFAULT_LR)
        self.resend = bool(self.meta.get("resend", False)) if resend is None else resend
        self.action_mode = str(self.meta.get("action", "kh"))  # checkpoints before the trigger mode: (k, H)
        if self.action_mode not in ACTION_MODES:
            raise PolicySpecError(f"{path}: unknown action mode {self.action_mode!r} (known: {ACTION_MODES})")
        self.trigger = self.action_mode == "trigger"
        if self.trigger and self.predictor_name not in trigger_kernel.KINDS:
            raise PolicySpecError(f"{path}: the trigger action mode needs a predictor with a compiled trigger "
                                  f"kernel ({', '.join(trigger_kernel.KINDS)}), not {self.predictor_name}")
        self.dr_table: dict[str, Any] | None = self.meta.get("trigger_expert")
        self.trigger_norm = str(self.meta.get("trigger_norm", "max"))  # checkpoints before the option: max
        if self.trigger and self.trigger_norm not in trigger_kernel.NORMS:
            raise PolicySpecError(f"{path}: unknown trigger norm {self.trigger_norm!r} "
                                  f"(known: {', '.join(trigger_kernel.NORMS)})")
        self.trigger_look = str(self.meta.get("trigger_look", "off"))  # checkpoints before the option: off
        if self.trigger_look not in ("off", "auto"):
            raise PolicySpecError(f"{path}: unknown trigger_look {self.trigger_look!r} (known: off, auto)")
        if self.trigger_look == "auto" and self.predictor_name != "kinematic":
            raise PolicySpecError(f"{path}: its trigger looks one delay ahead, which needs pred=kinematic, "
                                  f"not {self.predictor_name}")
        self.cost_target = float(self.meta.get("cost_target", 0.8))
        tail_constraint(self.meta)  # a malformed tail constraint is refused at load, not by the online learner later
        self.set_link(rtt_ms, loss)
        self.window_log: deque[float] = deque(maxlen=600)  # mirrored window MSEs, read by the online learner
        self.reset()

    def set_link(self, rtt_ms: float, loss: float) -> None:
        """Link estimates (live: from the uplink's RTT and missing replies; simulator: the emulated link)."""
        with self.lam_lock:  # the online learner reads the estimates and writes λ under it too
            self.rtt_ms = float(np.nan_to_num(rtt_ms, nan=0.0))
            self.loss = float(np.clip(np.nan_to_num(loss, nan=0.0), 0.0, 0.5))
            if self.lam_grid is not None:  # (no grid: λ stays where it was set, e.g. by training)
                self.lam = self.base_lambda() * self.lam_scale
        # The trigger gets the estimate too (with trigger_look its lookahead is the one-way delay). set_link runs
        # once before reset builds the trigger, which then takes the estimate itself.
        dr = getattr(self, "_dr", None)
        if dr is not None:
            dr.set_link(self.rtt_ms, self.loss)

    def link_estimate(self) -> tuple[float, float] | None:
        return self.rtt_ms, self.loss

    def base_lambda(self) -> float:
        """The trained λ for the current link estimates (before online adaptation)."""
        return lambda_at(self.lam_grid, self.rtt_ms, self.loss) if self.lam_grid is not None \
            else float(self.meta["lambda"])

    def reset(self) -> None:
        if self.lam_scale != 1.0:  # a new run starts from the trained λ (online learning adapted it)
            self.lam_scale = 1.0
            self.lam = self.base_lambda()
        self.acks = AckTracker() if self.resend else None
        self._mirror = _Mirror(self.predictor_name)
        self._next_us: int | None = None
        self._countdown = 0
        self._k, self.h_ms = INIT_K, INIT_H_MS
        self.horizon_us = round(INIT_H_MS * 1000)
        self._a = kh_to_action(INIT_K, INIT_H_MS)
        self.delta_deg, self._mse_ema = INIT_DELTA_DEG, float("nan")
        if self.trigger:  # resend: the trigger uses this policy's tracker (``select`` hands it over)
            look = "auto" if self.trigger_look == "auto" else 0.0
            self._dr = DeadReckoningPolicy(INIT_DELTA_DEG, self.predictor_name, INIT_H_MS, norm=self.trigger_norm,
                                           look=look)
            self._dr.set_link(self.rtt_ms, self.loss)
            self._a = dh_to_action(INIT_DELTA_DEG, INIT_H_MS)
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._ctx_t, self._ctx_q = np.zeros(0, dtype=np.int64), np.zeros((0, 0))
        self._sum_sq, self._count, self._seen, self.win_mse = 0.0, 0, 0, float("nan")
        self.sample_horizons_us = np.zeros(0, dtype=np.int64)
        self.trace: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (sample idx, state, a, expert)

    @property
    def k(self) -> float:
        """(k, H) mode: the chosen k; trigger mode: the achieved mean interval (samples per send)."""
        return self._dr.k if self.trigger else float(self._k)

    @property
    def avg_mse(self) -> float:
        """Running average MSE (deg²) of the mirrored twin since reset."""
        return self._sum_sq / self._count if self._count else float("nan")

    def act(self, state: np.ndarray) -> np.ndarray:
        """Deterministic actor: normalised state (STATE_DIM,) -> action in [-1, 1]^2 (numpy MLP, ~10 µs)."""
        h = state
        for w, b in self.weights[:-1]:
            h = np.maximum(h @ w + b, 0.0)
        w, b = self.weights[-1]
        return np.tanh(h @ w + b)

    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        t_us = np.asarray(t_us, dtype=np.int64)
        n = len(t_us)
        out = np.zeros(n, dtype=bool)
        hz = np.empty(n, dtype=np.int64)
        i = 0
        while i < n:
            if self._next_us is None or t_us[i] >= self._next_us:
                self._decide(int(t_us[i]), self._seen + i)
            assert self._next_us is not None
            j = i + int(np.searchsorted(t_us[i:], self._next_us, side="left"))
            m = j - i
            c, k = self._countdown, self._k
            if self.trigger:
                self._dr.acks = self.acks  # (the simulator installs its own tracker after reset)
                out[i:j] = self._dr.select(t_us[i:j], q[i:j])
            elif self.acks is not None:
                self._countdown = periodic_sends(t_us, out, i, j, c, k, self.acks)
            elif c < m:
                out[i + c:j:k] = True
                last = c + k * ((m - 1 - c) // k)
                self._countdown = last + k - m
            else:
                self._countdown = c - m
            hz[i:j] = self.horizon_us
            self._buf.append((t_us[i:j], np.asarray(q[i:j], dtype=np.float64), out[i:j].copy()))
            i = j
        self._seen += n
        self.sample_horizons_us = hz
        return out

    def _decide(self, t_now: int, sample_idx: int) -> None:
        """Score the window that just ended, build the state, choose and apply (k, H)."""
        if self._next_us is None:
            self._next_us = t_now + DECISION_US
        else:
            self._next_us += DECISION_US * ((t_now - self._next_us) // DECISION_US + 1)
        if not self._buf:
            return  # first decision: keep the initial action
        feats, stats = self._window_features()
        if self.trigger:
            a_exp = self._expert_trigger()
        else:
            # The expert reads the rougher of the whole window and its last 50 ms (motion onsets show there first).
            resend_ms = None if self.acks is None else self.acks.timeout_us / 1000
            k_e, h_e = expert_kh(np.maximum(stats[:3], stats[3:]), self.eps, self.rtt_ms, self.loss,
                                 self.predictor_name, self.safety, resend_ms)
            a_exp = kh_to_action(float(k_e), float(h_e))
        know = bool(self.meta["expert_knowledge"])
        raw = np.concatenate([feats, [self.rtt_ms / 20, self.loss * 10], self._a, a_exp if know else np.zeros(2)])
        state = (raw - self.obs_mean) / self.obs_std
        a = self.behaviour(state, a_exp) if self.behaviour is not None else self.act(state)
        a = np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
        if self.record:
            self.trace.append((sample_idx, raw, a, a_exp))
        if self.trigger:
            self.delta_deg, self.h_ms = action_to_dh(a)
            self._dr.retarget(self.delta_deg, self.h_ms)
            self.horizon_us = self._dr.horizon_us
            self._a = dh_to_action(self.delta_deg, self.h_ms)
            return
        prev_k = self._k
        self._k, self.h_ms = action_to_kh(a)
        self.horizon_us = round(self.h_ms * 1000)
        self._a = kh_to_action(self._k, self.h_ms)
        # Continuous phase: the next send comes k_new samples after the last one.
        self._countdown = max(0, self._countdown - prev_k + self._k)

    def _window_features(self) -> tuple[np.ndarray, np.ndarray]:
        """[log1p(win mse/ε), log1p(avg mse/ε), log10 load, log1p λ, log10 v/a/j (window, last 50 ms)]."""
        t = np.concatenate([b[0] for b in self._buf])
        q = np.concatenate([b[1] for b in self._buf])
        sent = np.concatenate([b[2] for b in self._buf])
        self._buf = []
        tt, qq = np.concatenate([self._ctx_t, t]), np.concatenate([self._ctx_q.reshape(-1, q.shape[1]), q])
        self._ctx_t, self._ctx_q = tt[-(DERIV_WINDOW - 1):], qq[-(DERIV_WINDOW - 1):]
        idx = np.flatnonzero(sent)
        if len(idx):
            d = quad_fit(tt, qq, idx + len(tt) - len(t), DERIV_WINDOW)[:, 1:]
            self._mirror.add(t[idx], q[idx], d, np.full(len(idx), self.horizon_us, dtype=np.int64),
                             round(self.rtt_ms * 500))
        qhat = self._mirror.display(t)
        valid = ~np.isnan(qhat).any(axis=1)
        sq = ((q[valid] - qhat[valid]) * _RAD2DEG) ** 2
        self.win_mse = float(sq.mean()) if sq.size else 0.0
        self._mse_ema = self.win_mse if self._mse_ema != self._mse_ema else (
            (1 - MSE_EMA) * self._mse_ema + MSE_EMA * self.win_mse)
        self._sum_sq += float(sq.sum())
        self._count += sq.size
        self.window_log.append(self.win_mse)
        avg = self.avg_mse if self._count else 0.0
        half = int(np.searchsorted(t, t[-1] - DECISION_US // 2, side="right"))
        stats = np.concatenate([motion_stats(t, q), motion_stats(t[half:], q[half:])])
        return np.concatenate([[np.log1p(self.win_mse / self.eps), np.log1p(avg / self.eps),
                                np.log10(max(len(idx) / len(t), 1e-3)), np.log1p(self.lam)],
                               np.log10(stats + 1.0)]), stats

    def _expert_trigger(self) -> np.ndarray:
        """Trigger mode's expert action (``knowledge.expert_dh``); without a table (TD3 ablation) the initial one."""
        if self.dr_table is None:
            return dh_to_action(INIT_DELTA_DEG, INIT_H_MS)
        d, h = expert_dh(self.dr_table, self.rtt_ms, self.loss, self._mse_ema, self.eps, self.cost_target,
                         self.safety)
        return dh_to_action(d, h)

    def spec(self) -> str:
        extra = f",pred={self._pred_arg}" if self._pred_arg else ""
        extra += "" if self._resend_arg is None else f",resend={int(self._resend_arg)}"
        extra += ",online=1" if self.online else ""
        extra += ",actor=expert" if self.actor == "expert" else ""
        return f"{self.family}:{self.path}{extra}"

    @property
    def display_name(self) -> str:
        """Name in evaluation tables: kc-td3 / td3, ``-trigger`` in the trigger action mode (``-trigger-rms`` when δ
        bounds the RMS over joints, then ``-look`` when it looks one delay ahead), ``-online`` when λ adapts,
        ``-expert`` with the expert rule as the actor."""
        trigger = "-trigger" + ("" if self.trigger_norm == "max" else f"-{self.trigger_norm}") + (
            "-look" if self.trigger_look == "auto" else "") if self.trigger else ""
        expert = "-expert" if self.actor == "expert" else ""
        return self.family + trigger + ("-online" if self.online else "") + expert

    def make_learner(self) -> OnlineLearner:
        """The on-device λ learner for this policy (``device.policies.kctd3.online.OnlineLearner``, not started)."""
        return OnlineLearner(self, lr=self.online_lr if self.online_lr is not None else DEFAULT_LR)

    def status(self) -> dict[str, float]:
        """Fields for the device's status line."""
        out = {"k": self.k, "h_ms": self.h_ms, "lambda": self.lam, "avg_mse": self.avg_mse, "eps": self.eps}
        if self.trigger:
            out["delta_deg"] = self.delta_deg
        return out
