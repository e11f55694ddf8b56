"""The downstream-utility section of ``medsynth evaluate --utility``: labelled tile sets in, the report section out.

``--train`` holds the real labelled training tiles, ``--heldout`` the held-out real tiles (other slides; without it
``--train`` is split by slide, seeded); ``--fake`` is the synthetic set made by ``medsynth generate`` (its manifest
is summarised into the report: checkpoint sha256, seeds, counts). The test itself is :func:`gan.utility.run_utility`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data.image_sets import TileScale
from gan.utility import (
    UtilitySettings,
    open_labelled_tiles,
    open_synthetic_tiles,
    run_utility,
    split_by_slide,
    synthetic_manifest,
)

__all__ = ["UtilityRequest", "utility_section"]


@dataclass(frozen=True)
class UtilityRequest:
    """What the utility test reads and how it trains.

    Args:
        train: real labelled training tiles (a folder ``<class>/<slide>/<tile>``, a CSV ``path,label,slide``, or
            slides with region manifests).
        synthetic: ONE folder of synthetic tiles (``medsynth generate``'s output).
        heldout: held-out real tiles of other slides; empty: split ``train`` by slide.
        heldout_fraction: with no ``heldout``: about this fraction of the tiles (whole slides) is held out.
        split_seed: seed of that split.
        settings: seeds, rare class, tile size and training budget.
    """

    train: tuple[Path, ...]
    synthetic: tuple[Path, ...]
    heldout: tuple[Path, ...] = ()
    heldout_fraction: float = 0.3
    split_seed: int = 0
    settings: UtilitySettings = field(default_factory=UtilitySettings)


def utility_section(request: UtilityRequest, *, tiles: TileScale, quiet: bool = False) -> tuple[dict[str, Any],
                                                                                                dict[str, float]]:
    """Run the utility test; its report section and its scalars.

    Args:
        request: the tile sets and settings.
        tiles: tile scale for whole-slide inputs.
        quiet: no progress bars.

    Raises:
        ValueError: no ``--train``, not one ``--fake`` folder, shared slides, or no rare synthetic tile.
    """
    if not request.train:
        raise ValueError("--utility needs --train: the real labelled training tiles (<class>/<slide>/<tile>.png, a "
                         "CSV path,label,slide, or slides with region manifests)")
    if len(request.synthetic) != 1:
        raise ValueError(f"--utility takes ONE --fake folder of synthetic tiles, got "
                         f"{[str(p) for p in request.synthetic]}")
    train = open_labelled_tiles(request.train, label="train", scale=tiles)
    if request.heldout:
        heldout = open_labelled_tiles(request.heldout, label="heldout", scale=tiles)
        split = "given: --train and --heldout (disjoint slides, checked)"
    else:
        train, heldout = split_by_slide(train, heldout_fraction=request.heldout_fraction, seed=request.split_seed)
        split = (f"--train split by slide (seed {request.split_seed}, about {request.heldout_fraction:g} of the tiles "
                 f"held out): held-out slides {', '.join(heldout.slide_ids())}")
    settings = request.settings
    rare = settings.rare_class or min(sorted(train.class_counts()), key=lambda c: train.class_counts()[c])
    synthetic = open_synthetic_tiles(request.synthetic[0], default_class=rare)
    section = run_utility(train, heldout, synthetic, settings=settings,
                          synthetic_manifest=synthetic_manifest(request.synthetic[0]), quiet=quiet)
    section["split"] = split
    values: dict[str, float] = {}
    for regime, scores in section["regimes"].items():
        for key in ("rare_recall", "rare_f1", "balanced_accuracy", "rare_auroc"):
            if scores[key]["mean"] is not None:
                values[f"utility/{regime}/{key}"] = scores[key]["mean"]
    diff = section["differences"]["synthetic_minus_oversampled"]["rare_recall"]
    if diff["mean"] is not None:
        values["utility/synthetic_minus_oversampled/rare_recall"] = diff["mean"]
    values["utility/synthetic_beats_oversampling"] = float(section["synthetic_beats_oversampling"])
    return section, values
