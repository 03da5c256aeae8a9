"""KC-TD3 speed: decision latency on the device path, and training throughput.

    python bench/bench_kctd3.py [--policy data/policies/kctd3_eps0.002.pt] [--decisions 10000] [--json out.json]

Decision latency (one core, numpy only; torch is never imported on this path):
* ``mlp``: the actor's forward pass alone (target <= 100 µs);
* ``decision``: one whole 100 ms window through ``select`` -- mirrored-twin error, motion statistics, expert
  rule, state, MLP, and the static sends of the window (what the device pays every 100 ms);
* ``live_chunk``: ``select`` on 1-sample chunks as the live 1 kHz loop calls it (per sample, all inclusive).
Training throughput: environment episodes (10 s, 100 decisions, simulator + policy) and TD3 updates per second.
Without --policy a random checkpoint is used (same shapes, same cost).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from device.policies.kctd3.policy import STATE_DIM, KCTD3Policy  # noqa: E402
from twin.session import load_session  # noqa: E402


def pct(x: list[float]) -> dict[str, float]:
    a = np.asarray(x) * 1e6
    return {"median_us": float(np.median(a)), "p99_us": float(np.percentile(a, 99)), "n": len(a)}


def bench_decisions(path: str, n_decisions: int) -> dict[str, dict[str, float]]:
    sessions = [load_session(p) for p in sorted((REPO / "data" / "sessions").glob("*.mcap"))]
    pol = KCTD3Policy(path)
    x = np.random.default_rng(0).normal(size=STATE_DIM)
    mlp = []
    for _ in range(n_decisions):
        t0 = time.perf_counter()
        pol.act(x)
        mlp.append(time.perf_counter() - t0)
    dec: list[float] = []
    while len(dec) < n_decisions:
        for s in sessions:
            pol.reset()
            for a in range(0, len(s.t_us) - 100, 100):
                t0 = time.perf_counter()
                pol.select(s.t_us[a:a + 100], s.q[a:a + 100])
                dec.append(time.perf_counter() - t0)
    live: list[float] = []
    s = sessions[0]
    pol.reset()
    for a in range(min(len(s.t_us), 20_000)):
        t0 = time.perf_counter()
        pol.select(s.t_us[a:a + 1], s.q[a:a + 1])
        live.append(time.perf_counter() - t0)
    return {"mlp": pct(mlp), "decision": pct(dec[:n_decisions]), "live_chunk_per_sample": pct(live)}


def bench_training(seconds: float = 20.0) -> dict[str, float]:
    import torch

    from lab.kctd3.config import TrainConfig
    from lab.kctd3.train import TD3, Env, ReplayBuffer

    torch.set_num_threads(1)
    sessions = [load_session(REPO / "data" / "sessions" / f"train_{x}.mcap") for x in "ab"]
    cfg = TrainConfig(eps=0.002)
    rng = np.random.default_rng(0)
    env, td3, buf = Env(sessions, cfg, rng), TD3(cfg, rng), ReplayBuffer()
    with tempfile.TemporaryDirectory() as tmp:
        from lab.kctd3.train import random_checkpoint

        pol = KCTD3Policy(random_checkpoint(Path(tmp) / "r.pt"), record=True)
    pol.behaviour = lambda s, a_exp: np.clip(a_exp + rng.normal(0, 0.1, 2), -1, 1)
    t0, episodes = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 2:
        trans, _ = env.episode(pol, env.sample_link())
        buf.add(trans)
        episodes += 1
    ep_rate = episodes / (time.perf_counter() - t0)
    norm = (torch.zeros(STATE_DIM), torch.ones(STATE_DIM))
    t0, updates = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds / 2:
        updates += td3.update(buf, norm, 0, 50)
    up_rate = updates / (time.perf_counter() - t0)
    per_episode = 1 / ep_rate + cfg.updates_per_episode / up_rate
    return {"episodes_per_s": ep_rate, "updates_per_s": up_rate,
            "default_training_s_estimate": cfg.episodes * per_episode}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default=None, help="checkpoint (default: a random one)")
    ap.add_argument("--decisions", type=int, default=10_000)
    ap.add_argument("--train-seconds", type=float, default=20.0)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.policy
        if path is None:
            from lab.kctd3.train import random_checkpoint

            path = str(random_checkpoint(Path(tmp) / "r.pt"))
        latency = bench_decisions(path, args.decisions)
    for name, r in latency.items():
        print(f"{name:24s} median {r['median_us']:8.1f} µs   p99 {r['p99_us']:8.1f} µs   (n={r['n']})")
    tr = bench_training(args.train_seconds)
    out = {"latency": latency, "training": tr}
    print(f"training: {tr['episodes_per_s']:.1f} episodes/s (10 s of data each), {tr['updates_per_s']:.0f} TD3 "
          f"updates/s (batch 256, 1 thread); default run ~{tr['default_training_s_estimate']:.0f} s + λ solve")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
