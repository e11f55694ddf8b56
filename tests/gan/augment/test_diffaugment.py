"""DiffAugment against explicit numpy references: colour formulas, zero-filled integer translation, cutout box;
parameter ranges; reproducibility from the generator; gradients."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from gan.augment import DiffAugment

torch.set_num_threads(1)


def images(n: int = 16, h: int = 16, w: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1


def draw(aug: DiffAugment, x: torch.Tensor, seed: int = 1):
    params = aug.sample_params(x.shape[0], height=x.shape[2], width=x.shape[3],
                               generator=torch.Generator().manual_seed(seed))
    return params, aug.apply(x, params)


def test_colour_follows_the_brightness_saturation_contrast_formulas():
    x = images()
    params, out = draw(DiffAugment(translation=False, cutout=False), x)
    for n in range(16):
        a = x[n].numpy() + params.brightness[n].item()
        a = (a - a.mean(axis=0, keepdims=True)) * params.saturation[n].item() + a.mean(axis=0, keepdims=True)
        a = (a - a.mean()) * params.contrast[n].item() + a.mean()
        np.testing.assert_allclose(out[n].numpy(), a, atol=1e-6)
    assert params.brightness.abs().max() <= 0.5 and params.saturation.min() >= 0 and params.saturation.max() <= 2
    assert params.contrast.min() >= 0.5 and params.contrast.max() <= 1.5


def test_translation_moves_the_content_and_fills_with_zero():
    x = images(n=200, h=16, w=24)
    params, out = draw(DiffAugment(color=False, cutout=False), x)
    sx, sy = int(24 * 0.125 + 0.5), int(16 * 0.125 + 0.5)
    assert set(params.shift[:, 0].tolist()) == set(range(-sx, sx + 1))
    assert set(params.shift[:, 1].tolist()) == set(range(-sy, sy + 1))
    for n in range(0, 200, 7):
        dx, dy = (int(v) for v in params.shift[n])
        ref = np.zeros((3, 16, 24))
        src = x[n].numpy()
        for i in range(16):
            for j in range(24):
                if 0 <= i - dy < 16 and 0 <= j - dx < 24:
                    ref[:, i, j] = src[:, i - dy, j - dx]
        np.testing.assert_array_equal(out[n].numpy(), ref)


def test_cutout_zeroes_one_clipped_square_and_keeps_the_rest():
    x = images(n=100)
    params, out = draw(DiffAugment(color=False, translation=False), x)
    side = int(16 * 0.5 + 0.5)
    for n in range(100):
        x0, y0, x1, y1 = (int(v) for v in params.cutout[n])
        mask = np.ones((16, 16))
        mask[y0:y1, x0:x1] = 0
        np.testing.assert_array_equal(out[n].numpy(), x[n].numpy() * mask)
        assert x1 - x0 <= side and y1 - y0 <= side and (x1 - x0 == side or x0 == 0 or x1 == 16)
    assert (params.cutout[:, 2] - params.cutout[:, 0] == side).any()


def test_same_generator_seed_gives_the_same_augmentation_and_gradients_flow():
    x = images().requires_grad_(True)
    aug = DiffAugment()
    a = aug(x, generator=torch.Generator().manual_seed(3))
    b = aug(x, generator=torch.Generator().manual_seed(3))
    c = aug(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.allclose(a, c)
    a.sum().backward()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()
    params = aug.sample_params(16, height=16, width=16, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(aug.apply(x[4:8], params.select(slice(4, 8))), a[4:8])


def test_everything_off_is_the_identity():
    x = images()
    assert torch.equal(DiffAugment(color=False, translation=False, cutout=False)(x), x)
    with pytest.raises(ValueError, match="params are for"):
        DiffAugment().apply(x[:2], DiffAugment().sample_params(3, height=16, width=16))
