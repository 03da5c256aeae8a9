"""Do two causal refinements of the RMS trigger reach what a fixed δ cannot? A test-side sweep, as trigger_frontier:

    python tools/trigger_variants.py RESULTS.json [--link delay_ms=20] [--deltas 40]

Issue 14's targets ask a causal sender for less load at the same tail than a fixed dead-reckoning trigger.
The two ideas tried here use only what the device knows at each sample:

- ``jerk``: δ scaled by the current jerk, δ·max(J/J0, 1)^p, J the RMS over joints of the change of the device's
  acceleration estimate over the last 10 ms (deg/s³). p > 0 tolerates more error while the motion changes (a
  fresh prediction would not hold anyway), p < 0 less.
- ``steer``: δ steered once per 100 ms score window toward a window MSE of a·ε: after each window
  δ ← δ·(a·ε / window MSE)^(g/2), clipped to [0.005, 2] deg (the mirrored window MSE, as the device measures it).
  This is the feedback half of KC-TD3's trigger expert (docs/kctd3.md) with no table and no learning.
- ``look``: the trigger tests the error the twin would show L ms ahead, for L from 5 to 30 ms: under a link delay
  a correction sent then lands in time. This one runs ``dead-reckoning:...,norm=rms,look=L`` itself.

For each variant setting it sweeps δ (or the starting δ and a) on the *test* sessions of an ``armtwin evaluate``
results.json with the repo's simulator, and prints the lowest load meeting ε and the lowest whose tail is also no
higher than the tuned static and dead-reckoning rows' tails (the DRL agent's target), as trigger_frontier does;
``p = 0`` is the plain RMS trigger (a test checks its sends are dead-reckoning's), on a grid of its own
(0.005-0.5 deg), so its figures come close to trigger_frontier's without repeating them.
Like that tool, the tuning sees the test data: an optimistic reference, not a policy anyone can run.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
from numba import njit

from device.link_emulation import LinkSpec
from device.policies.event import DeadReckoningPolicy
from lab.motion_features import jerk_rms
from lab.results_file import ResultsFile, add_arguments, lowest_meeting, short_link
from lab.simulator import simulate_many
from twin.kinematics import DERIV_WINDOW, fit_row
from twin.metrics import WINDOW_US
from twin.session import Session

DELTA_RANGE_DEG = (0.005, 2.0)  # the steered δ's clip, KC-TD3's trigger action range


@njit  # no cache: the tool also runs as __main__ and loaded by path, which numba's cache index confuses
def _scan(t: np.ndarray, q: np.ndarray, out: np.ndarray, delta: float, heartbeat_us: int, horizon_us: int,
          scale: np.ndarray, target_rad2: float, gain: float, lo: float, hi: float, window_us: int) -> int:
    """The RMS dead-reckoning trigger (trigger_kernel.scan, norm=rms, kinematic mirror) with a per-sample δ scale and,
    when ``target_rad2`` > 0, δ steered after each score window. Returns the number of sends."""
    n, joints = q.shape
    coeffs = np.zeros((3, joints))
    t0, has, sent = t[0], False, 0
    w_idx, w_sum, w_n = 0, 0.0, 0
    for i in range(n):
        wi = (t[i] - t[0]) // window_us
        if wi != w_idx:
            if target_rad2 > 0 and w_n > 0:
                m = max(w_sum / w_n, target_rad2 * 1e-3)
                delta = min(max(delta * (target_rad2 / m) ** (gain / 2), lo), hi)
            w_idx, w_sum, w_n = wi, 0.0, 0
        send = not has
        acc = 0.0
        if has:
            age = t[i] - t0
            send = age >= heartbeat_us
            tau = min(max(age, 0), horizon_us) * 1e-6
            for j in range(joints):
                err = q[i, j] - (coeffs[0, j] + tau * (coeffs[1, j] + tau * coeffs[2, j]))
                acc += err * err
            d = delta * scale[i]
            send = send or acc > d * d * joints
        if send:
            out[i] = True
            sent += 1
            fit_row(t, q, max(0, i - DERIV_WINDOW + 1), i, coeffs)
            t0, has, acc = t[i], True, 0.0
        w_sum += acc / joints
        w_n += 1
    return sent


class VariantTrigger(DeadReckoningPolicy):
    """``dead-reckoning:...,norm=rms`` with a jerk-scaled δ (``p``, ``j0``) and/or window steering (``a``, ``g``).

    Whole-session selection only (the sweep's use): one ``select`` call per run, no resend."""

    def __init__(self, delta_deg: float, p: float = 0.0, j0: float = 1000.0, a: float = 0.0, g: float = 0.5,
                 eps: float = 0.0, horizon_ms: float = 200.0, look_ms: float = 0.0) -> None:
        super().__init__(delta_deg, horizon_ms=horizon_ms, norm="rms", look=look_ms)
        self.p, self.j0, self.a, self.g, self.eps = p, j0, a, g, eps

    def select(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        if self.p == 0 and self.a == 0:  # the plain and the look variants are the policy itself (its live kernel)
            return super().select(t_us, q)
        if self.look_us:
            raise ValueError("the look variant combines with neither the jerk scaling nor the steering")
        t = np.ascontiguousarray(t_us, dtype=np.int64)
        qq = np.ascontiguousarray(q, dtype=np.float64)
        scale = np.ones(len(t)) if self.p == 0 else np.maximum(jerk_rms(t, qq) / self.j0, 1.0) ** self.p
        out = np.zeros(len(t), dtype=np.bool_)
        target = np.radians(1.0) ** 2 * self.a * self.eps
        lo, hi = (float(np.radians(x)) for x in DELTA_RANGE_DEG)
        self._sent = _scan(t, qq, out, self._delta_rad, self.heartbeat_us, self.horizon_us, scale, target, self.g,
                           lo, hi, WINDOW_US)
        self._measured = len(t)
        return out

    def spec(self) -> str:
        return (f"variant:delta={self.delta_deg:g},p={self.p:g},j0={self.j0:g},a={self.a:g},g={self.g:g},"
                f"look={self.look_us / 1000:g}")


def run(sessions: list[Session], link: LinkSpec, policy: VariantTrigger, eps: float) -> dict[str, Any]:
    """Load, MSE and tail at ``eps`` of one variant on the pooled sessions (a ``lowest_meeting`` row)."""
    m, _ = simulate_many(sessions, policy, link=link, eps=eps)
    return {"load": m["load"], "mse": m["mse_deg2"], "tail": {eps: m["tail_fraction"]}}


def settings(deltas: np.ndarray, eps: float) -> list[tuple[str, list[VariantTrigger]]]:
    """The variants swept at ε: (name, its grid of policies)."""
    out: list[tuple[str, list[VariantTrigger]]] = []
    for j0 in (100.0, 1000.0):
        for p in (-0.3, -0.15, 0.0, 0.15, 0.3):
            if p == 0 and j0 != 100.0:
                continue  # p = 0 ignores J0
            out.append((f"jerk p={p:g}" + (f", J0={j0:g}" if p else ""),
                        [VariantTrigger(d, p=p, j0=j0) for d in deltas]))
    for look in (5.0, 10.0, 20.0, 30.0):
        out.append((f"look {look:g} ms", [VariantTrigger(d, look_ms=look) for d in deltas]))
    for g in (0.2, 0.5, 1.0):
        out.append((f"steer g={g:g}", [VariantTrigger(0.1, a=a, g=g, eps=eps) for a in np.linspace(0.3, 1.2, 19)]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(ap)
    ap.add_argument("--deltas", type=int, default=40, help="δ grid points of the jerk variant (default 40)")
    args = ap.parse_args()
    f = ResultsFile.read(args.results, args.link)
    deltas = np.geomspace(0.005, 0.5, args.deltas)
    print("test-side sweep of RMS-trigger variants (H = 200 ms); cells: load / tail; target: load / min(static, DR) "
          "load with tail <= both of theirs")
    print("| link | ε (deg²) | variant | lowest load meeting ε | ... with tail ≤ static's and DR's |")
    print("|---|---|---|---|---|")
    for label in f.links:
        link = LinkSpec.parse(label)
        for eps in f.constraints:
            tmax, lmin = f.target_bounds(label, eps)
            for name, policies in settings(deltas, eps):
                rows = [run(f.test, link, pol, eps) for pol in policies]
                low, hit = lowest_meeting(rows, eps), lowest_meeting(rows, eps, tmax)
                cell = "–" if low is None else f"{low['load']:.4f} / {low['tail'][eps]:.3f}"
                target = "none" if hit is None else (
                    f"{hit['load']:.4f} / {hit['tail'][eps]:.3f}: {hit['load'] / lmin:.2f}× (tail bound {tmax:.3f})")
                print(f"| {short_link(label)} | {eps:g} | {name} | {cell} | {target} |", flush=True)


if __name__ == "__main__":
    main()
