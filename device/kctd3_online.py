"""KC-TD3 online adaptation on the device: dual ascent on λ in a low-duty background thread."""

from __future__ import annotations

import math
import threading
from collections import deque

import numpy as np

from device.kctd3_policy import KCTD3Policy, lambda_at, tail_max_at


class OnlineLearner:
    """Online adaptation on the device: dual ascent on λ from observed 100 ms window MSEs, in a low-duty thread.

    ``observe`` (any thread) queues device-scored window MSEs (the tracking monitor's, network effects included);
    without them the policy's mirrored windows are used. Every ``period_s`` the thread scales the trained
    λ(link) in log space, s ← s·exp(lr·clip(g, ±1)) with g = max(mean/(margin·ε), tail/tail_max) − 1 (the
    training criterion), λ = λ(link)·s. The decision path only reads the float ``policy.lam``: no lock is shared
    with the 1 kHz loop and nothing there waits for this thread. λ only: the actor is not fine-tuned on device.
    """

    def __init__(self, policy: KCTD3Policy, lr: float = 0.05, period_s: float = 1.0) -> None:
        self.policy, self.lr, self.period_s = policy, lr, period_s
        self._obs: deque[float] = deque(maxlen=1000)
        self._stop = threading.Event()
        self.updates = 0
        self._thread = threading.Thread(target=self._run, name="kctd3-online", daemon=True)

    def start(self) -> OnlineLearner:
        self._thread.start()
        return self

    def observe(self, window_mse: list[float]) -> None:
        self._obs.extend(float(w) for w in window_mse if np.isfinite(w))

    def step(self) -> None:
        """One dual-ascent update from the windows queued since the last one."""
        src = self._obs if self._obs else self.policy.window_log
        obs = np.array([src.popleft() for _ in range(len(src))])
        if not len(obs):
            return
        p, train = self.policy, self.policy.meta
        g = max(obs.mean() / (p.eps * float(train.get("cost_target", 1.0))),
                float(np.mean(obs > p.eps)) / tail_max_at(train.get("tail_max", 1.0), p.loss)) - 1.0
        p.lam_scale = float(np.clip(p.lam_scale * math.exp(self.lr * np.clip(g, -1.0, 1.0)), 1e-2, 1e2))
        base = lambda_at(p.lam_grid, p.rtt_ms, p.loss) if p.lam_grid is not None else float(train["lambda"])
        p.lam = base * p.lam_scale  # one float store: atomic for the decision path
        self.updates += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.step()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
