"""The device at 1 kHz through the pty: a real mock arm process -> a real device process -> a real server process,
on loopback with CURVE keys in a temporary directory, for each policy.

Per run: frames lost, CPU % of one core of the device process (/proc/PID/stat utime + stime, one value per 1 s
status period of the steady window, the median taken), the server's CPU the same way, the time per frame of each
stage the device accounts for itself (``device/stages.py``: the summary's ``stages``), frame arrival -> packet
sent p50/p99, and the round trip sample -> prediction p50/p99 (the link part compares it with raw pyzmq). The
device records its session (the ``record`` stage), as ``armtwin demo`` does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from bench.common import NAN, REPO, SESSION, CpuWindow, Lab, Part, cpu_s, load_average, median, tree_cpu_s
from device.stages import STAGES

POLICIES = ["none", "static:k=20", "dead-reckoning:delta=0.1",
            f"kc-td3:{REPO / 'data' / 'policies' / 'kctd3_eps0.002.pt'}"]
FIGURES = ["load", "frames_lost", "cpu_pct", "server_cpu_pct", "arrival_to_sent_p50_ms", "arrival_to_sent_p99_ms",
           "rtt_p50_ms", "rtt_p99_ms", "mse_deg2", *(f"{s}_us" for s in STAGES), "other_us"]


def short(spec: str) -> str:
    """The policy as a table shows it (a checkpoint path by its file name)."""
    family, _, rest = spec.partition(":")
    return f"{family}:{rest.rsplit('/', 1)[-1]}" if "/" in rest else spec


@dataclass
class DeviceRuns:
    """Every run of every policy (the link part reuses them: one set of device runs per bench)."""

    seconds: float
    repeats: int
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def medians(self, spec: str) -> dict[str, float]:
        return {k: median(r[k] for r in self.runs[spec]) for k in FIGURES}


def one_run(lab: Lab, server: Any, endpoint: str, spec: str, seconds: float, name: str) -> dict[str, Any]:
    """One device run of ``seconds`` steady status periods; the figures of that run."""
    arm = lab.start(["mock-arm", str(SESSION), "--bounce"], f"{name}-arm")
    port = arm.value("port")
    out = lab.root / f"{name}.json"
    periods = max(round(seconds), 1)
    dev = lab.start(["device", "--port", port, "--server", endpoint, "--policy", spec, "--device-id", name,
                     "--duration", str(periods + 2.5), "--summary-json", str(out), "--record",
                     str(lab.root / f"{name}.mcap"), "--keys", str(lab.keys)], name)
    try:
        # The first status line comes 1 s after the first sample: start-up and warm-up are behind.
        i = dev.wait_line(lambda ln: ln.startswith("rate="), timeout=90)
        dev_cpu, srv_cpu = CpuWindow(lambda: cpu_s(dev.pid)), CpuWindow(lambda: tree_cpu_s(server.pid))
        dev_cpu.start()
        srv_cpu.start()
        per_dev, per_srv = [], []
        for _ in range(periods):  # one CPU figure per status period (the device prints one a second)
            i = dev.wait_line(lambda ln: ln.startswith("rate="), timeout=30, start=i + 1)
            per_dev.append(dev_cpu.stop())
            per_srv.append(srv_cpu.stop())
            dev_cpu.start()
            srv_cpu.start()
        rc = dev.wait(timeout=periods + 60)
        if rc != 0:
            raise RuntimeError(f"device {spec} exited {rc}: {dev.stderr_tail()}")
    finally:
        dev.stop()
        arm.stop()
    s = json.loads(out.read_text())
    st = s["stages"]
    frames = max(int(s["samples"]), 1)
    row: dict[str, Any] = {
        "load": s["load"], "frames_lost": int(s["frames_lost"]) + int(s.get("backlog_dropped", 0)),
        "cpu_pct": median(per_dev), "server_cpu_pct": median(per_srv),
        "arrival_to_sent_p50_ms": st["arrival_to_sent_p50_ms"], "arrival_to_sent_p99_ms": st["arrival_to_sent_p99_ms"],
        "rtt_p50_ms": s["rtt_p50_ms"], "rtt_p99_ms": s["rtt_p99_ms"], "mse_deg2": s["mse_deg2"],
        "samples": s["samples"], "cpu_pct_windows": per_dev, "load_avg": load_average(),
    }
    for stage in STAGES:
        row[f"{stage}_us"] = 1000.0 * st["ms"][stage] / frames
    # What the stages do not cover: the ZeroMQ I/O thread (CURVE, TCP), the poll loop, status lines, Python itself.
    cpu_us_per_frame = row["cpu_pct"] * 10.0  # % of one core at 1000 frames/s -> µs per frame
    row["other_us"] = cpu_us_per_frame - sum(row[f"{stage}_us"] for stage in STAGES) if frames > 1 else NAN
    return row


def run_devices(lab: Lab, seconds: float, repeats: int, policies: list[str] | None = None) -> DeviceRuns:
    """Every policy, ``repeats`` times, against one server (a fresh device, mock arm and session each run)."""
    runs = DeviceRuns(seconds, repeats)
    server, endpoint = lab.server("device-server")
    try:
        for r in range(repeats):
            for n, spec in enumerate(policies or POLICIES):
                name = f"dev{n}r{r}"
                print(f"  device: {short(spec)} run {r + 1}/{repeats} ({seconds:g} s)", flush=True)
                runs.runs.setdefault(spec, []).append(one_run(lab, server, endpoint, spec, seconds, name))
    finally:
        server.stop()
    return runs


def device_parts(runs: DeviceRuns) -> list[Part]:
    """Two tables: the device's figures per policy, and where its time goes per frame."""
    main = Part("device", f"device at 1 kHz through the pty, {runs.seconds:g} s steady window, median of "
                f"{runs.repeats} run(s)",
                ["policy", "load", "frames_lost", "cpu_%core", "server_cpu_%", "arr->sent_p50_ms",
                 "arr->sent_p99_ms", "mse_deg2"])
    stages = Part("device_stages", "device: time per frame by stage, µs (other = CPU not in a stage: ZeroMQ I/O "
                  "thread with CURVE, poll loop, interpreter)", ["spec", *STAGES, "other", "total"])
    for spec in runs.runs:
        m = runs.medians(spec)
        main.rows.append({"policy": short(spec), "load": m["load"], "frames_lost": m["frames_lost"],
                          "cpu_%core": m["cpu_pct"], "server_cpu_%": m["server_cpu_pct"],
                          "arr->sent_p50_ms": m["arrival_to_sent_p50_ms"],
                          "arr->sent_p99_ms": m["arrival_to_sent_p99_ms"], "mse_deg2": m["mse_deg2"],
                          "runs": runs.runs[spec]})
        stages.rows.append({"spec": short(spec), **{s: m[f"{s}_us"] for s in STAGES}, "other": m["other_us"],
                            "total": m["cpu_pct"] * 10.0})
    main.notes.append("cpu_%core: device process, /proc utime+stime, median of 1 s windows; frames_lost includes "
                      "backlog drops; the device records its session (as the demo does)")
    main.notes.append("stages: each thread's CPU clock around the stage (device/stages.py)")
    return [main, stages]
