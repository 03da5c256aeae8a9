"""The server's protocol core on its own: µs per sample in ``SessionCore`` (decode, validate, predict, encode the
reply and the twin state), no sockets, so the figure is the Python cost a worker process pays per sample.

    python bench/bench_server_core.py [--sessions 200] [--joints 7] [--rounds 50] [--repeat 5] [--predictor NAME]

Each of ``--sessions`` devices says hello, then ``--rounds`` samples each are fed in turn (the loadgen's wire
format: the device's velocity/acceleration estimate and its acknowledgement attached); the first fifth of the rounds
warm the sessions up and are not timed. Prints the median of ``--repeat`` runs and samples/s of one core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.loadgen import sample_fields  # noqa: E402
from server.sessions import SessionCore  # noqa: E402
from twin.predictors import DEFAULT_PREDICTOR  # noqa: E402
from twin.schema import Wire  # noqa: E402


def one_run(sessions: int, joints: int, rounds: int, predictor: str) -> float:
    """µs per timed sample."""
    wire = Wire()
    core = SessionCore(lambda ident, frames: True, lambda dev, body: True, predictor=predictor)
    idents = [b"dev%d" % i for i in range(sessions)]
    for k, ident in enumerate(idents):
        core.receive([ident, *wire.encode("hello", dev=f"d{k}", joints=[f"j{j}" for j in range(joints)],
                                          rate_hz=1000.0, urdf="u", policy="bench")], 0)
    msgs = [[ident, *wire.encode("sample", **sample_fields(n, max(n - 2, 0), 0, joints=joints))]
            for n in range(1, rounds + 1) for ident in idents]
    warm = len(idents) * max(rounds // 5, 1)
    for m in msgs[:warm]:
        core.receive(m, 0)
    t0 = time.perf_counter()
    for m in msgs[warm:]:
        core.receive(m, 0)
    dt = time.perf_counter() - t0
    if core.stats.drops:
        raise RuntimeError(f"samples were dropped: {core.stats.dropped}")
    return dt / (len(msgs) - warm) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--joints", type=int, default=7)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--predictor", default=DEFAULT_PREDICTOR)
    args = ap.parse_args()
    if min(args.sessions, args.joints, args.rounds, args.repeat) < 1:
        ap.error("--sessions, --joints, --rounds and --repeat must be >= 1")
    runs = [one_run(args.sessions, args.joints, args.rounds, args.predictor) for _ in range(args.repeat)]
    us = statistics.median(runs)
    print(f"server core, {args.predictor} predictor, {args.sessions} sessions x {args.joints} joints: "
          f"{us:.1f} us per sample (median of {args.repeat}: " + ", ".join(f"{r:.1f}" for r in runs)
          + f"), {1e6 / us:,.0f} samples/s on one core")
    return 0


if __name__ == "__main__":
    sys.exit(main())
