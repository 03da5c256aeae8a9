"""KC-TD3 training hyper-parameters (shared by training and calibration)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device.link_emulation import LinkSpec
from twin.predictors import DEFAULT_PREDICTOR


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
    expl_noise: float = 0.1
    target_noise: float = 0.2
    noise_clip: float = 0.5
    bc_steps: int = 1000
    critic_warmup: int = 1500  # critic-only updates on the warm-up data before the actor moves
    guide_start: float = 0.5
    guide_end: float = 0.05
    lam_init: float = 1.0
    lam_lr: float = 0.2  # multiplicative dual step (see the module docstring)
    lam_range: tuple[float, float] = (0.01, 100.0)
    lam_spread: float = 1.0  # exploring episodes: λ x 10^U(-spread, spread) (decades); 0 = the bin's λ only
    cost_clip: float = 50.0  # per-step cost cap (window MSE ≤ 50 ε): keeps critic targets bounded
    bc_lr: float = 1e-3
    cost_target: float = 0.8  # dual ascent aims at mean MSE = cost_target·ε (margin for unseen recordings)
    # ... and at most this fraction of 100 ms windows with MSE > ε (a chance constraint). None ("auto"): per loss
    # level of the λ grid, tail_margin x the tail fraction of the best static (k, H) on the training sessions,
    # i.e. "at least as reliable as the exhaustive-search static policy" (``static_tail_table``).
    tail_max: float | None = None
    tail_margin: float = 0.5  # 0.8 left the tail above static's on one held-out condition (docs/kctd3.md)
    tail_table: list[list[float]] = field(default_factory=list)  # GRID_DELAY_MS x GRID_LOSS; by ``train`` if empty
    # "chance" (the above) or "cvar": the worst (1 - cvar_alpha) of the 100 ms windows average at most ε, a bound on
    # how bad the bad windows are rather than how many there are (C-PPO's tail constraint); tail_max is then unused.
    tail_constraint: str = "chance"
    cvar_alpha: float = 0.9
    action: str = "kh"  # "kh": the actor picks (k, H); "trigger": the dead-reckoning threshold δ and H
    trigger_norm: str = "max"  # trigger mode: what δ bounds, the largest joint error or the RMS over joints
    trigger_look: bool = False  # trigger mode: test the error one measured one-way delay ahead (look=auto)
    resend: bool = True  # ack-based resend of lost samples (device.acks), trained as it will run
    hidden: int = 64
    bisect_steps: int = 7  # expert safety calibration and final λ(link) solve
    threads: int = 1  # these nets are tiny: a second thread only adds contention on a shared 2-core box
    info: dict[str, Any] = field(default_factory=dict)
