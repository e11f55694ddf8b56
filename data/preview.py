"""Preview figures of a data set: CT | MR | PET slices with their display windows, slide thumbnails with the
tissue mask and tile grid. Rendered with matplotlib (Agg) and written atomically as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from data.files import atomic_path
from data.volumes.volume import Volume

#: Display windows as (centre, width), the radiologist's convention.
CT_SOFT_TISSUE = (40.0, 400.0)
CT_BONE = (400.0, 1800.0)


def display_window(array: np.ndarray, centre: float, width: float) -> np.ndarray:
    """Map values to uint8 with a display window given as (centre, width), clipping outside it.

    Args:
        array: values in physical units.
        centre: window level.
        width: window width.
    """
    lo = centre - width / 2
    return (np.clip((np.asarray(array, dtype=np.float64) - lo) / width, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def percentile_window(array: np.ndarray, lower: float = 0.5, upper: float = 99.5,
                      reference: np.ndarray | None = None) -> np.ndarray:
    """uint8 display of an MR image between two percentiles (of the image, or of ``reference``).

    Args:
        array: MR values (arbitrary units).
        lower: percentile shown black.
        upper: percentile shown white.
        reference: image whose percentiles fix the window (so an output and its target share one window).
    """
    lo, hi = np.percentile(array if reference is None else reference, [lower, upper])
    return display_window(array, (lo + hi) / 2, max(hi - lo, 1e-6))


def pet_inverted(array: np.ndarray, suv_max: float = 10.0) -> np.ndarray:
    """uint8 inverted-grey PET display (SUV 0 white, ``suv_max`` and above black), as nuclear medicine reads it.

    Args:
        array: SUV values.
        suv_max: SUV shown black.
    """
    return 255 - display_window(array, suv_max / 2, suv_max)


def axial(volume: Volume | np.ndarray, k: int | None = None) -> np.ndarray:
    """Axial slice ``k`` (default: middle) oriented for display: anterior up, patient's right on the viewer's left.

    Args:
        volume: a volume in nibabel axis order (RAS-like affine, no flips) or its array.
        k: slice index along the third axis.
    """
    a = volume.array if isinstance(volume, Volume) else volume
    k = a.shape[2] // 2 if k is None else k
    return np.flipud(np.asarray(a[:, :, k]).T)


def coronal(volume: Volume | np.ndarray, j: int | None = None) -> np.ndarray:
    """Coronal slice ``j`` (default: middle) oriented for display: superior up.

    Args:
        volume: a volume in nibabel axis order or its array.
        j: index along the second (anterior-posterior) axis.
    """
    a = volume.array if isinstance(volume, Volume) else volume
    j = a.shape[1] // 2 if j is None else j
    return np.flipud(np.asarray(a[:, j, :]).T)


def volume_panels(ct: Volume, mr: Volume, pet: Volume, k: int | None = None) -> list[tuple[str, np.ndarray]]:
    """Titled uint8 panels of one patient: CT soft tissue, CT bone, MR, PET (axial) and CT/PET coronal.

    Args:
        ct: CT volume (HU).
        mr: MR volume.
        pet: PET volume (SUV).
        k: axial slice (default: the middle one).
    """
    zoom = ct.spacing[2] / ct.spacing[0]

    def cor(img: np.ndarray) -> np.ndarray:  # stretch slices to physical proportions
        return np.repeat(img, max(1, int(round(zoom))), axis=0)

    return [
        ("CT soft tissue W400 L40", display_window(axial(ct, k), *CT_SOFT_TISSUE)),
        ("CT bone W1800 L400", display_window(axial(ct, k), *CT_BONE)),
        ("MR T1 (0.5-99.5 pct)", percentile_window(axial(mr, k))),
        ("PET SUV 0-10 inverted", pet_inverted(axial(pet, k))),
        ("CT coronal", display_window(cor(coronal(ct)), *CT_SOFT_TISSUE)),
        ("PET coronal (MIP)", pet_inverted(cor(np.flipud(pet.array.max(axis=1).T)))),
    ]


def save_figure(fig: object, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically as PNG and close it.

    Args:
        fig: a matplotlib figure.
        path: PNG file to write.
        dpi: resolution.
    """
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return Path(path)


