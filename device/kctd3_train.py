"""KC-TD3 training in one file (cleanrl style): TD3 + Lagrangian constraint + expert knowledge.

Environment: a random 10 s window of a training recording under a random link (delay 0–20 ms, jitter 0–2 ms,
loss 0–10 %) is run through ``device.simulator.simulate`` with the very ``KCTD3Policy`` the device runs (same
state, same mirrored twin); the policy logs (state, action) at each 100 ms decision and the simulated twin gives
each step's reward r = −load (in units of 1 %) and cost c = window MSE / ε (the true display, after the link).

Algorithm: TD3 (twin critics, target networks, target policy smoothing, delayed actor updates, Gaussian
exploration) with *two* critic pairs, one for the reward and one for the cost; the actor maximises
(Q_r − λ·Q_c)/(1 + λ). Two critics instead of one on r − λ(c − ε): λ moves during training, and a single critic
would have to re-learn a moving target; separate critics stay stationary and λ only enters the actor loss.
λ is a state input too, and is updated by dual ascent after every episode: λ ← max(0, λ + η·(mean c − target)).
Expert knowledge (``--no-knowledge`` turns all three off): (1) behaviour cloning of the expert action warm-starts
the actor, (2) exploration follows the expert action (plus noise) with a probability decaying 0.5 → 0.05,
(3) the expert action is part of the state. Without knowledge, warm-up episodes take uniform random actions.
"""

from __future__ import annotations

import copy
import os
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from device.kctd3_policy import (
    H_MAX_MS,
    K_MAX,
    K_MIN,
    SCHEMA_VERSION,
    STATE_DIM,
    STATE_NAMES,
    LAM_DELAY_EDGES_MS,
    LAM_LOSS_EDGES,
    KCTD3Policy,
    lambda_bin,
    save_npz,
)
from device.link import LinkSpec
from device.simulator import simulate, simulate_many
from twin.predictors import DEFAULT_PREDICTOR
from twin.session import Session

