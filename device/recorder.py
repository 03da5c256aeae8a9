"""The session recorder: finalized blocks go to the MCAP file from a background thread.

The device loop never waits on disk, and nothing the recorder meets stops the loop: the queue is bounded (a stalled
disk drops blocks, counted, instead of growing memory), every exception in the thread is caught, and the first
failure stops the recording loudly (stderr at once, the status line and the summary) while the file is still
given its footer if the disk lets it. ``report()`` says how much was kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from device.stages import StageClock, now_ns
from twin.paths import OutputPathError
from twin.session import SessionWriter

MAX_QUEUED = 600  # blocks waiting for the disk: 60 s of 100 ms blocks
FLUSH_EVERY_S = 1.0


def _span_s(first_t_us: int | None, last_t_us: int | None) -> float:
    """Seconds of device time from the first to the last sample kept, one sample period included."""
    if first_t_us is None or last_t_us is None:
        return 0.0
    return (last_t_us - first_t_us + 1000) / 1e6


def check_writable(path: Path) -> None:
    """Fail at start, not at the first sample, when the recording cannot be written (``OutputPathError``)."""
    existed = path.exists()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError as exc:
        raise OutputPathError(f"cannot write the recording {path}: {exc.strerror}; give a writable --record "
                              "path") from None
    os.close(fd)
    if not existed:
        with contextlib.suppress(OSError):
            os.unlink(path)


class Recorder:
    """Writes finalized blocks to the session file from a background thread: the device loop never waits on disk."""

    def __init__(self, writer: SessionWriter, max_queued: int = MAX_QUEUED, err: TextIO | None = None,
                 stages: StageClock | None = None) -> None:
        self.writer = writer
        self.stages = stages or StageClock()  # "record": time spent writing (this thread)
        self._err = err
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=max_queued)
        self._close_q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)  # never refused, even when full
        self.error: str | None = None
        self.samples_dropped = 0  # samples measured but not in the file (after a failure, or queue full)
        self.blocks_dropped = 0
        self._kept: tuple[int, float] | None = None  # (samples, seconds) the file holds, once it has failed
        self._count = threading.Lock()  # both threads count drops
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    @property
    def failed(self) -> bool:
        return self.error is not None

    def block(self, *arrays: Any) -> None:
        if self.error is not None:
            self._dropped(len(arrays[0]))
            return
        try:
            self._q.put_nowait(("block", arrays))
        except queue.Full:  # the disk is not keeping up: drop, count, say so once
            self.blocks_dropped += 1
            self._dropped(len(arrays[0]))
            if self.blocks_dropped == 1:
                self._say(f"warning: recording to {self.writer.path} is {self._q.maxsize} blocks behind (a slow or "
                          "stalled disk): dropping blocks, counted in the summary")

    def status(self, t_us: int, status: dict[str, Any]) -> None:
        if self.error is None:
            with contextlib.suppress(queue.Full):
                self._q.put_nowait(("status", (t_us, status)))

    def timing(self, t_us: int, timing: dict[str, Any]) -> None:
        if self.error is None:
            with contextlib.suppress(queue.Full):
                self._q.put_nowait(("timing", (t_us, timing)))

    def close(self, summary: dict[str, Any]) -> None:
        self._close_q.put(summary)
        with contextlib.suppress(queue.Full):
            self._q.put_nowait(("wake", None))
        self._thread.join()

    def report(self) -> dict[str, Any]:
        """What the file holds: samples kept (and the seconds of device time they span) and dropped, and the
        error that stopped it (None if none). After a failure the kept figures are what a reader finds in the
        file, not what was handed to the writer."""
        w = self.writer
        if self._kept is not None:
            kept, kept_s = self._kept
        else:
            kept = w.samples_written
            kept_s = _span_s(w.first_t_us, w.last_t_us)
        return {"path": str(w.path), "samples_kept": kept, "seconds_kept": kept_s,
                "samples_dropped": self.samples_dropped, "blocks_dropped": self.blocks_dropped, "error": self.error}

    def _dropped(self, n: int) -> None:
        with self._count:
            self.samples_dropped += n

    def _say(self, line: str) -> None:
        print(line, file=self._err or sys.stderr, flush=True)

    def _fail(self, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            name = errno.errorcode.get(exc.errno) if exc.errno is not None else None
            code = f" ({name})" if name else ""
            self.error = f"recording failed: {exc}{code}"
        else:
            self.error = f"recording failed: {type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # a footer if the disk takes it: the file stays indexed
            self.writer.close()
        # What is really in the file: the writer's chunk in progress (and a chunk cut by the disk) is not.
        kept, last_t = self.writer.on_disk()
        self._kept = (kept, _span_s(self.writer.first_t_us, last_t) if kept else 0.0)
        self._dropped(self.writer.samples_written - kept)
        self._say(f"error: {self.error} writing {self.writer.path}; recording STOPPED with {kept} samples "
                  f"({self._kept[1]:.1f} s) kept in {self.writer.path} (readable: `armtwin info`, `armtwin recover`);"
                  " the device keeps running")

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                kind, payload = self._q.get(timeout=0.5)
            except queue.Empty:
                kind, payload = "wake", None
            if self.error is not None:
                if kind == "block":
                    self._dropped(len(payload[0]))
            else:
                written = self.writer.samples_written
                try:
                    t_ns = now_ns()
                    if kind == "block":
                        self.writer.write_block(*payload)
                    elif kind == "status":
                        self.writer.write_status(*payload)
                    elif kind == "timing":
                        self.writer.write_timing(*payload)
                    if time.monotonic() - last_flush > FLUSH_EVERY_S:
                        self.writer.flush()
                        last_flush = time.monotonic()
                    self.stages.ns["record"] += now_ns() - t_ns
                except Exception as exc:  # disk full, a bug, anything: the device loop must go on
                    if kind == "block" and self.writer.samples_written == written:  # else _fail counts it
                        self._dropped(len(payload[0]))
                    self._fail(exc)
            if not self._close_q.empty() and self._q.empty():
                summary = self._close_q.get()
                if self.error is None:
                    try:
                        self.writer.close(summary)
                    except Exception as exc:
                        self._fail(exc)
                return
