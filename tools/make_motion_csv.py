"""Make realistic 1 kHz joint-angle recordings of a 7-joint KUKA iiwa arm from human mocap.

Source data: the DeepMimic mocap clips shipped with pybullet_data
(``data/motions/humanoid3d_<clip>.txt``), recordings of real human motion.  Each file is
JSON with "Frames"; every frame holds 44 numbers: [duration, root pos (3), root quat (4),
chest quat (4), neck quat (4), right hip quat (4), right knee (1), right ankle quat (4),
right shoulder quat (4), right elbow (1), left hip quat (4), left knee (1), left ankle
quat (4), left shoulder quat (4), left elbow (1)]; quaternions are (w, x, y, z), each
joint relative to its parent, humanoid frame y up, x forward, z to the right (layout as in
pybullet_envs/deep_mimic/env/humanoid_pose_interpolator.py).  Clips run at 16-60 Hz.

How the data is derived:

1. Retargeting (human -> iiwa, angles in degrees).  Each shoulder quaternion q is split
   into swing and twist about a reference arm direction r0 = (1, 0, 1)/sqrt(2) (arm
   raised forward-and-out, horizontally); this chart is singular only when the arm points
   at -r0 (back and across the body, out of human reach), unlike Euler angles, which lock
   at common poses.  The swing is the rotation vector taking r0 to the upper-arm direction
   d = q*(0, -1, 0); hz is its component about the vertical (horizontal swing), el about
   the horizontal axis r0 x up (elevation, + is up, -90 arm hanging); tw is the twist
   about the arm axis.  The left shoulder is mirrored (z -> -z) to a right arm first.
   yaw = twist of chest plus neck about the vertical (where the head looks).
       j1 = 0.7 (hz_R + 20)    j2 = 30 - 0.4 (el_R + 40)    j3 = 0.6 (tw_R + 20)
       j4 = -(25 + 0.55 elbow_R)                            j5 = 0.6 (tw_L + 20)
       j6 = 15 + 0.5 elbow_L   j7 = yaw
   so right upper arm -> iiwa shoulder, right elbow -> iiwa elbow, left arm twist and
   elbow -> iiwa wrist roll and pitch, head yaw -> flange.  The arm stays around the pose
   (0, 30, 0, -60, 0, 45, 0) deg: leaning forward, elbow bent, tool pointing down.
   The clips of --clip are played in turn, the list repeated until --seconds is filled;
   each take varies a little (tempo and amplitude x U(0.85, 1.15), offset N(0, 4) deg).
   At each seam the next take is shifted by a cubic Hermite offset that starts at the
   position and velocity gap and fades to zero in 0.4 s (no jump in angle or velocity).
2. Keyframe angles are smoothed (Gaussian, sigma 25 ms: mocap jitter), resampled to
   1 kHz by cubic Hermite interpolation (Catmull-Rom tangents) and played at --speed
   (default 0.5).  Where that would pass 80 % of the iiwa 7 R800 speed limits, the
   reference is slowed down smoothly along its path (like a robot's velocity scaling),
   then soft-limited (tanh) inside the URDF limits less 5 deg.  PyBullet simulates the
   iiwa tracking it (DIRECT, 1 ms fixed step, gravity, POSITION_CONTROL with feed-forward
   velocity, gains of a critically damped 8 Hz servo, iiwa 7 torque limits, URDF joint
   damping dropped as it swamped the light wrist links); joint positions are read after
   every step (arm dynamics: lag, gravity droop, smoothing; 0.1-0.4 deg RMS error).
3. Encoder model: 19-bit absolute encoder, count = round(q / LSB + N(0, 0.5)) with
   LSB = 2 pi / 2**19.  Sample k is latched at t_k = k ms + N(0, 2 us) (clipped to
   +-10 us, t_0 = 0, so t is monotonic) and the angle is the simulated one at t_k.
   All noise comes from one RNG seeded with --seed: output is reproducible.
4. CSV: header t_s,<URDF joint names>; t in seconds (6 decimals), angles in degrees
   (8 decimals).

Usage: python tools/make_motion_csv.py --clip punch,dance_a --seconds 30 --seed 1 -o out.csv
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pybullet as pb
import pybullet_data

MOTIONS = Path(pybullet_data.getDataPath()) / "data" / "motions"
URDF = "kuka_iiwa/model.urdf"
DT = 1e-3  # sample period and simulation step, s
LSB = 2 * np.pi / 2**19  # 19-bit absolute encoder resolution, rad
BLEND_S = 0.4  # seam blend length, s
MARGIN, SOFT = np.radians(5.0), np.radians(10.0)  # limit margin and soft-limit band, rad
TORQUE = np.array([176.0, 176.0, 110.0, 110.0, 110.0, 40.0, 40.0])  # iiwa 7 R800, N m
VMAX = np.radians([98.0, 98.0, 100.0, 130.0, 140.0, 180.0, 180.0])  # iiwa 7 R800, rad/s
# PyBullet's POSITION_CONTROL motor gives q'' = KP/dt^2 (q_ref - q) + KD/dt (v_ref - v):
# gains for a critically damped 8 Hz servo
SERVO_W = 2 * np.pi * 8.0
KP, KD = (SERVO_W * DT) ** 2, 2 * 1.0 * SERVO_W * DT

R0 = np.array([1.0, 0.0, 1.0]) / np.sqrt(2.0)  # reference arm direction (humanoid frame)
DOWN, UP = np.array([0.0, -1.0, 0.0]), np.array([0.0, 1.0, 0.0])
E_EL = np.cross(R0, UP)  # swing about this axis raises the arm
E_HZ = UP  # swing about this axis moves the arm horizontally


def qmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product of (..., 4) quaternions in (w, x, y, z) order."""
    w1, v1, w2, v2 = a[..., :1], a[..., 1:], b[..., :1], b[..., 1:]
    vec = w1 * v2 + w2 * v1 + np.cross(v1, v2)
    return np.concatenate([w1 * w2 - np.sum(v1 * v2, -1, keepdims=True), vec], -1)