_RAD2DEG = 180.0 / math.pi
_LAM = STATE_NAMES.index("lambda")


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults train in a few minutes on 2 cores."""

    eps: float
    episodes: int = 400
    minutes: float = 10.0  # wall-clock cap (a run stopped by it is not reproducible; recorded in the checkpoint)
    knowledge: bool = True
    seed: int = 0
    predictor: str = DEFAULT_PREDICTOR
    link: LinkSpec | None = None  # None: random link per episode
    episode_s: float = 10.0
    warmup_episodes: int = 8
    updates_per_episode: int = 100
    batch: int = 256
    gamma: float = 0.5  # mostly a contextual bandit: an action acts on its own window and the next one
    tau: float = 0.01
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    policy_delay: int = 2
    expl_noise: float = 0.15
    target_noise: float = 0.2
    noise_clip: float = 0.5
    bc_steps: int = 1000
    critic_warmup: int = 1500  # critic-only updates on the warm-up data before the actor moves
    guide_start: float = 0.5
    guide_end: float = 0.05
    lam_init: float = 1.0
    lam_lr: float = 0.1  # multiplicative dual step: λ ← λ·exp(lam_lr·tanh(mean c / target − 1))
    lam_range: tuple[float, float] = (0.01, 100.0)
    cost_clip: float = 50.0  # per-step cost cap (window MSE ≤ 50 ε): keeps critic targets bounded
    bc_lr: float = 1e-3
    cost_target: float = 0.8  # dual ascent aims at mean MSE = cost_target·ε (margin for unseen recordings)
    hidden: int = 64
    threads: int = 1  # these nets are tiny: a second thread only adds contention on a shared 2-core box
    info: dict[str, Any] = field(default_factory=dict)


class Env:
    """Random windows of the training recordings under random links, stepped through the real policy code."""

    def __init__(self, sessions: list[Session], cfg: TrainConfig, rng: np.random.Generator) -> None:
        self.sessions, self.cfg, self.rng = sessions, cfg, rng
        self.n = int(cfg.episode_s * 1000)

    def sample_link(self) -> LinkSpec:
        seed = int(self.rng.integers(2**31))
        if self.cfg.link is not None:
            return LinkSpec(**{**asdict(self.cfg.link), "seed": seed})
        return LinkSpec(delay_ms=float(self.rng.uniform(0, 20)), jitter_ms=float(self.rng.uniform(0, 2)),
                        loss=float(self.rng.uniform(0, 0.1)), seed=seed)

    def episode(self, policy: KCTD3Policy, link: LinkSpec) -> tuple[list[tuple[np.ndarray, ...]], dict[str, float]]:
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
        for (i0, s0, a0, _), (i1, s1, _, _) in zip(trace, trace[1:]):
            nv = max(int(valid[i0:i1].sum()), 1)
            load = float(res.sent[i0:i1].mean())
            mse = float(sq[i0:i1].sum() / nv)
            cost = min(mse / self.cfg.eps, self.cfg.cost_clip)
            out.append((s0, a0, np.float32(-100 * load), np.float32(cost), s1))
        return out, {"load": res.metrics["load"], "mse": res.metrics["mse_deg2"], "delay_ms": link.delay_ms,
                     "loss": link.loss}


def mlp(inp: int, out: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, out))


class Actor(nn.Module):
    """Normalised state -> action in [-1, 1]^2; exported layer by layer to the numpy MLP of the device."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = mlp(STATE_DIM, 2, hidden)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(s))

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
        for a, b in zip(dims, dims[1:]):
            bound = 1 / math.sqrt(a)
            self.w.append(nn.Parameter(torch.empty(n, a, b).uniform_(-bound, bound)))
            self.b.append(nn.Parameter(torch.empty(n, 1, b).uniform_(-bound, bound)))
        self.n = n

    def forward(self, s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        h = torch.cat([s, a], 1).unsqueeze(0).expand(self.n, -1, -1)
        for i, (w, b) in enumerate(zip(self.w, self.b)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.w) - 1:
                h = torch.relu(h)
        return h.squeeze(-1)


class Replay:
    """Plain numpy ring buffer of raw (unnormalised) transitions."""

    def __init__(self, size: int = 200_000) -> None:
        self.s = np.zeros((size, STATE_DIM), np.float32)
        self.a = np.zeros((size, 2), np.float32)
        self.rc = np.zeros((size, 2), np.float32)
        self.s2 = np.zeros((size, STATE_DIM), np.float32)
        self.size, self.n, self.i = size, 0, 0

    def add(self, trans: list[tuple[np.ndarray, ...]]) -> None:
        for s, a, r, c, s2 in trans:
            self.s[self.i], self.a[self.i], self.rc[self.i], self.s2[self.i] = s, a, (r, c), s2
            self.i = (self.i + 1) % self.size
            self.n = min(self.n + 1, self.size)

    def sample(self, rng: np.random.Generator, batch: int) -> tuple[torch.Tensor, ...]:
        j = rng.integers(0, self.n, batch)
        return tuple(torch.from_numpy(x[j]) for x in (self.s, self.a, self.rc, self.s2))


def calibrate_expert(sessions: list[Session], policy: KCTD3Policy, cfg: TrainConfig) -> float:
    """Safety factor of the expert rule: bisection (log scale) so that the expert alone meets cost_target·ε on
    the training recordings under a mid link (or the fixed --link). Only training data is used."""
    link = cfg.link or LinkSpec(delay_ms=5, loss=0.05)
    keep = policy.behaviour
    policy.behaviour = lambda s, a_exp: a_exp
    lo, hi = math.log(0.1), math.log(1000.0)
    for _ in range(8):
        mid = (lo + hi) / 2
        policy.safety = math.exp(mid)
        m, _ = simulate_many(sessions, policy, cfg.predictor, link)
        lo, hi = (lo, mid) if m["mse_deg2"] <= cfg.cost_target * cfg.eps else (mid, hi)
    policy.behaviour = keep
    policy.safety = math.exp(hi)
    return policy.safety


def train(sessions: list[Session], cfg: TrainConfig, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train, write ``out`` (.pt, torch) + ``out.npz`` (device) + curves (.csv, .png); return the metadata."""
    from tqdm import tqdm

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    t_start = time.monotonic()
    env = Env(sessions, cfg, rng)
    actor, critics = Actor(cfg.hidden), Critics(cfg.hidden)
    actor_t, critics_t = copy.deepcopy(actor), copy.deepcopy(critics)
    opt_a = torch.optim.Adam(actor.parameters(), lr=cfg.lr_actor)
    opt_c = torch.optim.Adam(critics.parameters(), lr=cfg.lr_critic)
    lam_table = np.full((len(LAM_DELAY_EDGES_MS) + 1, len(LAM_LOSS_EDGES) + 1), cfg.lam_init)
    cost_ema = np.full_like(lam_table, cfg.cost_target)
    lam = cfg.lam_init
    meta: dict[str, Any] = {
        "schema": SCHEMA_VERSION, "eps": cfg.eps, "lambda": lam, "predictor": cfg.predictor,
        "expert_knowledge": cfg.knowledge, "expert_safety": 1.0, "k_range": [K_MIN, K_MAX],
        "h_range_ms": [0.0, H_MAX_MS], "decision_ms": 100, "training": {}}
    ck = {**actor.numpy_weights(), "obs_mean": np.zeros(STATE_DIM), "obs_std": np.ones(STATE_DIM), "meta": meta}
    policy = KCTD3Policy(out, record=True, checkpoint=ck)
    if cfg.knowledge:
        meta["expert_safety"] = calibrate_expert(sessions, policy, cfg)
    norm = (torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    state = {"guide": cfg.guide_start, "noise": cfg.expl_noise, "warm": True}

    def behaviour(s: np.ndarray, a_exp: np.ndarray) -> np.ndarray:
        if state["warm"]:
            base = a_exp if cfg.knowledge else rng.uniform(-1, 1, 2)
        elif cfg.knowledge and rng.random() < state["guide"]:
            base = a_exp
        else:
            base = policy.act(s)
        return np.clip(base + rng.normal(0, float(state["noise"]), 2), -1, 1)

    policy.behaviour = behaviour
    buf = Replay()
    curves: list[dict[str, float]] = []
    updates, stopped_by_time = 0, False
    bar = tqdm(range(cfg.episodes), desc=f"{'kc-td3' if cfg.knowledge else 'td3'} ε={cfg.eps:g}", unit="ep",
               disable=not progress)
    for ep in bar:
        state["warm"] = ep < cfg.warmup_episodes
        frac = ep / max(cfg.episodes - 1, 1)
        state["guide"] = cfg.guide_start + (cfg.guide_end - cfg.guide_start) * frac
        link = env.sample_link()
        b = lambda_bin(2 * (link.delay_ms + link.jitter_ms / 2) + 1.0, link.loss)
        lam = policy.lam = float(lam_table[b])
        policy.lam_table = None  # training sets λ itself
        trans, info = env.episode(policy, link)
        buf.add(trans)
        mean_c = float(np.mean([t[3] for t in trans])) if trans else 0.0
        if ep == cfg.warmup_episodes - 1 or (cfg.warmup_episodes == 0 and ep == 0):
            # Freeze the state normalisation from the warm-up data (stored in the checkpoint).
            mean, std = buf.s[:buf.n].mean(0), np.maximum(buf.s[:buf.n].std(0), 0.05)
            # λ is constant during warm-up but moves later: fixed scale for log1p(λ).
            mean[_LAM], std[_LAM] = 0.0, 1.0
            norm = (torch.from_numpy(mean), torch.from_numpy(std))
            policy.obs_mean, policy.obs_std = mean.astype(np.float64), std.astype(np.float64)
            if cfg.knowledge:  # (1) behaviour cloning of the expert on everything seen so far
                s_all = (torch.from_numpy(buf.s[:buf.n]) - norm[0]) / norm[1]
                a_exp = torch.from_numpy(buf.s[:buf.n, -2:].copy())
                opt_bc = torch.optim.Adam(actor.parameters(), lr=cfg.bc_lr)
                for _ in range(cfg.bc_steps):
                    j = torch.from_numpy(rng.integers(0, buf.n, cfg.batch))
                    loss = ((actor(s_all[j]) - a_exp[j]) ** 2).mean()
                    opt_bc.zero_grad()
                    loss.backward()
                    opt_bc.step()
                meta["bc_loss"] = float(loss.detach())
                actor_t.load_state_dict(actor.state_dict())
        if ep >= cfg.warmup_episodes - 1:
            n_up = cfg.updates_per_episode + (cfg.critic_warmup if ep == cfg.warmup_episodes - 1 else 0)
            for u in range(n_up):
                updates += 1
                s_raw, a, rc, s2 = buf.sample(rng, cfg.batch)
                s, s2 = (s_raw - norm[0]) / norm[1], (s2 - norm[0]) / norm[1]
                with torch.no_grad():
                    noise = (torch.randn_like(a) * cfg.target_noise).clamp(-cfg.noise_clip, cfg.noise_clip)
                    q2 = critics_t(s2, (actor_t(s2) + noise).clamp(-1, 1))
                    y_r = rc[:, 0] + cfg.gamma * torch.minimum(q2[0], q2[1])
                    y_c = rc[:, 1] + cfg.gamma * torch.maximum(q2[2], q2[3])  # pessimistic for the cost
                q = critics(s, a)
                loss_c = ((q[0] - y_r) ** 2 + (q[1] - y_r) ** 2 + (q[2] - y_c) ** 2 + (q[3] - y_c) ** 2).mean()
                opt_c.zero_grad()
                loss_c.backward()
                opt_c.step()
                if updates % cfg.policy_delay == 0 and u >= n_up - cfg.updates_per_episode:
                    qa = critics(s, actor(s))
                    lam_i = torch.expm1(s_raw[:, _LAM])  # each transition's own λ (the actor is λ-conditioned)
                    loss_a = -((qa[0] - lam_i * qa[2]) / (1 + lam_i)).mean()
                    opt_a.zero_grad()
                    loss_a.backward()
                    opt_a.step()
                    with torch.no_grad():
                        for net, tgt in ((actor, actor_t), (critics, critics_t)):
                            for p, pt in zip(net.parameters(), tgt.parameters()):
                                pt.mul_(1 - cfg.tau).add_(p, alpha=cfg.tau)
            # Dual ascent on λ, in log space: costs are heavy-tailed and λ spans decades.
            # Dual ascent on this link bin's λ, in log space (λ spans decades), on an EMA of the episode MSE/ε
            # (the mean, not the median, of a heavy-tailed cost).
            ep_c = info["mse"] / cfg.eps if np.isfinite(info["mse"]) else mean_c
            cost_ema[b] = 0.8 * cost_ema[b] + 0.2 * ep_c
            lam_table[b] = np.clip(lam * math.exp(cfg.lam_lr * np.clip(cost_ema[b] / cfg.cost_target - 1, -1, 1)),
                                   *cfg.lam_range)
            lam = float(lam_table[b])
        policy.weights = _layers(actor.numpy_weights())
        if os.environ.get("KCTD3_DEBUG"):
            with torch.no_grad():
                sa = (torch.from_numpy(buf.s[:buf.n]) - norm[0]) / norm[1]
                print(ep, "actor mean", actor(sa).mean(0).numpy(), "taken", buf.a[max(buf.n - 99, 0):buf.n].mean(0), lam)
        curves.append({"episode": ep, "mse_deg2": info["mse"], "load": info["load"], "lambda": lam, "lam_bin": str(b),
                       "mean_cost": mean_c, "guide": state["guide"] if cfg.knowledge else 0.0,
                       "delay_ms": info["delay_ms"], "loss": info["loss"], "time_s": time.monotonic() - t_start})
        bar.set_postfix(load=f"{info['load']:.4f}", mse=f"{info['mse']:.2g}", lam=f"{lam:.2f}")
        if time.monotonic() - t_start > cfg.minutes * 60:
            stopped_by_time = True
            break
    elapsed = time.monotonic() - t_start
    policy.behaviour, policy.record = None, False
    meta["lambda_table"] = lam_table.tolist()
    meta["lambda"] = float(lam_table[0, 0])  # a perfect link; the table gives λ for the estimated link
    policy.lam_table, policy._lam_bin = lam_table, None
    final = {}
    for lk in ("loss=0", "loss=0.1"):
        m, _ = simulate_many(sessions, policy, cfg.predictor, LinkSpec.parse(lk), cfg.eps)
        final[lk] = {"load": m["load"], "mse_deg2": m["mse_deg2"], "tail_fraction": m["tail_fraction"]}
    meta["training"] = {"episodes": len(curves), "updates": updates, "seconds": elapsed,
                        "stopped_by_time_cap": stopped_by_time, "config": _plain(asdict(cfg)),
                        "sessions": cfg.info.get("sessions", []), "train_eval": final,
                        "torch": torch.__version__}
    actor_np = {**actor.numpy_weights(), "obs_mean": policy.obs_mean, "obs_std": policy.obs_std}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"actor": actor.state_dict(), "critics": critics.state_dict(),
                "actor_numpy": {k: torch.from_numpy(np.asarray(v)) for k, v in actor_np.items()},
                "meta": _plain(meta)}, out)
    save_npz(out, actor_np, meta)
    write_curves(curves, cfg, out)
    return meta


def _layers(w: dict[str, np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(w[f"W{i}"], w[f"b{i}"]) for i in range(3)]


def _plain(obj: Any) -> Any:
    """JSON/torch-weights_only-safe copy (LinkSpec and numpy scalars -> plain types)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, LinkSpec):
        return obj.label()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def write_curves(curves: list[dict[str, float]], cfg: TrainConfig, out: Path) -> None:
    """Training curves (the paper's Fig. 4): tracking error per episode with the ε line, load per episode."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = out.with_suffix("")
    with open(f"{stem}_curves.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(curves[0]))
        w.writeheader()
        w.writerows(curves)
    ep = np.array([c["episode"] for c in curves])

    def smooth(x: np.ndarray, n: int = 20) -> np.ndarray:
        return np.convolve(x, np.ones(n) / n, mode="valid") if len(x) >= n else x

    fig, ax = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for a, key, label in ((ax[0], "mse_deg2", "episode MSE (deg²)"), (ax[1], "load", "load"),
                          (ax[2], "lambda", "λ")):
        y = np.array([c[key] for c in curves])
        a.plot(ep, y, ".", ms=2, alpha=0.4)
        ys = smooth(y)
        a.plot(ep[len(ep) - len(ys):], ys, "-")
        a.set_ylabel(label)
    ax[0].axhline(cfg.eps, color="r", ls="--", label=f"ε = {cfg.eps:g}")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[2].set_xlabel("episode (10 s, 100 decisions)")
    fig.suptitle(f"{'KC-TD3' if cfg.knowledge else 'TD3 (no knowledge)'} training, ε = {cfg.eps:g} deg²")
    fig.tight_layout()
    fig.savefig(f"{stem}_curves.png", dpi=100)
    plt.close(fig)
