"""What a rendered frame says in text: the arms' colours, the legend that explains them, and the drawing of the
caption (top left), the legend (bottom left) and the labels above the arms (PIL)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

TWIN_RGBA = (0.95, 0.50, 0.10, 1.0)  # the twin (what the server predicts): opaque orange
MEASURED_RGBA = (0.20, 0.45, 0.95, 1.0)  # the measured arm: blue (translucent when it is the ghost)
GHOST_ALPHA = 0.35
BACKGROUND = (255, 255, 255)

# Which arm is which, in words (no colour swatch: a legend must not add arm-coloured pixels to the frame).
# One arm: the twin opaque, the measured arm its translucent ghost (render --layout overlay).
LEGEND_GHOST = ["opaque orange: the twin (the server's prediction)", "translucent blue ghost: the measured arm"]
# The live view's ghost is the newest sample the server received, not the arm now.
LEGEND_VIEW = ["opaque orange: the twin (server's prediction)", "translucent blue ghost: measured, last sample"]
# Two arms next to each other (render --layout side).
LEGEND_SIDE = ["blue: the measured arm (left)", "orange: the twin, the server's prediction (right)"]


def line_height(h: int) -> int:
    """Pixel height of one text line on an image ``h`` pixels high."""
    return max(12, h // 34)


def text_bands(h: int, top_lines: int, bottom_lines: int) -> tuple[float, float]:
    """Fractions of the height taken by ``top_lines`` of text at the top and ``bottom_lines`` at the bottom."""
    lh = line_height(h)
    top = (6 + top_lines * lh) / h if top_lines else 0.0
    bottom = (6 + bottom_lines * lh) / h if bottom_lines else 0.0
    return top, bottom


@functools.cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def draw_overlay(rgb: np.ndarray, caption: Sequence[str], legend: Sequence[str],
                 labels: Sequence[tuple[float, float, Sequence[str]]]) -> np.ndarray:
    """``rgb`` with the caption, the legend and each ``(x, y, lines)`` label (pixels, centred on x, bottom at y;
    kept below the caption and inside the image) drawn on."""
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    font = _font(max(11, h // 40))
    img = Image.fromarray(rgb)
    draw = ImageDraw.Draw(img)
    lh = line_height(h)
    for i, line in enumerate(caption):
        draw.text((8, 6 + i * lh), line, fill=(0, 0, 0), font=font)
    for i, line in enumerate(legend):
        draw.text((8, h - 6 - (len(legend) - i) * lh), line, fill=(0, 0, 0), font=font)
    for x, y_bottom, lines in labels:
        y = max(y_bottom - lh * len(lines), 10 + len(caption) * lh)
        for i, line in enumerate(lines):
            tw = draw.textlength(line, font=font)
            draw.text((int(min(max(x - tw / 2, 4), w - tw - 4)), int(y + i * lh)), line, fill=(0, 0, 0), font=font)
    return np.asarray(img)
