"""``armtwin train``: train a KC-TD3 sampling policy (or the TD3 ablation) on recorded sessions."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train the KC-TD3 sampling policy on recordings (offline, through the simulator)",
        description="Train KC-TD3 (TD3 + Lagrangian constraint on the average tracking error + expert knowledge) "
        "on random 10 s windows of the given sessions under random links (delay 0-20 ms, loss 0-10 %), "
        "through the same simulator and policy code the device runs. Writes POLICY.pt (torch, full state), "
        "POLICY.npz (what the device loads, no torch) and POLICY_curves.csv/.png (error and load per episode). "
        "λ is solved per link condition on the training sessions so that the mean MSE <= margin x ε and at most "
        "--tail-max of the 100 ms windows exceed ε (with --tail-constraint cvar: the worst of them average at most ε).",
        epilog="examples:\n"
        "  armtwin train data/sessions/train_a.mcap data/sessions/train_b.mcap --constraint 0.002 -o p002.pt\n"
        "  armtwin train train_*.mcap --constraint 0.007 --no-knowledge -o td3_007.pt   (ablation)\n"
        "  armtwin simulate test.mcap --policy kc-td3:p002.pt      # then evaluate it",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sessions", type=Path, nargs="+", help="training recordings (.mcap)")
    p.add_argument("--constraint", type=float, required=True, metavar="EPS", help="ε: average MSE bound, deg²")
    p.add_argument("--link", default=None, help="train under this fixed link (--link syntax) instead of random ones")
    p.add_argument("--episodes", type=int, default=400, help="episodes of 10 s / 100 decisions (default 400)")
    p.add_argument("--minutes", type=float, default=10.0,
                   help="wall-clock cap; stopping on it makes the run non-reproducible (default 10)")
    p.add_argument("--no-knowledge", action="store_true",
                   help="TD3 ablation: no behaviour cloning, no expert-guided exploration, no expert in the state")
    p.add_argument("--margin", type=float, default=0.8,
                   help="dual ascent aims at mean MSE = margin x ε on the training data (default 0.8)")
    p.add_argument("--tail-max", default="auto", type=_tail_max,
                   help="and at most this fraction of 100 ms windows with MSE > ε (chance constraint). 'auto' "
                   "(default): per loss level, --tail-margin x the fraction of the best static (k, H) on the "
                   "training sessions, i.e. more reliable than the exhaustive-search static policy (~1 min extra)")
    p.add_argument("--tail-margin", type=float, default=0.5,
                   help="with --tail-max auto: the fraction of the static policy's tail to aim at (default 0.5)")
    p.add_argument("--tail-constraint", choices=("chance", "cvar"), default=None,
                   help="how the bad windows are bounded: 'chance' (default) at most --tail-max of them above ε; "
                   "'cvar' the worst (1 - --cvar-alpha) of them average at most ε, a bound on how bad they are "
                   "rather than how many (C-PPO's tail constraint; --tail-max/--tail-margin then do not apply). "
                   "With --recalibrate: default the checkpoint's own")
    p.add_argument("--cvar-alpha", type=float, default=None,
                   help="with --tail-constraint cvar: the quantile α, 0 < α < 1 (default 0.9: the worst 10 %% of "
                   "the 100 ms windows; with --recalibrate, the checkpoint's own)")
    p.add_argument("--no-resend", action="store_true",
                   help="train (and run) without ack-based resend of samples whose prediction never came back")
    p.add_argument("--action", choices=("kh", "trigger"), default="kh",
                   help="what the actor picks every 100 ms: 'kh' the sampling interval k and horizon H (between "
                   "decisions: static:k=K,h=H), 'trigger' the dead-reckoning threshold δ (log scale, 0.005-2 deg) "
                   "and H (between decisions: dead-reckoning:delta=δ,h=H); its expert starts from the δ the "
                   "dead-reckoning search picks on the training sessions (default kh)")
    p.add_argument("--trigger-norm", choices=("max", "rms"), default="max",
                   help="with --action trigger: what δ bounds, 'max' the largest joint error (dead reckoning's "
                   "default) or 'rms' the RMS over joints, which the MSE constraint averages (its expert then "
                   "starts from the dead-reckoning-rms search; default max)")
    p.add_argument("--trigger-look", action="store_true",
                   help="with --action trigger: the trigger tests the error the twin would show one measured "
                   "one-way delay ahead (dead-reckoning look=auto), so under delay a correction lands in time; "
                   "its expert then starts from the dead-reckoning-look search (needs the kinematic predictor)")
    p.add_argument("--predictor", default=None, help="server predictor the policy mirrors (default kinematic)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same checkpoint)")
    p.add_argument("--seeds", type=int, default=1,
                   help="train seeds SEED .. SEED+N-1 one after the other and keep the one with the lowest load "
                   "on the training sessions that meets the criterion there (N x the time; default 1)")
    p.add_argument("--recalibrate", action="store_true",
                   help="do not train: keep the actor of the existing -o checkpoint and redo its chance-constraint "
                   "bound (--tail-max/--tail-margin) and λ grid on the given sessions (its own seed, predictor and "
                   "--margin)")
    p.add_argument("-o", "--output", type=Path, required=True, help="checkpoint POLICY.pt (+ POLICY.npz)")
    tune = p.add_argument_group("cost knobs (the defaults are what the documented checkpoints used; smaller values "
                                "give a quick, rougher run)")
    # default None: TrainConfig holds the defaults (the numbers below are only what --help says of them).
    tune.add_argument("--bc-steps", type=int, metavar="N",
                      help="behaviour-cloning steps that warm-start the actor on the expert (default 1000)")
    tune.add_argument("--critic-warmup", type=int, metavar="N",
                      help="critic-only updates on the warm-up data before the actor moves (default 1500)")
    tune.add_argument("--bisect-steps", type=int, metavar="N",
                      help="bisection steps of the expert's safety calibration and of each λ(link) solve; each "
                      "halves the bracket (default 7)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def _tail_max(text: str) -> float | None:
    if text == "auto":
        return None
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError("--tail-max must be 'auto' or a fraction in (0, 1]")
    return value


def run(args: argparse.Namespace) -> int:
    from device.link_emulation import LinkSpec, LinkSpecError
    from lab.kctd3.config import TrainConfig
    from twin.predictors import DEFAULT_PREDICTOR
    from twin.session import SessionError, load_session

    knobs: dict[str, Any] = {k: v for k in ("bc_steps", "critic_warmup", "bisect_steps")
                             if (v := getattr(args, k)) is not None}
    if (args.constraint <= 0 or args.episodes < 2 or args.seeds < 1 or args.minutes <= 0
            or not 0 < args.margin <= 1.5 or not 0 < args.tail_margin <= 1.5
            or any(v < (k == "bisect_steps") for k, v in knobs.items())):  # bisect >= 1, the rest >= 0
        print("error: need --constraint > 0, --episodes >= 2, --minutes > 0, 0 < --margin <= 1.5, "
              "0 < --tail-margin <= 1.5, --seeds >= 1, --bc-steps >= 0, --critic-warmup >= 0, --bisect-steps >= 1",
              file=sys.stderr)
        return 2
    if args.cvar_alpha is not None and not 0 < args.cvar_alpha < 1:
        print("error: --cvar-alpha must be in (0, 1)", file=sys.stderr)
        return 2
    if args.tail_constraint == "cvar" and (args.tail_max is not None or args.tail_margin != 0.5):
        print("error: --tail-max/--tail-margin set the chance constraint; with --tail-constraint cvar the bound is "
              "CVaR_α ≤ ε (set α with --cvar-alpha)", file=sys.stderr)
        return 2
    if args.cvar_alpha is not None and args.tail_constraint != "cvar" and not args.recalibrate:
        print("error: --cvar-alpha applies to the CVaR tail constraint only (add --tail-constraint cvar)",
              file=sys.stderr)
        return 2
    if args.trigger_norm != "max" and args.action != "trigger" and not args.recalibrate:
        print("error: --trigger-norm applies to --action trigger only", file=sys.stderr)
        return 2
    if args.trigger_look and args.action != "trigger" and not args.recalibrate:
        print("error: --trigger-look applies to --action trigger only", file=sys.stderr)
        return 2
    if args.trigger_look and (args.predictor or DEFAULT_PREDICTOR) != "kinematic":
        print("error: --trigger-look forecasts the arm from the device's derivative estimate: it needs "
              "--predictor kinematic", file=sys.stderr)
        return 2
    try:
        sessions = [load_session(p) for p in args.sessions]
        link = LinkSpec.parse(args.link) if args.link else None
    except (SessionError, LinkSpecError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.recalibrate:
        return _recalibrate(args, sessions, knobs)
    runs: list[dict[str, Any]] = []
    table: list[list[float]] = []  # --tail-max auto: computed by the first run, the same for every seed
    for seed in range(args.seed, args.seed + args.seeds):
        cfg = TrainConfig(eps=args.constraint, episodes=args.episodes, minutes=args.minutes,
                          knowledge=not args.no_knowledge, seed=seed, link=link, cost_target=args.margin,
                          tail_max=args.tail_max, tail_margin=args.tail_margin,
                          tail_constraint=args.tail_constraint or "chance", cvar_alpha=args.cvar_alpha or 0.9,
                          resend=not args.no_resend, action=args.action, trigger_norm=args.trigger_norm,
                          trigger_look=args.trigger_look,
                          predictor=args.predictor or DEFAULT_PREDICTOR,
                          warmup_episodes=min(8, max(args.episodes // 4, 1)), **knobs,
                          info={"sessions": [str(p) for p in args.sessions]}, tail_table=list(table))
        out = args.output if args.seeds == 1 else args.output.with_name(f"{args.output.stem}.seed{seed}.pt")
        runs.append(_train_one(sessions, cfg, out, progress=not args.quiet))
        table = cfg.tail_table
    best = min(runs, key=lambda r: (not r["meets"], r["score"]))
    if args.seeds > 1:
        # Model selection on the training sessions only: the seed that meets the training criterion with the
        # lowest load (RL results vary from seed to seed; the held-out sessions play no part).
        for r in runs:
            print(f"  seed {r['seed']}: training load {r['score']:.4f} ({'meets' if r['meets'] else 'misses'} the "
                  f"criterion){'  <- kept' if r is best else ''}")
        src = best["out"].with_suffix("")
        dst = args.output.with_suffix("")
        for suffix in (".pt", ".npz", "_curves.csv", "_curves.png"):
            Path(f"{src}{suffix}").replace(f"{dst}{suffix}")
        for r in runs:
            if r is not best:
                for suffix in (".pt", ".npz", "_curves.csv", "_curves.png"):
                    Path(f"{r['out'].with_suffix('')}{suffix}").unlink(missing_ok=True)
        Path(f"{dst}_seeds.json").write_text(json.dumps(
            [{k: v for k, v in r.items() if k != "out"} for r in runs], indent=1) + "\n")
    stem = args.output.with_suffix("")
    print(f"wrote {args.output}, {stem}.npz, {stem}_curves.csv, {stem}_curves.png")
    return 0


def _recalibrate(args: argparse.Namespace, sessions: list[Any], knobs: dict[str, Any]) -> int:
    from device.policies.base import PolicySpecError
    from device.policies.kctd3.checkpoint import load_checkpoint, tail_constraint
    from lab.kctd3.calibrate import recalibrate
    from lab.kctd3.config import TrainConfig

    try:
        meta = load_checkpoint(args.output)["meta"]
    except (OSError, KeyError, ValueError) as exc:
        print(f"error: cannot read the checkpoint to recalibrate, {args.output}: {exc}", file=sys.stderr)
        return 2
    if abs(float(meta["eps"]) - args.constraint) > 1e-12:
        print(f"error: {args.output} was trained for ε = {meta['eps']:g}, not --constraint {args.constraint:g}",
              file=sys.stderr)
        return 2
    ignored = [flag for flag, used in (("--link", args.link), ("--predictor", args.predictor),
                                       ("--no-resend", args.no_resend), ("--no-knowledge", args.no_knowledge),
                                       ("--seeds", args.seeds != 1), ("--action", args.action != "kh"),
                                       ("--trigger-norm", args.trigger_norm != "max"),
                                       ("--trigger-look", args.trigger_look),
                                       ("--bc-steps", "bc_steps" in knobs),
                                       ("--critic-warmup", "critic_warmup" in knobs))
               if used]
    if ignored:
        print(f"error: --recalibrate keeps the checkpoint's training setup; {', '.join(ignored)} do not apply",
              file=sys.stderr)
        return 2
    # The tail constraint stays the checkpoint's unless the command names another (or another α).
    try:
        kind, alpha = tail_constraint(meta)
    except PolicySpecError as exc:
        print(f"error: {args.output}: {exc}", file=sys.stderr)
        return 2
    kind = args.tail_constraint or kind
    if args.cvar_alpha is not None and kind != "cvar":
        print("error: --cvar-alpha applies to the CVaR tail constraint only (add --tail-constraint cvar)",
              file=sys.stderr)
        return 2
    alpha = args.cvar_alpha or (alpha if alpha > 0 else 0.9)
    if kind == "cvar" and (args.tail_max is not None or args.tail_margin != 0.5):
        print("error: --tail-max/--tail-margin set the chance constraint; this checkpoint's is CVaR (pass "
              "--tail-constraint chance to switch back)", file=sys.stderr)
        return 2
    seed = int(meta.get("training", {}).get("config", {}).get("seed", args.seed))
    cost_target = float(meta.get("cost_target", args.margin))  # the criterion it was trained for
    cfg = TrainConfig(eps=args.constraint, seed=seed, cost_target=cost_target, tail_max=args.tail_max,
                      tail_margin=args.tail_margin, tail_constraint=kind, cvar_alpha=alpha,
                      resend=bool(meta.get("resend", False)),
                      predictor=str(meta["predictor"]), info={"sessions": [str(p) for p in args.sessions]})
    cfg.bisect_steps = knobs.get("bisect_steps", cfg.bisect_steps)  # the one cost knob recalibration uses
    t0 = time.monotonic()
    meta = recalibrate(sessions, args.output, cfg)
    grid = meta["lambda_grid"]
    print(f"recalibrated {args.output} in {time.monotonic() - t0:.0f}s: λ per (delay, loss) "
          + "; ".join(f"{d:g} ms: " + ", ".join(f"{v:.3g}" for v in row)
                      for d, row in zip(grid["delay_ms"], grid["values"], strict=True)))
    return 0


def _train_one(sessions: list[Any], cfg: Any, out: Path, progress: bool) -> dict[str, Any]:
    """Train one seed, write its files, print its summary; score it on the training sessions (loss 0 and 10 %)."""
    from device.link_emulation import LinkSpec
    from device.policies.kctd3.checkpoint import cvar
    from device.policies.kctd3.policy import KCTD3Policy
    from lab.kctd3.calibrate import pooled_windows, tail_ok
    from lab.kctd3.train import train
    from lab.simulator import simulate_many

    meta, curves = train(sessions, cfg, out, progress=progress)
    tr = meta["training"]
    write_curves(curves, cfg.eps, cfg.knowledge, Path(f"{out.with_suffix('')}_curves"))
    print(f"trained {'kc-td3' if cfg.knowledge else 'td3'} eps={cfg.eps:g} seed={cfg.seed} in {tr['seconds']:.0f}s "
          f"({tr['episodes']} episodes, {tr['updates']} updates) lambda(perfect link)={meta['lambda']:.3g} "
          f"expert_safety={meta['expert_safety']:.3g}" + (" STOPPED BY --minutes" if tr["stopped_by_time_cap"] else ""))
    if cfg.tail_constraint == "cvar":
        print(f"  tail constraint: CVaR_{cfg.cvar_alpha:g} of the 100 ms window MSEs <= ε")
    elif cfg.tail_max is None:
        tm = meta["tail_max"]
        print("  chance constraint (auto, from the best static policy on the training sessions): tail_max "
              + "; ".join(f"delay {d:g} ms: " + ", ".join(f"{v:.3f} at loss {p:g}" for p, v in
                                                       zip(tm["loss"], row, strict=True))
                          for d, row in zip(tm["delay_ms"], tm["values"], strict=True)))
    policy = KCTD3Policy(out, cfg.predictor)
    loads, meets = [], True
    for loss in (0.0, 0.1):
        m, res = simulate_many(sessions, policy, cfg.predictor, LinkSpec(loss=loss), cfg.eps)
        wins = pooled_windows(res)
        ok = m["mse_deg2"] <= cfg.eps and tail_ok({**m, "windows": wins}, cfg, LinkSpec(loss=loss))
        loads.append(m["load"])
        meets = meets and ok
        extra = f" cvar={cvar(wins, cfg.cvar_alpha):.3g}" if cfg.tail_constraint == "cvar" else ""
        print(f"  on the training sessions, loss={loss:g}: load={m['load']:.4f} mse={m['mse_deg2']:.3g} "
              f"tail={m['tail_fraction']:.3f}{extra} ({'meets' if ok else 'MISSES'} the criterion)")
    return {"seed": cfg.seed, "out": out, "score": float(sum(loads) / len(loads)), "meets": bool(meets),
            "seconds": tr["seconds"]}


def write_curves(curves: list[dict[str, Any]], eps: float, knowledge: bool, stem: Path) -> None:
    """Training curves (the paper's Fig. 4): episode MSE with the ε line, load and λ per episode (.csv + .png)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    with open(f"{stem}.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(curves[0]))
        w.writeheader()
        w.writerows(curves)
    ep = np.array([c["episode"] for c in curves])
    det = np.array([not c["explore"] for c in curves])  # noise-free episodes: the policy being learnt
    fig, ax = plt.subplots(3, 1, figsize=(7, 8), sharex=True)
    for a, key, label in ((ax[0], "mse_deg2", "episode MSE (deg²)"), (ax[1], "load", "load"), (ax[2], "lambda", "λ")):
        y = np.array([c[key] for c in curves], dtype=float)
        a.plot(ep[~det], y[~det], ".", ms=2, alpha=0.3, color="0.6", label="exploring episodes")
        a.plot(ep[det], y[det], ".", ms=3, alpha=0.6, label="deterministic episodes")
        if det.sum() >= 10:
            n = 10
            a.plot(ep[det][n - 1:], np.convolve(y[det], np.ones(n) / n, mode="valid"), "-", label="mean of 10")
        a.set_ylabel(label)
    ax[0].axhline(eps, color="r", ls="--", label=f"ε = {eps:g}")
    ax[0].set_yscale("log")
    ax[2].set_yscale("log")
    ax[0].legend(fontsize=7)
    ax[2].set_xlabel("episode (10 s, 100 decisions, random link)")
    fig.suptitle(f"{'KC-TD3' if knowledge else 'TD3 (no knowledge)'} training, ε = {eps:g} deg²")
    fig.tight_layout()
    fig.savefig(f"{stem}.png", dpi=100)
    plt.close(fig)
