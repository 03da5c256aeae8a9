"""The clairvoyant bound's compiled tables and paths (``lab/oracle.py`` solves with them).

For one session and link: what error each send would leave for each next send (the segment-cost table), the
dynamic programme over send instants for one multiplier, and the one-segment foresight sender's path. Compiled
(numba): the tables cover every (sample, gap) pair of a session.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numba import njit

from twin.session import Session


@njit(cache=True)
def segment_costs(t: np.ndarray, q: np.ndarray, coeffs: np.ndarray, first: np.ndarray, hs: np.ndarray,
                   lmax: int, gcost: np.ndarray, end_cost: np.ndarray) -> None:
    """gcost[i, d-1] = min over H of the squared error (deg², summed over joints) of the samples send i shows
    when the next send is i + d; end_cost[i] the same when i is the last send (inf beyond ``lmax``).

    q (N, J) and coeffs (N, P, J) in degrees; hs ascending horizons (µs); first[i] the first sample shown."""
    n, joints = q.shape
    nh = hs.shape[0]
    deg = coeffs.shape[1]
    cum = np.zeros(nh)
    frozen = np.zeros((nh, joints))
    for i in range(n):
        for h in range(nh):
            cum[h] = 0.0
            tau = hs[h] * 1e-6
            for jj in range(joints):
                v = coeffs[i, deg - 1, jj]
                for p in range(deg - 2, -1, -1):
                    v = v * tau + coeffs[i, p, jj]
                frozen[h, jj] = v
        j = first[i]
        stop_d = min(lmax, n - 1 - i)
        for d in range(1, lmax + 2):
            # d <= stop_d: next send at i + d; afterwards one pass to the session's end if allowed.
            if d <= stop_d:
                stop = first[i + d]
            elif n - i <= lmax:
                stop = n
            else:
                break
            while j < stop:
                dt = t[j] - t[i]
                tau = dt * 1e-6
                free = 0.0
                for jj in range(joints):  # the unfrozen prediction, shared by every H >= dt
                    v = coeffs[i, deg - 1, jj]
                    for p in range(deg - 2, -1, -1):
                        v = v * tau + coeffs[i, p, jj]
                    e = q[j, jj] - v
                    free += e * e
                for h in range(nh):
                    if hs[h] >= dt:
                        cum[h] += free
                    else:
                        s = 0.0
                        for jj in range(joints):
                            e = q[j, jj] - frozen[h, jj]
                            s += e * e
                        cum[h] += s
                j += 1
            best = cum[0]
            for h in range(1, nh):
                if cum[h] < best:
                    best = cum[h]
            if d <= stop_d:
                gcost[i, d - 1] = best
            else:
                end_cost[i] = best
                break


@njit(cache=True)
def dp(gcost: np.ndarray, end_cost: np.ndarray, lam: float, value: np.ndarray, nxt: np.ndarray) -> None:
    """Cost-to-go of ``sends + lam * SSE`` from each send, and the best next send (n: none)."""
    n, lmax = gcost.shape
    for i in range(n - 1, -1, -1):
        best = lam * end_cost[i]  # inf when the end is too far
        arg = n
        for d in range(1, min(lmax, n - 1 - i) + 1):
            c = lam * gcost[i, d - 1]
            if c + 1.0 >= best:  # the costs grow with d and every later send costs >= 1: nothing better follows
                break
            c += value[i + d]
            if c < best:
                best = c
                arg = i + d
        value[i] = 1.0 + best
        nxt[i] = arg


@njit(cache=True)
def foresight_path(gcost: np.ndarray, end_cost: np.ndarray, theta: float, out: np.ndarray) -> int:
    """Sends of the one-segment foresight sender: after a send at i, the next at the k that maximises
    ``theta·(k - i) - SSE(i, k)`` (n: none, when ending the session on i's prediction is best). Returns the count."""
    n, lmax = gcost.shape
    i, m = 0, 0
    out[0] = 0
    while True:
        best, arg = -np.inf, n
        if np.isfinite(end_cost[i]):
            best = theta * (n - i) - end_cost[i]
        for d in range(1, min(lmax, n - 1 - i) + 1):
            v = theta * d - gcost[i, d - 1]
            if v > best:
                best, arg = v, i + d
        if arg >= n:
            return m + 1
        m += 1
        out[m] = arg
        i = arg


@dataclass
class SessionTables:
    """One session's tables for one link: what each send would show, and the cost of each segment."""

    session: Session
    first: np.ndarray  # first sample each send is shown on
    coeffs: np.ndarray  # (N, P, J) degrees
    gcost: np.ndarray  # (N, lmax) float32
    end_cost: np.ndarray  # (N,)
    scored: int  # samples x joints scored (from the first send's arrival)
    value: np.ndarray = field(init=False)
    nxt: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.value = np.zeros(len(self.first))
        self.nxt = np.zeros(len(self.first), dtype=np.int64)

    def path(self, lam: float) -> tuple[np.ndarray, float]:
        """The optimal sends for ``lam`` (indices) and their SSE according to the tables."""
        dp(self.gcost, self.end_cost, lam, self.value, self.nxt)
        n = len(self.first)
        sends = [0]
        while (k := int(self.nxt[sends[-1]])) < n:
            sends.append(k)
        idx = np.asarray(sends, dtype=np.int64)
        return idx, self.sse(idx)

    def foresight(self, theta: float) -> tuple[np.ndarray, float]:
        """The one-segment foresight sender's sends for ``theta`` (indices) and their SSE according to the tables."""
        out = np.zeros(len(self.first), dtype=np.int64)
        sends = out[:foresight_path(self.gcost, self.end_cost, theta, out)].copy()
        return sends, self.sse(sends)

    def sse(self, sends: np.ndarray) -> float:
        """The SSE of a schedule (send indices, ascending, from 0) according to the tables."""
        nxt = np.append(sends[1:], len(self.first))
        return sum(float(self.end_cost[i]) if k >= len(self.first) else float(self.gcost[i, k - i - 1])
                   for i, k in zip(sends, nxt, strict=True))
