"""Constants and reference readers shared by the slide tests (independent of the code under test)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import openslide
import torch

W, H = 2048, 1536
TS = 128  # tile size used in these tests (keeps slides small but tiles plentiful)


def pixels(item) -> np.ndarray:
    """Item image back to uint8 HxWx3."""
    return torch.round((item["image"] + 1.0) * 127.5).to(torch.uint8).permute(1, 2, 0).numpy()


def read(path, loc, level, size) -> np.ndarray:
    """OpenSlide's own ``read_region`` as an RGB array."""
    with openslide.OpenSlide(str(path)) as s:
        return np.asarray(s.read_region(loc, level, (size, size)).convert("RGB"))


def regions(path) -> list[tuple[str, int, int, int, int]]:
    """The phantom's region manifest read with the csv module."""
    with open(Path(path).with_name(Path(path).stem + ".regions.csv"), newline="") as f:
        return [(r["label"], int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"])) for r in csv.DictReader(f)]


def overlap(x, y, size, box) -> float:
    """Fraction of the square tile (x, y, size) covered by a region box."""
    _, bx, by, bw, bh = box
    ox = max(0, min(x + size, bx + bw) - max(x, bx))
    oy = max(0, min(y + size, by + bh) - max(y, by))
    return ox * oy / size**2
