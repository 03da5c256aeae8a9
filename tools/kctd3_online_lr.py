"""How fast should λ adapt on the device? KC-TD3 with online learning (``online=1``) per learning rate, scored on
the training sessions against the training criterion (mean MSE ≤ ε, tail fraction ≤ the checkpoint's tail bound,
or CVaR_α of the windows ≤ ε for a checkpoint with the CVaR constraint).

    python tools/kctd3_online_lr.py data/policies/kctd3_eps0.002.pt data/policies/kctd3_eps0.007.pt

The rate to use is the highest one whose runs all meet the criterion on the training sessions: the held-out
sessions play no part (``--test`` prints them for reference only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from device.link_emulation import LinkSpec
from device.policies.kctd3.checkpoint import tail_constraint, tail_max_at, tail_ratio
from device.policies.kctd3.policy import KCTD3Policy
from lab.simulator import simulate_many
from twin.session import load_session

DATA = Path(__file__).resolve().parent.parent / "data" / "sessions"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policies", type=Path, nargs="+", help="kc-td3 checkpoints (.pt or .npz)")
    ap.add_argument("--rates", default="0,0.025,0.05,0.1,0.2", help="learning rates (0: λ fixed)")
    ap.add_argument("--links", nargs="+", default=["loss=0", "loss=0.1"], help="links (--link syntax)")
    ap.add_argument("--train", nargs="+", default=["train_a", "train_b"], help="bundled session names")
    ap.add_argument("--test", nargs="*", default=[], help="bundled session names, printed for reference")
    args = ap.parse_args()
    train = [load_session(DATA / f"{n}.mcap") for n in args.train]
    test = [load_session(DATA / f"{n}.mcap") for n in args.test]
    print("| policy | lr | link | train load / MSE / tail (bound) | meets | test load / MSE / tail |")
    print("|---|---|---|---|---|---|")
    for path in args.policies:
        policy = KCTD3Policy(path, online=True)
        for lr in (float(r) for r in args.rates.split(",")):
            policy.online_lr = lr
            for spec in args.links:
                link = LinkSpec.parse(spec)
                tr, res = simulate_many(train, policy, policy.predictor_name, link, policy.eps)
                kind, alpha = tail_constraint(policy.meta)
                bound = tail_max_at(policy.meta.get("tail_max", 1.0), link.loss, 2 * (link.delay_ms + 0.5))
                if kind == "cvar":  # the tail figure in the table stays the fraction; the test is CVaR_α <= ε
                    wins = np.concatenate([r.acc.windows() for r in res])
                    tail_met, bound = tail_ratio(wins, policy.eps, kind, alpha, 1.0) <= 1.0, float("nan")
                else:
                    tail_met = tr["tail_fraction"] <= bound
                ok = tr["mse_deg2"] <= policy.eps and tail_met
                ref = ""
                if test:
                    te, _ = simulate_many(test, policy, policy.predictor_name, link, policy.eps)
                    ref = f"{te['load']:.4f} / {te['mse_deg2']:.2g} / {te['tail_fraction']:.3f}"
                print(f"| {path.name} | {lr:g} | {link.label()} | {tr['load']:.4f} / {tr['mse_deg2']:.2g} / "
                      f"{tr['tail_fraction']:.3f} ({bound:.3f}) | {'yes' if ok else 'no'} | {ref} |", flush=True)


if __name__ == "__main__":
    main()
