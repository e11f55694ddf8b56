"""Labelled tile sets for the downstream-utility test: every tile has a class and a slide, so splits go by slide.

Real tiles (``--train``, ``--heldout``) are read from one of three layouts, resolved by :func:`open_labelled_tiles`:

* a folder ``<root>/<class>/<slide>/<tile>.png`` (PNG/JPEG/TIFF/BMP): the class is the first sub-folder, the slide
  the second; the same slide name under two classes is one slide;
* a CSV file with the header ``path,label,slide`` (paths relative to the CSV's folder, or absolute);
* whole-slide images (or folders of them) with region manifests (``<stem>.regions.csv``, :mod:`data.slides`): tiles
  cut at one :class:`data.image_sets.TileScale`, labelled by their regions (unannotated tiles are left out); the slide
  is the file's stem.

A synthetic set (``--fake``, from ``medsynth generate``) is a folder of tiles, optionally with the release's
``manifest.csv`` / ``manifest.json`` (:func:`open_synthetic_tiles`): its tiles are the files the manifest lists (else
every image below it except the release's ``audit/`` report, :func:`synthetic_image_files`); a tile's class is the
manifest's label name for it, else its sub-folder, else the given rare class; the manifest (checkpoint sha256, seeds,
version) is summarised for the report (:func:`synthetic_manifest`). Tiles are read one at a time as (3, H, W) uint8
tensors and loaded at one size by :func:`load_tiles`. :func:`split_by_slide` and :func:`check_disjoint_slides` keep
train and held-out tiles on different slides.

This module imports only the data layer (it could move into ``data/``); :func:`image_set_labels` gives the class of
each image of an evaluation image set (per-class precision/recall and sliced Wasserstein).
"""
from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from data.errors import DataError
from data.files import sha256_file
from data.image_sets import (
    IMAGE_SUFFIXES,
    ImageFiles,
    ImageSet,
    SlideTiles,
    TileScale,
    existing_paths,
    files_under,
    is_slide,
)

PathLike = Union[str, Path]

__all__ = [
    "SYNTHETIC_SLIDE",
    "LabelledTiles",
    "check_disjoint_slides",
    "image_set_labels",
    "load_tiles",
    "open_labelled_tiles",
    "open_synthetic_tiles",
    "split_by_slide",
    "synthetic_image_files",
    "synthetic_manifest",
]

#: Slide id of every synthetic tile.
SYNTHETIC_SLIDE = "<synthetic>"
_MANIFEST_CSV = "manifest.csv"
_MANIFEST_JSON = "manifest.json"
_AUDIT_DIR = "audit"  # the release's audit report inside a published set
_LABEL_KEYS = ("label_name", "class_name", "class", "label")
_LAYOUT_HELP = ("expected <root>/<class>/<slide>/<tile>.png (class, then slide sub-folders), a CSV with columns "
                "path,label,slide, or whole-slide images with region manifests")


class _SlideRegionTiles(SlideTiles):
    """Tiles of whole-slide images inside labelled regions (``TileDataset`` with the region labels, no "other").

    Args:
        label: set name.
        description: the inputs it came from.
        slides: slide files.
        scale: tile size and scale.
    """

    def __init__(self, label: str, description: Sequence[str], slides: Sequence[Path], *, scale: TileScale) -> None:
        from data.slides.regions import OTHER, discover_classes

        if (scale.mpp is None) == (scale.magnification is None):
            raise ValueError(f"--{label}: whole-slide images need exactly one of --mpp or --magnification")
        classes = [c for c in discover_classes(slides) if c != OTHER]
        if not classes:
            raise DataError(slides[0], f"--{label}: no region manifest with class labels beside the slides "
                                       "(<stem>.regions.csv); the utility test needs labelled tiles")
        super().__init__(label, description, slides, scale=scale, class_names=classes)


