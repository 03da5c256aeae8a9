"""KC-TD3 on the device (DESIGN.md §5): every T = 100 ms a small MLP picks the action (k, H); numpy only.

Between decisions the policy behaves like ``StaticPolicy(k, H)`` with a continuous send phase (the next send
comes k samples after the previous one, whatever k was). At a decision it scores the window that just ended
against the twin *as mirrored on the device*: the server's predictor fitted to the samples this policy sent
(device-side velocity/acceleration via ``quad_fit(DERIV_WINDOW)``, as the uplink sends them), each prediction
taking effect half an RTT after its sample and evaluated with the §3 display rule. That needs no network
feedback, so the live device, the simulator and the training environment compute the same state.

Checkpoint: ``POLICY.pt`` (torch, full training state, written by ``device/kctd3_train.py``) always comes with
``POLICY.npz`` (actor weights, normalisation, metadata as JSON). This module loads the ``.npz`` and never
imports torch; only a ``.pt`` without its ``.npz`` falls back to ``torch.load(weights_only=True)`` once at startup.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from device.policies import Policy, PolicySpecError, register_policy
from twin.display import displayed
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.predictors import make_predictor

SCHEMA_VERSION = 1
DECISION_US = 100_000  # T
K_MIN, K_MAX = 1, 200  # sampling interval (samples), log-scale action
H_MAX_MS = 500.0
INIT_K, INIT_H_MS = 10, 20.0  # action before the first window has been seen
STATE_NAMES = ("win_mse/eps", "avg_mse/eps", "load", "lambda", "v_rms", "a_rms", "j_rms", "v_rms_50ms",
               "a_rms_50ms", "j_rms_50ms", "rtt", "loss", "prev_k", "prev_h", "expert_k", "expert_h")
STATE_DIM = len(STATE_NAMES)
# λ is kept per link condition (one-way delay x loss bin): the constraint must hold on each link, and one λ
# for a mix of easy and hard links makes the policy needlessly conservative on the easy ones.
LAM_DELAY_EDGES_MS = (7.0, 14.0)
LAM_LOSS_EDGES = (0.05,)
_RAD2DEG = 180.0 / np.pi
_LOG_KR = math.log(K_MAX / K_MIN)
_KGRID = np.arange(K_MIN, K_MAX + 1, dtype=np.float64)
Behaviour = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (normalised state, expert action) -> action


def action_to_kh(a: np.ndarray) -> tuple[int, float]:
    """Actor output in [-1, 1]^2 -> (k in [1, 200] log-scale rounded, H in [0, 500] ms)."""
    a0, a1 = np.clip(np.asarray(a, dtype=np.float64)[:2], -1.0, 1.0)
    k = int(np.clip(round(K_MIN * (K_MAX / K_MIN) ** ((a0 + 1) / 2)), K_MIN, K_MAX))
    return k, float((a1 + 1) / 2 * H_MAX_MS)


def kh_to_action(k: float | np.ndarray, h_ms: float | np.ndarray) -> np.ndarray:
    """Inverse of ``action_to_kh`` (vectorised); the last axis holds (a_k, a_h)."""
    ak = 2 * np.log(np.clip(k, K_MIN, K_MAX) / K_MIN) / np.log(K_MAX / K_MIN) - 1
    ah = 2 * np.clip(h_ms, 0, H_MAX_MS) / H_MAX_MS - 1
    return np.stack(np.broadcast_arrays(ak, ah), axis=-1).astype(np.float64)


def _action_of(k: float, h_ms: float) -> np.ndarray:
    """Scalar ``kh_to_action`` without numpy call overhead (decision path)."""
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
              safety: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The analytic rule ("K"): largest k whose predicted window MSE x ``safety`` <= eps, and H* = gap + margin.

    The extrapolation error t after a sample grows as jerk·t³/6 (kinematic / quadratic predictors), ½·acc·t²
    (linear) or vel·t (hold). Sending every k ms with one-way delay d, the twin runs t in [d, d + k], so the
    window MSE is the mean of err(t)² over that range (closed form); a lost packet doubles the gap (weight
    ``loss``). ``stats`` (..., 3) -> k (...,), H ms (...,), vectorised over a grid of all k. Under loss the
    horizon grows (H* = gap·(1 + 40·loss) + 5 ms): extrapolating across a lost sample beats holding.
    """
    stats = np.asarray(stats, dtype=np.float64)
    power, coef = ((1, stats[..., 0]) if predictor == "hold" else
                   (2, stats[..., 1] / 2) if predictor == "linear" else (3, stats[..., 2] / 6))
    d = max(rtt_ms, 0.0) / 2 * 1e-3
    m = 2 * power  # err² ∝ t^m; mean over [d, d+g] = ((d+g)^(m+1) - d^(m+1)) / ((m+1) g)

    def mean_sq(g: np.ndarray) -> np.ndarray:
        return ((d + g) ** (m + 1) - d ** (m + 1)) / ((m + 1) * g)

    g = _KGRID * 1e-3
    shape = mean_sq(g) * (1 - loss) + mean_sq(2 * g) * loss * 2  # time-weighted: a lost interval lasts 2k
    shape /= 1 + loss
    mse = safety * (coef[..., None] ** 2) * shape  # (..., 200)
    ok = mse <= eps
    k = np.where(ok.any(-1), K_MIN + (K_MAX - K_MIN) - np.argmax(ok[..., ::-1], axis=-1), K_MIN).astype(np.float64)
    h = np.clip((k + d * 1e3) * (1 + 40 * loss) + 5.0, 0.0, H_MAX_MS)
    return k, h


