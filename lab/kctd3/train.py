"""KC-TD3 training in one file (cleanrl style): TD3 + Lagrangian constraint + expert knowledge.

Environment: a random 10 s window of a training recording under a random link (delay 0–20 ms, jitter 0–2 ms,
loss 0–10 %) is run through ``lab.simulator.simulate`` with the very ``KCTD3Policy`` the device runs (same
state, same mirrored twin); the policy logs (state, action) at each 100 ms decision and the simulated twin gives
each step's reward r = −load (in units of 1 %) and cost c = window MSE / ε (the true display, after the link).

Algorithm: TD3 (twin critics, target networks, target policy smoothing, delayed actor updates, Gaussian
exploration) with *two* critic pairs, one for the reward and one for the cost; the actor maximises
(Q_r − λ·Q_c)/(1 + λ). Two critics instead of one on r − λ(c − ε): λ moves during training, and a single critic
would have to re-learn a moving target; separate critics stay stationary and λ only enters the actor loss.
λ is a state input (the actor is λ-conditioned; each transition's own λ is used in its actor loss). Dual ascent,
after every deterministic (noise-free) episode, on one λ per link bin, in log space (costs are heavy-tailed):
λ ← λ·exp(η·clip(g, ±1)), g = max(MSE_ema/(margin·ε), tail_ema/tail_max) − 1, i.e. the mean-MSE constraint and a
chance constraint (≤ tail_max of the 100 ms windows above ε), or with ``--tail-constraint cvar`` a CVaR constraint
(tail_ema of CVaR_α of the window MSEs / ε, bound 1). After training, λ is solved per link on a (delay,
loss) grid on the training recordings (bisection); the device interpolates it.
Expert knowledge (``--no-knowledge`` turns all three off): (1) behaviour cloning of the expert action warm-starts
the actor, (2) exploration follows the expert action (plus noise) with a probability decaying 0.5 → 0.05,
(3) the expert action is part of the state. Without knowledge, warm-up episodes take uniform random actions.
"""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.link_emulation import LinkSpec
from device.policies.kctd3.checkpoint import SCHEMA_VERSION, cvar, save_npz
from device.policies.kctd3.knowledge import DELTA_MAX_DEG, DELTA_MIN_DEG, H_MAX_MS, K_MAX, K_MIN
from device.policies.kctd3.policy import STATE_DIM, STATE_NAMES, KCTD3Policy
from lab.kctd3.calibrate import (
    calibrate_expert,
    dr_expert_table,
    solve_lambda_grid,
    static_tail_table,
    tail_bound,
    tail_meta,
)
from lab.kctd3.config import TrainConfig
from lab.simulator import simulate
from twin.predictors import DEFAULT_PREDICTOR
from twin.session import Session

_RAD2DEG = 180.0 / math.pi
_LAM = STATE_NAMES.index("lambda")
# Training keeps one λ per link bin (one-way delay edges 7, 14 ms x loss edge 5 %) for dual ascent; after
# training λ is solved on a grid of links on the training recordings (``kctd3_calibrate.solve_lambda_grid``).
_BIN_DELAY_MS, _BIN_LOSS = (7.0, 14.0), (0.05,)


def lambda_bin(link: LinkSpec) -> tuple[int, int]:
    d = link.delay_ms + link.jitter_ms / 2
    return int(np.searchsorted(_BIN_DELAY_MS, d, "right")), int(np.searchsorted(_BIN_LOSS, link.loss, "right"))


