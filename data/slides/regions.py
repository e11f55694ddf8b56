"""Class regions of slides: rectangles in level-0 pixels from CSV manifests, and the labels of tiles.

A manifest has the columns ``slide, label, x, y, width, height`` (default: ``<stem>.regions.csv`` beside each
slide). A tile takes a class when the regions of that class cover at least ``min_region_overlap`` of it. A tile
with at least ``min_region_overlap`` of its area outside every region is unlabelled and gets the class ``OTHER``
("other"): kept when ``class_names`` is None (then the classes are the sorted region labels followed by
"other") or when "other" is among ``class_names``, dropped otherwise. A class wins over "other" when both
apply; a tile that is neither (e.g. 30% tumour, 30% lymphocytes, 40% unannotated at 0.5) is ambiguous
and dropped.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from data.errors import SlideError
from data.files import atomic_write_text
from data.slides.grid import TileSpec

__all__ = [
    "OTHER",
    "REGION_COLUMNS",
    "Region",
    "discover_classes",
    "label_tiles",
    "manifest_path_for",
    "read_regions",
    "regions_for_slides",
    "write_regions",
]

#: Class of tiles outside every annotated region.
OTHER = "other"
#: Columns of a region manifest, in order.
REGION_COLUMNS = ("slide", "label", "x", "y", "width", "height")


@dataclass(frozen=True)
class Region:
    """A labelled rectangle of a slide, in level-0 pixels.

    Args:
        slide: slide file name (or stem) the region belongs to.
        label: class name.
        x: left edge.
        y: top edge.
        width: width (> 0).
        height: height (> 0).
    """

    slide: str
    label: str
    x: int
    y: int
    width: int
    height: int


def manifest_path_for(slide: str | Path) -> Path:
    """Default region manifest of a slide: ``<stem>.regions.csv`` beside it.

    Args:
        slide: slide path.
    """
    p = Path(slide)
    return p.with_name(f"{p.stem}.regions.csv")


def write_regions(path: str | Path, regions: Sequence[Region]) -> Path:
    """Write a region manifest (CSV with ``REGION_COLUMNS``) atomically.

    Args:
        path: destination CSV.
        regions: rows to write.
    """
    lines = [",".join(REGION_COLUMNS)]
    for r in regions:
        for text in (r.slide, r.label):
            if any(c in text for c in ',"\n\r'):
                raise ValueError(f"{path}: region field {text!r} contains a comma, quote or newline")
        lines.append(f"{r.slide},{r.label},{r.x},{r.y},{r.width},{r.height}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_regions(path: str | Path) -> list[Region]:
    """Read a region manifest written by :func:`write_regions` (or by hand).

    Args:
        path: CSV with header ``slide,label,x,y,width,height``.

    Raises:
        SlideError: naming the file (and row) when it is missing, lacks columns, or holds a bad value.
    """
    p = Path(path)
    if not p.is_file():
        raise SlideError(p, "region manifest not found")
    with open(p, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REGION_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise SlideError(p, f"region manifest lacks column(s) {missing}; expected {list(REGION_COLUMNS)}")
        out = []
        for row_no, row in enumerate(reader, start=2):
            try:
                x, y, w, h = (int(float(row[k])) for k in ("x", "y", "width", "height"))
            except (TypeError, ValueError) as e:
                raise SlideError(p, f"row {row_no}: x, y, width, height must be integers ({e})") from e
            if w <= 0 or h <= 0:
                raise SlideError(p, f"row {row_no}: width and height must be > 0, got {w}x{h}")
            slide, label = (row["slide"] or "").strip(), (row["label"] or "").strip()
            if not slide or not label:
                raise SlideError(p, f"row {row_no}: empty slide or label")
            out.append(Region(slide=slide, label=label, x=x, y=y, width=w, height=h))
    return out


def _matches(region_slide: str, slide: Path) -> bool:
    return region_slide in (slide.name, slide.stem, str(slide))


def regions_for_slides(
    slides: Sequence[Path], regions: str | Path | Sequence[str | Path] | None
) -> dict[Path, list[Region]]:
    """Regions of each slide: from the given manifests (rows matched by slide name), or the default manifest.

    Args:
        slides: slide paths.
        regions: one manifest, several, or None for ``manifest_path_for(slide)`` where it exists.

    Raises:
        SlideError: when a default manifest holds rows for another slide (renamed slide or manifest).
    """
    out: dict[Path, list[Region]] = {s: [] for s in slides}
    if regions is None:
        for s in slides:
            mp = manifest_path_for(s)
            if not mp.is_file():
                continue
            rows = read_regions(mp)
            stray = sorted({r.slide for r in rows if not _matches(r.slide, s)})
            if stray:
                raise SlideError(mp, f"default manifest of {s.name} holds rows for other slide(s) {stray}")
            out[s] = rows
        return out
    paths = [regions] if isinstance(regions, (str, Path)) else list(regions)
    rows = [r for mp in paths for r in read_regions(mp)]
    for s in slides:
        out[s] = [r for r in rows if _matches(r.slide, s)]
    return out


def discover_classes(slides: Sequence[str | Path],
                     regions: str | Path | Sequence[str | Path] | None = None) -> list[str]:
    """Default class names of a set of slides: sorted region labels, then ``OTHER``.

    Args:
        slides: slide paths.
        regions: manifests as for :class:`data.slides.datasets.TileDataset`.
    """
    per = regions_for_slides([Path(s) for s in slides], regions)
    labels = sorted({r.label for rows in per.values() for r in rows} - {OTHER})
    return labels + [OTHER]


def label_tiles(
    specs: Sequence[TileSpec], regions: Sequence[Region], classes: Sequence[str], min_overlap: float
) -> np.ndarray:
    """Class index per tile (see the module docstring): -1 ambiguous, -2 a class not kept; unannotated tiles get
    OTHER's index (or -2 when OTHER is not kept).

    Args:
        specs: the tiles.
        regions: the slide's regions.
        classes: class names in index order.
        min_overlap: smallest fraction of a tile its class regions must cover.
    """
    n = len(specs)
    other = classes.index(OTHER) if OTHER in classes else -2
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not regions:
        return np.full(n, other, dtype=np.int64)
    x = np.array([s.x for s in specs], dtype=np.float64)[:, None]
    y = np.array([s.y for s in specs], dtype=np.float64)[:, None]
    size = np.array([s.size0 for s in specs], dtype=np.float64)[:, None]
    rx = np.array([r.x for r in regions], dtype=np.float64)[None]
    ry = np.array([r.y for r in regions], dtype=np.float64)[None]
    rw = np.array([r.width for r in regions], dtype=np.float64)[None]
    rh = np.array([r.height for r in regions], dtype=np.float64)[None]
    ox = np.clip(np.minimum(x + size, rx + rw) - np.maximum(x, rx), 0, None)
    oy = np.clip(np.minimum(y + size, ry + rh) - np.maximum(y, ry), 0, None)
    frac = ox * oy / (size * size)  # (tiles, regions)
    names = sorted({r.label for r in regions})
    per_label = np.stack([frac[:, [r.label == nm for r in regions]].sum(1) for nm in names], axis=1)
    best = per_label.argmax(1)
    best_frac = per_label[np.arange(n), best]
    unannotated = 1.0 - np.minimum(frac.sum(1), 1.0)
    out = np.full(n, other, dtype=np.int64)
    out[unannotated < min_overlap] = -1
    hit = best_frac >= min_overlap
    for i in np.nonzero(hit)[0]:
        nm = names[best[i]]
        out[i] = classes.index(nm) if nm in classes else -2
    return out
