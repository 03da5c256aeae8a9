"""A learned predictor: a small MLP, trained offline with ``armtwin fit-predictor``, run with numpy only.

For each received sample the model looks at the last ``HISTORY`` received samples of one joint (the weights are
shared across joints, so any joint count works) and outputs the velocity c1 and acceleration c2 of the quadratic
prediction; c0 is the newest sample itself, so the twin never jumps away from a measurement.

Features (per joint, per prediction), computed identically here and in training (``raw_features``):

* shape: the older samples relative to the newest, q[i-s] - q[i], divided by their RMS ``sc`` (+ a µrad floor) and
  whitened with a stored matrix;
* time: the older sample times relative to the newest in units of the newest gap ``g`` (the regularity of the
  sampling), and log g; normalised by stored mean and std.

The network f is a ReLU MLP (2(m-1) -> 32 -> 32 -> 2; ReLU because np.tanh would make an hour-long session
several times slower), made odd in the shape features, y(x) = (f(x) - f(-x)) / 2, plus a linear skip from the
shape features to the output; then c1 = y0 * sc / g and c2 = y1 * sc / g**2. Mirroring the motion mirrors the
prediction, a joint at rest predicts rest, and the prediction scales with the motion's amplitude.

Safety: the model is trained on every-k-th-sample streams. Rows without a full window (the first ``HISTORY - 1``
samples), whose newest gap lies outside the trained range (times ``range_tolerance``), or whose window is less
regular than the trained ones (max gap / min gap > ``max_gap_ratio``: a lost sample, event-triggered sends) use
``QuadraticPredictor`` on the same samples instead. Untrained sampling never gets an extrapolated network output.

Model file (.npz, no pickles): arrays ``W0 b0 W1 b1 W2 Ws whiten t_mean t_std`` and ``meta`` (a JSON string with
``schema`` = ``SCHEMA``, ``history``, the trained gap range and regularity, and the training information).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from twin.predictors import Predictor, QuadraticPredictor, register_predictor

SCHEMA = "armtwin-learned-predictor/1"
HISTORY = 6
EPS_Q = 1e-6  # rad: floor of the shape scale (about the encoder resolution), keeps rest at exactly zero
DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "learned_default.npz"
ARRAYS = ("W0", "b0", "W1", "b1", "W2", "Ws", "whiten", "t_mean", "t_std")
_CHUNK = 32_768  # predictions per numpy pass: bounds memory on hour-long sessions (hidden (n, J, 32) floats)


class LearnedModelError(ValueError):
    """A learned-predictor model file is missing, unreadable, or not of this schema."""


@dataclass
class LearnedModel:
    """Weights, normalisation and metadata of a trained model (float64 in memory)."""

    W0: np.ndarray  # (2 * (HISTORY - 1), hidden): shape rows first, then time rows
    b0: np.ndarray  # (hidden,)
    W1: np.ndarray  # (hidden, hidden)
    b1: np.ndarray  # (hidden,)
    W2: np.ndarray  # (hidden, 2); its bias cancels in the odd combination
    Ws: np.ndarray  # (HISTORY - 1, 2) linear skip from the shape features
    whiten: np.ndarray  # (HISTORY - 1, HISTORY - 1)
    t_mean: np.ndarray  # (HISTORY - 1,)
    t_std: np.ndarray  # (HISTORY - 1,)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Weights are stored as float32: round them now so a model predicts the same before and after saving.
        for name in ARRAYS:
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float32).astype(np.float64))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model as a compressed .npz (weights stored as float32: a few KB)."""
        meta = {"schema": SCHEMA, "history": HISTORY, **self.meta}
        arrays: dict[str, Any] = {name: np.asarray(getattr(self, name), dtype=np.float32) for name in ARRAYS}
        arrays["meta"] = np.array(json.dumps(meta, default=float))
        with open(path, "wb") as fh:  # a file handle: np.savez would append ".npz" to a bare name
            np.savez_compressed(fh, **arrays)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LearnedModel:
        """Read and check a model file; raises ``LearnedModelError`` with the reason."""
        path = Path(path)
        if not path.is_file():
            raise LearnedModelError(f"{path}: no such model file (train one with 'armtwin fit-predictor')")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {name: np.asarray(z[name], dtype=np.float64) for name in ARRAYS if name in z}
                missing = [name for name in (*ARRAYS, "meta") if name not in z]
                meta = json.loads(str(z["meta"])) if "meta" in z else {}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as exc:
            raise LearnedModelError(f"{path}: not a learned-predictor model ({exc})") from None
        if missing:
            raise LearnedModelError(f"{path}: not a learned-predictor model (missing {', '.join(missing)})")
        if meta.get("schema") != SCHEMA:
            raise LearnedModelError(f"{path}: model schema {meta.get('schema')!r}, this armtwin reads {SCHEMA!r}")
        if meta.get("history") != HISTORY:
            raise LearnedModelError(f"{path}: model history {meta.get('history')!r}, expected {HISTORY}")
        model = cls(**data, meta=meta)
        model.check(path)
        return model

    def check(self, where: object = "model") -> None:
        """Raise ``LearnedModelError`` if the array shapes do not fit together."""
        f, hid = 2 * (HISTORY - 1), self.b0.shape[0] if self.b0.ndim == 1 else -1
        want = {"W0": (f, hid), "b0": (hid,), "W1": (hid, hid), "b1": (hid,), "W2": (hid, 2),
                "Ws": (HISTORY - 1, 2), "whiten": (HISTORY - 1, HISTORY - 1), "t_mean": (HISTORY - 1,),
                "t_std": (HISTORY - 1,)}
        bad = [f"{k} {getattr(self, k).shape} != {v}" for k, v in want.items() if getattr(self, k).shape != v]
        if bad:
            raise LearnedModelError(f"{where}: inconsistent model arrays: {'; '.join(bad)}")
        if not all(np.isfinite(getattr(self, k)).all() for k in ARRAYS):
            raise LearnedModelError(f"{where}: model holds non-finite weights")
        for key in ("gap_s_range", "max_gap_ratio", "range_tolerance"):
            if key not in self.meta:
                raise LearnedModelError(f"{where}: model metadata lacks {key!r}")


