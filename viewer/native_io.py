"""Process-level output plumbing for C extensions (PyBullet's window prints on fds 1 and 2 behind Python's back)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


def fflush_c_stdio() -> None:
    """Flush C stdio buffers (what a C extension printed) before an fd is redirected or restored."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Send what C code writes on fds 1 and 2 to /dev/null (PyBullet's OpenGL/thread chatter in GUI mode) while
    Python's ``sys.stdout``/``sys.stderr`` keep writing to the real streams through duplicated fds."""
    old = (sys.stdout, sys.stderr)
    for stream in old:
        stream.flush()
    fflush_c_stdio()
    saved, devnull = (os.dup(1), os.dup(2)), os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdout, sys.stderr = (open(fd, "w", buffering=1, closefd=False, encoding=st.encoding or "utf-8",  # noqa: SIM115
                                   errors="replace") for fd, st in zip(saved, old, strict=True))
    try:
        yield
    finally:
        sys.stdout.close()
        sys.stderr.close()
        sys.stdout, sys.stderr = old
        fflush_c_stdio()
        for fd, orig in zip((1, 2), saved, strict=True):
            os.dup2(orig, fd)
            os.close(orig)
