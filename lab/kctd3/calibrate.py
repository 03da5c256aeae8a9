"""KC-TD3 calibration on the training recordings: the expert's safety factor, the chance-constraint bound
relative to the best static policy (``--tail-max auto``; or a CVaR bound, ``--tail-constraint cvar``) and the final
λ per link (a grid the device interpolates).

All of it bisects or searches with the simulator on training data only; ``lab.kctd3.train`` calls it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from device.link_emulation import LinkSpec
from device.policies.kctd3.checkpoint import load_checkpoint, save_npz, tail_max_at, tail_ratio
from device.policies.kctd3.knowledge import H_MAX_MS
from device.policies.kctd3.policy import KCTD3Policy
from lab.kctd3.config import TrainConfig
from lab.simulator import simulate_many
from twin.session import Session

GRID_DELAY_MS, GRID_LOSS = (0.0, 10.0, 20.0), (0.0, 0.05, 0.1)  # the λ grid: one-way delay x loss


def _bisect(sessions: list[Session], policy: KCTD3Policy, cfg: TrainConfig, link: LinkSpec,
            set_value: Callable[[float], None], lo: float, hi: float) -> float:
    """Smallest value in [lo, hi] (bisection in log scale) at which the policy meets ``_meets`` on the sessions
    (pooled over 3 loss realisations of a lossy link): the expert's safety factor, or λ for a link (both make
    the policy more careful as they grow)."""
    links = [LinkSpec(**{**asdict(link), "seed": link.seed + i}) for i in range(3 if link.loss else 1)]
    a, b = math.log(lo), math.log(hi)
    for _ in range(cfg.bisect_steps):
        set_value(math.exp((a + b) / 2))
        runs = [simulate_many(sessions, policy, cfg.predictor, lk, cfg.eps) for lk in links]
        m: dict[str, Any] = {k: float(np.mean([x[0][k] for x in runs])) for k in ("mse_deg2", "tail_fraction")}
        m["windows"] = np.concatenate([pooled_windows(x[1]) for x in runs])
        a, b = (a, (a + b) / 2) if _meets(m, cfg, link) else ((a + b) / 2, b)
    set_value(math.exp(b))
    return math.exp(b)


def pooled_windows(results: list[Any]) -> np.ndarray:
    """The 100 ms window MSEs of ``simulate_many``'s per-session results, in one array."""
    return np.concatenate([r.acc.windows() for r in results]) if results else np.zeros(0)


def tail_ok(m: dict[str, Any], cfg: TrainConfig, link: LinkSpec) -> bool:
    """The tail half of the training criterion: the tail fraction (``m["tail_fraction"]``) within the chance
    bound, or with ``--tail-constraint cvar`` CVaR_α of the windows (``m["windows"]``) at most ε."""
    if cfg.tail_constraint == "cvar":
        return tail_ratio(m["windows"], cfg.eps, "cvar", cfg.cvar_alpha, 1.0) <= 1.0
    return bool(m["tail_fraction"] <= tail_bound(cfg, link.loss, link.delay_ms))


def _meets(m: dict[str, Any], cfg: TrainConfig, link: LinkSpec) -> bool:
    """The training criterion: mean MSE <= margin·ε and the tail constraint (``tail_ok``) on this link."""
    return bool(m["mse_deg2"] <= cfg.cost_target * cfg.eps and tail_ok(m, cfg, link))


def tail_meta(cfg: TrainConfig) -> dict[str, Any]:
    """What the checkpoint stores of the tail constraint: ``tail_max`` (the chance bound; 1.0, inert, with CVaR)
    and ``tail_constraint`` (read by the online learner, ``device.policies.kctd3.checkpoint.tail_constraint``)."""
    if cfg.tail_constraint == "cvar":
        return {"tail_max": 1.0, "tail_constraint": {"kind": "cvar", "alpha": cfg.cvar_alpha}}
    return {"tail_max": cfg.tail_max if cfg.tail_max is not None else tail_table_meta(cfg),
            "tail_constraint": {"kind": "chance"}}


def tail_bound(cfg: TrainConfig, loss: float, delay_ms: float = 0.0) -> float:
    """The chance-constraint bound for a link: the fixed --tail-max, or the auto table interpolated."""
    return tail_max_at(cfg.tail_max if cfg.tail_max is not None else tail_table_meta(cfg), loss,
                       rtt_ms=2 * (delay_ms + 0.5))


def tail_table_meta(cfg: TrainConfig) -> dict[str, list[Any]]:
    """The auto bound as the checkpoint stores it (``meta["tail_max"]``, read by ``kctd3_policy.tail_max_at``)."""
    return {"delay_ms": list(GRID_DELAY_MS), "loss": list(GRID_LOSS), "values": [list(r) for r in cfg.tail_table]}


def static_tail_table(sessions: list[Session], cfg: TrainConfig, realisations: int = 3) -> list[list[float]]:
    """``--tail-max auto``: for each (delay, loss) of the λ grid, the best static (k, H) on the training sessions
    (lowest load with mean MSE <= ε, the rule ``armtwin evaluate`` tunes the baseline with) and its tail fraction,
    times ``tail_margin``. Lossy levels pool ``realisations`` loss patterns (seeds 0..n-1, whatever the training
    seed): on a minute of data one pattern alone moved the figure by a factor 1.7. Training data only.
    Per delay too: with 20 ms of delay the static policy's tail is 2-3x its tail without, and a bound taken
    without delay made KC-TD3 spend 1.4-2.3x static's load there."""
    from device.policies.registry import parse_policy
    from lab.evaluate import candidates, choose

    table = []
    for delay in GRID_DELAY_MS:
        row = []
        for loss in GRID_LOSS:
            rows = []
            for c in candidates("static", cfg.predictor):
                runs = [simulate_many(sessions, parse_policy(c.spec), cfg.predictor,
                                      LinkSpec(delay_ms=delay, loss=loss, seed=seed), cfg.eps)[0]
                        for seed in range(realisations if loss else 1)]
                rows.append({"spec": c.spec, "train": {k: float(np.mean([r[k] for r in runs]))
                                                       for k in ("load", "mse_deg2", "tail_fraction")}})
            row.append(cfg.tail_margin * choose(rows, cfg.eps)["train"]["tail_fraction"])
        table.append(row)
    return table


