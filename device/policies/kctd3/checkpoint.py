"""KC-TD3 checkpoints and the link-dependent quantities stored in them (λ grid, tail bound); numpy only.

``POLICY.pt`` (torch, full training state, written by the lab's ``lab/kctd3/train.py``) always comes with
``POLICY.npz`` (actor weights, normalisation, metadata as JSON): the device loads the ``.npz`` and never imports
torch. A ``.pt`` without its ``.npz`` is re-exported on a lab machine by ``python -m lab.kctd3.export POLICY.pt``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from device.policies.base import PolicySpecError
from twin.constants import PIPELINE_LATENCY_US

SCHEMA_VERSION = 1


def _grid_cell(grid: dict[str, Any], rtt_ms: float, loss: float) -> tuple[int, int, np.ndarray]:
    """Bilinear weights over a (one-way delay, loss) grid for a link estimate, clamped: (i, j, 2x2 weights).
    One-way delay = RTT/2 minus the pipeline latency."""
    ds, ps = np.asarray(grid["delay_ms"]), np.asarray(grid["loss"])
    fi = float(np.interp(max(rtt_ms / 2 - PIPELINE_LATENCY_US / 1000, 0.0), ds, np.arange(len(ds))))
    fj = float(np.interp(loss, ps, np.arange(len(ps))))
    i, j = min(int(fi), len(ds) - 2), min(int(fj), len(ps) - 2)
    return i, j, np.outer([1 - fi + i, fi - i], [1 - fj + j, fj - j])


def lambda_at(grid: dict[str, Any], rtt_ms: float, loss: float) -> float:
    """λ for a link estimate: bilinear in log λ over the checkpoint's (one-way delay, loss) grid, clamped.

    λ depends on the link because the constraint must hold on each link: one λ for all links is needlessly
    conservative on the easy ones and too lax on the hard ones.
    """
    i, j, w = _grid_cell(grid, rtt_ms, loss)
    return float(np.exp((w * np.log(np.asarray(grid["values"]))[i:i + 2, j:j + 2]).sum()))


def tail_max_at(tail_max: float | dict[str, Any], loss: float, rtt_ms: float = 0.0) -> float:
    """The checkpoint's chance-constraint bound for a link estimate: a number, a table over loss, or (auto bound
    since it covers delay) a table over (one-way delay, loss), interpolated like λ."""
    if isinstance(tail_max, dict):
        if "delay_ms" in tail_max:
            i, j, w = _grid_cell(tail_max, rtt_ms, loss)
            return float((w * np.asarray(tail_max["values"])[i:i + 2, j:j + 2]).sum())
        return float(np.interp(loss, tail_max["loss"], tail_max["values"]))
    return float(tail_max)


TAIL_KINDS = ("chance", "cvar")  # the tail constraint: fraction of windows over ε, or the mean of the worst ones


def cvar(values: np.ndarray, alpha: float) -> float:
    """CVaR_α: the mean of the worst (1 − α) share of ``values`` (at least one value; 0 for none)."""
    v = np.sort(np.asarray(values, dtype=np.float64))
    if not len(v):
        return 0.0
    return float(v[len(v) - max(int(np.ceil((1 - alpha) * len(v) - 1e-9)), 1):].mean())


def tail_constraint(meta: dict[str, Any]) -> tuple[str, float]:
    """A checkpoint's tail constraint: ("chance", 0) (checkpoints before the option) or ("cvar", α)."""
    tc = meta.get("tail_constraint") or {"kind": "chance"}
    if tc.get("kind") not in TAIL_KINDS:
        raise PolicySpecError(f"unknown tail constraint {tc.get('kind')!r} (known: {', '.join(TAIL_KINDS)})")
    if tc["kind"] == "chance":
        return "chance", 0.0
    alpha = tc.get("alpha")
    if not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise PolicySpecError(f"the CVaR tail constraint needs an alpha in (0, 1), not {alpha!r}")
    return "cvar", float(alpha)


def tail_ratio(window_mse: np.ndarray, eps: float, kind: str, alpha: float, bound: float) -> float:
    """Where 100 ms window MSEs stand against the tail constraint, 1 = on it: ``chance``, the fraction of windows
    over ε / ``bound``; ``cvar``, CVaR_α of the window MSEs / ε (the worst (1 − α) of windows average at most ε)."""
    w = np.asarray(window_mse, dtype=np.float64)
    if kind == "cvar":
        return cvar(w, alpha) / eps
    return float(np.mean(w > eps)) / bound if len(w) else 0.0


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Actor weights + metadata from ``POLICY.npz`` (or the ``.npz`` next to ``POLICY.pt``)."""
    path = Path(path)
    npz = path if path.suffix == ".npz" else path.with_suffix(".npz")
    if npz.exists():
        with np.load(npz, allow_pickle=False) as z:
            ck: dict[str, Any] = {k: z[k] for k in z.files if k != "meta_json"}
            ck["meta"] = json.loads(str(z["meta_json"]))
    elif path.exists():
        # Loading the .pt would pull torch onto the controller; the lab writes the .npz next to every .pt.
        raise PolicySpecError(f"{path} has no {npz.name} beside it: the device reads only the .npz; write it on a "
                              f"lab machine with 'python -m lab.kctd3.export {path}' (needs armtwin[lab])")
    else:
        raise PolicySpecError(f"no KC-TD3 checkpoint at {path} (nor {npz})")
    if ck["meta"].get("schema") != SCHEMA_VERSION:
        raise PolicySpecError(f"{path}: checkpoint schema {ck['meta'].get('schema')} != {SCHEMA_VERSION}")
    return ck


def save_npz(path: str | Path, actor: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """Write the device checkpoint: actor ``W0, b0, W1, b1, W2, b2``, ``obs_mean``, ``obs_std`` and metadata."""
    out = Path(path).with_suffix(".npz")
    arrays: dict[str, Any] = {k: np.asarray(v, dtype=np.float64) for k, v in actor.items()}
    np.savez(out, meta_json=np.array(json.dumps(meta, default=float)), **arrays)
    return out