def lambda_bin(rtt_ms: float, loss: float) -> tuple[int, int]:
    """Bin of the λ table for a link estimate (one-way delay = RTT/2 minus the 0.5 ms pipeline)."""
    d = max(rtt_ms / 2 - 0.5, 0.0)
    return int(np.searchsorted(LAM_DELAY_EDGES_MS, d, side="right")), int(np.searchsorted(LAM_LOSS_EDGES, loss,
                                                                                           side="right"))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Actor weights + metadata from ``POLICY.npz`` (or the ``.npz`` next to ``POLICY.pt``); torch only as fallback."""
    path = Path(path)
    npz = path if path.suffix == ".npz" else path.with_suffix(".npz")
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            ck: dict[str, Any] = {k: z[k] for k in z.files if k != "meta_json"}
            ck["meta"] = json.loads(str(z["meta_json"]))
    elif path.exists():
        import torch  # startup only, never on the decision path

        raw = torch.load(path, weights_only=True, map_location="cpu")
        ck = {k: v.numpy() for k, v in raw["actor_numpy"].items()}
        ck["meta"] = dict(raw["meta"])
    else:
        raise PolicySpecError(f"no KC-TD3 checkpoint at {path} (nor {npz})")
    if ck["meta"].get("schema") != SCHEMA_VERSION:
        raise PolicySpecError(f"{path}: checkpoint schema {ck['meta'].get('schema')} != {SCHEMA_VERSION}")
    return ck


def save_npz(path: str | Path, actor: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write the device checkpoint: actor ``W0, b0, W1, b1, W2, b2``, ``obs_mean``, ``obs_std`` and metadata."""
    out = Path(path).with_suffix(".npz")
    np.savez(out, meta_json=np.array(json.dumps(meta, default=float)),
             **{k: np.asarray(v, dtype=np.float64) for k, v in actor.items()})
    return out


def random_checkpoint(path: str | Path, eps: float = 0.002, seed: int = 0, hidden: int = 64) -> Path:
    """A tiny randomly initialised checkpoint (tests, benchmarks)."""
    rng = np.random.default_rng(seed)
    dims = [STATE_DIM, hidden, hidden, 2]
    actor = {f"W{i}": rng.normal(0, 1 / np.sqrt(a), (a, b)) for i, (a, b) in enumerate(zip(dims, dims[1:]))}
    actor.update({f"b{i}": np.zeros(b) for i, b in enumerate(dims[1:])})
    actor.update(obs_mean=np.zeros(STATE_DIM), obs_std=np.ones(STATE_DIM))
    meta = {"schema": SCHEMA_VERSION, "eps": eps, "lambda": 1.0, "predictor": "kinematic", "expert_knowledge": True,
            "expert_safety": 1.0, "k_range": [K_MIN, K_MAX], "h_range_ms": [0, H_MAX_MS], "training": {"random": True}}
    return save_npz(path, actor, meta)