def dr_expert_table(sessions: list[Session], cfg: TrainConfig, realisations: int = 3) -> dict[str, Any]:
    """The trigger mode's expert knowledge: for each (delay, loss) of the λ grid, the dead-reckoning (δ, H) that
    ``armtwin evaluate``'s search picks on the training sessions for ε (lowest load meeting ε among
    ``lab.evaluate.candidates("dead-reckoning")``), lossy levels pooled over ``realisations`` loss patterns.
    Training data only; read by ``knowledge.expert_dh``. The search runs without resend even for a resending
    policy: with resend every send costs a Python-level acknowledgement check (the small δ of the grid send up
    to every sample), which made the table ~100x slower (tens of minutes on a shared 2-core box); the expert's
    safety factor and the actor correct for the difference."""
    from device.policies.registry import parse_policy
    from lab.evaluate import candidates, choose

    family = "dead-reckoning" + ("" if cfg.trigger_norm == "max" else f"-{cfg.trigger_norm}") + (
        "-look" if cfg.trigger_look else "")
    delta, h, tail = [], [], []
    for delay in GRID_DELAY_MS:
        rows_d, rows_h, rows_t = [], [], []
        for loss in GRID_LOSS:
            rows = []
            for c in candidates(family, cfg.predictor):
                runs = [simulate_many(sessions, parse_policy(c.spec), cfg.predictor,
                                      LinkSpec(delay_ms=delay, loss=loss, seed=seed), cfg.eps)[0]
                        for seed in range(realisations if loss else 1)]
                rows.append({"params": c.params, "train": {k: float(np.mean([r[k] for r in runs]))
                                                           for k in ("load", "mse_deg2", "tail_fraction")}})
            best = choose(rows, cfg.eps)
            rows_d.append(float(best["params"]["delta_deg"]))
            rows_h.append(float(min(best["params"]["h_ms"], H_MAX_MS)))  # beyond the 500 ms heartbeat H is moot
            rows_t.append(best["train"]["tail_fraction"])
        delta.append(rows_d)
        h.append(rows_h)
        tail.append(rows_t)
    return {"delay_ms": list(GRID_DELAY_MS), "loss": list(GRID_LOSS), "delta_deg": delta, "h_ms": h,
            "tail_fraction": tail, "family": family}


def calibrate_expert(sessions: list[Session], policy: KCTD3Policy, cfg: TrainConfig) -> float:
    """Safety factor of the expert rule so that the expert alone meets the training criterion on the training
    recordings under a mid link (or the fixed --link)."""
    keep, policy.behaviour = policy.behaviour, lambda s, a_exp: a_exp
    link = cfg.link or LinkSpec(delay_ms=5, loss=0.05)
    safety = _bisect(sessions, policy, cfg, link, lambda v: setattr(policy, "safety", v), 0.1, 1000.0)
    policy.behaviour = keep
    return safety


def solve_lambda_grid(sessions: list[Session], policy: KCTD3Policy, cfg: TrainConfig) -> dict[str, Any]:
    """Final dual step: for each link of a (delay, loss) grid, the smallest λ at which the trained (λ-conditioned)
    actor meets the training criterion on the training recordings. Only training data is used."""
    policy.lam_grid = None
    values = [[_bisect(sessions, policy, cfg, LinkSpec(delay_ms=d, loss=p, seed=cfg.seed),
                       lambda v: setattr(policy, "lam", v), *cfg.lam_range) for p in GRID_LOSS] for d in GRID_DELAY_MS]
    grid = {"delay_ms": list(GRID_DELAY_MS), "loss": list(GRID_LOSS), "values": values}
    policy.lam_grid = grid
    return grid


def recalibrate(sessions: list[Session], path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Redo a trained checkpoint's post-training steps on ``sessions``: the tail constraint (``cfg``'s chance bound
    --tail-max, or its CVaR) and the λ grid. The actor is kept (it is λ-conditioned, so only the λ it is run at
    changes), and so is the expert's safety factor. Made for checkpoints trained before the auto bound covered
    delay. Rewrites POLICY.npz and POLICY.pt; returns the meta."""
    import torch

    ck = load_checkpoint(path)
    meta = ck["meta"]
    auto = cfg.tail_max is None and cfg.tail_constraint == "chance"
    cfg.tail_table = static_tail_table(sessions, cfg) if auto else []
    meta.update(tail_meta(cfg))
    policy = KCTD3Policy(path, checkpoint=ck)
    meta["lambda_grid"] = solve_lambda_grid(sessions, policy, cfg)
    meta["lambda"] = float(meta["lambda_grid"]["values"][0][0])
    meta["recalibrated"] = {"tail_margin": cfg.tail_margin, "tail_constraint": meta["tail_constraint"],
                            "cost_target": cfg.cost_target, "seed": cfg.seed,
                            "sessions": cfg.info.get("sessions", [])}
    save_npz(path, {k: v for k, v in ck.items() if k != "meta"}, meta)
    pt = path.with_suffix(".pt")
    if pt.exists():
        state = torch.load(pt, weights_only=True, map_location="cpu")
        state["meta"] = meta
        torch.save(state, pt)
    return meta
