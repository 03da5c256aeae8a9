"""Shared fixtures: a leak check on every test, and helpers to run armtwin processes without fixed sleeps."""

from __future__ import annotations

import contextlib
import os
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from server.twin_server import TwinServer
from twin.security import KEYS_ENV, Security, init_keys
from twin.session import Session, write_session

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def curve_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """CURVE keys for the whole run (server, clients 'device' and 'viewer'), made like `armtwin keys init`.

    ``$ARMTWIN_KEYS`` points at them, so every armtwin process a test starts (server, device, view, demo) runs
    encrypted and authenticated by default, exactly as a user's would; a test of plaintext passes --insecure.
    """
    keys = tmp_path_factory.mktemp("keys") / "keys"
    init_keys(keys, ["device", "viewer"])
    old = os.environ.get(KEYS_ENV)
    os.environ[KEYS_ENV] = str(keys)
    yield keys
    if old is None:
        os.environ.pop(KEYS_ENV, None)
    else:
        os.environ[KEYS_ENV] = old


@pytest.fixture
def server_security(curve_keys: Path) -> Security:
    """The in-process server's CURVE settings (admits the 'device' and 'viewer' keys)."""
    return Security.for_server(curve_keys)


@pytest.fixture
def device_security(curve_keys: Path) -> Security:
    return Security.for_client(curve_keys, "device")


@pytest.fixture
def viewer_security(curve_keys: Path) -> Security:
    return Security.for_client(curve_keys, "viewer")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def leak_check() -> Iterator[None]:
    """Fail a test that leaves a thread or a file descriptor (socket, pty, file) open."""
    threads = {t.ident for t in threading.enumerate()}
    fds = _fds()
    yield
    deadline = time.monotonic() + 5.0
    while True:
        # A _DummyThread is a native library's own thread that once called into Python (the Foxglove SDK's async
        # runtime runs the asset handler on its worker threads, which live as long as the process): not ours to join.
        extra_threads = [t for t in threading.enumerate() if t.ident not in threads and t.is_alive()
                         and not isinstance(t, threading._DummyThread)]
        extra_fds = _fds() - fds
        # An fd number can be reused for something else; only flag fds that still point at sockets/ptys/files.
        extra_fds = {fd for fd in extra_fds if os.path.exists(f"/proc/self/fd/{fd}")}
        if not extra_threads and not extra_fds:
            return
        if time.monotonic() > deadline:
            targets = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in extra_fds
                       if os.path.exists(f"/proc/self/fd/{fd}")}
            pytest.fail(f"leaked threads {[t.name for t in extra_threads]} / fds {targets}")
        threading.Event().wait(0.05)  # joined threads need a moment to disappear from enumerate()


class Proc:
    """An ``armtwin`` subprocess whose stdout is read line by line with deadlines (never a fixed sleep)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        """``preexec_fn`` runs in the child before ``armtwin`` starts (e.g. a kernel resource limit)."""
        self.args = args
        self.p = subprocess.Popen(
            [sys.executable, "-m", "armtwin", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, cwd=REPO, env={**os.environ, **(env or {})}, preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self._buf = b""  # read from stdout, not yet a whole line
        self._sel = selectors.DefaultSelector()
        assert self.p.stdout is not None
        self._sel.register(self.p.stdout, selectors.EVENT_READ)

    def wait_line(self, predicate: str, timeout: float = 20.0, contains: str = "", new: bool = False) -> str:
        """Return the first stdout line starting with ``predicate`` (and holding ``contains``).

        Lines already read are searched first unless ``new`` is set (then only lines read from now on count).
        """
        if not new:
            for seen in self.lines:
                if seen.startswith(predicate) and contains in seen:
                    return seen
        deadline = time.monotonic() + timeout
        while (line := self._readline(deadline)) is not None:
            self.lines.append(line)
            if line.startswith(predicate) and contains in line:
                return line
        err = self.p.stderr.read() if self.p.poll() is not None and self.p.stderr else ""
        raise AssertionError(f"{self.args[0]}: no line starting with {predicate!r}; got {self.lines[-5:]} {err}")

    def _readline(self, deadline: float) -> str | None:
        """The next stdout line, None at EOF or the deadline. Reads the pipe itself: a buffered readline would
        take several lines at once and leave them where the selector cannot see them."""
        assert self.p.stdout is not None
        while b"\n" not in self._buf:
            if not self._sel.select(timeout=max(deadline - time.monotonic(), 0)):
                return None
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode(errors="replace")

    def value(self, key: str, timeout: float = 20.0) -> str:
        return self.wait_line(key + "=", timeout).split("=", 1)[1]

    def finish(self, timeout: float = 60.0) -> tuple[int, str, str]:
        """Wait for the process to end; ``timeout`` guards against a hang (the process is stopped, then it raises)."""
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        self._sel.close()
        rest = self._buf.decode(errors="replace") + out
        return self.p.returncode, "\n".join([*self.lines, ""]) + rest if self.lines else rest, err

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
        with contextlib.suppress(ValueError, subprocess.TimeoutExpired):
            self.p.communicate(timeout=10)
        self._sel.close()


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes started in a test; all stopped at the end whatever happens."""
    started: list[Proc] = []
    yield started
    for p in reversed(started):
        p.stop()


