"""``armtwin fit-predictor``: train the learned predictor on recordings and compare it with the baselines."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def add_parser(sub: Any, name: str) -> None:
    p = sub.add_parser(
        name,
        help="train the learned server predictor on recorded sessions",
        description="Simulate the server's view of each session (every k-th sample, random phases), "
        "train a small MLP (torch, CPU) to minimise the error the twin shows until the next sample arrives, "
        "and write it as a numpy-only .npz model for the server and simulator (--predictor learned:MODEL.npz). "
        "With --validate, prints held-out MSE of the learned, linear, quadratic and hold predictors per k.",
        epilog="examples:\n"
        "  armtwin fit-predictor data/sessions/train_a.mcap data/sessions/train_b.mcap -o model.npz \\\n"
        "      --validate data/sessions/test_a.mcap data/sessions/test_b.mcap\n"
        "  armtwin fit-predictor s.mcap -o model.npz --k 5,10 --horizon-ms 50 --epochs 20 --seed 1\n"
        "  armtwin simulate data/sessions/test_a.mcap --policy static:k=10,h=50 --predictor learned:model.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sessions", type=Path, nargs="+", help="training session files (.mcap)")
    p.add_argument("-o", "--output", type=Path, required=True, help="model file to write (.npz)")
    p.add_argument("--k", default="5,10,20,40", help="sampling intervals to train on, comma-separated "
                   "(default 5,10,20,40)")
    p.add_argument("--horizon-ms", type=float, default=50.0, help="prediction horizon H in ms (default 50)")
    p.add_argument("--epochs", type=int, default=6, help="training epochs (default 6)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same data + seed = same model (default 0)")
    p.add_argument("--max-rows", type=int, default=300_000, help="training windows, balanced over sessions "
                   "and k (default 300000)")
    p.add_argument("--validate", type=Path, nargs="+", default=[], metavar="SESSION",
                   help="held-out sessions: print MSE per k of learned vs linear, quadratic, hold")
    p.set_defaults(run=run)


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--k must be comma-separated integers, got {text!r}") from None
    if not ks:
        raise ValueError("--k is empty")
    return ks


def run(args: argparse.Namespace) -> int:
    from lab.fit_predictor import baselines, fit_predictor, format_table, validate
    from twin.session import SessionError, load_session

    start = time.monotonic()
    try:
        ks = parse_ks(args.k)
        train = [load_session(p) for p in args.sessions]
        held = [load_session(p) for p in args.validate]
        model = fit_predictor(train, ks, args.horizon_ms, args.epochs, args.seed, args.max_rows,
                              sources=[p.name for p in args.sessions])
    except (SessionError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if held:
        table = validate(held, ks, round(args.horizon_ms * 1000), baselines(model))
        model.meta["validation"] = {"sessions": [p.name for p in args.validate],
                                    "mse_deg2": {str(k): v for k, v in table.items()}}
        print(format_table(table, args.horizon_ms))
    try:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        model.save(args.output)
    except OSError as exc:
        print(f"error: cannot write {args.output}: {exc}", file=sys.stderr)
        return 2
    rel = ", ".join(f"k={k}: {v:.3f}" for k, v in model.meta["train_excess_vs_linear"].items())
    print(f"training error above the best quadratic, relative to linear: {rel}")
    print(f"wrote {args.output} ({args.output.stat().st_size / 1024:.1f} KB): {model.meta['train_rows']} rows, "
          f"{model.meta['epochs']} epochs, training {model.meta['train_seconds']:.1f} s, "
          f"total {time.monotonic() - start:.1f} s")
    return 0
