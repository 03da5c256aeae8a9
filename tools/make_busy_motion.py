"""Make busy teleoperated-arm recordings: a jerk-limited 6-DoF arm following a human operator's command stream.

The second data family of the evaluation (issue 14): where the bundled mocap family is a slow, servo-smoothed
iiwa, this one is a UFACTORY xArm 6 (the pybullet_data URDF ``xarm/xarm6_robot.urdf``, 180 °/s on every joint)
driven like a teleoperated arm, busy: quick reaches, pauses, hand-guided wandering.

How the data is derived (all randomness from one generator seeded with --seed: the output is reproducible):

1. The operator's intent, in joint space around the pose (0, -20, -50, 0, 70, 0) deg, is a chain of segments:
   *pause* (0.2-1.2 s: hold, with physiological tremor, 8-12 Hz and 0.03-0.1 deg, and slow drift), *reach*
   (0.25-0.7 s minimum-jerk move to a new pose 15-80 deg away per joint: the quick grabs of a teleoperator) and
   *wander* (1-3 s of smooth motion: a few sines of 0.2-1.5 Hz and 5-30 deg on each joint, started in phase with
   the current position so nothing jumps). Shares: pause 30 %, reach 35 %, wander 35 % of the segments.
   --busy scales every amplitude (1.0 gives 30-70 deg/s RMS joint speed).
2. The command stream: the intent sampled at the operator device's rate (--rate-hz, default a rate drawn in
   100-120 Hz per session) with ±0.3 ms timing jitter, 0.01 deg resolution and N(0, 0.01 deg) sensor noise, each
   command clipped inside the URDF limits less 5 deg.
3. The arm's controller: Ruckig (online jerk-limited trajectory generation, 1 ms cycle) steered at every new
   command to its position with a feed-forward velocity (the difference of the last two commands, clipped to
   90 % of the speed limit), within the xArm 6 limits VMAX, AMAX, JMAX below. The arm is taken to follow
   Ruckig's trajectory exactly (a stiff industrial servo).
4. Encoder model (as tools/make_motion_csv.py): 19-bit absolute encoder, count = round(q / LSB + N(0, 0.5)),
   sample k latched at k ms + N(0, 2 µs) (clipped to ±10 µs, t_0 = 0).
5. CSV: header t_s,joint1..joint6 (the URDF's names); t in seconds (6 decimals), angles in degrees (8 decimals).

Usage:
    python tools/make_busy_motion.py --seconds 30 --seed 11 -o busy.csv
    armtwin import busy.csv -o busy.mcap --urdf xarm/xarm6_robot.urdf \
        --source "tools/make_busy_motion.py --seconds 30 --seed 11"
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from ruckig import InputParameter, OutputParameter, Result, Ruckig

DT = 1e-3  # sample period and control cycle, s
LSB = 2 * np.pi / 2**19  # 19-bit absolute encoder, rad
JOINTS = ("joint1", "joint2", "joint3", "joint4", "joint5", "joint6")
HOME = np.array([0.0, -20.0, -50.0, 0.0, 70.0, 0.0])  # deg
LOWER = np.degrees([-6.28318530718, -2.059, -3.927, -6.28318530718, -1.69297, -6.28318530718])
UPPER = np.degrees([6.28318530718, 2.0944, 0.19198, 6.28318530718, 3.14159265359, 6.28318530718])
MARGIN = 5.0  # deg inside the URDF limits
SPAN = np.array([1.0, 0.6, 0.6, 1.0, 0.7, 1.0])  # how far each joint strays from HOME (relative)
# xArm 6 joint limits: 180 deg/s (the URDF's 3.14 rad/s), 1145 deg/s² (its 20 rad/s²); jerk chosen for a stiff
# servo (smaller on the heavy base joints).
VMAX = np.full(6, 180.0)
AMAX = np.full(6, 1145.0)
JMAX = np.array([8000.0, 8000.0, 10000.0, 15000.0, 15000.0, 20000.0])


def _min_jerk(s: np.ndarray) -> np.ndarray:
    return 10 * s**3 - 15 * s**4 + 6 * s**5


def intent(n: int, busy: float, rng: np.random.Generator) -> np.ndarray:
    """(n, 6) operator intent in degrees at 1 kHz: pauses, reaches and wandering (module docstring)."""
    out = np.empty((n, 6))
    pos = HOME.copy()
    i = 0
    while i < n:
        kind = rng.choice(3, p=[0.30, 0.35, 0.35])
        if kind == 0:  # pause with tremor and drift
            m = int(rng.uniform(0.2, 1.2) / DT)
            tt = np.arange(m) * DT
            f = rng.uniform(8.0, 12.0)
            amp = rng.uniform(0.03, 0.1, 6) * busy
            drift = rng.normal(0.0, 1.0, 6) * busy * tt[:, None]
            seg = pos + drift + amp * np.sin(2 * np.pi * f * tt[:, None] + rng.uniform(0, 2 * np.pi, 6))
        elif kind == 1:  # quick reach
            m = int(rng.uniform(0.25, 0.7) / DT)
            step = rng.uniform(15.0, 80.0, 6) * rng.choice([-1.0, 1.0], 6) * busy * SPAN
            step *= rng.random(6) < 0.7  # not every joint moves in every reach
            goal = HOME + np.clip(pos + step - HOME, -90.0 * SPAN, 90.0 * SPAN)
            s = _min_jerk(np.arange(1, m + 1) / m)
            seg = pos + (goal - pos) * s[:, None]
        else:  # wandering: sines started at zero so the segment begins where the last ended
            m = int(rng.uniform(1.0, 3.0) / DT)
            tt = np.arange(1, m + 1) * DT
            seg = np.repeat(pos[None], m, axis=0)
            for _ in range(3):
                f = rng.uniform(0.2, 1.5, 6)
                amp = rng.uniform(5.0, 30.0, 6) * busy * SPAN / 2
                seg += amp * np.sin(2 * np.pi * f * tt[:, None])
        m = min(m, n - i)
        out[i:i + m] = seg[:m]
        pos = out[i + m - 1].copy()
        i += m
    return np.clip(out, LOWER + MARGIN, UPPER - MARGIN)


def command_stream(target: np.ndarray, rate_hz: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The operator device's commands: (arrival sample index, (m, 6) degrees) at ``rate_hz`` with jitter,
    0.01 deg resolution and sensor noise."""
    n = len(target)
    times = np.arange(0.0, n * DT, 1.0 / rate_hz)
    times = np.clip(times + rng.uniform(-3e-4, 3e-4, len(times)), 0.0, (n - 1) * DT)
    at = np.minimum(np.ceil(times / DT).astype(np.int64), n - 1)  # the controller sees it at its next cycle
    cmd = target[np.rint(times / DT).astype(np.int64)] + rng.normal(0.0, 0.01, (len(times), 6))
    cmd = np.clip(np.round(cmd, 2), LOWER + MARGIN, UPPER - MARGIN)
    return at, cmd


