"""Soaks (issue 10, item 5): long runs of real processes, their figures printed every minute as they come.

* ``soak-device``: one real device at 1 kHz through the mock arm (bouncing replay, so the motion never jumps) with
  dead reckoning, against a real server: every minute the device's and the server's RSS, frames lost, load and the
  minute's MSE (mean of its 1 s windows). Targets: 0 frames lost, RSS growth <= 2 MB after the first minute, MSE
  steady.
* ``soak-server``: a real server under ``--devices`` emulated devices (``bench/loadgen.py``, one process, the real
  wire format, each at ``--rate`` samples/s plus heartbeats): every minute the server's RSS, samples answered and
  sessions lost. Targets: memory flat, no session lost.

Both end with one ``summary:`` line: minutes run, RSS at the first and last minute, frames lost, sessions lost.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import SESSION, Lab, load_average, rss_mb, temp_lab

STATUS = re.compile(r"load=(?P<load>\S+) mse=(?P<mse>\S+)deg2 .*lost=(?P<lost>\d+)")
DEFAULT_POLICY = "dead-reckoning:delta=0.1"


def add_soak_parsers(sub: Any) -> None:
    d = sub.add_parser("soak-device", help="one real device at 1 kHz for minutes: RSS, frames lost, load, MSE",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--minutes", type=float, required=True, help="how long (the issue's soak: 30)")
    d.add_argument("--policy", default=DEFAULT_POLICY, help=f"device policy (default {DEFAULT_POLICY})")
    d.add_argument("--every", type=float, default=60.0, metavar="S", help="report period, s (default 60)")
    d.set_defaults(soak_run=soak_device)
    s = sub.add_parser("soak-server", help="a server under emulated devices for minutes: memory, sessions lost",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--minutes", type=float, required=True, help="how long (the issue's soak: 30)")
    s.add_argument("--devices", type=int, default=200, help="emulated devices (default 200)")
    s.add_argument("--rate", type=float, default=20.0,
                   help="samples/s per device (default 20: dead reckoning's ~2 %% load)")
    s.add_argument("--every", type=float, default=60.0, metavar="S", help="report period, s (default 60)")
    s.set_defaults(soak_run=soak_server)


def _check(args: argparse.Namespace) -> int | None:
    if args.minutes <= 0 or args.every <= 0:
        print("error: --minutes and --every must be > 0", file=sys.stderr, flush=True)
        return 2
    return None


def _server_sessions(server: Any) -> dict[str, int]:
    """Stop the server and read its session counts from its exit summary (``sessions: N opened, L left, E
    expired, ...``); -1 each if it printed none (killed: an overloaded server may still be draining its backlog)."""
    server.stop(timeout=60)
    for _, line in server.lines:
        m = re.search(r"sessions: (\d+) opened, (\d+) left, (\d+) expired", line)
        if m:
            return {"opened": int(m[1]), "left": int(m[2]), "expired": int(m[3])}
    print(f"warning: the server printed no session summary (exit {server.p.returncode})", file=sys.stderr)
    return {"opened": -1, "left": -1, "expired": -1}


def soak_device(args: argparse.Namespace) -> int:
    bad = _check(args)
    if bad is not None:
        return bad
    periods = max(round(args.minutes * 60), 1)  # status lines (one a second)
    per_report = max(round(args.every), 1)
    rows: list[dict[str, Any]] = []
    with temp_lab() as tmp:
        lab = Lab.make(Path(tmp))
        try:
            server, endpoint = lab.server("soak-server")
            arm = lab.start(["mock-arm", str(SESSION), "--bounce"], "soak-arm")
            port = arm.value("port")
            out = lab.root / "soak-device.json"
            dev = lab.start(["device", "--port", port, "--server", endpoint, "--policy", args.policy,
                             "--duration", str(periods + 0.5), "--summary-json", str(out), "--keys", str(lab.keys)],
                            "soak-device")
            print(f"soak-device: {args.policy}, {args.minutes:g} min, mock arm {port}, server {endpoint} (CURVE)",
                  flush=True)
            print(f"{'minute':>6} {'dev_rss_mb':>10} {'srv_rss_mb':>10} {'frames_lost':>11} {'load':>7} "
                  f"{'mse_deg2':>9} {'machine_load':>12}", flush=True)
            i, mses = -1, []
            for n in range(1, periods + 1):
                i = dev.wait_line(lambda ln: ln.startswith("rate="), timeout=30, start=i + 1)
                m = STATUS.search(dev.lines[i][1])
                if m is None:
                    raise RuntimeError(f"unreadable status line: {dev.lines[i][1]}")
                mses.append(float(m["mse"]))
                if n % per_report == 0 or n == periods:
                    row = {"minute": n / 60, "device_rss_mb": rss_mb(dev.pid), "server_rss_mb": rss_mb(server.pid),
                           "frames_lost": int(m["lost"]), "load": float(m["load"]), "mse_deg2": sum(mses) / len(mses),
                           "machine_load": load_average()}
                    mses = []
                    rows.append(row)
                    print(f"{row['minute']:6.2f} {row['device_rss_mb']:10.1f} {row['server_rss_mb']:10.1f} "
                          f"{row['frames_lost']:11d} {row['load']:7.4f} {row['mse_deg2']:9.3g} "
                          f"{row['machine_load']:12.1f}", flush=True)
            rc = dev.wait(timeout=120)
            summary = json.loads(out.read_text()) if out.exists() else {}
            sessions = _server_sessions(server)
        finally:
            lab.stop_all()
    # One session, never renewed or expired (-1: the server's summary is missing).
    lost_sessions = -1 if sessions["opened"] < 0 else max(sessions["opened"] - 1, 0) + sessions["expired"]
    frames_lost = int(summary.get("frames_lost", -1)) + int(summary.get("backlog_dropped", 0))
    first, last = rows[0], rows[-1]
    print(f"summary: soak-device minutes={periods / 60:.2f} device_rss_mb first={first['device_rss_mb']:.1f} "
          f"last={last['device_rss_mb']:.1f} (growth {last['device_rss_mb'] - first['device_rss_mb']:+.1f}) "
          f"server_rss_mb first={first['server_rss_mb']:.1f} last={last['server_rss_mb']:.1f} "
          f"frames_lost={frames_lost} sessions_lost={lost_sessions} load={summary.get('load', float('nan')):.4f} "
          f"mse_deg2={summary.get('mse_deg2', float('nan')):.4g} device_exit={rc}", flush=True)
    return 0 if rc == 0 else 1


def soak_server(args: argparse.Namespace) -> int:
    from bench.loadgen import LoadGen
    from twin.security import Security

    bad = _check(args)
    if bad is not None:
        return bad
    total_s = args.minutes * 60
    rows: list[dict[str, Any]] = []
    with temp_lab() as tmp:
        lab = Lab.make(Path(tmp))
        try:
            server, endpoint = lab.server("soak-server", ["--max-sessions", str(args.devices + 16)])
            gen = LoadGen(endpoint, Security.for_client(lab.keys, "bench"), args.devices, rate_hz=args.rate,
                          name="soak")
            try:
                took = gen.connect(timeout_s=60 + args.devices / 10)
                print(f"soak-server: {args.devices} emulated devices at {args.rate:g} samples/s each (+ heartbeats), "
                      f"{args.minutes:g} min, server {endpoint} (CURVE); all welcomed in {took:.1f} s", flush=True)
                print(f"{'minute':>6} {'srv_rss_mb':>10} {'gen_rss_mb':>10} {'answered/s':>10} {'unanswered':>10} "
                      f"{'sessions_lost':>13} {'machine_load':>12}", flush=True)
                t0 = time.monotonic()
                while (done := time.monotonic() - t0) < total_s - 0.5:
                    r = gen.run(min(args.every, total_s - done))
                    row = {"minute": (time.monotonic() - t0) / 60, "server_rss_mb": rss_mb(server.pid),
                           "loadgen_rss_mb": rss_mb(os.getpid()), "answered_per_s": r["answered_per_s"],
                           "unanswered": gen.sent - gen.answered, "sessions_lost": gen.sessions_lost,
                           "machine_load": load_average()}
                    rows.append(row)
                    print(f"{row['minute']:6.2f} {row['server_rss_mb']:10.1f} {row['loadgen_rss_mb']:10.1f} "
                          f"{row['answered_per_s']:10.1f} {row['unanswered']:10d} {row['sessions_lost']:13d} "
                          f"{row['machine_load']:12.1f}", flush=True)
                errors = dict(gen.errors)
            finally:
                gen.close()
            sessions = _server_sessions(server)
        finally:
            lab.stop_all()
    lost = -1 if sessions["expired"] < 0 else gen.sessions_lost + sessions["expired"]
    first, last = rows[0], rows[-1]
    print(f"summary: soak-server minutes={last['minute']:.2f} devices={args.devices} server_rss_mb "
          f"first={first['server_rss_mb']:.1f} last={last['server_rss_mb']:.1f} "
          f"(growth {last['server_rss_mb'] - first['server_rss_mb']:+.1f}) sessions_lost={lost} "
          f"(server expired {sessions['expired']}, no-session replies {gen.sessions_lost}) "
          f"answered={gen.answered} of {gen.sent} sent, errors={errors or 'none'}", flush=True)
    return 0