class _Mirror:
    """The twin as the server will show it, from the samples this device sent (the server predictor's own fit)."""

    def __init__(self, predictor: str) -> None:
        self.predictor = make_predictor(predictor)
        self.uses_d = bool(getattr(self.predictor, "uses_derivatives", False))
        self.hist = max(self.predictor.history, 1)
        self._ht = np.zeros(0, dtype=np.int64)
        self._hq: np.ndarray | None = None
        self._hd: np.ndarray | None = None
        self.arr = np.zeros(0, dtype=np.int64)
        self.t0 = np.zeros(0, dtype=np.int64)
        self.h = np.zeros(0, dtype=np.int64)
        self.coeffs: np.ndarray | None = None

    def add(self, t: np.ndarray, q: np.ndarray, d: np.ndarray, h_us: np.ndarray, delay_us: int) -> None:
        """New sends (time order): the same rows ``OnlinePredictor.update`` gives, one fit for the whole batch."""
        if len(t) == 0:
            return
        hq = q[:0] if self._hq is None else self._hq
        hd = d[:0] if self._hd is None else self._hd
        tt, qq, dd = np.concatenate([self._ht, t]), np.concatenate([hq, q]), np.concatenate([hd, d])
        if self.uses_d and self.predictor.name == "kinematic":
            # fit_with_derivatives when every row has its derivatives (always true here), without the fallback fit.
            c = np.concatenate([q[:, None, :], d], axis=1)
        elif self.uses_d:
            c = self.predictor.fit_with_derivatives(tt, qq, dd)[-len(t):]  # type: ignore[attr-defined]
        else:
            c = self.predictor.fit_all(tt, qq)[-len(t):]
        self._ht, self._hq, self._hd = tt[-self.hist:], qq[-self.hist:], dd[-self.hist:]
        self.arr = np.concatenate([self.arr, t + delay_us])
        self.t0 = np.concatenate([self.t0, t])
        self.h = np.concatenate([self.h, h_us])
        self.coeffs = c if self.coeffs is None else np.concatenate([self.coeffs, c])

    def display(self, t: np.ndarray) -> np.ndarray:
        """Mirrored twin at ``t`` (NaN before the first arrival); forgets predictions superseded before t[0]."""
        if self.coeffs is None:
            return np.full((len(t), 1), np.nan)
        keep = max(int(np.searchsorted(self.arr, t[0], side="right")) - 1, 0)
        self.arr, self.t0, self.h, self.coeffs = (self.arr[keep:], self.t0[keep:], self.h[keep:],
                                                  self.coeffs[keep:])
        return displayed(t, self.arr, self.t0, self.h, self.coeffs)