def synthetic_session(seconds: float = 5.0, joints: int = 3, seed: int = 0) -> Session:
    """Smooth multi-sine joint motion at 1 kHz with 1 µs-level timestamp jitter: a stand-in for a recording."""
    rng = np.random.default_rng(seed)
    t_us = np.arange(int(seconds * 1000), dtype=np.int64) * 1000
    t = t_us * 1e-6
    q = np.stack([
        0.5 * np.sin(2 * np.pi * (0.3 + 0.1 * j) * t + j) + 0.1 * np.sin(2 * np.pi * 1.3 * t + rng.uniform(0, 6))
        for j in range(joints)
    ], axis=1)
    return Session(t_us=t_us, q=np.rint(q * 1e6) * 1e-6, joint_names=[f"j{i}" for i in range(joints)],
                   meta={"source": "synthetic test motion", "resampled": False})


def write_results_json(tmp_path: Path) -> Path:
    """A small ``armtwin evaluate`` results.json (static and dead reckoning, ε 0.002, perfect link; one synthetic
    training and one test session written beside it), as the tools that read such files expect."""
    import json

    from device.link_emulation import LinkSpec
    from lab.evaluate import evaluate
    from twin.session import load_session

    files = []
    for i in range(2):
        path = tmp_path / f"s{i}.mcap"
        write_session(path, synthetic_session(3, 3, seed=i))
        files.append(str(path))
    records, _ = evaluate([load_session(files[0])], [load_session(files[1])], [0.002], [LinkSpec()],
                          ["static", "dead-reckoning"])
    res = tmp_path / "results.json"
    res.write_text(json.dumps({"meta": {"test": [files[1]]},
                               "records": [{k: v for k, v in r.items() if k != "window_mse"} for r in records]},
                              default=float))
    return res


@pytest.fixture
def session_file(tmp_path: Path) -> Path:
    path = tmp_path / "synthetic.mcap"
    write_session(path, synthetic_session())
    return path


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    """A ZeroMQ context, terminated after the test (its sockets must be closed by then)."""
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.term()


@pytest.fixture
def serve_in_thread() -> Iterator[Callable[[Any, str], None]]:
    """Runs a server object's ``serve_forever`` on a thread; stops and joins every one after the test."""
    running: list[tuple[Any, threading.Thread]] = []

    def serve(srv: Any, name: str) -> None:
        th = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 10}, name=name)
        th.start()
        running.append((srv, th))

    yield serve
    for srv, th in running:
        srv.stop()
        th.join(timeout=30)
        assert not th.is_alive(), f"{th.name} did not stop"


@pytest.fixture
def start_server(server_security: Security,
                 serve_in_thread: Callable[[Any, str], None]) -> Callable[..., TwinServer]:
    """Starts in-process twin servers on random loopback ports (CURVE with the session keys); stops them after."""

    def start(**kwargs: Any) -> TwinServer:
        options: dict[str, Any] = {"pub": "tcp://127.0.0.1:*", "predictor": "linear", "security": server_security}
        srv = TwinServer("tcp://127.0.0.1:*", **{**options, **kwargs})
        serve_in_thread(srv, "test-twin-server")
        return srv

    return start