def window_indices(n: int, m: int = HISTORY) -> np.ndarray:
    """(n - m + 1, m) indices of the m consecutive samples ending at each i >= m - 1."""
    return np.arange(m - 1, n)[:, None] + np.arange(-m + 1, 1)[None, :]


def raw_features(t_win: np.ndarray, q_win: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windows (n, m) µs and (n, m, J) rad, newest last -> shape (n, J, m-1), time (n, m-1), sc (n, J), g (n,).

    Shape is unwhitened and time unnormalised: training derives the statistics from these.
    """
    dt = (t_win[:, :-1] - t_win[:, -1:]).astype(np.float64) * 1e-6  # (n, m-1), negative
    g = np.maximum(-dt[:, -1], 1e-6)
    dq = np.moveaxis(q_win[:, :-1, :] - q_win[:, -1:, :], 1, 2)  # (n, J, m-1)
    sc = np.sqrt(np.mean(dq * dq, axis=2)) + EPS_Q
    time = np.concatenate([dt[:, :-1] / g[:, None], np.log(g)[:, None]], axis=1)
    return dq / sc[..., None], time, sc, g


def forward(model: LearnedModel, shape: np.ndarray, time: np.ndarray) -> np.ndarray:
    """Odd MLP: raw shape (n, J, m-1) and raw time (n, m-1) features -> normalised outputs y (n, J, 2)."""
    n, j, k = shape.shape
    hid = model.b0.shape[0]
    xs = shape.reshape(n * j, k) @ model.whiten  # one 2-D matmul per layer: BLAS, not n small products
    xt = (time - model.t_mean) / model.t_std
    a = (xs @ model.W0[:k]).reshape(n, j, hid)  # the part that flips sign with the shape
    b = (xt @ model.W0[k:] + model.b0)[:, None, :]  # shared by all joints of a sample
    hp = np.maximum(np.maximum(b + a, 0).reshape(n * j, hid) @ model.W1 + model.b1, 0)
    hm = np.maximum(np.maximum(b - a, 0).reshape(n * j, hid) @ model.W1 + model.b1, 0)
    hp -= hm
    y = 0.5 * (hp @ model.W2) + xs @ model.Ws
    return y.reshape(n, j, 2)


@register_predictor
class LearnedPredictor(Predictor):
    """Quadratic prediction whose velocity and acceleration come from a trained MLP (numpy inference)."""

    name = "learned"
    degree = 2
    history = HISTORY

    def __init__(self, model: str | os.PathLike[str] | LearnedModel | None = None) -> None:
        if isinstance(model, LearnedModel):
            model.check()
            self.model = model
            self.path: Path | None = None
            return
        self.path = Path(model) if model is not None else DEFAULT_MODEL
        if model is None and not DEFAULT_MODEL.is_file():
            raise LearnedModelError(
                f"the learned predictor needs a model: use 'learned:/path/model.npz' (train one with "
                f"'armtwin fit-predictor'); the bundled default {DEFAULT_MODEL} is missing")
        self.model = LearnedModel.load(self.path)

    def fit_all(self, t_us: np.ndarray, q: np.ndarray) -> np.ndarray:
        t = np.asarray(t_us, dtype=np.int64)
        q = np.asarray(q, dtype=np.float64)
        n, j = q.shape
        out = np.zeros((n, 3, j))
        out[:, 0] = q
        head = min(n, HISTORY - 1)
        if head:
            out[:head] = QuadraticPredictor().fit_all(t[:head], q[:head])
        meta = self.model.meta
        tol = float(meta["range_tolerance"])
        gmin, gmax = (float(v) for v in meta["gap_s_range"])
        max_ratio = float(meta["max_gap_ratio"])
        idx_all = window_indices(n)
        for a in range(0, len(idx_all), _CHUNK):
            idx = idx_all[a:a + _CHUNK]
            rows = idx[:, -1]
            tw = t[idx]
            gaps = np.diff(tw, axis=1) * 1e-6
            g = gaps[:, -1]
            ratio = gaps.max(1) / np.maximum(gaps.min(1), 1e-6)
            ood = (g < gmin / tol) | (g > gmax * tol) | (ratio > max_ratio)
            if ood.any():  # outside the trained sampling: the quadratic fit on the same (full) window
                lo = rows[0] - QuadraticPredictor.history + 1
                quad = QuadraticPredictor().fit_all(t[lo:rows[-1] + 1], q[lo:rows[-1] + 1])
                out[rows[ood]] = quad[rows[ood] - lo]
                if ood.all():
                    continue
                idx, rows, tw = idx[~ood], rows[~ood], tw[~ood]
            shape, time, sc, g = raw_features(tw, q[idx])
            y = forward(self.model, shape, time)
            out[rows, 1] = y[..., 0] * sc / g[:, None]
            out[rows, 2] = y[..., 1] * sc / (g * g)[:, None]
        return out
