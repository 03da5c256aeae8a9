"""The load–tail curve of a trained (λ-conditioned) KC-TD3 actor: λ held fixed, swept over its range.

    python tools/kctd3_lambda_sweep.py data/policies/kctd3_eps0.002.pt --link loss=0

For each λ: load, MSE and tail fraction on the training and on the held-out sessions (the checkpoint's own λ grid
is bypassed). Shows where the solved λ sits on the curve and where a fixed static policy would cross it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from device.link_emulation import LinkSpec
from device.policies.kctd3.policy import KCTD3Policy
from lab.simulator import simulate_many
from twin.session import load_session

DATA = Path(__file__).resolve().parent.parent / "data" / "sessions"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("policy", type=Path, help="kc-td3 checkpoint (.pt or .npz)")
    ap.add_argument("--link", default="loss=0", help="link (--link syntax, default loss=0)")
    ap.add_argument("--train", nargs="+", default=["train_a", "train_b"], help="bundled session names")
    ap.add_argument("--test", nargs="+", default=["test_a", "test_b"], help="bundled session names")
    ap.add_argument("--points", type=int, default=13, help="λ values, log-spaced over [0.01, 100]")
    args = ap.parse_args()
    policy = KCTD3Policy(args.policy)
    policy.lam_grid = None  # hold λ fixed: the simulator's set_link then leaves it alone
    sets = {name: [load_session(DATA / f"{s}.mcap") for s in names]
            for name, names in (("train", args.train), ("test", args.test))}
    link = LinkSpec.parse(args.link)
    print(f"{args.policy} eps={policy.eps:g} link {link.label()}")
    print("| λ | train load | train MSE | train tail | test load | test MSE | test tail |")
    print("|---|---|---|---|---|---|---|")
    for lam in np.logspace(-2, 2, args.points):
        cells = []
        for sessions in sets.values():
            policy.lam = float(lam)
            m, _ = simulate_many(sessions, policy, link=link, eps=policy.eps)
            cells += [f"{m['load']:.4f}", f"{m['mse_deg2']:.2g}", f"{m['tail_fraction']:.3f}"]
        print(f"| {lam:.3g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
