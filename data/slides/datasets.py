"""Tile datasets: tiles of whole-slide images (:class:`TileDataset`) or of image folders (:class:`TileFolderDataset`).

Both label tiles by class, give balancing weights, and accept ``(index, epoch)`` keys from
:class:`data.loading.EpochOrder` as well as plain indices (then the epoch set by :meth:`set_epoch`, shared
with DataLoader workers). A :class:`data.slides.transforms.TileAugment` gets a generator seeded from
(seed, epoch, index), so an item is a pure function of its key in any process.

Labelling policy: :mod:`data.slides.regions`. Scale and reading: :mod:`data.slides.slide`, :mod:`data.slides.grid`.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import openslide
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, get_worker_info

from data.errors import SlideError
from data.loading import Stacked, batch_buffer, split_item
from data.slides.grid import TileSpec, image_to_tensor, image_to_uint8, read_tile_image, tile_grid
from data.slides.regions import OTHER, label_tiles, regions_for_slides
from data.slides.slide import (
    PIL_RESIZE_FILTER,
    RESIZE_FILTER,
    SlideInfo,
    mpp_from_magnification,
    open_slide,
    slide_info,
)
from data.slides.transforms import TileAugment

__all__ = ["IMAGE_SUFFIXES", "TileDataset", "TileFolderDataset"]

#: Image files a tile folder may hold.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _lookup_override(mpp_override: float | Mapping[str, float] | None, slide: Path) -> float | None:
    if mpp_override is None or isinstance(mpp_override, (int, float)):
        return None if mpp_override is None else float(mpp_override)
    for key in (str(slide), slide.name, slide.stem):
        if key in mpp_override:
            return float(mpp_override[key])
    return None


class _LabelledTiles(Dataset):
    """Shared bookkeeping of tile datasets: class counts, balancing weights, epoch-seeded augmentation.

    Subclasses set ``class_names``, ``labels`` (int64 array), ``transform``, ``seed`` and ``uint8``.
    """

    class_names: tuple[str, ...]
    labels: np.ndarray
    transform: Callable[[torch.Tensor], torch.Tensor] | None
    seed: int
    uint8: bool

    def _init_epoch(self) -> None:
        # Shared memory: DataLoader workers (forked, or pickled by torch.multiprocessing) see set_epoch.
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    def class_counts(self) -> dict[str, int]:
        """Number of tiles per class, in ``class_names`` order."""
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {c: int(n) for c, n in zip(self.class_names, counts)}

    def sample_weights(self, power: float = 1.0) -> torch.Tensor:
        """Per-tile weights ``count(class)^-power`` for weighted draws (:class:`data.loading.EpochOrder`).

        With ``power=1`` every class is drawn equally often; ``power=0`` gives uniform weights.

        Args:
            power: strength of the rebalancing, >= 0.
        """
        if power < 0:
            raise ValueError(f"power must be >= 0, got {power}")
        counts = np.bincount(self.labels, minlength=len(self.class_names)).astype(np.float64)
        return torch.from_numpy(np.power(np.maximum(counts, 1.0), -float(power))[self.labels])

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of plain-index keys (shared with DataLoader worker processes).

        Args:
            epoch: epoch number.
        """
        self._epoch.fill_(int(epoch))

    def item_seed(self, index: int, epoch: int | None = None) -> int:
        """Seed of the augmentation of item ``index`` at ``epoch`` (default: the current epoch).

        Args:
            index: item index.
            epoch: epoch number.
        """
        epoch = int(self._epoch) if epoch is None else int(epoch)
        state = np.random.SeedSequence([self.seed, epoch, int(index)]).generate_state(1, np.uint64)
        return int(state[0] >> np.uint64(1))

    def _key(self, item: int | tuple[int, int]) -> tuple[int, int]:
        return split_item(item, int(self._epoch))

    def _item(self, item: int | tuple[int, int], out: np.ndarray | None = None) -> dict[str, Any]:
        """The item of ``item``; with ``out`` (a ``(3, tile_size, tile_size)`` row of a batch, as a numpy view), its
        image is written there and the item's ``image`` is that row."""
        raise NotImplementedError

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """The tile of ``item``: an index (current epoch) or an ``(index, epoch)`` pair.

        Args:
            item: index, or ``(index, epoch)``.
        """
        return self._item(item)

    def _stack_size(self) -> int | None:
        """The side every image has, when items can be written into one batch tensor (else None)."""
        size = getattr(self, "tile_size", None)
        if size is None or not (self.uint8 or self.transform is None or isinstance(self.transform, TileAugment)):
            return None  # sizes vary, or a caller's transform may change the shape
        return int(size)

    def __getitems__(self, items: list[int | tuple[int, int]]) -> list[dict[str, Any]]:
        """The tiles of one batch. Inside a DataLoader worker their images are written straight into one
        ``(B, 3, S, S)`` tensor in shared memory: a :class:`data.loading.Stacked` list, which
        :func:`data.loading.collate` sends without stacking copies. In the main process (nothing to send) they are
        plain items. Each item equals ``self[item]``.

        Args:
            items: the batch's keys (indices or ``(index, epoch)`` pairs).
        """
        size = self._stack_size()
        if size is None or not items or get_worker_info() is None:
            return [self._item(i) for i in items]
        out = batch_buffer((len(items), 3, size, size), torch.uint8 if self.uint8 else torch.float32)
        rows = out.numpy()  # one numpy view; a tensor's .numpy() per row costs ~9 us, as much as a 32 px tile's planes
        return Stacked([self._item(i, rows[k]) for k, i in enumerate(items)], {"image": out})

    def _pixels(self, img: Image.Image, index: int, epoch: int, out: np.ndarray | None = None) -> dict[str, Any]:
        """``image`` (float32 in [-1, 1], augmented) or, in uint8 mode, raw ``image`` plus its augmentation ``seed``;
        written into ``out`` (a numpy view of a batch row) when given."""
        if self.uint8:
            return {"image": torch.from_numpy(_rgb_planes(img, out)), "seed": self.item_seed(index, epoch)}
        planes = _rgb_planes(img)
        image = image_to_tensor(planes.transpose(1, 2, 0))  # an (H, W, 3) view: no copy back to channels-last
        if isinstance(self.transform, TileAugment):
            image = self.transform(image, generator=torch.Generator().manual_seed(self.item_seed(index, epoch)))
        elif self.transform is not None:
            image = self.transform(image)
        if out is not None:
            if tuple(image.shape) != out.shape:
                raise ValueError(f"{type(self).__name__}: tile of shape {tuple(image.shape)} in a batch of "
                                 f"{out.shape} tiles")
            image = torch.from_numpy(out).copy_(image)
        return {"image": image}


