"""The device's end-of-run summary: the one-line form printed on exit and the JSON file (``--summary-json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from device.link_emulation import LinkSpec
from device.policies.base import Policy

if TYPE_CHECKING:  # the agent passes its parts; the summary only reads them
    from device.reader import SerialReader
    from device.scoring import TrackingMonitor
    from device.uplink import Uplink


def format_summary(summary: dict[str, Any]) -> str:
    """``summary: samples=... load=... mse_deg2=...`` (the keys a user checks first)."""
    keys = ["samples", "sent", "load", "mse_deg2", "rmse_deg", "p99_abs_err_deg", "frames_lost", "crc_errors",
            "dropped_packets", "rtt_p50_ms", "rtt_p99_ms", "bytes_per_s", "link_down_s"]
    keys += ["resends"] if "resends" in summary else []
    keys += ["time_resets"] if summary.get("time_resets") else []
    keys += ["port_reconnects"] if summary.get("port_reconnects") else []
    parts = []
    for k in keys:
        v = summary.get(k)
        parts.append(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}")
    rec = summary.get("recording")
    if isinstance(rec, dict) and rec.get("error"):
        parts.append(f"recorded={rec['samples_kept']}/{rec['samples_kept'] + rec['samples_dropped']}"
                     f"({rec.get('seconds_kept', 0.0):.1f}s,STOPPED)")
    return "summary: " + " ".join(parts)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    """The whole summary as JSON."""
    path.write_text(json.dumps(summary, indent=2, default=float) + "\n")


def run_summary(policy: Policy, reader: SerialReader, tracking: TrackingMonitor | None, uplink: Uplink | None,
                link: LinkSpec, elapsed: float, link_down_us: int) -> dict[str, Any]:
    """The end-of-run figures of a device run: serial, policy, scoring and uplink counters."""
    st = reader.decoder.stats
    tr, up = tracking, uplink
    out: dict[str, Any] = {
        "samples": tr.measured if tr else 0,
        "sent": tr.sent if tr else 0,
        "load": tr.load if tr else float("nan"),
        "frames_lost": st.frames_lost,
        "crc_errors": st.crc_errors,
        "decoder": st.as_dict(),
        "reader_scheduling": reader.realtime,
        "port_errors": reader.port_errors,
        "port_reconnects": reader.reconnects,
        "time_resets": reader.time_resets,  # firmware restarts: device time continued from the host clock
        "gaps": [{"after_t_us": g.after_t_us, "t_us": g.t_us, "reason": g.reason} for g in reader.gaps],
        "backlog_dropped": reader.backlog_dropped,
        "clock_drift_ppm": reader.clock.rate * 1e6,  # fitted: + = the firmware clock runs slow
        "estop_frames": reader.estop_frames,
        "policy": policy.spec(),
        "elapsed_s": elapsed,
        "link_down_s": link_down_us / 1e6,
    }
    if policy.acks is not None:
        out.update({"resends": policy.acks.resends, "declared_lost": policy.acks.declared_lost})
    if tr is not None:
        out.update(tr.acc.summary())
        lat50, lat99 = tr.latency_percentiles_ms()
        out.update({"uplink_latency_p50_ms": lat50, "uplink_latency_p99_ms": lat99,
                    "predictions_never_received": tr.preds.never_received})
    if up is not None:
        p50, p99 = up.rtt_percentiles_ms(recent=False)
        out.update({"rtt_p50_ms": p50, "rtt_p99_ms": p99, "packets_sent": up.stats.packets_sent,
                    "bytes_sent": up.stats.bytes_sent, "bytes_per_s": up.stats.bytes_sent / max(elapsed, 1e-9),
                    "dropped_packets": up.stats.dropped_packets, "control_dropped": up.stats.control_dropped,
                    "bad_replies": up.stats.bad_replies,
                    "emulated_lost_up": up.stats.emulated_lost_up,
                    "emulated_lost_down": up.stats.emulated_lost_down, "link": link.label(),
                    "link_downs": up.stats.link_downs, "server_offset_us": up.server_offset_us})
        if up.release_lateness_us:
            out["emulation_lateness_p50_us"] = float(np.percentile(list(up.release_lateness_us), 50))
            out["emulation_lateness_p99_us"] = float(np.percentile(list(up.release_lateness_us), 99))
    else:
        out.update({"mse_deg2": float("nan"), "rtt_p50_ms": float("nan"), "rtt_p99_ms": float("nan")})
    return out
