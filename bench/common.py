"""What every part of ``armtwin bench`` shares: child processes read line by line, CPU and RSS from /proc,
medians, the printed table and the JSON file.

A figure is a median over repeats (``median``); a part returns rows (dicts) under a title, ``print_table`` prints
them and ``write_json`` writes every part's rows with the run's settings.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[1]
SESSION = REPO / "data" / "sessions" / "default.mcap"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NAN = float("nan")


def median(values: Iterable[float]) -> float:
    """Median of the finite values (NaN when there is none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.median(vals) if vals else NAN


def percentiles_ms(us: Sequence[float]) -> tuple[float, float]:
    """p50 and p99 of latencies given in µs, in ms."""
    import numpy as np

    if not len(us):
        return NAN, NAN
    a = np.asarray(us, dtype=np.float64) / 1000
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


# -- /proc ------------------------------------------------------------------------------------------------------
def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14 and 15 of stat(5))


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (e.g. a server's worker processes)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return out


def tree_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid`` and its children (a server with worker processes counts whole)."""
    total = 0.0
    for p in [pid, *children(pid)]:
        try:
            total += cpu_s(p)
        except OSError:
            continue
    return total


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MB (NaN once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return NAN


def load_average() -> float:
    """The machine's 1-minute load average (other jobs share these cores: the figures say how busy it was)."""
    return os.getloadavg()[0]


class CpuWindow:
    """CPU % of one core used by some processes between ``start()`` and ``stop()`` (wall clock)."""

    def __init__(self, read: Callable[[], float]) -> None:
        self.read = read
        self._cpu0 = self._t0 = 0.0

    def start(self) -> None:
        self._cpu0, self._t0 = self.read(), time.monotonic()

    def stop(self) -> float:
        cpu, t = self.read(), time.monotonic()
        return 100.0 * (cpu - self._cpu0) / max(t - self._t0, 1e-9)


# -- child processes --------------------------------------------------------------------------------------------
class Child:
    """An ``armtwin`` process; a thread reads its stdout into ``lines`` (a pipe nobody reads would stall it) and
    its stderr goes to a file (shown when it fails). ``wait_line`` waits on a condition, never a fixed sleep."""

    def __init__(self, args: list[str], logdir: Path, name: str) -> None:
        from armtwin.demo import spawn

        self.name = name
        self.err_path = logdir / f"{name}.stderr"
        self._err: IO[str] = open(self.err_path, "w")  # noqa: SIM115 (closed in stop)
        self.p = spawn(args, stderr=self._err)
        self.pid = self.p.pid
        self.lines: list[tuple[float, str]] = []  # (monotonic time read, line)
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._read, name=f"bench-{name}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            with self._cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, match: Callable[[str], bool], timeout: float = 30.0, start: int = 0) -> int:
        """Index of the first line from ``start`` on that ``match``es; RuntimeError at EOF or timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            i = start
            while True:
                while i < len(self.lines):
                    if match(self.lines[i][1]):
                        return i
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(left)
        why = "exited" if self._eof else f"gave no such line within {timeout:g} s"
        raise RuntimeError(f"{self.name} {why}; last lines: {[ln for _, ln in self.lines[-3:]]}; "
                           f"stderr: {self.stderr_tail()}")

    def value(self, key: str, timeout: float = 30.0) -> str:
        """The value of the child's ``key=value`` line (servers and mock arms print these first)."""
        i = self.wait_line(lambda ln: ln.startswith(key + "="), timeout)
        return self.lines[i][1].split("=", 1)[1].strip()

    def stderr_tail(self, n: int = 600) -> str:
        if not self._err.closed:
            self._err.flush()
        try:
            return self.err_path.read_text()[-n:].strip()
        except OSError:
            return ""

    def wait(self, timeout: float) -> int:
        """Wait for the child to end by itself; its exit code."""
        rc = self.p.wait(timeout=timeout)
        self._thread.join(timeout=10)
        return rc

    def stop(self, timeout: float = 10.0) -> int | None:
        """Stop it (SIGTERM, then SIGKILL after ``timeout`` s) if still running; its last lines are read to the end
        (a server prints its summary as it exits) before the pipes close."""
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self._thread.join(timeout=10)
        if self.p.stdout is not None:
            self.p.stdout.close()
        self._err.close()
        return self.p.returncode


@dataclass
class Lab:
    """A temporary directory with CURVE keys (server + clients), where each part puts its logs and files."""

    root: Path
    keys: Path
    clients: tuple[str, ...] = ("device", "viewer", "bench")
    procs: list[Child] = field(default_factory=list)

    @classmethod
    def make(cls, root: Path) -> Lab:
        from twin.security import init_keys

        keys = root / "keys"
        lab = cls(root, keys)
        init_keys(keys, list(lab.clients))
        return lab

    def start(self, args: list[str], name: str) -> Child:
        child = Child(args, self.root, name)
        self.procs.append(child)
        return child

    def stop_all(self) -> None:
        for c in reversed(self.procs):
            c.stop()
        self.procs.clear()

    def server(self, name: str = "server", extra: Sequence[str] = ()) -> tuple[Child, str]:
        """A real ``armtwin server`` on random loopback ports, CURVE; (process, its ROUTER endpoint)."""
        srv = self.start(["server", "--keys", str(self.keys), "--bind", "tcp://127.0.0.1:*", "--pub",
                          "tcp://127.0.0.1:*", "--status-every", "3600", *extra], name)
        return srv, srv.value("bind")


def temp_lab() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="armtwin-bench-")


# -- output -----------------------------------------------------------------------------------------------------
@dataclass
class Part:
    """One part's result: a title, column names, rows (dicts) and notes that say how it was measured."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else str(v)
        a = abs(v)
        return f"{v:.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.2f}" if a >= 1 else f"{v:.3g}"
    return str(v)


def table(part: Part) -> str:
    """The part as an aligned text table with its notes below."""
    cells = [part.columns] + [[fmt(r.get(c, "")) for c in part.columns] for r in part.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(part.columns))]
    lines = [f"== {part.title}"]
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if n and i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                    strict=True))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += [f"   {note}" for note in part.notes]
    return "\n".join(lines)


def print_table(part: Part) -> None:
    print(table(part), flush=True)
    print(flush=True)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "load_1min_at_start": load_average()}


def write_json(path: Path, parts: list[Part], settings: dict[str, Any]) -> None:
    """Every part's rows and notes, the settings and the machine, as JSON (NaN written as null)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        return v

    doc = {"settings": settings, "machine": machine(),
           "parts": {p.name: {"title": p.title, "columns": p.columns, "rows": p.rows, "notes": p.notes}
                     for p in parts}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean(doc), indent=1) + "\n")


def run_quiet(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A helper process run to completion (output captured); RuntimeError with its stderr if it fails."""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                       env={**os.environ, **(env or {})}, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {r.returncode}: {r.stderr.strip()[-800:]}")
    return r
