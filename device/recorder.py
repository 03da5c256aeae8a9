"""The session recorder: finalized blocks go to the MCAP file from a background thread."""

from __future__ import annotations

import queue
import threading
from typing import Any

from twin.session import SessionWriter


class Recorder:
    """Writes finalized blocks to the session file from a background thread: the device loop never waits on disk."""

    def __init__(self, writer: SessionWriter) -> None:
        self.writer = writer
        self._q: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()
        self.error: str | None = None

    def block(self, *arrays: Any) -> None:
        self._q.put(("block", arrays))

    def status(self, t_us: int, status: dict[str, Any]) -> None:
        self._q.put(("status", (t_us, status)))

    def timing(self, t_us: int, timing: dict[str, Any]) -> None:
        self._q.put(("timing", (t_us, timing)))

    def close(self, summary: dict[str, Any]) -> None:
        self._q.put(("close", summary))
        self._thread.join()

    def _run(self) -> None:
        import time

        last_flush = time.monotonic()
        while True:
            kind, payload = self._q.get()
            try:
                if kind == "block":
                    self.writer.write_block(*payload)
                elif kind == "status":
                    self.writer.write_status(*payload)
                elif kind == "timing":
                    self.writer.write_timing(*payload)
                else:
                    self.writer.close(payload)
                    return
                if time.monotonic() - last_flush > 1.0:
                    self.writer.flush()
                    last_flush = time.monotonic()
            except OSError as exc:  # disk full etc.: keep the device running, report it
                self.error = f"recording failed: {exc}"
                if kind == "close":
                    return
