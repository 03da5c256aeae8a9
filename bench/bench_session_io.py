"""Session file cost of the per-sample foxglove.JointStates channels: write time, load time and size of a synthetic
7-joint 1 kHz session with and without them, and the cost of one JointStates message's text: the writer's
%-template beside ``json.dumps`` of the same message (the bytes are equal: tests/test_session_files.py).
``python bench/bench_session_io.py [--seconds 300]``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import timeit
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import synthetic_session
from twin.session import SessionWriter, joint_states_template, load_session


def encoding_us(names: list[str], n: int = 20_000) -> tuple[float, float]:
    """µs per JointStates message text: json.dumps of the message dict, and the writer's template."""
    row = [int(1e6 * (0.1 * j - 0.3)) for j in range(len(names))]
    template = joint_states_template(names)

    def dumps() -> bytes:
        return json.dumps({"timestamp": {"sec": 1, "nsec": 2}, "device_t_us": 3,
                           "joints": [{"name": nm, "position": v * 1e-6} for nm, v in zip(names, row, strict=True)]}
                          ).encode()

    def fill() -> bytes:
        return (template % (1, 2, 3, *[v * 1e-6 for v in row])).encode()

    assert dumps() == fill()
    return (min(timeit.repeat(dumps, number=n, repeat=3)) / n * 1e6,
            min(timeit.repeat(fill, number=n, repeat=3)) / n * 1e6)


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
    dumps_us, template_us = encoding_us(s.joint_names)
    print(f"one JointStates message (7 joints): json.dumps {dumps_us:.1f} us, template {template_us:.1f} us "
          f"({template_us / dumps_us:.2f}x; the recorder writes two per sample)")


if __name__ == "__main__":
    main()