class Env:
    """Random windows of the training recordings under random links, stepped through the real policy code."""

    def __init__(self, sessions: list[Session], cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.sessions, self.cfg, self.rng, self.n = sessions, cfg, rng, int(cfg.episode_s * 1000)

    def sample_link(self) -> LinkSpec:
        """The fixed --link (fresh loss seed), or a random one: delay 0-20 ms, jitter 0-2 ms, loss 0-10 %."""
        seed = int(self.rng.integers(2**31))
        if self.cfg.link is not None:
            return LinkSpec(**{**asdict(self.cfg.link), "seed": seed})
        return LinkSpec(delay_ms=float(self.rng.uniform(0, 20)), jitter_ms=float(self.rng.uniform(0, 2)),
                        loss=float(self.rng.uniform(0, 0.1)), seed=seed)

    def episode(self, policy: KCTD3Policy, link: LinkSpec) -> tuple[list[tuple[Any, ...]], dict[str, float]]:
        """One episode -> transitions (s, a, r, c, s') with raw states, and episode figures."""
        s = self.sessions[int(self.rng.integers(len(self.sessions)))]
        a = int(self.rng.integers(0, max(len(s.t_us) - self.n, 1)))
        window = Session(t_us=s.t_us[a:a + self.n], q=s.q[a:a + self.n], joint_names=s.joint_names)
        res = simulate(window, policy, self.cfg.predictor, link, keep=True)
        assert res.qhat is not None and res.sent is not None
        sq = np.where(np.isnan(res.qhat), 0.0, ((window.q - res.qhat) * _RAD2DEG) ** 2).mean(axis=1)
        valid = ~np.isnan(res.qhat).any(axis=1)
        trace = policy.trace
        out = []
        for (i0, s0, a0, _), (i1, s1, _, _) in pairwise(trace):
            nv = max(int(valid[i0:i1].sum()), 1)
            load = float(res.sent[i0:i1].mean())
            mse = float(sq[i0:i1].sum() / nv)
            cost = min(mse / self.cfg.eps, self.cfg.cost_clip)
            out.append((s0, a0, np.float32(-100 * load), np.float32(cost), s1))
        costs = np.array([t[3] for t in out], dtype=np.float64)
        tail = float(np.mean(costs > 1.0)) if out else 0.0
        return out, {"load": res.metrics["load"], "mse": res.metrics["mse_deg2"], "tail": tail,
                     "cvar": cvar(costs, self.cfg.cvar_alpha), "delay_ms": link.delay_ms, "loss": link.loss}


class Actor(nn.Module):
    """Normalised state -> action in [-1, 1]^2; exported layer by layer to the numpy MLP of the device."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(STATE_DIM, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, 2))

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(s))

    def layers(self) -> list[tuple[np.ndarray, np.ndarray]]:
        w = self.numpy_weights()
        return [(w[f"W{i}"], w[f"b{i}"]) for i in range(3)]

    def numpy_weights(self) -> dict[str, np.ndarray]:
        lins = [m for m in self.net if isinstance(m, nn.Linear)]
        out = {f"W{i}": m.weight.detach().double().numpy().T.copy() for i, m in enumerate(lins)}
        out.update({f"b{i}": m.bias.detach().double().numpy().copy() for i, m in enumerate(lins)})
        return out


class Critics(nn.Module):
    """Four Q networks (reward pair, cost pair) evaluated as one batched ensemble: (B, S+A) -> (4, B)."""

    def __init__(self, hidden: int, n: int = 4) -> None:
        super().__init__()
        dims = [STATE_DIM + 2, hidden, hidden, 1]
        self.w = nn.ParameterList()
        self.b = nn.ParameterList()
        for a, b in pairwise(dims):
            bound = 1 / math.sqrt(a)
            self.w.append(nn.Parameter(torch.empty(n, a, b).uniform_(-bound, bound)))
            self.b.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-bound, bound)))
        self.n = n

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = torch.cat([s, a], 1).unsqueeze(0).expand(self.n, -1, -1)
        for i, (w, b) in enumerate(zip(self.w, self.b, strict=True)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.w) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)


class ReplayBuffer:
    """Raw (unnormalised) transitions s, a, (r, c), s' in preallocated numpy arrays (no eviction: 200k rows)."""

    def __init__(self, size: int = 200_000) -> None:
        self.s, self.a, self.rc, self.s2 = (np.zeros((size, d), np.float32) for d in (STATE_DIM, 2, 2, STATE_DIM))
        self.n = 0

    def add(self, trans: list[tuple[Any, ...]]) -> None:
        for s, a, r, c, s2 in trans[: len(self.s) - self.n]:
            self.s[self.n], self.a[self.n], self.rc[self.n], self.s2[self.n] = s, a, (r, c), s2
            self.n += 1

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
        j = rng.integers(0, self.n, batch)
        return tuple(torch.from_numpy(x[j]) for x in (self.s, self.a, self.rc, self.s2))


class TD3:
    """Actor, reward/cost critic pairs, their targets and optimisers; ``update`` is one TD3 round."""

    def __init__(self, cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.cfg, self.rng = cfg, rng
        self.actor, self.critics = Actor(cfg.hidden), Critics(cfg.hidden)
        self.actor_t, self.critics_t = copy.deepcopy(self.actor), copy.deepcopy(self.critics)
        self.opt_a = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr_actor)
        self.opt_c = torch.optim.Adam(self.critics.parameters(), lr=cfg.lr_critic)
        self.steps = 0

    def behaviour_clone(self, buf: ReplayBuffer, norm: tuple[torch.Tensor, torch.Tensor]) -> float:
        """Knowledge use (1): regress the actor on the expert actions stored in the states (last two inputs)."""
        s_all = (torch.from_numpy(buf.s[:buf.n]) - norm[0]) / norm[1]
        a_exp = torch.from_numpy(buf.s[:buf.n, -2:].copy())
        opt = torch.optim.Adam(self.actor.parameters(), lr=self.cfg.bc_lr)
        loss = torch.zeros(())
        for _ in range(self.cfg.bc_steps):
            j = torch.from_numpy(self.rng.integers(0, buf.n, self.cfg.batch))
            loss = ((self.actor(s_all[j]) - a_exp[j]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.actor_t.load_state_dict(self.actor.state_dict())
        return float(loss.detach())

    def update(self, buf: ReplayBuffer, norm: tuple[torch.Tensor, torch.Tensor], critic_only: int, n: int) -> int:
        """``critic_only`` critic updates, then ``n`` TD3 updates (actor + targets every ``policy_delay``)."""
        cfg = self.cfg
        for u in range(critic_only + n):
            self.steps += 1
            s_raw, a, rc, s2 = buf.sample(self.rng, cfg.batch)
            s, s2 = (s_raw - norm[0]) / norm[1], (s2 - norm[0]) / norm[1]
            with torch.no_grad():  # target policy smoothing; clipped double Q (pessimistic side for the cost)
                noise = (torch.randn_like(a) * cfg.target_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                q2 = self.critics_t(s2, (self.actor_t(s2) + noise).clamp(-1, 1))
                y_r = rc[:, 0] + cfg.gamma * torch.minimum(q2[0], q2[1])
                y_c = rc[:, 1] + cfg.gamma * torch.maximum(q2[2], q2[3])
            q = self.critics(s, a)
            loss_c = ((q[0] - y_r) ** 2 + (q[1] - y_r) ** 2 + (q[2] - y_c) ** 2 + (q[3] - y_c) ** 2).mean()
            self.opt_c.zero_grad()
            loss_c.backward()
            self.opt_c.step()
            if u < critic_only or self.steps % cfg.policy_delay:
                continue
            qa = self.critics(s, self.actor(s))
            lam = torch.expm1(s_raw[:, _LAM])  # each transition's own λ: the actor is λ-conditioned
            loss_a = -((qa[0] - lam * qa[2]) / (1 + lam)).mean()
            self.opt_a.zero_grad()
            loss_a.backward()
            self.opt_a.step()
            with torch.no_grad():
                for net, tgt in ((self.actor, self.actor_t), (self.critics, self.critics_t)):
                    for p, pt in zip(net.parameters(), tgt.parameters(), strict=True):
                        pt.mul_(1 - cfg.tau).add_(p, alpha=cfg.tau)
        return critic_only + n


def train(sessions: list[Session], cfg: TrainConfig, out: Path,
          progress: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train; write ``out`` (.pt: torch, full state) and ``out.npz`` (device); return (metadata, curves)."""
    from tqdm import tqdm
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.monotonic()
    env, td3, buf = Env(sessions, cfg, rng), TD3(cfg, rng), ReplayBuffer()
    chance = cfg.tail_constraint == "chance"
    if chance and cfg.tail_max is None and not cfg.tail_table:
        cfg.tail_table = static_tail_table(sessions, cfg)
    lam_table = np.full((len(_BIN_DELAY_MS) + 1, len(_BIN_LOSS) + 1), cfg.lam_init)
    cost_ema = np.full_like(lam_table, cfg.cost_target)
    # The tail term of the dual step: an EMA of the episode tail fraction (divided by the link's bound at each step),
    # or with --tail-constraint cvar of CVaR_α of the window costs (window MSE / ε, so 1 = on the constraint).
    tail_ema = np.full_like(lam_table, tail_bound(cfg, 0.05) if chance else 1.0)
    meta: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "eps": cfg.eps, "lambda": cfg.lam_init, "predictor": cfg.predictor,
        "expert_knowledge": cfg.knowledge, "expert_safety": 1.0, "k_range": [K_MIN, K_MAX],
        "h_range_ms": [0.0, H_MAX_MS], "decision_ms": 100, "cost_target": cfg.cost_target,
        **tail_meta(cfg), "resend": cfg.resend, "action": cfg.action}
    if cfg.action == "trigger":  # the actor picks δ and H; the expert starts from the dead-reckoning search
        meta["delta_range_deg"] = [DELTA_MIN_DEG, DELTA_MAX_DEG]
        meta["trigger_norm"] = cfg.trigger_norm
        if cfg.trigger_look:
            meta["trigger_look"] = "auto"
        if cfg.knowledge:
            meta["trigger_expert"] = dr_expert_table(sessions, cfg)
    ck = {**td3.actor.numpy_weights(), "obs_mean": np.zeros(STATE_DIM), "obs_std": np.ones(STATE_DIM), "meta": meta}
    policy = KCTD3Policy(out, record=True, checkpoint=ck)
    if cfg.knowledge:
        meta["expert_safety"] = calibrate_expert(sessions, policy, cfg)
    norm = (torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    mode = {"guide": cfg.guide_start, "warm": True, "explore": True}

    def behaviour(s: np.ndarray, a_exp: np.ndarray) -> np.ndarray:
        if not mode["explore"]:
            return policy.act(s)
        if mode["warm"]:
            base = a_exp if cfg.knowledge else rng.uniform(-1, 1, 2)
        elif cfg.knowledge and rng.random() < mode["guide"]:  # (2) expert-guided exploration
            base = a_exp
        else:
            base = policy.act(s)
        return np.clip(base + rng.normal(0, cfg.expl_noise, 2), -1, 1)

    policy.behaviour = behaviour
    curves: list[dict[str, Any]] = []
    updates, stopped_by_time, warm_end = 0, False, max(cfg.warmup_episodes, 1) - 1
    name = "kc-td3" if cfg.knowledge else "td3"  # (tqdm starts a monitor thread even when disabled)
    for ep in tqdm(range(cfg.episodes), desc=f"{name} eps={cfg.eps:g}", unit="ep") if progress else range(cfg.episodes):
        # After warm-up, odd episodes run the deterministic actor: λ follows the cost of the policy being
        # learnt, not of its noisy exploration (noise on k costs a lot of MSE: MSE grows ~k⁶).
        mode["warm"] = ep <= warm_end
        mode["explore"] = mode["warm"] or ep % 2 == 0
        mode["guide"] = cfg.guide_start + (cfg.guide_end - cfg.guide_start) * ep / max(cfg.episodes - 1, 1)
        link = env.sample_link()
        b = lambda_bin(link)
        lam = float(lam_table[b])
        # Exploring episodes run at a λ spread around the dual-ascent value: the actor is λ-conditioned, and
        # the λ finally solved per link must land where it has learnt something (without the spread, actors
        # stayed as careful at λ → 0.01 as at the λ training had settled on).
        spread = cfg.lam_spread * math.log(10) if mode["explore"] and not mode["warm"] else 0.0
        policy.lam = float(np.clip(lam * math.exp(rng.uniform(-spread, spread)), *cfg.lam_range))
        trans, info = env.episode(policy, link)
        buf.add(trans)
        if ep == warm_end:  # freeze the state normalisation (stored in the checkpoint), then BC
            mean, std = buf.s[:buf.n].mean(0), np.maximum(buf.s[:buf.n].std(0), 0.05)
            mean[_LAM], std[_LAM] = 0.0, 1.0  # λ is constant during warm-up: a fixed scale for log1p(λ)
            norm = (torch.from_numpy(mean), torch.from_numpy(std))
            policy.obs_mean, policy.obs_std = mean.astype(np.float64), std.astype(np.float64)
            if cfg.knowledge:  # (1) behaviour cloning of the expert (warm start)
                meta["bc_loss"] = td3.behaviour_clone(buf, norm)
        if ep >= warm_end:
            updates += td3.update(buf, norm, cfg.critic_warmup if ep == warm_end else 0, cfg.updates_per_episode)
        if ep > warm_end and not mode["explore"]:
            # Dual ascent on this link bin's λ, in log space, on EMAs of the episode MSE/ε and tail fraction.
            cost_ema[b] = 0.8 * cost_ema[b] + 0.2 * min(info["mse"] / cfg.eps, 5.0)  # one disaster must not
            # hold λ up for the rest of training (the step is clipped to ±1 anyway)
            tail_ema[b] = 0.8 * tail_ema[b] + 0.2 * (info["tail"] if chance else info["cvar"])
            bound = tail_bound(cfg, link.loss, link.delay_ms) if chance else 1.0
            g = max(cost_ema[b] / cfg.cost_target, tail_ema[b] / bound) - 1  # the more violated
            lam_table[b] = np.clip(lam * math.exp(cfg.lam_lr * np.clip(g, -1, 1)), *cfg.lam_range)
        policy.weights = td3.actor.layers()
        curves.append({"episode": ep, "mse_deg2": info["mse"], "load": info["load"], "tail": info["tail"],
                       "cvar": info["cvar"],
                       "lambda": policy.lam, "lam_bin": f"{b[0]}{b[1]}", "explore": int(mode["explore"]),
                       "delay_ms": info["delay_ms"], "loss": info["loss"], "time_s": time.monotonic() - t_start})
        if time.monotonic() - t_start > cfg.minutes * 60:
            stopped_by_time = True
            break
    policy.behaviour, policy.record = None, False
    meta["lambda_table_training"] = lam_table.tolist()
    meta["lambda_grid"] = solve_lambda_grid(sessions, policy, cfg)
    meta["lambda"] = float(meta["lambda_grid"]["values"][0][0])  # perfect link; the grid gives λ(link)
    meta["training"] = json.loads(json.dumps({
        "episodes": len(curves), "updates": updates, "seconds": time.monotonic() - t_start,
        "stopped_by_time_cap": stopped_by_time, "config": asdict(cfg), "torch": torch.__version__}, default=str))
    actor_np = {**td3.actor.numpy_weights(), "obs_mean": policy.obs_mean, "obs_std": policy.obs_std}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"actor": td3.actor.state_dict(), "critics": td3.critics.state_dict(),
                "actor_numpy": {k: torch.from_numpy(np.asarray(v)) for k, v in actor_np.items()},
                "meta": meta}, out)
    save_npz(out, actor_np, meta)
    return meta, curves


def random_checkpoint(path: str | Path, eps: float = 0.002, seed: int = 0, hidden: int = 64,
                      action: str = "kh", trigger_norm: str = "max", trigger_look: bool = False) -> Path:
    """A tiny randomly initialised device checkpoint (.npz; tests and benchmarks). ``action="trigger"``: the
    trigger action mode, with an expert table of one δ* / H* per link."""
    torch.manual_seed(seed)
    meta: dict[str, Any] = {"schema": SCHEMA_VERSION, "eps": eps, "lambda": 1.0, "predictor": DEFAULT_PREDICTOR,
                            "expert_knowledge": True, "expert_safety": 10.0, "resend": True,
                            "training": {"random": True}, "action": action}
    if action == "trigger":
        meta["trigger_expert"] = {"delay_ms": [0.0, 20.0], "loss": [0.0, 0.1], "delta_deg": [[0.1, 0.1], [0.1, 0.1]],
                                  "h_ms": [[200.0, 200.0], [200.0, 200.0]]}
        meta["trigger_norm"] = trigger_norm
        if trigger_look:
            meta["trigger_look"] = "auto"
    actor = {**Actor(hidden).numpy_weights(), "obs_mean": np.zeros(STATE_DIM), "obs_std": np.ones(STATE_DIM)}
    return save_npz(path, actor, meta)
