"""The device's end-of-run summary: the one-line form printed on exit and the JSON file (``--summary-json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def format_summary(summary: dict[str, Any]) -> str:
    """``summary: samples=... load=... mse_deg2=...`` (the keys a user checks first)."""
    keys = ["samples", "sent", "load", "mse_deg2", "rmse_deg", "p99_abs_err_deg", "frames_lost", "crc_errors",
            "dropped_packets", "rtt_p50_ms", "rtt_p99_ms", "bytes_per_s", "link_down_s"]
    keys += ["resends"] if "resends" in summary else []
    parts = []
    for k in keys:
        v = summary.get(k)
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    return "summary: " + " ".join(parts)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """The whole summary as JSON."""
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")