class KCTD3Policy(Policy):
    """``kc-td3:POLICY.pt[,pred=kinematic][,rtt=MS][,loss=P]``: (k, H) chosen every 100 ms by a trained actor."""

    family = "kc-td3"

    def __init__(self, path: str | Path, pred: str | None = None, rtt_ms: float = 0.0, loss: float = 0.0,
                 behaviour: Behaviour | None = None, record: bool = False,
                 checkpoint: dict[str, Any] | None = None) -> None:
        super().__init__(INIT_H_MS)
        self.path = str(path)
        ck = checkpoint if checkpoint is not None else load_checkpoint(path)
        self.meta: dict[str, Any] = ck["meta"]
        self.family = "kc-td3" if self.meta["expert_knowledge"] else "td3"
        self.weights = [(ck[f"W{i}"], ck[f"b{i}"]) for i in range(3)]
        self.obs_mean, self.obs_std = ck["obs_mean"], ck["obs_std"]
        self.eps = float(self.meta["eps"])
        self.lam = float(self.meta["lambda"])
        table = self.meta.get("lambda_table")
        self.lam_table = np.asarray(table, dtype=np.float64) if table is not None else None
        self._lam_bin: tuple[int, int] | None = None
        self.safety = float(self.meta.get("expert_safety", 1.0))
        self._pred_arg = pred
        self.predictor_name = pred or str(self.meta["predictor"])
        self.behaviour = behaviour
        self.record = record
        self.set_link(rtt_ms, loss)
        self.window_log: deque[float] = deque(maxlen=600)  # mirrored window MSEs, read by the online learner
        self.reset()

    def set_link(self, rtt_ms: float, loss: float) -> None:
        """Link estimates (live: from the uplink's RTT and missing replies; simulator: the emulated link)."""
        self.rtt_ms = float(np.nan_to_num(rtt_ms, nan=0.0))
        self.loss = float(np.clip(np.nan_to_num(loss, nan=0.0), 0.0, 0.5))
        b = lambda_bin(self.rtt_ms, self.loss)
        if self.lam_table is not None and b != self._lam_bin:  # a new link condition: its trained λ
            self.lam = float(self.lam_table[b])
        self._lam_bin = b

    def reset(self) -> None:
        self._mirror = _Mirror(self.predictor_name)
        self._next_us: int | None = None
        self._countdown = 0
        self._k, self.h_ms = INIT_K, INIT_H_MS
        self.horizon_us = round(INIT_H_MS * 1000)
        self._a = kh_to_action(INIT_K, INIT_H_MS)
        self._buf: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self._ctx_t = np.zeros(0, dtype=np.int64)
        self._ctx_q: np.ndarray | None = None
        self._sum_sq, self._count = 0.0, 0
        self.win_mse = float("nan")
        self._seen = 0
        self.sample_horizons_us = np.zeros(0, dtype=np.int64)
        self.trace: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]] = []  # (sample idx, state, a, expert)

    @property
    def k(self) -> float:
        return float(self._k)

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
            if c < m:
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
        # The expert reads the rougher of the whole window and its last 50 ms (motion onsets show there first).
        k_e, h_e = expert_kh(np.maximum(stats[:3], stats[3:]), self.eps, self.rtt_ms, self.loss,
                             self.predictor_name, self.safety)
        a_exp = _action_of(float(k_e), float(h_e))
        know = bool(self.meta["expert_knowledge"])
        raw = np.concatenate([feats, [self.rtt_ms / 20, self.loss * 10], self._a, a_exp if know else np.zeros(2)])
        state = (raw - self.obs_mean) / self.obs_std
        a = self.behaviour(state, a_exp) if self.behaviour is not None else self.act(state)
        a = np.clip(np.asarray(a, dtype=np.float64), -1.0, 1.0)
        if self.record:
            self.trace.append((sample_idx, raw, a, a_exp))
        prev_k = self._k
        self._k, self.h_ms = action_to_kh(a)
        self.horizon_us = round(self.h_ms * 1000)
        self._a = _action_of(self._k, self.h_ms)
        # Continuous phase: the next send comes k_new samples after the last one.
        self._countdown = max(0, self._countdown - prev_k + self._k)

    def _window_features(self) -> tuple[np.ndarray, np.ndarray]:
        """[log1p(win mse/ε), log1p(avg mse/ε), log10 load, log1p λ, log10 v/a/j (window, last 50 ms)]."""
        t = np.concatenate([b[0] for b in self._buf])
        q = np.concatenate([b[1] for b in self._buf])
        sent = np.concatenate([b[2] for b in self._buf])
        self._buf = []
        ctx_q = self._ctx_q if self._ctx_q is not None else q[:0]
        tt, qq = np.concatenate([self._ctx_t, t]), np.concatenate([ctx_q, q])
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
        self._sum_sq += float(sq.sum())
        self._count += sq.size
        self.window_log.append(self.win_mse)
        avg = self.avg_mse if self._count else 0.0
        half = int(np.searchsorted(t, t[-1] - DECISION_US // 2, side="right"))
        stats = np.concatenate([motion_stats(t, q), motion_stats(t[half:], q[half:])])
        return np.concatenate([[np.log1p(self.win_mse / self.eps), np.log1p(avg / self.eps),
                                np.log10(max(len(idx) / len(t), 1e-3)), np.log1p(self.lam)],
                               np.log10(stats + 1.0)]), stats

    def spec(self) -> str:
        extra = f",pred={self._pred_arg}" if self._pred_arg else ""
        return f"{self.family}:{self.path}{extra}"

    def status(self) -> dict[str, float]:
        """Fields for the device's status line."""
        return {"k": float(self._k), "h_ms": self.h_ms, "lambda": self.lam, "avg_mse": self.avg_mse, "eps": self.eps}


class OnlineLearner:
    """Online adaptation on the device: dual ascent on λ from observed window MSEs, in a low-duty thread.

    ``observe`` (any thread) queues a measured MSE (device-scored, or the policy's mirrored one); the thread
    wakes every ``period_s`` and sets λ ← max(0, λ + lr·(mean MSE/ε − 1)). The decision path only reads the float
    ``policy.lam``: no lock is shared with the 1 kHz loop, and nothing there ever waits for this thread.
    """

    def __init__(self, policy: KCTD3Policy, lr: float = 0.05, period_s: float = 1.0, lam_max: float = 100.0) -> None:
        self.policy, self.lr, self.period_s, self.lam_max = policy, lr, period_s, lam_max
        self._obs: deque[float] = deque(maxlen=1000)
        self._stop = threading.Event()
        self.updates = 0
        self._thread = threading.Thread(target=self._run, name="kctd3-online", daemon=True)

    def start(self) -> OnlineLearner:
        self._thread.start()
        return self

    def observe(self, mse_deg2: float) -> None:
        if np.isfinite(mse_deg2):
            self._obs.append(float(mse_deg2))

    def step(self) -> None:
        """One dual-ascent update from the observations queued since the last one (or the mirrored log)."""
        obs = [self._obs.popleft() for _ in range(len(self._obs))]
        if not obs:
            log = self.policy.window_log
            obs = [log.popleft() for _ in range(len(log))]
        if obs:
            g = float(np.mean(obs)) / self.policy.eps - 1.0
            self.policy.lam = float(np.clip(self.policy.lam + self.lr * g, 0.0, self.lam_max))
            self.updates += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            t0 = time.perf_counter()
            self.step()
            self.busy_s = time.perf_counter() - t0

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def _factory(args: dict[str, str]) -> Policy:
    if "path" not in args:
        raise PolicySpecError("kc-td3 needs a checkpoint: kc-td3:POLICY.pt[,pred=kinematic]")
    return KCTD3Policy(args["path"], args.get("pred"), float(args.get("rtt", 0)), float(args.get("loss", 0)))


register_policy("kc-td3", _factory)
register_policy("td3", _factory)
