"""A δ sweep of the dead-reckoning trigger on given sessions: the test-side reference the ``tools/`` studies of
issue 14 share (``trigger_frontier``, ``oracle_gap``). It sees the data it is scored on, so it is an optimistic
reference, not a policy anyone can run."""

from __future__ import annotations

from typing import Any

import numpy as np

from device.link_emulation import LinkSpec
from device.policies.registry import parse_policy
from lab.simulator import simulate_many
from twin.metrics import ErrorAccumulator
from twin.session import Session


def sweep(sessions: list[Session], link: LinkSpec, norm: str, deltas: np.ndarray, eps: list[float],
          h_ms: float = 200) -> list[dict[str, Any]]:
    """(δ, load, MSE, tail at each ε) of ``dead-reckoning:delta=δ,h=H,norm=NORM`` on ``sessions``."""
    rows = []
    for d in deltas:
        policy = parse_policy(f"dead-reckoning:delta={d:.5g},h={h_ms:g},norm={norm}")
        m, res = simulate_many(sessions, policy, link=link)
        acc = ErrorAccumulator()  # pooled as simulate_many pools them, so every ε's tail comes from one run
        for r in res:
            acc.merge(r.acc)
        rows.append({"delta": float(d), "load": m["load"], "mse": m["mse_deg2"],
                     "tail": {e: acc.tail_fraction(e) for e in eps}})
    return rows
