"""KC-TD3 online adaptation on the device: dual ascent on λ in a low-duty background thread."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from device.policies.kctd3.checkpoint import tail_constraint, tail_max_at, tail_ratio

# With a CVaR tail constraint: how many windows the CVaR's tail holds (the term reads 10 / (1 - α) windows).
CVAR_TAIL_WINDOWS = 10
# g is clipped to [-1, G_MAX]. A rare window over ε makes the tail term of a one-second step large (one window in
# ten is a 10 % tail against a 2-5 % bound); clipping it at +1, as first written, biased the ascent towards
# violating the bound (tools/kctd3_online_lr.py: training-session tail 0.040 against a bound of 0.021).
G_MAX = 5.0
# Log-λ step per status at |g| = 1: the highest rate meeting the training criterion on the training sessions
# (tools/kctd3_online_lr.py; the held-out sessions play no part).
DEFAULT_LR = 0.1
FALLBACK_PERIODS = 3  # after statuses began nudging, step on the timer only after this many silent periods


class Tunable(Protocol):
    """What the learner reads and writes of the policy it adapts (``KCTD3Policy``), which builds the learner."""

    window_log: deque[float]
    meta: dict[str, Any]
    eps: float
    loss: float
    rtt_ms: float
    lam: float
    lam_scale: float
    lam_lock: threading.Lock  # held while λ is recomputed (the policy's set_link, the learner's step)

    def base_lambda(self) -> float:
        """λ(link) as trained, before the learner's scale."""
        ...


class OnlineLearner:
    """Online adaptation on the device: dual ascent on λ from observed 100 ms window MSEs, in a low-duty thread.

    ``observe`` (any thread) queues device-scored window MSEs (the tracking monitor's, network effects included);
    without them the policy's mirrored windows are used. After each ``nudge`` (the device's status, once a second;
    at the latest every ``period_s``) the thread scales the trained
    λ(link) in log space, s ← s·exp(lr·clip(g, −1, G_MAX)) with g = max(mean/(margin·ε), tail/tail_max) − 1 (the
    training criterion; with a CVaR tail constraint the second term is CVaR_α/ε), λ = λ(link)·s. The decision
    path only reads the float ``policy.lam``: no lock is shared with the 1 kHz loop and nothing there waits for
    this thread. λ only: the actor is not fine-tuned on device.

    Two races are closed: λ is recomputed under ``policy.lam_lock``, which the policy's ``set_link`` (the status,
    once a second) also holds, so neither a new link estimate nor a step can overwrite the other with stale
    inputs; and each status's windows and nudge form one batch in a queue, so a nudge that comes while a step runs
    is stepped after it, never lost (an Event's wait() then clear() dropped it).
    """

    def __init__(self, policy: Tunable, lr: float = DEFAULT_LR, period_s: float = 1.0) -> None:
        self.policy, self.lr, self.period_s = policy, lr, period_s
        self._obs: deque[float] = deque(maxlen=1000)  # windows observed since the last nudge
        # The checkpoint's tail constraint; with CVaR, the windows its tail term reads (``step``).
        self._tail_kind, self._alpha = tail_constraint(policy.meta)
        self._recent: deque[float] = deque(
            maxlen=math.ceil(CVAR_TAIL_WINDOWS / (1 - self._alpha)) if self._tail_kind == "cvar" else 0)
        self._batches: deque[list[float]] = deque(maxlen=100)  # one per nudge, stepped in order
        self._cond = threading.Condition()
        self._stopping = False
        self.updates = 0
        self._thread = threading.Thread(target=self._run, name="kctd3-online", daemon=True)

    def start(self) -> OnlineLearner:
        self._thread.start()
        return self

    def observe(self, window_mse: Sequence[float]) -> None:
        with self._cond:
            self._obs.extend(float(w) for w in window_mse if np.isfinite(w))

    def step(self, batch: Sequence[float] | None = None) -> None:
        """One dual-ascent update from ``batch``, else from the windows observed since the last one, else from the
        policy's mirrored windows."""
        if batch is None:
            with self._cond:
                batch = list(self._obs)
                self._obs.clear()
        if not batch:
            src = self.policy.window_log
            batch = [src.popleft() for _ in range(len(src))]
        obs = np.asarray(batch, dtype=np.float64)
        if not len(obs):
            return
        p, train = self.policy, self.policy.meta
        with p.lam_lock:  # the link estimates and λ(link) read here are not changed under us
            if self._tail_kind == "chance":
                bound = tail_max_at(train.get("tail_max", 1.0), p.loss, p.rtt_ms)
                tail = tail_ratio(obs, p.eps, "chance", 0.0, bound)
            else:
                # A status brings ~10 windows: their CVaR would be the single worst window whatever α is. The CVaR
                # term reads the last CVAR_TAIL_WINDOWS / (1 - α) windows instead (that many windows in its tail).
                self._recent.extend(obs.tolist())
                tail = tail_ratio(np.asarray(self._recent), p.eps, "cvar", self._alpha, 1.0)
            g = max(obs.mean() / (p.eps * float(train.get("cost_target", 1.0))), tail) - 1.0
            p.lam_scale = float(np.clip(p.lam_scale * math.exp(self.lr * np.clip(g, -1.0, G_MAX)), 1e-2, 1e2))
            p.lam = p.base_lambda() * p.lam_scale  # one float store: atomic for the decision path
        self.updates += 1

    def nudge(self) -> None:
        """Step now on the windows observed since the last nudge (the device calls it after each status's
        ``observe``: one step per status, as simulated)."""
        with self._cond:
            self._batches.append(list(self._obs))
            self._obs.clear()
            self._cond.notify()

    def _run(self) -> None:
        nudged = False
        while True:
            # Once statuses nudge it, the learner steps on them only (one step per status, as simulated); the
            # timer is a fallback for a device whose statuses stopped (then the mirrored windows are used).
            with self._cond:
                self._cond.wait_for(lambda: self._batches or self._stopping,
                                    self.period_s * (FALLBACK_PERIODS if nudged else 1))
                if self._stopping:
                    return
                batch = self._batches.popleft() if self._batches else None
            nudged = nudged or batch is not None
            self.step(batch if batch else None)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()
