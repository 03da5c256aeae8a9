"""Session file cost of the per-sample foxglove.JointStates channels: write time, load time and size of a synthetic
7-joint 1 kHz session with and without them. ``python bench/bench_session_io.py [--seconds 300]``."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import synthetic_session
from twin.session import SessionWriter, load_session


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=300.0)
    args = ap.parse_args()
    s = synthetic_session(args.seconds, joints=7)
    qhat, sent = s.q.copy(), np.zeros(len(s.t_us), dtype=bool)
    for js in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.mcap"
            t0 = time.perf_counter()
            w = SessionWriter(path, s.joint_names, {}, joint_states=js)
            for a in range(0, len(s.t_us), 1000):
                b = slice(a, a + 1000)
                w.write_block(s.t_us[b], np.arange(a, a + len(s.t_us[b])), s.q[b], sent[b], qhat[b])
            w.close()
            t1 = time.perf_counter()
            load_session(path)
            t2 = time.perf_counter()
            print(f"joint_states={js}: write {t1 - t0:.1f} s, load {t2 - t1:.1f} s, "
                  f"{os.path.getsize(path) / 1e6:.1f} MB for {args.seconds:g} s at 1 kHz, 7 joints")


if __name__ == "__main__":
    main()