class TileDataset(_LabelledTiles):
    """Tiles of whole-slide images at one scale, with class labels from region manifests.

    Items are dicts: ``image`` (float32 3xHxW in [-1, 1]), ``label`` (int), ``slide`` (str path),
    ``location`` (level-0 x, y), ``mpp`` (effective um/px), ``level``, ``downsample``, ``resize_filter``.
    With ``uint8=True`` the image is the raw uint8 3xHxW tile (4x fewer bytes between processes) and the item
    also holds ``seed``, its augmentation seed: normalise with :func:`data.slides.grid.uint8_to_unit` and
    augment with ``TileAugment(x, generator=torch.Generator().manual_seed(seed))`` on the device, which gives
    the same values as the float path. See :mod:`data.slides.regions` for the labelling policy. OpenSlide
    handles are opened lazily in each process (DataLoader workers open their own; pickling drops them).

    Args:
        slides: slide files.
        tile_size: tile side in pixels.
        magnification: nominal magnification, shorthand for ``mpp = 10 / magnification``.
        mpp: microns per pixel (give this or ``magnification``).
        regions: region manifest(s); default ``<stem>.regions.csv`` beside each slide where present.
        class_names: classes to keep, in index order; None for all region labels (sorted) plus "other".
        min_tissue: smallest tissue fraction of a tile.
        min_region_overlap: smallest fraction of a tile its class regions must cover.
        mpp_override: um/px for slides without MPP metadata: one value for all, or a mapping keyed by slide
            path, file name or stem.
        transform: callable applied to the image tensor (a ``TileAugment`` gets a per-item generator).
        seed: seed of per-item augmentation.
        require_all_classes: raise when a requested class has no tile (the datamodule turns this off for
            validation/test splits).
        max_open_slides: OpenSlide handles kept open per process (least recently used are closed).
        uint8: deliver raw uint8 tiles and their augmentation seeds (no ``transform``).
    """

    def __init__(
        self,
        slides: Sequence[str | Path],
        tile_size: int = 256,
        magnification: float | None = None,
        mpp: float | None = None,
        *,
        regions: str | Path | Sequence[str | Path] | None = None,
        class_names: Sequence[str] | None = None,
        min_tissue: float = 0.5,
        min_region_overlap: float = 0.5,
        mpp_override: float | Mapping[str, float] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        require_all_classes: bool = True,
        max_open_slides: int = 64,
        uint8: bool = False,
    ) -> None:
        if (magnification is None) == (mpp is None):
            raise ValueError("TileDataset: give exactly one of magnification or mpp")
        target = mpp_from_magnification(magnification) if magnification is not None else float(mpp)  # type: ignore
        if uint8 and transform is not None:
            raise ValueError("TileDataset: uint8=True delivers raw tiles; augment on the device instead (each item "
                             "carries its 'seed'; see TileDataModule(uint8_transfer=True))")
        if isinstance(slides, (str, Path)):
            slides = [slides]
        paths = [Path(s) for s in slides]
        if not paths:
            raise ValueError("TileDataset: no slides given")
        dup = sorted({str(p) for p in paths if paths.count(p) > 1})
        if dup:
            raise ValueError(f"TileDataset: slides given more than once: {dup}")
        if not 0.0 < min_region_overlap <= 1.0:
            raise ValueError(f"min_region_overlap must be in (0, 1], got {min_region_overlap}")
        self.tile_size = int(tile_size)
        self.mpp = target
        self.min_tissue = float(min_tissue)
        self.min_region_overlap = float(min_region_overlap)
        self.transform = transform
        self.seed = int(seed)
        self.uint8 = bool(uint8)
        self.max_open_slides = int(max_open_slides)
        per_slide_regions = regions_for_slides(paths, regions)
        if class_names is None:
            labels = sorted({r.label for rows in per_slide_regions.values() for r in rows} - {OTHER})
            classes = labels + [OTHER]
        else:
            classes = [str(c) for c in class_names]
            if not classes or len(set(classes)) != len(classes) or any(not c for c in classes):
                raise ValueError(f"class_names must be non-empty, unique, non-empty strings, got {classes}")
        self.class_names: tuple[str, ...] = tuple(classes)

        specs: list[TileSpec] = []
        labels_list: list[np.ndarray] = []
        self.infos: dict[str, SlideInfo] = {}
        for p in paths:
            with open_slide(p) as s:
                info = replace(slide_info(s, mpp_override=_lookup_override(mpp_override, p)), path=p)
                grid = tile_grid(s, tile_size=self.tile_size, mpp=target, min_tissue=self.min_tissue,
                                 mpp_override=info.mpp if info.mpp_source == "override" else None)
            self.infos[str(p)] = info
            lab = label_tiles(grid, per_slide_regions[p], self.class_names, self.min_region_overlap)
            keep = lab >= 0
            specs.extend(g for g, k in zip(grid, keep) if k)
            labels_list.append(lab[keep])
        self.slides: tuple[Path, ...] = tuple(paths)
        self.tiles: list[TileSpec] = specs
        self.labels: np.ndarray = np.concatenate(labels_list) if labels_list else np.zeros(0, dtype=np.int64)
        if class_names is not None and require_all_classes:
            counts = self.class_counts()
            empty = [c for c in self.class_names if counts[c] == 0]
            if empty:
                raise SlideError(
                    None,
                    f"requested class(es) {empty} have no tile in slides {[p.name for p in paths]} at "
                    f"{target:g} um/px (tile_size={self.tile_size}, min_tissue={min_tissue:g}, "
                    f"min_region_overlap={min_region_overlap:g}); check the region manifests or the scale",
                )
        if not specs:
            raise SlideError(
                None, f"no tiles of classes {list(self.class_names)} in slides {[p.name for p in paths]}")
        self._init_epoch()
        self._handles: OrderedDict[str, openslide.OpenSlide] = OrderedDict()
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.tiles)

    # -- reading ------------------------------------------------------------------------------------

    def _slide(self, path: str) -> openslide.OpenSlide:
        if os.getpid() != self._pid:  # forked worker: never share the parent's handles
            self._handles = OrderedDict()
            self._pid = os.getpid()
        h = self._handles.get(path)
        if h is None:
            h = open_slide(path)
            self._handles[path] = h
            while len(self._handles) > max(1, self.max_open_slides):
                _, old = self._handles.popitem(last=False)
                old.close()
        else:
            self._handles.move_to_end(path)
        return h

    def close(self) -> None:
        """Close the OpenSlide handles this process holds."""
        if os.getpid() == self._pid:
            for h in self._handles.values():
                h.close()
        self._handles = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handles"] = OrderedDict()
        return state

    def _item(self, item: int | tuple[int, int], out: np.ndarray | None = None) -> dict[str, Any]:
        index, epoch = self._key(item)
        spec = self.tiles[index]
        return {
            **self._pixels(read_tile_image(self._slide(spec.slide), spec), index, epoch, out),
            "label": int(self.labels[index]),
            "slide": spec.slide,
            "location": (spec.x, spec.y),
            "mpp": float(spec.mpp),
            "level": spec.level,
            "downsample": float(spec.downsample),
            "resize_filter": spec.resize_filter,
        }


