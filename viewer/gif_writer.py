"""An animated GIF written frame by frame, so a render's memory does not grow with its length.

imageio's GIF writers cannot stream here: its pillow plugin queues every frame until ``close`` (Pillow's
``save_all`` needs them all to merge and diff), and its legacy streaming GIF writer refuses Pillow >= 10.1. This
writer keeps one frame: each new frame is reduced to the rectangle that changed, quantised to its own 256-colour
palette (a local colour table) and written at once with Pillow's GIF encoder (``getheader``/``getdata``).
"""

from __future__ import annotations

import os
from typing import IO

import numpy as np


class GifWriter:
    """``append_data(rgb)`` / ``close()`` like an imageio writer; ``duration_ms`` per frame (GIF stores 1/100 s),
    ``loop`` 0 = forever. Every appended frame is one GIF frame (an unchanged one is a 1-pixel update), so the
    frame count and timing are exactly what was appended."""

    def __init__(self, path: str | os.PathLike[str], duration_ms: int, loop: int = 0) -> None:
        self.duration_ms, self.loop = int(duration_ms), int(loop)
        self.frames = 0
        self._prev: np.ndarray | None = None
        self._fh: IO[bytes] | None = open(path, "wb")  # noqa: SIM115 - closed in close()

    def append_data(self, frame: np.ndarray) -> None:
        from PIL import GifImagePlugin, Image

        assert self._fh is not None, "append_data after close"
        rgb = np.ascontiguousarray(np.asarray(frame)[..., :3], dtype=np.uint8)
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = 0, 0, w, h
        if self._prev is not None:
            if self._prev.shape != rgb.shape:
                raise ValueError(f"frame {self.frames} is {w}x{h}, the GIF is {self._prev.shape[1]}x"
                                 f"{self._prev.shape[0]}")
            changed = (rgb != self._prev).any(axis=2)
            rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
            # Only the changed rectangle is stored (the rest stays: disposal 1); nothing changed -> one pixel.
            x0, y0, x1, y1 = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) if rows.size \
                else (0, 0, 1, 1)
        im = Image.fromarray(rgb[y0:y1, x0:x1]).convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
        if self._prev is None:
            header, _ = GifImagePlugin.getheader(im, info={"loop": self.loop, "duration": self.duration_ms})
            self._fh.write(b"".join(header))
        for chunk in GifImagePlugin.getdata(im, offset=(x0, y0), duration=self.duration_ms, disposal=1,
                                            include_color_table=True):
            self._fh.write(chunk)
        self._prev = rgb
        self.frames += 1

    def close(self) -> None:
        if self._fh is None:
            return
        try:
            if self.frames:
                self._fh.write(b";")  # GIF trailer
        finally:
            self._fh.close()
            self._fh = None
