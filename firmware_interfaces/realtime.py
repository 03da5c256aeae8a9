"""Real-time scheduling for the threads that must keep pace with a 1 kHz serial stream.

A pty (and a USB-serial driver) buffers about 4 KB: ~95 frames of a 7-joint arm, ~95 ms. A reader thread that the
host's scheduler leaves off the CPU for longer than that loses frames, and on a busy controller (or a 2-core box
running a test suite and a training job) ordinary time-sharing does exactly that. Under ``SCHED_FIFO`` the thread
runs as soon as bytes arrive, before any ordinary process; it blocks on ``read`` the rest of the time, so it cannot
starve the machine. Firmware runs on its own microcontroller and is never preempted by the host's load, so the mock
arm's streaming thread asks for the same class. Real-time scheduling needs root or CAP_SYS_NICE (or an
``rtprio`` limit in /etc/security/limits.conf); without it the thread stays as it was and says why.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Modest: above every time-shared process, below the kernel's own real-time threads and the usual priorities of
# audio or control loops (ros2_control suggests 50) that a controller may also run.
DEFAULT_PRIORITY = 20
ENV_OFF = "ARMTWIN_NO_REALTIME"  # set (to anything) to leave the threads time-shared


@contextlib.contextmanager
def realtime(priority: int = DEFAULT_PRIORITY) -> Iterator[str]:
    """Run the body with the calling thread under ``SCHED_FIFO`` at ``priority``, then restore its old class.

    Yields what the thread got, for status lines and summaries: ``"SCHED_FIFO 20"``, or ``"off: <reason>"``.
    (Restoring matters when the caller is a long-lived thread, e.g. a test process streaming a mock arm.)
    """
    if os.environ.get(ENV_OFF):
        yield f"off: {ENV_OFF} is set"
        return
    if not hasattr(os, "sched_setscheduler"):
        yield "off: this platform has no sched_setscheduler"
        return
    # pid 0 is the calling thread on Linux: only this thread changes class, not the process.
    old_policy, old_param = os.sched_getscheduler(0), os.sched_getparam(0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except PermissionError:
        yield "off: not permitted (needs root, CAP_SYS_NICE or an rtprio limit)"
        return
    except OSError as exc:
        yield f"off: {exc}"
        return
    try:
        yield f"SCHED_FIFO {priority}"
    finally:
        os.sched_setscheduler(0, old_policy, old_param)
