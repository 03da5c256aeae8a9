"""Fuzz campaign against a running twin server while one real device streams through it (issue 10, item 3).

    python -m bench.fuzz_server --messages 100000 [--identities 2000] [--seconds 25] [--seed 0] [--clean-runs 2]
        [--json out.json]

Starts ``armtwin server`` (CURVE keys made in a temporary directory), a mock arm replaying the bundled session and
``armtwin device`` (static:k=10,h=0) — first a clean run, then the same run while this process sends
``--messages`` generated hostile messages (``bench/fuzz_messages.py``) from authorised sockets, opens
``--identities`` short-lived identities, connects with unknown keys and in plaintext, and sends messages over the
transport limit (ZMQ_MAXMSGSIZE). Prints what was sent by category, the server's counts (every message accepted
or dropped by reason), the server's RSS over the campaign, and the device's load and MSE clean vs under fuzz.
Exit status 0 when: the server survived and stopped cleanly, messages = accepted + dropped, the device's load and
MSE are within --tolerance (default 1 %) of the clean run, and the server's RSS grew by less than --max-rss-mb.
Timing figures on a shared machine are noisy; the counts are exact. The device's MSE depends on when each
prediction arrives; on a loaded 2-core machine two clean runs already differ by far more than 1 % (seen: 0.032 vs
0.995 deg² for the same command), so there the MSE verdict says more about the machine than about the server.
That is why it runs ``--clean-runs`` (default 2) clean runs and prints their spread next to the fuzzed run's
difference, the RTT and uplink-latency p50/p99 of every run, the CPU seconds the server used per run and the
fuzzer used in all, the load average, and says so when the fuzzed device run lost serial frames (its process was
starved of CPU, which no server change can fix).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.fuzz_messages import WIRE, generator  # noqa: E402
from twin.security import Security, init_keys  # noqa: E402

SESSION = REPO / "data" / "sessions" / "default.mcap"
# Holding the last sample (h=0) with a fixed send pattern: the load is exact and the error depends on the network
# only through when each prediction arrives (extrapolation across the recording's sharp moves amplifies timing noise).
POLICY = "static:k=10,h=0"


def armtwin(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "armtwin", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1, cwd=REPO)


def read_key(proc: subprocess.Popen[str], key: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(key + "="):
            return line.strip().split("=", 1)[1]
    raise RuntimeError(f"{proc.args!r} ended before {key}=: {proc.stderr.read() if proc.stderr else ''}")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_device(keys: Path, endpoint: str, seconds: float, out: Path) -> tuple[subprocess.Popen[str], ...]:
    arm = armtwin("mock-arm", str(SESSION), "--bounce")  # continuous at the seams if --seconds > 30
    port = read_key(arm, "port")
    dev = armtwin("device", "--port", port, "--server", endpoint, "--policy", POLICY, "--duration", str(seconds),
                  "--summary-json", str(out), "--keys", str(keys))
    return arm, dev


def wait_streaming(dev: subprocess.Popen[str]) -> None:
    assert dev.stdout is not None
    for line in dev.stdout:
        if line.startswith("rate=") and "link=up" in line:
            return
    raise RuntimeError(f"device ended before streaming: {dev.stderr.read() if dev.stderr else ''}")


def finish(dev: subprocess.Popen[str], arm: subprocess.Popen[str], seconds: float) -> None:
    """Let the device end by itself (--duration), then stop the mock arm."""
    out, err = dev.communicate(timeout=seconds + 60)
    if os.environ.get("FUZZ_VERBOSE"):
        print(out, err)
    if dev.returncode != 0:
        raise RuntimeError(f"device exited with {dev.returncode}: {err[-1000:]}")
    stop(arm)


def stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
        p.communicate(timeout=60)


class Fuzzer:
    """The hostile clients: a pool of authorised sockets, short-lived identities, strangers and plaintext."""

    def __init__(self, endpoint: str, keys: Path, seed: int, pool: int = 8) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoint = endpoint
        self.sec = Security.for_client(keys, "fuzz")
        public, secret = zmq.curve_keypair()
        self.stranger = Security(curve=True, server_public=self.sec.server_public, public=public, secret=secret)
        self.pool = [self._socket(self.sec) for _ in range(pool)]
        self.draw = generator(seed)
        self.sent: Counter[str] = Counter()

    def _socket(self, sec: Security, linger: int = 0) -> zmq.Socket[bytes]:
        s = self.ctx.socket(zmq.DEALER)
        sec.client_socket(s)
        s.setsockopt(zmq.LINGER, linger)
        s.setsockopt(zmq.SNDTIMEO, 2000)
        s.connect(self.endpoint)
        return s

    def send(self, n: int, i: int) -> None:
        sock = self.pool[i % len(self.pool)]
        for _ in range(n):
            cat, frames = self.draw()
            try:
                sock.send_multipart(frames)
                self.sent[cat] += 1
            except zmq.Again:
                self.sent["send-timeout"] += 1

    def identity(self, k: int) -> None:
        """A new identity (its own connection): hello and a few samples, then gone without a bye."""
        s = self._socket(self.sec, linger=200)
        s.send_multipart(WIRE.encode("hello", dev=f"ident{k}", joints=["a", "b"], rate_hz=1000.0, urdf="u",
                                     policy="fuzz"))
        for j in range(3):
            s.send_multipart(WIRE.encode("sample", seq=j, t=j * 1000, q=[0.0, 0.1], h=0, ts=j))
        self.sent["identity"] += 4
        s.close()

    def intruders(self) -> None:
        """An unknown key and a plaintext client (refused at the handshake) and one over-the-limit message."""
        for sec in (self.stranger, Security.insecure()):
            s = self._socket(sec, linger=100)
            s.send_multipart(WIRE.encode("hb", ts=1))
            s.close()
            self.sent["intruder"] += 1
        s = self._socket(self.sec, linger=500)
        s.send_multipart([b"\xc5" + b"x" * (1 << 20)])  # 1 MiB > MAXMSGSIZE: the server drops the connection
        s.close()
        self.sent["over-maxmsgsize"] += 1

    def close(self) -> None:
        for s in self.pool:
            s.close(linger=0)
        self.ctx.term()


def server_counts(out: str) -> dict[str, Any]:
    m = re.search(r"server stopped: (\d+) messages, (\d+) samples answered, dropped: (.*)", out)
    a = re.search(r"  accepted: (.*)", out)
    if not m or not a:
        raise RuntimeError(f"no server summary in:\n{out[-2000:]}")

    def pairs(text: str) -> dict[str, int]:
        return {} if text.strip() == "none" else {k: int(v) for k, v in (p.split("=") for p in text.split(", "))}

    return {"messages": int(m[1]), "samples": int(m[2]), "dropped": pairs(m[3]), "accepted": pairs(a[1])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=100_000, help="hostile messages to send (default 100000)")
    ap.add_argument("--identities", type=int, default=2000, help="short-lived identities to open (default 2000)")
    ap.add_argument("--seconds", type=float, default=25.0,
                    help="device run length, clean and fuzzed (default 25: within the 30 s bundled recording)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tolerance", type=float, default=0.01, help="allowed relative load/MSE change (default 0.01)")
    ap.add_argument("--max-rss-mb", type=float, default=50.0, help="allowed server RSS growth (default 50 MB)")
    ap.add_argument("--clean-runs", type=int, default=2,
                    help="clean runs before the fuzzed one (default 2): their spread is the machine's own noise, "
                         "printed next to the fuzzed run's difference")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    if args.clean_runs < 1:
        ap.error("--clean-runs must be >= 1")

    with tempfile.TemporaryDirectory() as tmp:
        keys = Path(tmp) / "keys"
        init_keys(keys, ["device", "fuzz"])
        server = armtwin("server", "--keys", str(keys), "--bind", "tcp://127.0.0.1:*", "--pub", "tcp://127.0.0.1:*",
                         "--status-every", "5")
        endpoint = read_key(server, "bind")
        # Read the server's output as it comes (a pipe nobody reads fills up and stalls the writer).
        server_out: list[str] = []
        reader = threading.Thread(target=lambda: server_out.extend(server.stdout or []), daemon=True)
        reader.start()
        cleans: list[dict[str, Any]] = []
        server_cpu: list[float] = []  # server CPU seconds per device run (clean runs, then the fuzzed one)
        for i in range(args.clean_runs):
            c0 = cpu_s(server.pid)
            arm, dev = run_device(keys, endpoint, args.seconds, Path(tmp) / f"clean{i}.json")
            finish(dev, arm, args.seconds)
            server_cpu.append(cpu_s(server.pid) - c0)
            cleans.append(json.loads((Path(tmp) / f"clean{i}.json").read_text()))
        clean = cleans[0]
        rss: list[float] = [rss_mb(server.pid)]
        c0 = cpu_s(server.pid)
        arm, dev = run_device(keys, endpoint, args.seconds, Path(tmp) / "fuzz.json")
        wait_streaming(dev)
        fuzz = Fuzzer(endpoint, keys, args.seed)
        own0 = self_cpu_s()
        start = time.monotonic()
        span = max(args.seconds - 3.0, 1.0)  # finish before the device does
        batch, sent, k, ident_every = 20, 0, 0, max(args.messages // max(args.identities, 1), 1)
        next_rss = start + 1
        try:
            while sent < args.messages:
                n = min(batch, args.messages - sent)
                fuzz.send(n, sent // batch)
                sent += n
                while k < args.identities and k * ident_every < sent:
                    fuzz.identity(k)
                    k += 1
                if sent % 5_000 < batch and not os.environ.get("FUZZ_NO_INTRUDERS"):
                    fuzz.intruders()
                ahead = start + span * sent / args.messages - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pace the campaign over the device's run (a benchmark, not a test)
                if time.monotonic() >= next_rss:
                    rss.append(rss_mb(server.pid))
                    next_rss += 1
            elapsed = time.monotonic() - start
            fuzzer_cpu = self_cpu_s() - own0
        finally:
            fuzz.close()
        finish(dev, arm, args.seconds)
        server_cpu.append(cpu_s(server.pid) - c0)
        load_avg = os.getloadavg()[0]
        rss.append(rss_mb(server.pid))
        alive = server.poll() is None
        server.terminate()
        server.wait(timeout=60)
        reader.join(timeout=10)
        err = server.stderr.read() if server.stderr else ""
        out = "".join(server_out)
        counts = server_counts(out)
        fuzzed = json.loads((Path(tmp) / "fuzz.json").read_text())

    handshake = {k: v for k, v in counts["dropped"].items() if k.startswith("handshake")}
    msg_drops = sum(v for k, v in counts["dropped"].items() if k not in handshake)
    balanced = counts["messages"] == sum(counts["accepted"].values()) + msg_drops
    def rel(a: dict[str, Any], b: dict[str, Any], key: str) -> float:
        return abs(a[key] - b[key]) / b[key]

    d_load, d_mse = rel(fuzzed, clean, "load"), rel(fuzzed, clean, "mse_deg2")
    # The machine's own noise: how far the clean runs are from the first one.
    noise_mse = max((rel(c, clean, "mse_deg2") for c in cleans[1:]), default=float("nan"))
    growth = max(rss) - rss[0]
    print(f"fuzz campaign: {sum(fuzz.sent.values())} messages in {elapsed:.1f} s "
          f"({sum(fuzz.sent.values()) / elapsed:.0f}/s), {k} identities, seed {args.seed}")
    print("  sent by category: " + ", ".join(f"{c}={n}" for c, n in sorted(fuzz.sent.items())))
    print(f"server: alive during the campaign={alive}, exit={server.returncode}, {counts['messages']} messages "
          f"= {sum(counts['accepted'].values())} accepted + {msg_drops} dropped: {'balanced' if balanced else 'NOT'}")
    print("  dropped by reason: " + ", ".join(f"{c}={n}" for c, n in sorted(counts["dropped"].items())))
    print("  accepted by kind: " + ", ".join(f"{c}={n}" for c, n in sorted(counts["accepted"].items())))
    print(f"  RSS MB: start {rss[0]:.1f}, max {max(rss):.1f}, end {rss[-1]:.1f} (growth {growth:.1f})")
    cpus = os.cpu_count() or 1
    print(f"CPU (s per {args.seconds:g} s run, {cpus} cores, load average {load_avg:.1f} at the end): server clean "
          + " / ".join(f"{c:.1f}" for c in server_cpu[:-1]) + f", fuzzed {server_cpu[-1]:.1f}; "
          f"the fuzzer itself {fuzzer_cpu:.1f} in {elapsed:.1f} s")

    def line(name: str, r: dict[str, Any]) -> str:
        return (f"device {name}: load={r['load']:.5f} mse={r['mse_deg2']:.6g} rtt p50/p99="
                f"{r['rtt_p50_ms']:.2f}/{r['rtt_p99_ms']:.2f} ms uplink p50/p99={r['uplink_latency_p50_ms']:.2f}/"
                f"{r['uplink_latency_p99_ms']:.2f} ms frames_lost={r['frames_lost']}")

    for i, c in enumerate(cleans):
        print(line(f"clean{i + 1}", c))
    print(line("fuzz  ", fuzzed))
    print(f"verdict: load {100 * d_load:.2f} % and MSE {100 * d_mse:.2f} % from clean run 1 (target <= "
          f"{100 * args.tolerance:g} %); clean runs differ by up to {100 * noise_mse:.2f} % in MSE among "
          "themselves (the machine's noise)")
    starved = fuzzed["frames_lost"] > max(c["frames_lost"] for c in cleans)
    if starved:  # the pty overflowed: the device process itself got no CPU for ~0.1 s at a time
        print(f"  the fuzzed device run lost {fuzzed['frames_lost']} serial frames (clean runs: "
              f"{max(c['frames_lost'] for c in cleans)}): the device was starved of CPU on this machine, so its MSE "
              "measures the machine's scheduling, not the server")
    ok = (alive and server.returncode == 0 and balanced and d_load <= args.tolerance and d_mse <= args.tolerance
          and growth <= args.max_rss_mb)
    if args.json:
        args.json.write_text(json.dumps({"sent": fuzz.sent, "server": counts, "rss_mb": rss, "clean": cleans,
                                         "fuzz": fuzzed, "server_cpu_s": server_cpu, "fuzzer_cpu_s": fuzzer_cpu,
                                         "load_avg": load_avg, "ok": ok}, indent=1, default=str))
    print("PASS" if ok else "FAIL")
    if err.strip():
        print(f"server stderr: {err.strip()[-500:]}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
