"""Whole-slide images as tiles: open a slide, find its tissue, lay a scale-aware tile grid, serve labelled tiles.

Modules (MONAI's reader/dataset split), from the leaf up:

* :mod:`~data.slides.slide`: :func:`open_slide`, :class:`SlideInfo` (scale from MPP), :func:`plan_read`.
* :mod:`~data.slides.tissue`: :func:`tissue_mask` (saturation or optical density, Otsu).
* :mod:`~data.slides.grid`: :class:`TileSpec`, :func:`tile_grid`, :func:`read_tile`, pixel conversions.
* :mod:`~data.slides.regions`: region CSV manifests, tile labels, :func:`discover_classes`.
* :mod:`~data.slides.transforms`: :class:`TileAugment` (flips, rot90, HED stain jitter).
* :mod:`~data.slides.datasets`: :class:`TileDataset`, :class:`TileFolderDataset`.
* :mod:`~data.slides.datamodule`: :class:`TileDataModule`, :func:`find_slides`, :func:`split_slides` (Lightning).
* :mod:`~data.slides.phantom`: deterministic synthetic H&E slides (:func:`make_phantom_slide`).

The datamodule names are exported lazily (PEP 562), so ``import data.slides`` does not load Lightning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from data.slides.datasets import IMAGE_SUFFIXES, TileDataset, TileFolderDataset
from data.slides.grid import (
    TileSpec,
    image_to_tensor,
    image_to_uint8,
    read_tile,
    read_tile_image,
    tile_grid,
    uint8_to_unit,
)
from data.slides.phantom import CLASSES, RARE_CLASS, PhantomSlide, make_phantom_slide
from data.slides.regions import (
    OTHER,
    REGION_COLUMNS,
    Region,
    discover_classes,
    label_tiles,
    manifest_path_for,
    read_regions,
    regions_for_slides,
    write_regions,
)
from data.slides.slide import (
    MAX_SINGLE_LEVEL,
    MPP_TOLERANCE,
    RESIZE_FILTER,
    ReadPlan,
    SlideHandle,
    SlideInfo,
    mpp_from_magnification,
    open_slide,
    plan_read,
    slide_info,
)
from data.slides.tissue import THRESHOLD_FLOOR, TissueMask, clean_mask, otsu_threshold, tissue_feature, tissue_mask
from data.slides.transforms import TileAugment, hed_to_rgb, rgb_to_hed, stain_jitter

if TYPE_CHECKING:
    from data.slides.datamodule import SLIDE_SUFFIXES, TileDataModule, find_slides, split_slides

__all__ = [
    "CLASSES",
    "IMAGE_SUFFIXES",
    "MAX_SINGLE_LEVEL",
    "MPP_TOLERANCE",
    "OTHER",
    "RARE_CLASS",
    "REGION_COLUMNS",
    "RESIZE_FILTER",
    "SLIDE_SUFFIXES",
    "THRESHOLD_FLOOR",
    "PhantomSlide",
    "ReadPlan",
    "Region",
    "SlideHandle",
    "SlideInfo",
    "TileAugment",
    "TileDataModule",
    "TileDataset",
    "TileFolderDataset",
    "TileSpec",
    "TissueMask",
    "clean_mask",
    "discover_classes",
    "find_slides",
    "hed_to_rgb",
    "image_to_tensor",
    "image_to_uint8",
    "label_tiles",
    "make_phantom_slide",
    "manifest_path_for",
    "mpp_from_magnification",
    "open_slide",
    "otsu_threshold",
    "plan_read",
    "read_regions",
    "read_tile",
    "read_tile_image",
    "regions_for_slides",
    "rgb_to_hed",
    "slide_info",
    "split_slides",
    "stain_jitter",
    "tile_grid",
    "tissue_feature",
    "tissue_mask",
    "uint8_to_unit",
    "write_regions",
]


def __getattr__(name: str) -> Any:
    """Import the Lightning-backed names on first use (PEP 562).

    Args:
        name: the attribute asked for.
    """
    if name in ("SLIDE_SUFFIXES", "TileDataModule", "find_slides", "split_slides"):
        from data.slides import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
