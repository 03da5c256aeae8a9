"""Ctrl-C and SIGTERM as a stop request that cannot deadlock the process that receives them.

A Python signal handler runs in the main thread between two bytecodes, possibly in the middle of code that holds
a lock. A handler that calls ``threading.Event.set`` takes the Event's (non-reentrant) lock: when the signal lands
while the main thread is inside that Event's ``set`` or ``wait`` — or while an earlier handler is, because a second
signal arrived — the handler waits for a lock its own thread holds, for ever. (A server worker did exactly that
when its parent died: the SIGTERM landed in the handler of another, and the worker never exited.)

Here the handler only writes one byte to a pipe, a system call with no lock; a small thread reads the pipe and
makes the stop request from outside the signal context, where waiting for a lock is harmless.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator

_STOP, _QUIT = b"s", b"q"


@contextlib.contextmanager
def stop_on_signals(request_stop: Callable[[], None],
                    signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Within the body, each of ``signals`` calls ``request_stop`` (from a helper thread, never in the handler).

    Must be entered from the main thread (only it may install handlers). On exit the previous handlers are back,
    the helper thread has ended and the pipe is closed.
    """
    r, w = os.pipe()
    os.set_blocking(w, False)  # a storm of signals fills the pipe: the extra bytes are not needed

    def handler(signum: int, frame: object) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(w, _STOP)

    def relay() -> None:
        while True:
            data = os.read(r, 64)
            if not data or _QUIT in data:
                return
            request_stop()

    thread = threading.Thread(target=relay, name="stop-on-signal", daemon=True)
    thread.start()
    old = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)
        os.set_blocking(w, True)  # the quit byte must get through even if signals filled the pipe
        os.write(w, _QUIT)
        thread.join()
        os.close(r)
        os.close(w)
