"""Preview figures of a data set: CT | MR | PET slices with their display windows, slide thumbnails with the
tissue mask and tile grid. Rendered with matplotlib (Agg) and written atomically as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from data.atomic import atomic_path
from data.volumes import Volume

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


def percentile_window(array: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """uint8 display of an MR image between two of its percentiles.

    Args:
        array: MR values (arbitrary units).
        lower: percentile shown black.
        upper: percentile shown white.
    """
    lo, hi = np.percentile(array, [lower, upper])
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
    """Titled uint8 panels of one patient: CT soft tissue, CT bone, MR, PET (axial) and CT/PET coronal."""
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


def save_figure(fig: "object", path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically as PNG and close it."""
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