def qrot(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector v by the (N, 4) unit quaternions q."""
    w, u = q[:, :1], q[:, 1:]
    t = 2.0 * np.cross(u, v)
    return v + w * t + np.cross(u, t)


def twist(q: np.ndarray, axis: np.ndarray) -> np.ndarray:
    """Twist angle (rad, unwrapped over time) of rotations q about a unit axis."""
    return np.unwrap(2.0 * np.arctan2(q[:, 1:] @ axis, q[:, 0]))


def swing_twist(q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split right-shoulder rotations (N, 4) into horizontal swing, elevation, twist (rad)."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = qrot(q, DOWN)  # upper-arm direction
    n = np.cross(R0, d)
    angle = np.arccos(np.clip(d @ R0, -1.0, 1.0))
    s = n * (angle / np.maximum(np.linalg.norm(n, axis=1), 1e-9))[:, None]
    half = np.arccos(-R0[1]) / 2.0  # B^-1 rotates r0 back to hanging down
    axis = np.cross(DOWN, R0) / np.linalg.norm(np.cross(DOWN, R0))
    b_inv = np.concatenate([[np.cos(half)], -np.sin(half) * axis])
    return s @ E_HZ, s @ E_EL, twist(qmul(q, b_inv), R0)


def smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of x (N, ...) along axis 0, sigma in samples, edges held."""
    r = int(3 * sigma) + 1
    g = np.exp(-0.5 * (np.arange(-r, r + 1) / max(sigma, 1e-3)) ** 2)
    xp = np.pad(x, [(r, r)] + [(0, 0)] * (x.ndim - 1), mode="edge")
    return np.apply_along_axis(np.convolve, 0, xp, g / g.sum(), mode="valid")


def load_clip(name: str) -> tuple[np.ndarray, np.ndarray]:
    """Return keyframe times (s) and retargeted iiwa angles (N, 7, deg) of a mocap clip."""
    f = np.array(json.loads((MOTIONS / f"humanoid3d_{name}.txt").read_text())["Frames"])
    assert f.shape[1] == 44, f"{name}: expected 44 numbers per frame"
    t = np.concatenate([[0.0], np.cumsum(f[:-1, 0])])
    mirror = np.array([1.0, -1.0, -1.0, 1.0])  # reflect z: left arm -> right arm
    hz_r, el_r, tw_r = np.degrees(swing_twist(f[:, 25:29]))
    _, _, tw_l = np.degrees(swing_twist(f[:, 39:43] * mirror))
    yaw = np.degrees(twist(f[:, 8:12], UP) + twist(f[:, 12:16], UP))
    elb_r, elb_l = np.degrees(f[:, 29]), np.degrees(f[:, 43])
    arm = [0.7 * (hz_r + 20.0), 30.0 - 0.4 * (el_r + 40.0), 0.6 * (tw_r + 20.0), -(25.0 + 0.55 * elb_r)]
    wrist = [0.6 * (tw_l + 20.0), 15.0 + 0.5 * elb_l, yaw]
    q = smooth(np.stack(arm + wrist, 1), 0.025 / f[0, 0])  # sigma 25 ms: mocap frame jitter
    return t, q - 360.0 * np.round(np.median(q, 0) / 360.0)  # twists near 0, not 360


def cubic_resample(t: np.ndarray, y: np.ndarray, tn: np.ndarray) -> np.ndarray:
    """Cubic Hermite (Catmull-Rom tangent) interpolation of y(t) (N, k) at times tn."""
    m = np.gradient(y, t, axis=0)
    i = np.clip(np.searchsorted(t, tn, side="right") - 1, 0, len(t) - 2)
    h = (t[i + 1] - t[i])[:, None]
    s = ((tn - t[i])[:, None]) / h
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y[i] + h10 * h * m[i] + h01 * y[i + 1] + h11 * h * m[i + 1]


def reference(clips: list[str], n: int, speed: float, rng: np.random.Generator) -> np.ndarray:
    """n 1 kHz reference angles (n, 7, deg): clips in turn, looped, blended at seams.

    Each take of a clip varies a little (seeded): tempo x U(0.85, 1.15), amplitude about
    the clip mean x U(0.85, 1.15) and an offset of N(0, 4) deg per joint.
    """
    cache = {c: load_clip(c) for c in clips}
    parts: list[np.ndarray] = []
    total, k = 0, 0
    while total < n:
        t, q = cache[clips[k % len(clips)]]
        rate = speed * rng.uniform(0.85, 1.15)
        q = q.mean(0) + (q - q.mean(0)) * rng.uniform(0.85, 1.15) + rng.normal(0.0, 4.0, 7)
        seg = cubic_resample(t, q, np.arange(0.0, t[-1] / rate, DT) * rate)
        if parts:  # shift so angle and velocity continue; the shift fades out in BLEND_S
            prev = parts[-1]
            gap = prev[-1] + (prev[-1] - prev[-2]) - seg[0]
            dgap = (prev[-1] - prev[-2]) - (seg[1] - seg[0])
            s = np.clip(np.arange(len(seg)) * DT / BLEND_S, 0.0, 1.0)[:, None]
            seg = seg + gap * (2 * s**3 - 3 * s**2 + 1) + dgap / DT * BLEND_S * (s**3 - 2 * s**2 + s)
        parts.append(seg)
        total, k = total + len(seg), k + 1
    return np.concatenate(parts)[:n]


def retime(ref: np.ndarray, n: int) -> np.ndarray:
    """Resample ref (deg) to n samples, slowed down where it would pass 80 % of VMAX.

    Like a robot's path-velocity scaling: the slow-down factor is widened by +-0.25 s and
    smoothed (Gaussian, sigma 0.1 s), so the speed changes gently; the path is kept.
    """
    vel = np.abs(np.gradient(ref, DT, axis=0)) / (0.8 * np.degrees(VMAX))
    w = round(0.25 / DT)
    slow = np.pad(np.maximum(vel.max(1), 1.0), w, mode="edge")
    slow = smooth(np.lib.stride_tricks.sliding_window_view(slow, 2 * w + 1).max(1), 0.1 / DT)
    t = np.concatenate([[0.0], np.cumsum(slow[:-1])]) * DT  # when each sample is reached
    tn = np.arange(n) * DT
    return np.column_stack([np.interp(tn, t, col) for col in ref.T])


def soft_limit(q: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Identity inside [lo + SOFT, hi - SOFT]; beyond, approach lo/hi smoothly (tanh)."""
    a, b = lo + SOFT, hi - SOFT
    q = np.where(q > b, b + SOFT * np.tanh((q - b) / SOFT), q)
    return np.where(q < a, a - SOFT * np.tanh((a - q) / SOFT), q)


def simulate(ref: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Track ref (n, 7, rad) with the simulated iiwa; return names, positions, velocities."""
    cid = pb.connect(pb.DIRECT)
    try:
        pb.setAdditionalSearchPath(pybullet_data.getDataPath(), physicsClientId=cid)
        pb.setGravity(0.0, 0.0, -9.81, physicsClientId=cid)
        pb.setTimeStep(DT, physicsClientId=cid)
        robot = pb.loadURDF(URDF, useFixedBase=True, physicsClientId=cid)
        joints = list(range(7))
        for j in joints:
            pb.changeDynamics(robot, j, jointDamping=0.0, physicsClientId=cid)
        info = [pb.getJointInfo(robot, j, physicsClientId=cid) for j in joints]
        names = [i[1].decode() for i in info]
        lo = np.array([i[8] for i in info]) + MARGIN
        hi = np.array([i[9] for i in info]) - MARGIN
        ref = soft_limit(ref, lo, hi)
        vel = np.gradient(ref, DT, axis=0)
        for j in joints:
            pb.resetJointState(robot, j, ref[0, j], vel[0, j], physicsClientId=cid)
        q, qd = np.empty_like(ref), np.empty_like(ref)
        for k in range(len(ref)):
            states = pb.getJointStates(robot, joints, physicsClientId=cid)
            q[k], qd[k] = [s[0] for s in states], [s[1] for s in states]
            kn = min(k + 1, len(ref) - 1)
            pb.setJointMotorControlArray(
                robot,
                joints,
                pb.POSITION_CONTROL,
                targetPositions=ref[kn],
                targetVelocities=vel[kn],
                forces=TORQUE,
                positionGains=[KP] * 7,
                velocityGains=[KD] * 7,
                physicsClientId=cid,
            )
            pb.stepSimulation(physicsClientId=cid)
    finally:
        pb.disconnect(cid)
    return names, q, qd


def encoder(q: np.ndarray, qd: np.ndarray, rng: np.random.Generator) -> tuple:
    """Jittered sample times (s) and 19-bit quantised, noisy angles (deg) latched then."""
    jitter = np.clip(rng.normal(0.0, 2e-6, len(q)), -1e-5, 1e-5)
    jitter[0] = 0.0
    t = np.arange(len(q)) * DT + jitter
    counts = np.round((q + qd * jitter[:, None]) / LSB + rng.normal(0.0, 0.5, q.shape))
    return t, np.degrees(counts * LSB)


def plot(path: str, t: np.ndarray, deg: np.ndarray, names: list[str]) -> None:
    """Save a PNG of the joint angles and velocities."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(14, 8), sharex=True)
    for j, name in enumerate(names):
        ax1.plot(t, deg[:, j], lw=0.8, label=name)
        ax2.plot(t, np.gradient(deg[:, j], t), lw=0.6)
    ax1.set_ylabel("angle / deg")
    ax2.set_ylabel("velocity / deg/s")
    ax2.set_xlabel("t / s")
    ax1.legend(ncol=7, fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    """Command-line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clip", default="punch", help="clip name(s), comma-separated")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed", type=float, default=0.5, help="playback speed factor")
    ap.add_argument("-o", "--output", default="motion.csv")
    ap.add_argument("--plot", metavar="PNG", help="also plot the joints to this PNG")
    ap.add_argument("--list", action="store_true", help="list the available clips")
    args = ap.parse_args()
    if args.list:
        for p in sorted(MOTIONS.glob("humanoid3d_*.txt")):
            print(p.stem.removeprefix("humanoid3d_"))
        return
    clips = args.clip.split(",")
    if missing := [c for c in clips if not (MOTIONS / f"humanoid3d_{c}.txt").exists()]:
        ap.error(f"unknown clip(s) {missing}; see --list")
    start = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n = round(args.seconds / DT)
    ref = retime(reference(clips, n, args.speed, rng), n)
    names, q, qd = simulate(np.radians(ref))
    t, deg = encoder(q, qd, rng)
    rows = np.column_stack([t, deg])
    fmt = ["%.6f"] + ["%.8f"] * 7
    np.savetxt(args.output, rows, fmt=fmt, delimiter=",", header="t_s," + ",".join(names), comments="")
    if args.plot:
        plot(args.plot, t, deg, names)
    print(f"{args.output}: {len(rows)} rows, {t[-1]:.3f} s, {time.perf_counter() - start:.1f} s to make")


if __name__ == "__main__":
    main()
