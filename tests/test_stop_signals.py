"""A storm of SIGINT/SIGTERM stops a process; it never deadlocks in its own signal handler (twin/stop_signals.py).

A handler that set a ``threading.Event`` deadlocked when a signal landed while the main thread (or an earlier
handler) held the Event's lock: a server worker whose front was killed stayed alive for ever.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import zmq

from server.shard_link import FINAL, STATS, records

REPO = Path(__file__).resolve().parents[1]

# A main loop that sleeps in a system call and checks the flag, as the server's and the worker's do. With a handler
# that sets the Event itself (the code before twin/stop_signals.py), 2 of 6 storms deadlocked it: a signal inside
# the previous handler's set (measured once, with this CHILD's loop and the old handler).
CHILD = textwrap.dedent("""
    import signal, threading, time
    from twin.stop_signals import stop_on_signals
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # restored after the block: the rest of the storm is ignored
    stop = threading.Event()
    with stop_on_signals(stop.set):
        print("ready", flush=True)
        while not stop.is_set():
            time.sleep(0.01)
    print("stopped", flush=True)
""")


def _storm(pid: int, n: int = 3000, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> None:
    for i in range(n):
        try:
            os.kill(pid, signals[i % len(signals)])
        except ProcessLookupError:  # it already stopped
            return


def test_a_storm_of_signals_stops_a_sleeping_main_loop() -> None:
    p = subprocess.Popen([sys.executable, "-c", CHILD], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        _storm(p.pid)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 0 and out == "stopped\n", (p.returncode, out, err)


def test_the_handlers_are_restored_and_the_helper_thread_ends() -> None:
    from twin.stop_signals import stop_on_signals

    before = signal.getsignal(signal.SIGTERM)
    calls: list[int] = []
    with stop_on_signals(lambda: calls.append(1)):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
    assert calls == []  # the leak check (conftest) proves the thread and the pipe are gone


def test_a_server_worker_hit_by_a_storm_of_sigterms_exits_with_its_final_counters(tmp_path: Path) -> None:
    ctx: zmq.Context[bytes] = zmq.Context()
    front = ctx.socket(zmq.PULL)
    front.setsockopt(zmq.LINGER, 0)
    front.bind(f"ipc://{tmp_path}/front")
    p = subprocess.Popen([sys.executable, "-m", "server.worker", "--index", "0", "--listen", f"ipc://{tmp_path}/w0",
                          "--front", f"ipc://{tmp_path}/front", "--parent", str(os.getpid()), "--predictor",
                          "linear", "--max-sessions", "8", "--idle-s", "30", "--status-every", "10"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert front.poll(60_000), "the worker never said it was ready"
        assert [k for k, _, _ in records(front.recv())] == [STATS]
        _storm(p.pid, signals=(signal.SIGTERM,))  # what the parent-death signal sends
        _, err = p.communicate(timeout=60)
        # 0, or killed by a SIGTERM of the storm that came after its handlers were restored, on its way out
        assert p.returncode in (0, -signal.SIGTERM), err
        kinds: list[int] = []
        while front.poll(0):
            kinds += [k for k, _, _ in records(front.recv())]
        assert FINAL in kinds  # it stopped through its loop's own exit, counters flushed
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        front.close()
        ctx.term()