@dataclass(frozen=True)
class LabelledTiles:
    """Tiles with a class name and a slide id each.

    Args:
        images: the image set the tiles are read from.
        labels: class name per tile.
        slides: slide id per tile.
        layout: ``"folders"``, ``"csv"``, ``"slides"`` or ``"synthetic"``.
        indices: positions in ``images`` (a subset); None: all.
    """

    images: ImageSet
    labels: tuple[str, ...]
    slides: tuple[str, ...]
    layout: str
    indices: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:
        """Tile ``i`` as (3, H, W) uint8.

        Args:
            i: position in this set.
        """
        return self.images.load(self.indices[i] if self.indices is not None else i)

    def name(self, i: int) -> str:
        """Where tile ``i`` comes from.

        Args:
            i: position in this set.
        """
        return self.images.name(self.indices[i] if self.indices is not None else i)

    def classes(self) -> list[str]:
        """The class names present, sorted."""
        return sorted(set(self.labels))

    def class_counts(self) -> dict[str, int]:
        """Tiles per class, sorted by class name."""
        return dict(sorted(Counter(self.labels).items()))

    def slide_ids(self) -> list[str]:
        """The slides present, sorted."""
        return sorted(set(self.slides))

    def subset(self, positions: Sequence[int]) -> LabelledTiles:
        """The tiles at ``positions`` (of this set), in that order.

        Args:
            positions: positions in this set.
        """
        base = [self.indices[p] if self.indices is not None else p for p in positions]
        return LabelledTiles(images=self.images, labels=tuple(self.labels[p] for p in positions),
                             slides=tuple(self.slides[p] for p in positions), layout=self.layout, indices=tuple(base))


def _read_csv(path: Path, label: str) -> LabelledTiles:
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(path, f"--{label}: cannot read the tile CSV ({exc})") from exc
    if not rows or not {"path", "label", "slide"} <= set(rows[0]):
        raise DataError(path, f"--{label}: a tile CSV needs a header with columns path,label,slide and one row per "
                              "tile")
    files = [Path(r["path"]) if Path(r["path"]).is_absolute() else path.parent / r["path"] for r in rows]
    for f, r in zip(files, rows):
        if not f.is_file():
            raise DataError(f, f"--{label}: tile listed in {path.name} does not exist")
        if not r["label"] or not r["slide"]:
            raise DataError(path, f"--{label}: row for {r['path']} has an empty label or slide")
    return LabelledTiles(images=ImageFiles(label, [str(path)], files), labels=tuple(r["label"] for r in rows),
                         slides=tuple(r["slide"] for r in rows), layout="csv")


def _read_folders(roots: Sequence[Path], label: str) -> LabelledTiles:
    files: list[Path] = []
    labels: list[str] = []
    slides: list[str] = []
    for root in roots:
        found = [f for f in files_under(root) if f.suffix.lower() in IMAGE_SUFFIXES]
        if not found:
            raise DataError(root, f"--{label}: holds no tiles; {_LAYOUT_HELP}")
        for f in found:
            parts = f.relative_to(root).parts
            if len(parts) != 3:
                raise DataError(f, f"--{label}: tile is not at <root>/<class>/<slide>/<tile> under {root} (the "
                                   f"utility test splits by slide, so every tile needs its slide folder); "
                                   f"{_LAYOUT_HELP}")
            files.append(f)
            labels.append(parts[0])
            slides.append(parts[1])
    return LabelledTiles(images=ImageFiles(label, [str(r) for r in roots], files), labels=tuple(labels),
                         slides=tuple(slides), layout="folders")


def open_labelled_tiles(paths: Sequence[PathLike], *, label: str, scale: TileScale = TileScale()) -> LabelledTiles:
    """Real labelled tiles from a folder layout, a CSV or whole-slide images (see the module docstring).

    Args:
        paths: one CSV file, or folders, or slide files / folders of slides.
        label: which argument (named in messages as ``--<label>``).
        scale: tile size and scale for whole-slide images.

    Raises:
        DataError: a path is missing, or the layout is not one of the three.
    """
    given = existing_paths(paths, label)
    if len(given) == 1 and given[0].is_file() and given[0].suffix.lower() == ".csv":
        return _read_csv(given[0], label)
    slides = [f for p in given for f in (files_under(p) if p.is_dir() else [p]) if is_slide(f)]
    if slides:
        images = _SlideRegionTiles(label, [str(p) for p in given], slides, scale=scale)
        names = images.dataset.class_names
        return LabelledTiles(images=images, labels=tuple(names[int(i)] for i in images.dataset.labels),
                             slides=tuple(Path(t.slide).stem for t in images.dataset.tiles), layout="slides")
    bad = [p for p in given if not p.is_dir()]
    if bad:
        raise DataError(bad[0], f"--{label}: not a folder, a tile CSV or a whole-slide image; {_LAYOUT_HELP}")
    return _read_folders(given, label)