class TileFolderDataset(_LabelledTiles):
    """Tiles stored as image files: ``root/<class>/*.png|jpg|jpeg|tif|tiff`` (class = sub-folder).

    A root holding images and no sub-folders is one unlabelled class, ``OTHER``. Items match
    :class:`TileDataset`: ``image``, ``label``, ``slide`` (the file path), ``location`` (0, 0), ``mpp``
    (the given value, or NaN when unknown: NaN rather than None so default collation works), ``level`` 0,
    ``downsample`` 1.0, ``resize_filter``.

    Args:
        root: folder of class sub-folders.
        tile_size: resize every (square) image to this side with ``RESIZE_FILTER``; None keeps sizes.
        class_names: sub-folders to use, in index order; None for all sub-folders, sorted.
        transform: callable applied to the image tensor (a ``TileAugment`` gets a per-index generator).
        mpp: microns per pixel of the tiles, if known.
        seed: seed of per-item augmentation.
    """

    def __init__(
        self,
        root: str | Path,
        tile_size: int | None = None,
        class_names: Sequence[str] | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        *,
        mpp: float | None = None,
        seed: int = 0,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise SlideError(root, "tile folder not found")
        subdirs = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if class_names is None:
            if subdirs:
                classes = subdirs
            elif _images_in(root):
                classes = [OTHER]
            else:
                raise SlideError(
                    root, f"tile folder holds no class sub-folders and no images ({', '.join(IMAGE_SUFFIXES)})")
        else:
            classes = [str(c) for c in class_names]
        files: list[Path] = []
        labels: list[int] = []
        for k, c in enumerate(classes):
            folder = root if (c == OTHER and not subdirs and class_names is None) else root / c
            if not folder.is_dir():
                raise SlideError(folder, f"class folder for {c!r} not found")
            imgs = _images_in(folder)
            if not imgs:
                raise SlideError(folder, f"class folder for {c!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
            for f in imgs:
                _check_image(f)
            files.extend(imgs)
            labels.extend([k] * len(imgs))
        self.root = root
        self.class_names: tuple[str, ...] = tuple(classes)
        self.files = files
        self.labels = np.asarray(labels, dtype=np.int64)
        self.tile_size = tile_size
        self.transform = transform
        self.mpp = float("nan") if mpp is None else float(mpp)
        self.seed = int(seed)
        self.uint8 = False
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.files)

    def _item(self, item: int | tuple[int, int], out: np.ndarray | None = None) -> dict[str, Any]:
        index, epoch = self._key(item)
        f = self.files[index]
        try:
            with Image.open(f) as im:
                img = im.convert("RGB")
        except (OSError, UnidentifiedImageError) as e:
            raise SlideError(f, f"cannot decode image: {e}") from e
        filt = "none"
        if self.tile_size is not None and img.size != (self.tile_size, self.tile_size):
            if img.width != img.height:
                raise SlideError(
                    f, f"tile is {img.width}x{img.height}, not square; cannot resize to {self.tile_size} px")
            img = img.resize((self.tile_size, self.tile_size), PIL_RESIZE_FILTER)
            filt = RESIZE_FILTER
        return {
            **self._pixels(img, index, epoch, out),
            "label": int(self.labels[index]),
            "slide": str(f),
            "location": (0, 0),
            "mpp": self.mpp,
            "level": 0,
            "downsample": 1.0,
            "resize_filter": filt,
        }


def _rgb_planes(img: Image.Image, out: np.ndarray | None = None) -> np.ndarray:
    """The R, G and B planes of an RGB or opaque RGBA image as a (3, H, W) uint8 array (alpha dropped).

    The same values as :func:`data.slides.grid.image_to_uint8`, in half the time: PIL extracts each channel plane
    in C (``tobytes("raw", band)``), where numpy would copy the interleaved pixels and then transpose them.
    Other modes go through ``image_to_uint8`` (which refuses what is not 3 or 4 uint8 channels).

    Args:
        img: the tile.
        out: a (3, H, W) uint8 array to write into (default: a new one).
    """
    w, h = img.size
    if out is not None and out.shape != (3, h, w):
        raise ValueError(f"tile of {w}x{h} px in a batch of {out.shape[2]}x{out.shape[1]} px tiles")
    if img.mode not in ("RGB", "RGBA"):
        planes = image_to_uint8(img).numpy()
        if out is None:
            return planes
        out[...] = planes
        return out
    if out is None:
        out = np.empty((3, h, w), dtype=np.uint8)
    for i, band in enumerate("RGB"):
        out[i] = np.frombuffer(img.tobytes("raw", band), dtype=np.uint8).reshape(h, w)
    return out


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _check_image(path: Path) -> None:
    try:
        with Image.open(path) as im:
            im.size  # noqa: B018 - header only; pixels are decoded in __getitem__
    except (OSError, UnidentifiedImageError) as e:
        raise SlideError(path, f"not a readable image: {e}") from e