def follow(n: int, at: np.ndarray, cmd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ruckig at 1 kHz steered by the commands: (n, 6) positions and velocities in degrees, deg/s."""
    otg = Ruckig(6, DT)
    inp, out = InputParameter(6), OutputParameter(6)
    inp.current_position = cmd[0].tolist()
    inp.current_velocity = [0.0] * 6
    inp.current_acceleration = [0.0] * 6
    inp.max_velocity, inp.max_acceleration, inp.max_jerk = VMAX.tolist(), AMAX.tolist(), JMAX.tolist()
    q, qd = np.empty((n, 6)), np.empty((n, 6))
    c = 0
    prev = cmd[0]
    for k in range(n):
        while c < len(cmd) and at[c] <= k:
            gap = max((at[c] - at[c - 1]) * DT, DT) if c else 1.0
            vel = np.clip((cmd[c] - prev) / gap, -0.9 * VMAX, 0.9 * VMAX) if c else np.zeros(6)
            inp.target_position, inp.target_velocity = cmd[c].tolist(), vel.tolist()
            inp.target_acceleration = [0.0] * 6
            prev = cmd[c]
            c += 1
        res = otg.update(inp, out)
        if res not in (Result.Working, Result.Finished):
            raise RuntimeError(f"ruckig failed at sample {k}: {res}")
        q[k], qd[k] = out.new_position, out.new_velocity
        out.pass_to_input(inp)
    return q, qd


def encoder(q_deg: np.ndarray, qd_deg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Jittered sample times (s) and 19-bit quantised, noisy angles (deg) latched then."""
    jitter = np.clip(rng.normal(0.0, 2e-6, len(q_deg)), -1e-5, 1e-5)
    jitter[0] = 0.0
    t = np.arange(len(q_deg)) * DT + jitter
    q = np.radians(q_deg + qd_deg * jitter[:, None])
    counts = np.round(q / LSB + rng.normal(0.0, 0.5, q.shape))
    return t, np.degrees(counts * LSB)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="example: python tools/make_busy_motion.py --seconds 30 --seed 11 -o busy.csv")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rate-hz", type=float, default=None,
                    help="operator command rate (default: drawn in 100-120 Hz from the seed)")
    ap.add_argument("--busy", type=float, default=1.0, help="scale of every motion amplitude (default 1)")
    ap.add_argument("-o", "--output", default="busy.csv")
    args = ap.parse_args()
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n = round(args.seconds / DT)
    rate = args.rate_hz if args.rate_hz else float(rng.uniform(100.0, 120.0))
    at, cmd = command_stream(intent(n, args.busy, rng), rate, rng)
    q, qd = follow(n, at, cmd)
    t, deg = encoder(q, qd, rng)
    np.savetxt(args.output, np.column_stack([t, deg]), fmt=["%.6f"] + ["%.8f"] * 6, delimiter=",",
               header="t_s," + ",".join(JOINTS), comments="")
    rms = np.sqrt((qd**2).mean(axis=0))
    calm = (np.abs(qd).max(axis=1) < 10.0).mean()
    print(f"{args.output}: {n} rows, {t[-1]:.3f} s, commands {rate:.1f} Hz; joint speed RMS "
          f"{' '.join(f'{v:.0f}' for v in rms)} deg/s (mean {rms.mean():.0f}), peak {np.abs(qd).max():.0f} deg/s, "
          f"{calm:.0%} of the time below 10 deg/s; {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