def _manifest_rows(folder: Path) -> tuple[Path | None, list[dict[str, Any]], dict[str, Any]]:
    """(manifest file, one dict per item, top-level fields) of a synthetic set; (None, [], {}) without one."""
    json_path, csv_path = folder / _MANIFEST_JSON, folder / _MANIFEST_CSV
    if json_path.is_file():
        try:
            doc = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(json_path, f"--fake: cannot read the synthetic set's manifest ({exc})") from exc
        if isinstance(doc, dict):
            items = [i for i in doc.get("items", []) if isinstance(i, dict)]
            top = {k: v for k, v in doc.items() if k != "items"}
            if items or not csv_path.is_file():
                return json_path, items, top
    if csv_path.is_file():
        try:
            with csv_path.open(newline="", encoding="utf-8") as fh:
                return csv_path, list(csv.DictReader(fh)), {}
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise DataError(csv_path, f"--fake: cannot read the synthetic set's manifest ({exc})") from exc
    return None, [], {}


def _item_file(item: dict[str, Any]) -> str | None:
    for key in ("key", "file"):
        if item.get(key):
            return str(item[key])
    files = item.get("files")
    return str(files[0]) if isinstance(files, list) and files else None


def _item_label(item: dict[str, Any]) -> str | None:
    for key in _LABEL_KEYS:
        value = item.get(key)
        if isinstance(value, str) and value and not value.lstrip("-").isdigit():
            return value
    return None


def synthetic_manifest(folder: PathLike) -> dict[str, Any] | None:
    """A summary of a synthetic set's manifest for reports, or None when the folder has none.

    Args:
        folder: the synthetic set (``manifest.json`` preferred, else ``manifest.csv``).

    Returns:
        ``file``, ``sha256`` (of the manifest), ``items``, ``checkpoint_sha256`` (the distinct values), ``seeds``
        (count, min, max), ``labels`` (items per label), ``version``, and ``released_without_audit`` /
        ``rejected`` / ``audit_passed`` where the manifest says.
    """
    path, items, top = _manifest_rows(Path(folder))
    if path is None:
        return None
    prov = top.get("provenance") if isinstance(top.get("provenance"), dict) else {}
    ckpt = {str(v) for v in [top.get("checkpoint_sha256"), prov.get("checkpoint_sha256")] if v}
    ckpt |= {str(i["checkpoint_sha256"]) for i in items if i.get("checkpoint_sha256")}
    seeds = []
    for i in items:
        try:
            seeds.append(int(i["seed"]))
        except (KeyError, TypeError, ValueError):
            continue
    audit = top.get("audit") if isinstance(top.get("audit"), dict) else {}
    versions = {str(v) for v in [top.get("version")] + [i.get("version") for i in items] if v}
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "items": len(items),
        "checkpoint_sha256": sorted(ckpt),
        "seeds": {"count": len(seeds), "min": min(seeds) if seeds else None, "max": max(seeds) if seeds else None},
        "labels": dict(sorted(Counter(_item_label(i) or "?" for i in items).items())),
        "version": sorted(versions),
        "audit_passed": audit.get("passed"),
        "released_without_audit": top.get("released_without_audit"),
        "rejected": top.get("rejected"),
    }


def synthetic_image_files(folder: PathLike) -> list[Path]:
    """The tile files of a synthetic set: the image files its manifest lists, or, without a manifest, every image file
    below it except the release's ``audit/`` report (whose pictures are not tiles).

    Args:
        folder: the synthetic set.

    Raises:
        DataError: the folder is missing, holds no tiles, or its manifest lists a file that does not exist.
    """
    root = Path(folder)
    if not root.is_dir():
        raise DataError(root, "--fake: expected a folder of synthetic tiles")
    manifest, items, _ = _manifest_rows(root)
    listed = [f for f in (_item_file(i) for i in items) if f and Path(f).suffix.lower() in IMAGE_SUFFIXES]
    if manifest is not None and listed:
        files = [root / f for f in listed]
        absent = [f for f in files if not f.is_file()]
        if absent:
            raise DataError(absent[0], f"--fake: tile listed in {manifest.name} does not exist ({len(absent)} missing)")
        return sorted(files)
    files = [f for f in files_under(root) if f.suffix.lower() in IMAGE_SUFFIXES
             and f.relative_to(root).parts[0] != _AUDIT_DIR]
    if not files:
        raise DataError(root, f"--fake: holds no tiles ({', '.join(IMAGE_SUFFIXES)})")
    return files


