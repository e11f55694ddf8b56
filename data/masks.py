"""Body masks from CT: threshold, largest connected component, hole filling."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def body_mask(ct_hu: np.ndarray, threshold: float = -500.0, fill_holes: bool = True) -> np.ndarray:
    """Boolean mask of the patient's body in a CT volume (HU).

    Voxels above ``threshold`` are kept, only the largest 3D connected component survives (drops the
    table, blankets, noise specks), and enclosed holes (lungs, bowel gas) are filled slice by slice and in 3D.

    Args:
        ct_hu: CT volume in Hounsfield units, any 2D or 3D shape.
        threshold: HU above which a voxel counts as body (air is -1000, lung about -800, fat about -100).
        fill_holes: fill enclosed air (lungs, airways) so they count as body.
    """
    fg = np.asarray(ct_hu) > threshold
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(fg.shape, dtype=bool)
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    if fill_holes:
        if mask.ndim == 3:
            for k in range(mask.shape[2]):  # lungs open to the airway in 3D are closed per axial slice
                mask[:, :, k] = ndimage.binary_fill_holes(mask[:, :, k])
        mask = ndimage.binary_fill_holes(mask)
    return mask
