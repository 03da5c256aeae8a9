"""The clairvoyant bound: the least load any sender could reach on a recording, knowing all of it in advance.

A sender that knows the whole trajectory chooses each send instant and each send's horizon H (from the horizons
the evaluated policies use). What the twin shows follows exactly the simulator's rules (``lab.twin_display``):
the server's prediction from the sent sample (with the device's own velocity/acceleration estimate for the
``kinematic`` predictor), frozen at H, shown from the sample's arrival (send time + link delay + pipeline latency)
until the next send arrives. The first sample is always sent (as every policy does), so every schedule scores
the same samples.

Method: a dynamic programme over send instants. With the predictor a function of the sent sample alone, the
error of a segment depends only on its send i, its H and the next send k, so the cost-to-go obeys
``V[i] = 1 + min_k (λ·min_H SSE(i, H, k) + V[k])``. Minimising ``sends + λ·SSE`` for a multiplier λ gives a point
of the lower convex hull of the (load, MSE) trade-off; λ is bisected until the pooled MSE meets ε. The schedule
found is feasible (its load is reachable); the Lagrangian dual ``sends + λ·(SSE − ε·N)`` gives a lower bound on
the true constrained minimum, so the exact optimum lies between ``load_lower_bound`` and ``load``.

Limits: defined on a lossless link without jitter (a fixed delay only shifts arrivals); the gap between sends
is bounded by ``max_gap_ms``; only predictors whose prediction depends on the sent sample alone (``hold`` and
``kinematic``). See docs/sync_science.md ("The clairvoyant bound").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from device.link_emulation import LinkSpec
from lab.oracle_tables import SessionTables, segment_costs
from lab.twin_display import TwinDisplay
from twin.constants import PIPELINE_LATENCY_US
from twin.kinematics import DERIV_WINDOW, quad_fit
from twin.metrics import ErrorAccumulator
from twin.predictors import DEFAULT_PREDICTOR, make_predictor
from twin.session import Session

# The horizons the evaluated policies choose from: lab.evaluate's STATIC_H_MS and DR_H_MS together (a test pins it).
H_CANDIDATES_MS = (0, 5, 10, 20, 50, 100, 200, 500, 1000)
# Longest gap between two sends (and from the last send to the end): longer than any policy's (static k <= 200,
# KC-TD3 k <= 200, dead reckoning's heartbeat 500 ms).
MAX_GAP_MS = 2000
# Predictors whose prediction depends on the sent sample alone (the DP needs it): hold, and kinematic with the
# device's derivative estimate (sent with every sample in the simulator).
PER_SAMPLE_PREDICTORS = ("hold", "kinematic")
# The segment-cost tables hold 4 bytes per (sample, gap): 240 MB for a 30 s session with 2 s gaps. Beyond this
# the bound is refused with a message rather than exhausting memory.
MAX_TABLE_BYTES = 2 * 1024**3
# θ values the foresight sender tries around its bisected θ (each costs one greedy pass, ~0.05 s per 30 s session).
FORESIGHT_REFINE = 64
_RAD2DEG = 180.0 / np.pi


class OracleUndefined(ValueError):
    """The clairvoyant bound is not defined for this link or predictor (the message says why)."""


def undefined_reason(link: LinkSpec, predictor: str) -> str | None:
    """Why the bound is undefined for ``link``/``predictor``, or None when it is defined."""
    if link.loss > 0:
        return "undefined with loss (the bound assumes every send arrives)"
    if link.jitter_ms > 0:
        return "undefined with jitter (the bound assumes a fixed delay)"
    if predictor.partition(":")[0] not in PER_SAMPLE_PREDICTORS:
        return (f"undefined for predictor {predictor!r}: its prediction depends on earlier sends "
                f"(defined for {', '.join(PER_SAMPLE_PREDICTORS)})")
    return None


class ClairvoyantBound:
    """The least load with pooled MSE <= ε over ``sessions`` for one link (prepared once, solved per ε).

    ``solve(eps)`` returns the figures of the optimal schedule, scored by the simulator's own display and
    ``ErrorAccumulator``, with the dual lower bound; one multiplier λ is shared by all sessions because the
    constraint is on the pooled MSE.
    """

    def __init__(self, sessions: list[Session], link: LinkSpec | None = None, predictor: str = DEFAULT_PREDICTOR,
                 latency_us: int = PIPELINE_LATENCY_US, max_gap_ms: float = MAX_GAP_MS,
                 horizons_ms: tuple[float, ...] = H_CANDIDATES_MS) -> None:
        self.link = link or LinkSpec()
        reason = undefined_reason(self.link, predictor)
        if reason:
            raise OracleUndefined(reason)
        self.predictor = predictor
        self.latency_us = latency_us
        self.horizons_us = np.asarray(sorted(round(h * 1000) for h in horizons_ms), dtype=np.int64)
        self.max_gap_ms = max_gap_ms
        self.delay_us = int(np.rint(self.link.delay_ms * 1000)) + latency_us
        self.sessions = sessions
        gaps = [max(1, round(max_gap_ms * 1000 / _period_us(s))) for s in sessions]
        table = sum(4 * len(s.t_us) * min(g, max(len(s.t_us) - 1, 1)) for s, g in zip(sessions, gaps, strict=True))
        if table > MAX_TABLE_BYTES:
            raise OracleUndefined(f"the bound's tables would need {table / 1024**3:.1f} GB (limit "
                                  f"{MAX_TABLE_BYTES / 1024**3:.0f} GB): shorten the test sessions or the longest gap "
                                  f"(--oracle-gap-ms, now {max_gap_ms:g})")
        self._prep = [self._prepare(s, g) for s, g in zip(sessions, gaps, strict=True)]
        self.samples = sum(len(s.t_us) for s in sessions)

    def spec(self) -> str:
        hs = "|".join(f"{h / 1000:g}" for h in self.horizons_us)
        return f"oracle:max_gap_ms={self.max_gap_ms:g},h={hs}"

    def _coeffs(self, s: Session) -> np.ndarray:
        pred = make_predictor(self.predictor)
        every = np.arange(len(s.t_us))
        if pred.uses_derivatives:  # the device's estimate, as lab.twin_display computes it for a send
            deriv = quad_fit(s.t_us, s.q, every, DERIV_WINDOW)[:, 1:]
            return pred.fit_with_derivatives(s.t_us, s.q, deriv)
        return pred.fit_all(s.t_us, s.q)

    def _prepare(self, s: Session, lmax: int) -> SessionTables:
        t = np.ascontiguousarray(s.t_us, dtype=np.int64)
        n = len(t)
        first = np.searchsorted(t, t + self.delay_us, side="left").astype(np.int64)  # arrival <= t_j: shown at j
        coeffs = np.ascontiguousarray(self._coeffs(s) * _RAD2DEG)
        qdeg = np.ascontiguousarray(s.q * _RAD2DEG)
        gcost = np.full((n, min(lmax, max(n - 1, 1))), np.inf, dtype=np.float32)  # next send within the session
        end_cost = np.full(n, np.inf)
        segment_costs(t, qdeg, coeffs, first, self.horizons_us, lmax, gcost, end_cost)
        if not np.isfinite(end_cost).any():
            raise OracleUndefined("session too short for the bound")
        return SessionTables(s, first, coeffs, gcost, end_cost, (n - int(first[0])) * s.joints)

    def _run(self, param: float, foresight: bool = False) -> tuple[list[np.ndarray], int, float]:
        """Every session's schedule for λ (the DP) or θ (the foresight sender): (paths, sends, SSE)."""
        paths = [p.foresight(param) if foresight else p.path(param) for p in self._prep]
        return [p[0] for p in paths], sum(len(p[0]) for p in paths), sum(p[1] for p in paths)

    def solve(self, eps: float, keep: bool = False, iterations: int = 60) -> dict[str, Any]:
        """Bisect λ (geometrically) for the least load whose pooled MSE <= ``eps``; figures of that schedule."""
        scored = sum(p.scored for p in self._prep)
        budget = eps * scored
        hull: dict[int, float] = {}
        dual = -np.inf

        def run(lam: float) -> tuple[list[np.ndarray], int, float]:
            nonlocal dual
            paths, sends, sse = self._run(lam)
            hull[sends] = min(hull.get(sends, np.inf), sse / scored)
            dual = max(dual, sends + lam * (sse - budget))
            return paths, sends, sse

        lo, hi = 1e-8, 1e10  # 1/deg²: from "fewest sends" to "least error"
        best, lam = run(hi), hi
        feasible = best[2] <= budget
        low = run(lo)
        infeasible_sends = -1  # most sends of a schedule known to miss ε (none known yet)
        if low[2] <= budget:
            best, lam, feasible = low, lo, True
        elif feasible:
            infeasible_sends = low[1]
            for _ in range(iterations):
                if best[1] - low[1] <= 1 or hi / lo < 1 + 1e-9:
                    break
                mid = float(np.sqrt(lo * hi))
                cur = run(mid)
                if cur[2] <= budget:
                    hi, best, lam = mid, cur, mid
                else:
                    lo, low = mid, cur
                    infeasible_sends = cur[1]
        # A schedule that minimises sends + λ·SSE and misses ε proves that nothing with as few sends meets ε
        # (it would cost less at that λ), so the optimum has more sends than it; with the dual bound.
        bound = max(dual, infeasible_sends + 1.0) if feasible else np.nan
        return self._score(best[0], eps, feasible, lam, bound, best[2] / scored, hull, keep)

    def solve_foresight(self, eps: float, keep: bool = False, iterations: int = 60,
                        refine: int = FORESIGHT_REFINE) -> dict[str, Any]:
        """The one-segment foresight sender with the least load found whose pooled MSE <= ``eps``.

        It knows the future of the prediction in effect, not of the ones it would send: after each send it picks
        the next send that maximises ``θ·(segment length) - segment SSE``. On error that only grows this is the
        RMS trigger (it stops where the summed squared error reaches θ); where the error falls back it waits the
        bump out. It is one rule that uses that knowledge, not the best possible one.

        θ is bisected (small θ: many sends, low error), then, because a greedy path's sends and MSE do not move
        monotonically with θ, ``refine`` more values in [θ*/2, 2θ*] around the bisection's last feasible θ* are
        tried; the fewest sends meeting ε win. The figures carry ``theta`` (the winner's) and ``theta_bisected``
        (θ*). A schedule, not a bound: ``load_lower_bound`` is nan."""
        scored = sum(p.scored for p in self._prep)
        budget = eps * scored
        lo, hi = 1e-9, 1e4  # deg² per sample: from "every sample" to "fewest sends"
        best, theta = self._run(lo, True), lo
        feasible = best[2] <= budget

        def consider(th: float) -> bool:
            nonlocal best, theta
            cur = self._run(th, True)
            if cur[2] > budget:
                return False
            if cur[1] < best[1]:
                best, theta = cur, th
            return True

        if consider(hi):
            lo, feasible = hi, True
        elif feasible:
            for _ in range(iterations):
                if hi / lo < 1 + 1e-9:
                    break
                mid = float(np.sqrt(lo * hi))
                if consider(mid):
                    lo = mid
                else:
                    hi = mid
            for th in refine_grid(lo, refine):
                consider(float(th))
        out = self._score(best[0], eps, feasible, theta, np.nan, best[2] / scored, {}, keep)
        out.pop("hull")
        out["theta"] = out.pop("lambda")
        out["theta_bisected"] = lo
        return out

    def horizons_of(self, k: int, sends: np.ndarray) -> np.ndarray:
        """The best horizon (µs) of each send of session ``k``'s schedule (the one its segment cost used)."""
        p = self._prep[k]
        s = p.session
        t = s.t_us
        qdeg = s.q * _RAD2DEG
        n = len(t)
        out = np.zeros(len(sends), dtype=np.int64)
        for r, i in enumerate(sends):
            stop = int(p.first[sends[r + 1]]) if r + 1 < len(sends) else n
            j = np.arange(int(p.first[i]), stop)
            if not len(j):
                continue
            tau = np.minimum((t[j] - t[i])[None, :], self.horizons_us[:, None]) * 1e-6  # (H, m)
            c = p.coeffs[i]
            val = np.zeros((*tau.shape, c.shape[1]))
            for deg in range(c.shape[0] - 1, -1, -1):
                val = val * tau[..., None] + c[deg]
            sse = ((qdeg[j][None] - val) ** 2).sum(axis=(1, 2))
            out[r] = self.horizons_us[int(np.argmin(sse))]
        return out

    def _score(self, paths: list[np.ndarray], eps: float, feasible: bool, lam: float, bound: float,
               dp_mse: float, hull: dict[int, float], keep: bool) -> dict[str, Any]:
        acc = ErrorAccumulator()
        qhats = []
        twin = TwinDisplay(self.predictor, self.latency_us)
        schedules = []
        for k, (p, idx) in enumerate(zip(self._prep, paths, strict=True)):
            s = p.session
            hz = self.horizons_of(k, idx)
            delay = np.full(len(idx), self.delay_us - self.latency_us, dtype=np.int64)
            qhat = twin.display(s.t_us, s.q, idx, np.zeros(len(idx), dtype=bool), delay, hz, s.t_us)
            one = ErrorAccumulator()
            one.add(s.t_us, s.q, qhat)
            acc.merge(one)
            qhats.append(qhat if keep else None)
            schedules.append((idx, hz))
        sends = sum(len(i) for i in paths)
        summ = acc.summary(eps)
        return {
            "load": sends / self.samples,
            "load_lower_bound": min(bound, sends) / self.samples,
            "sent": sends,
            "samples": self.samples,
            "feasible": feasible,
            "lambda": lam,
            "dp_mse_deg2": dp_mse,
            **summ,
            "window_mse": list(acc.window_mse),
            "hull": sorted((mse, n / self.samples) for n, mse in hull.items()),
            "schedules": schedules,
            "qhats": qhats,
        }


def refine_grid(theta: float, points: int) -> np.ndarray:
    """The θ values ``solve_foresight`` tries around its bisected θ* (log-spaced over [θ*/2, 2θ*])."""
    return np.geomspace(theta / 2, theta * 2, points) if points > 0 else np.zeros(0)


def _period_us(s: Session) -> float:
    dt = np.diff(s.t_us)
    return float(np.median(dt)) if len(dt) else 1000.0