def open_synthetic_tiles(folder: PathLike, *, default_class: str) -> LabelledTiles:
    """A synthetic tile set: class from the manifest, else the sub-folder, else ``default_class``.

    Args:
        folder: folder of tiles (e.g. the output of ``medsynth generate``), optionally with its manifest.
        default_class: class of tiles that neither the manifest nor a sub-folder names (the rare class).

    Raises:
        DataError: the folder is missing or holds no tiles.
    """
    root = Path(folder)
    files = synthetic_image_files(root)
    _, items, _ = _manifest_rows(root)
    by_file = {f: lab for f, lab in ((_item_file(i), _item_label(i)) for i in items) if f and lab}
    labels = []
    for f in files:
        rel = f.relative_to(root)
        named = by_file.get(rel.as_posix())
        labels.append(named or (rel.parts[0] if len(rel.parts) > 1 else default_class))
    return LabelledTiles(images=ImageFiles("fake", [str(root)], files), labels=tuple(labels),
                         slides=(SYNTHETIC_SLIDE,) * len(files), layout="synthetic")


def check_disjoint_slides(train: LabelledTiles, heldout: LabelledTiles) -> None:
    """Refuse train and held-out tiles that share a slide (a split by tile leaks the slide's look into the test).

    Args:
        train: training tiles.
        heldout: held-out tiles.

    Raises:
        ValueError: naming the shared slides.
    """
    shared = sorted(set(train.slides) & set(heldout.slides))
    if shared:
        raise ValueError(f"--train and --heldout share {len(shared)} slide(s) ({', '.join(shared[:5])}); the utility "
                         "test splits by slide, never by tile: put each slide's tiles on one side only")


def split_by_slide(tiles: LabelledTiles, *, heldout_fraction: float, seed: int) -> tuple[LabelledTiles, LabelledTiles]:
    """Split labelled tiles into train and held-out by slide (seeded), about ``heldout_fraction`` of the tiles
    held out; every class must end up on both sides.

    Args:
        tiles: the labelled tiles.
        heldout_fraction: fraction of tiles to hold out, in (0, 1).
        seed: seed of the slide order.

    Raises:
        ValueError: fewer than two slides, or a class on one side only (naming it).
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    slides = tiles.slide_ids()
    if len(slides) < 2:
        raise ValueError(f"cannot split {len(slides)} slide(s) by slide; give tiles of at least two slides")
    order = [slides[i] for i in np.random.default_rng(seed).permutation(len(slides))]
    per_slide = Counter(tiles.slides)
    held: set[str] = set()
    for s in order[:-1]:  # at least one slide stays for training
        if sum(per_slide[h] for h in held) >= heldout_fraction * len(tiles):
            break
        held.add(s)
    train = tiles.subset([i for i, s in enumerate(tiles.slides) if s not in held])
    heldout = tiles.subset([i for i, s in enumerate(tiles.slides) if s in held])
    one_side = sorted(set(train.labels) ^ set(heldout.labels))
    if one_side:
        raise ValueError(f"the split by slide (seed {seed}) leaves class(es) {one_side} on one side only; give more "
                         "slides of them, another seed, or explicit --train/--heldout sets")
    return train, heldout


def load_tiles(tiles: LabelledTiles, *, size: int) -> torch.Tensor:
    """All tiles as one (N, 3, size, size) uint8 tensor (resized with antialiased bilinear where needed).

    Args:
        tiles: the tiles.
        size: output side.
    """
    out = torch.empty(len(tiles), 3, size, size, dtype=torch.uint8)
    for i in range(len(tiles)):
        img = tiles.load(i)
        if img.shape[1:] != (size, size):
            x = F.interpolate(img[None].float(), size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)
            img = x[0].round().clamp(0, 255).to(torch.uint8)
        out[i] = img
    return out


def image_set_labels(images: ImageSet, *, manifest_folder: PathLike | None = None) -> list[str] | None:
    """The class of each image of an evaluation image set, or None when the set carries no classes.

    Whole-slide tiles: their region label. Image files of ONE folder: the manifest's label name (a synthetic set),
    else the first sub-folder (``<root>/<class>/...``); files directly in the folder make the set unlabelled.

    Args:
        images: an image set of :func:`data.image_sets.open_image_set`.
        manifest_folder: folder whose manifest labels the files (default: the set's one folder).
    """
    if isinstance(images, SlideTiles):
        names = images.dataset.class_names
        return [names[int(i)] for i in images.dataset.labels]
    if not isinstance(images, ImageFiles) or len(images.description) != 1 or not Path(images.description[0]).is_dir():
        return None
    root = Path(images.description[0])
    _, items, _ = _manifest_rows(Path(manifest_folder) if manifest_folder else root)
    by_file = {f: lab for f, lab in ((_item_file(i), _item_label(i)) for i in items) if f and lab}
    out = []
    for f in images.files:
        rel = f.relative_to(root)
        named = by_file.get(rel.as_posix())
        if named is None and len(rel.parts) < 2:
            return None
        out.append(named or rel.parts[0])
    return out
