"""CSV <-> session conversion (``armtwin import`` / ``armtwin export``).

Import format: a header ``t_s,<joint>,<joint>...``, time in seconds, angles in degrees. Data must already be a
1 kHz stream (period 1 ms ± 10 %, as a real encoder log) unless ``resample=True``, which interpolates irregular or
slower data onto an exact 1 kHz grid with a cubic Hermite spline and marks the session ``resampled``. What
``export`` writes imports back: a header with ``qhat_<joint>`` or ``sent`` columns is an export, whose
``q_<joint>`` columns are the joints (named without ``q_``) and whose q̂ and sent columns are ignored.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import numpy as np

from twin.session import Session

PERIOD_US = 1000
IGNORED_PREFIXES = ("qhat_", "q̂_")  # what the twin displayed: an export's, not a measurement
IGNORED_COLUMNS = ("sent",)


class CsvError(ValueError):
    """The CSV cannot be imported; the message names the line and what to do."""


def read_joint_csv(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """-> t (s), q (deg) (N, J), joint names."""
    path = Path(path)
    try:
        fh = open(path, newline="")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise CsvError(f"{path}: {exc.strerror}") from None
    with fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if not header or header[0].strip() != "t_s" or len(header) < 2:
            raise CsvError(f"{path}: first line must be a header 't_s,<joint>,...' (got {header!r})")
        keep, names = joint_columns([h.strip() for h in header])
        if not keep:
            raise CsvError(f"{path}: no joint column besides t_s and the ignored q̂/sent columns")
        if len(set(names)) != len(names) or any(not n for n in names):
            raise CsvError(f"{path}: joint names must be unique and non-empty")
        data: list[list[float]] = []
        for lineno, row in enumerate(rows, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise CsvError(f"{path}:{lineno}: {len(row)} columns, header has {len(header)}")
            try:  # only t_s and the joints: an export's q̂ cells are empty before the first prediction
                vals = [float(row[i]) for i in [0, *keep]]
            except ValueError:
                raise CsvError(f"{path}:{lineno}: non-numeric value in {row!r}") from None
            if not all(math.isfinite(v) for v in vals):
                raise CsvError(f"{path}:{lineno}: NaN or infinite value")
            data.append(vals)
    if len(data) < 2:
        raise CsvError(f"{path}: need at least two samples")
    arr = np.asarray(data)
    t = arr[:, 0]
    if np.any(np.diff(t) <= 0):
        bad = int(np.flatnonzero(np.diff(t) <= 0)[0]) + 3
        raise CsvError(f"{path}:{bad}: time does not increase")
    return t, arr[:, 1:], names


def joint_columns(header: list[str]) -> tuple[list[int], list[str]]:
    """Indices and names of the joint columns of a header whose first column is t_s (see module docstring)."""
    cols = header[1:]
    exported = any(c.startswith(IGNORED_PREFIXES) or c in IGNORED_COLUMNS for c in cols)
    if not exported:
        return list(range(1, len(header))), cols
    keep = [i for i, c in enumerate(header) if i > 0 and c.startswith("q_")]
    return keep, [header[i].removeprefix("q_") for i in keep]


def cubic_resample(t: np.ndarray, y: np.ndarray, t_new: np.ndarray) -> np.ndarray:
    """Cubic Hermite interpolation with finite-difference slopes (works on non-uniform t)."""
    dt = np.diff(t)
    slope = np.diff(y, axis=0) / dt[:, None]
    m = np.empty_like(y)
    m[0], m[-1] = slope[0], slope[-1]
    m[1:-1] = (slope[:-1] * dt[1:, None] + slope[1:] * dt[:-1, None]) / (dt[:-1] + dt[1:])[:, None]
    i = np.clip(np.searchsorted(t, t_new, side="right") - 1, 0, len(t) - 2)
    h = dt[i][:, None]
    s = ((t_new - t[i]) / dt[i])[:, None]
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * y[i] + h10 * h * m[i] + h01 * y[i + 1] + h11 * h * m[i + 1]


def import_csv(path: str | os.PathLike[str], resample: bool = False, source: str | None = None) -> Session:
    """Build a session from a joint CSV (see module docstring)."""
    t, q_deg, names = read_joint_csv(path)
    dt = np.diff(t)
    period = float(np.median(dt))
    regular = abs(period - 1e-3) <= 1e-4 and float(np.max(np.abs(dt - period))) <= 0.5e-3
    meta: dict[str, object] = {"source": source or f"import:{Path(path).name}", "resampled": False}
    if resample:
        t_us = np.arange(0, int((t[-1] - t[0]) * 1e6) + 1, PERIOD_US, dtype=np.int64)
        q_deg = cubic_resample(t - t[0], q_deg, t_us * 1e-6)
        meta.update(resampled=True, resample_method="cubic Hermite", original_rate_hz=1.0 / period)
    elif not regular:
        raise CsvError(
            f"{path}: median sample period is {period * 1e3:.3f} ms (max deviation "
            f"{np.max(np.abs(dt - period)) * 1e3:.3f} ms); a session is a 1 kHz stream. "
            "Pass --resample to interpolate it onto a 1 kHz grid (the session is then marked as resampled)."
        )
    else:
        t_us = np.rint((t - t[0]) * 1e6).astype(np.int64)
    return Session(t_us=t_us, q=np.radians(q_deg), joint_names=names, meta=meta)


def export_csv(session: Session, out: str | os.PathLike[str]) -> int:
    """One row per sample: t_s (device time), q_<joint> (deg), qhat_<joint> (deg, empty before the first
    prediction), sent."""
    names = session.joint_names
    q = np.degrees(session.q)
    qhat = np.degrees(session.qhat) if session.qhat is not None else None
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")  # the csv default is CRLF: awk's $NF would end in '\r'
        w.writerow(["t_s", *(f"q_{n}" for n in names), *(f"qhat_{n}" for n in names), "sent"])
        for i in range(len(session.t_us)):
            row: list[str] = [f"{session.t_us[i] * 1e-6:.6f}"]
            row += [f"{v:.7f}" for v in q[i]]
            if qhat is None or np.isnan(qhat[i]).any():
                row += [""] * len(names)
            else:
                row += [f"{v:.7f}" for v in qhat[i]]
            row.append("" if session.sent is None else str(int(session.sent[i])))
            w.writerow(row)
    return len(session.t_us)
