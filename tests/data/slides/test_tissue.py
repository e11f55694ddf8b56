"""Tissue masks against scikit-image (HSV saturation, optical density, Otsu) and the phantom's regions."""
from __future__ import annotations

import numpy as np
import openslide
import pytest
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

from data.slides import otsu_threshold, tissue_mask
from tests.data.slides.common import H, W, regions


def test_tissue_mask_against_skimage_and_regions(slides):
    path = slides["s1"]
    m = tissue_mask(path)
    with openslide.OpenSlide(str(path)) as s:
        view = np.asarray(s.read_region((0, 0), 0, (W, H)).convert("RGB"))  # the 2048-px level is the mask's view
    sat = rgb2hsv(view)[..., 1]
    t = threshold_otsu(sat)
    assert m.threshold == pytest.approx(max(t, 0.05), abs=(sat.max() - sat.min()) / 256)
    ref = sat > t
    assert m.mask.shape == ref.shape and (m.mask == ref).mean() > 0.98
    for _, x, y, w, h in regions(path):  # every annotated region is tissue
        assert m.mask[y:y + h, x:x + w].mean() > 0.95
    border = np.concatenate([m.mask[:40].ravel(), m.mask[-40:].ravel(), m.mask[:, :40].ravel(),
                             m.mask[:, -40:].ravel()])
    assert border.mean() < 0.01  # glass margin excluded
    assert 0.25 < m.mask.mean() < 0.8
    # Optical-density method: Otsu on log(OD), same checks against the regions and the glass.
    log_od = np.log((-np.log10((view.astype(np.float64) + 1) / 256)).mean(-1) + 1e-3)
    m_od = tissue_mask(path, method="od")
    t_od = max(np.exp(threshold_otsu(log_od)) - 1e-3, 0.04)
    assert np.log(m_od.threshold + 1e-3) == pytest.approx(np.log(t_od + 1e-3), abs=(log_od.max() - log_od.min()) / 256)
    for _, x, y, w, h in regions(path):
        assert m_od.mask[y:y + h, x:x + w].mean() > 0.95
    assert np.concatenate([m_od.mask[:40].ravel(), m_od.mask[:, :40].ravel()]).mean() < 0.01
    assert (m_od.mask == m.mask).mean() > 0.85


def test_otsu_matches_skimage():
    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(0.1, 0.03, 5000), rng.normal(0.5, 0.1, 3000)])
    assert otsu_threshold(v) == pytest.approx(threshold_otsu(v), abs=(v.max() - v.min()) / 256)