def render_volumes(patients: Sequence[tuple[str, Volume, Volume, Volume]], path: str | Path) -> Path:
    """One row per patient: CT (two windows) | MR | PET axial, plus CT and PET coronal.

    Args:
        patients: (patient id, CT, MR, PET) tuples, registered volumes.
        path: PNG file to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = len(patients)
    fig, axes = plt.subplots(rows, 6, figsize=(15, 2.8 * rows), squeeze=False)
    for r, (pid, ct, mr, pet) in enumerate(patients):
        k = _slice_with_most_lesion(pet)
        for c, (title, img) in enumerate(volume_panels(ct, mr, pet, k)):
            ax = axes[r][c]
            ax.imshow(img, cmap="gray", vmin=0, vmax=255, interpolation="nearest", aspect="equal")
            ax.set_title(f"{pid}: {title}" if c == 0 else title, fontsize=8)
            ax.axis("off")
    return save_figure(fig, path)


def _slice_with_most_lesion(pet: Volume) -> int:
    """Axial slice with the highest SUV below the head (so the preview shows a lesion where there is one)."""
    a = np.asarray(pet.array)
    body = a[:, :, : int(a.shape[2] * 0.7)]
    return int(np.argmax(body.max(axis=(0, 1)))) if body.size else a.shape[2] // 2


def render_slides(slides: Sequence[str | Path], path: str | Path, *, mpp: float = 0.25, tile_size: int = 256,
                  min_tissue: float = 0.5) -> Path:
    """One row per slide: thumbnail with labelled regions | tissue mask | tile grid at ``mpp``.

    Args:
        slides: whole-slide image files.
        path: PNG file to write.
        mpp: microns per pixel of the tile grid drawn (0.25 = 40x).
        tile_size: tile side in pixels at ``mpp``.
        min_tissue: tissue fraction a tile needs to be kept.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    # torch and OpenSlide: only the slide preview needs them, so the volume helpers above stay light to import
    from data.slides import manifest_path_for, open_slide, read_regions, slide_info, tile_grid, tissue_mask

    fig, axes = plt.subplots(len(slides), 3, figsize=(15, 3.6 * len(slides)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for r, sp in enumerate(slides):
        slide = open_slide(sp)
        try:
            info = slide_info(slide)
            w0, h0 = slide.level_dimensions[0]
            thumb = np.asarray(slide.get_thumbnail((1024, 1024)).convert("RGB"))
            scale = thumb.shape[1] / w0
            mask = tissue_mask(slide)
            grid = tile_grid(slide, tile_size=tile_size, mpp=mpp, min_tissue=min_tissue, mask=mask)
        finally:
            slide.close()
        ax0, ax1, ax2 = axes[r]
        ax0.imshow(thumb)
        ax0.set_title(f"{Path(sp).name}: {info.vendor}, {info.mpp:g} um/px, {w0}x{h0}", fontsize=8)
        regions = read_regions(manifest_path_for(sp)) if manifest_path_for(sp).is_file() else []
        labels = sorted({g.label for g in regions})
        for g in regions:
            c = colours(labels.index(g.label) % 10)
            ax0.add_patch(Rectangle((g.x * scale, g.y * scale), g.width * scale, g.height * scale, fill=False, lw=1,
                                    ec=c))
        for i, name in enumerate(labels):
            ax0.plot([], [], color=colours(i % 10), label=name)
        if labels:
            ax0.legend(fontsize=6, loc="lower right")
        ax1.imshow(mask.mask, cmap="gray")
        ax1.set_title(f"tissue mask ({mask.method}, threshold {mask.threshold:.3g}, {mask.fraction:.0%} tissue)",
                      fontsize=8)
        ax2.imshow(thumb)
        for t in grid:
            ax2.add_patch(Rectangle((t.x * scale, t.y * scale), t.size0 * scale, t.size0 * scale, fill=False, lw=0.5,
                                    ec="lime"))
        ax2.set_title(f"{len(grid)} tiles of {tile_size} px at {mpp:g} um/px (level {grid[0].level}, "
                      f">= {min_tissue:.0%} tissue)", fontsize=8)
        for ax in (ax0, ax1, ax2):
            ax.axis("off")
    return save_figure(fig, path)
