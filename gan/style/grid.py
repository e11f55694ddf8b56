"""A labelled PNG of an image grid (the style-mixing grid of :func:`gan.style.style_mix`).

Layout, in pixels, for a grid of ``(rows + 1) x (cols + 1)`` cells of ``H x W`` (white background):

* a title band of :data:`TITLE_LINES` lines of :data:`LINE` pixels at the top (the title, word-wrapped, cut with
  "..." when longer), then one line of column labels;
* a left band :data:`LABEL_WIDTH` wide for the row labels;
* cell ``(i, j)`` with its top-left corner at ``x = LABEL_WIDTH + j * (W + GAP)``,
  ``y = (TITLE_LINES + 1) * LINE + i * (H + GAP)``, and :data:`PAD` white pixels right and below the last cell;
* so the PNG is ``LABEL_WIDTH + (cols + 1) * W + cols * GAP + PAD`` wide and
  ``(TITLE_LINES + 1) * LINE + (rows + 1) * H + rows * GAP + PAD`` high.

Column label ``j`` names cell column ``j + 1`` and row label ``i`` cell row ``i + 1`` (the margins hold the seeds'
own images). Cells hold the images quantised by :func:`gan.style.sampling.to_uint8` (grey images repeated to RGB),
so each cell equals the tensor after quantisation. The PNG and its provenance sidecar (``<stem>.json``) are written
atomically by :func:`data.provenance.write_png`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from data.provenance import write_png
from gan.style.sampling import to_uint8

#: White pixels between neighbouring cells.
GAP = 2
#: White border right of and below the last cells.
PAD = 4
#: Width of the left band that holds the row labels.
LABEL_WIDTH = 48
#: Height of one line of text.
LINE = 14
#: Lines of the title band.
TITLE_LINES = 2

__all__ = ["GAP", "LABEL_WIDTH", "LINE", "PAD", "TITLE_LINES", "grid_image", "save_grid"]


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font: Any) -> str:
    """``text`` cut (with "...") to at most ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, lines: int, font: Any) -> list[str]:
    """Greedy word wrap of ``text`` into at most ``lines`` lines of ``width`` pixels (the last one cut)."""
    out: list[str] = []
    words = text.split()
    while words and len(out) < lines:
        line = words.pop(0)
        while words and draw.textlength(f"{line} {words[0]}", font=font) <= width:
            line = f"{line} {words.pop(0)}"
        if len(out) == lines - 1 and words:
            line = f"{line} {' '.join(words)}"
            words = []
        out.append(_fit(draw, line, width, font))
    return out


def grid_image(
    grid: Tensor,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
) -> np.ndarray:
    """The labelled grid as a uint8 (height, width, 3) array (layout in the module docstring).

    Args:
        grid: (rows + 1, cols + 1, C, H, W) images in [-1, 1], C = 1 or 3.
        row_labels: ``rows`` labels, for cell rows 1..rows.
        col_labels: ``cols`` labels, for cell columns 1..cols.
        title: text of the title band.

    Raises:
        ValueError: a grid of another shape, or label counts that do not match it.
    """
    if grid.ndim != 5 or grid.shape[2] not in (1, 3):
        raise ValueError(f"grid must be (rows + 1, cols + 1, 1 or 3, H, W), got {tuple(grid.shape)}")
    n_rows, n_cols, _, h, w = (int(s) for s in grid.shape)
    if len(row_labels) != n_rows - 1 or len(col_labels) != n_cols - 1:
        raise ValueError(f"need {n_rows - 1} row labels and {n_cols - 1} column labels, got {len(row_labels)} and "
                         f"{len(col_labels)}")
    cells = to_uint8(grid)  # (rows + 1, cols + 1, H, W, C)
    if cells.shape[-1] == 1:
        cells = np.repeat(cells, 3, axis=-1)
    top = (TITLE_LINES + 1) * LINE
    width = LABEL_WIDTH + n_cols * w + (n_cols - 1) * GAP + PAD
    height = top + n_rows * h + (n_rows - 1) * GAP + PAD
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    for i in range(n_rows):
        for j in range(n_cols):
            y, x = top + i * (h + GAP), LABEL_WIDTH + j * (w + GAP)
            canvas[y : y + h, x : x + w] = cells[i, j]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    black = (0, 0, 0)
    for k, line in enumerate(_wrap(draw, title, width - 2 * PAD, TITLE_LINES, font)):
        draw.text((PAD, k * LINE + 1), line, fill=black, font=font)
    for j, text in enumerate(col_labels, start=1):
        draw.text((LABEL_WIDTH + j * (w + GAP), TITLE_LINES * LINE + 1), _fit(draw, str(text), w + GAP, font),
                  fill=black, font=font)
    for i, text in enumerate(row_labels, start=1):
        y = top + i * (h + GAP) + max(0, (h - LINE) // 2)
        draw.text((PAD, y), _fit(draw, str(text), LABEL_WIDTH - 2 * PAD, font), fill=black, font=font)
    return np.asarray(image).copy()


def save_grid(
    grid: Tensor,
    path: str | Path,
    *,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    provenance: dict[str, Any] | None = None,
) -> Path:
    """Write the labelled grid PNG (:func:`grid_image`) and its provenance sidecar ``<stem>.json``, atomically.

    Overwrites existing files: callers apply the overwrite policy (:func:`data.files.check_overwrite`) first.

    Args:
        grid: (rows + 1, cols + 1, C, H, W) images in [-1, 1].
        path: the ``.png`` file.
        row_labels: labels of cell rows 1..rows (e.g. the row seeds).
        col_labels: labels of cell columns 1..cols (e.g. the column seeds).
        title: the title (e.g. which layers come from the rows).
        provenance: what made the grid (checkpoint sha256, seeds, layers, label, psi, noise mode), stored in the
            sidecar.
    """
    image = grid_image(grid, row_labels=row_labels, col_labels=col_labels, title=title)
    return write_png(image, path, provenance=provenance)
