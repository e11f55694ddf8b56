"""MIND structure loss: equal to a direct numpy/scipy implementation of Heinrich's definition, invariant to affine
(also inverting) intensity maps, and sensitive to edges that moved, which is what it is used for in CycleGAN."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from gan.losses import mind_descriptor, mind_loss
from gan.models import CycleGAN
from gan.models.config import DiscriminatorConfig, GeneratorConfig


def _reference_mind(img: np.ndarray, distance: int, sigma: float) -> np.ndarray:
    """Heinrich et al. 2012, eqs. 5-7, one channel, written from the paper with numpy/scipy."""
    radius = max(int(math.ceil(3.0 * sigma)), 1)
    dists = []
    for axis in range(img.ndim):
        for step in (-distance, distance):
            padded = np.pad(img, [(distance, distance) if a == axis else (0, 0) for a in range(img.ndim)], mode="edge")
            sl = [slice(None)] * img.ndim
            sl[axis] = slice(distance + step, distance + step + img.shape[axis])
            neighbour = padded[tuple(sl)]
            dists.append(ndimage.gaussian_filter((img - neighbour) ** 2, sigma, mode="nearest", radius=radius))
    d = np.stack(dists)
    v = d.mean(axis=0)
    v = np.clip(v, 1e-3 * v.mean(), 1e3 * v.mean()) + 1e-6
    m = np.exp(-d / v)
    return m / m.max(axis=0)


@pytest.mark.parametrize("shape,distance,sigma", [((23, 19), 1, 0.8), ((23, 19), 2, 1.2), ((11, 9, 13), 1, 0.8)])
def test_mind_equals_direct_implementation(shape, distance, sigma):
    rng = np.random.default_rng(0)
    imgs = rng.normal(size=(2, 2, *shape))
    imgs[:, :, 3:8] += 4.0  # an edge so descriptors are not all noise
    got = mind_descriptor(torch.from_numpy(imgs), distance=distance, sigma=sigma).numpy()
    n_r = 2 * len(shape)
    assert got.shape == (2, 2 * n_r, *shape)
    for b in range(2):
        for c in range(2):
            ref = _reference_mind(imgs[b, c], distance, sigma)
            np.testing.assert_allclose(got[b, c * n_r:(c + 1) * n_r], ref, rtol=1e-9, atol=1e-9)


def _body(shift: int = 0) -> np.ndarray:
    """A 2D 'body': fat ring, soft tissue, a dark lung; labels 0 air, 1 fat, 2 soft, 3 lung."""
    y, x = np.mgrid[:48, :56]
    r = np.sqrt(((x - 28) / 22.0) ** 2 + ((y - 24) / 17.0) ** 2)
    lab = np.zeros((48, 56), dtype=int)
    lab[r <= 1.0] = 1
    lab[r <= 1.0 - 3.0 / 17 - shift / 17.0] = 2  # fat layer 3 voxels thick (+ shift)
    lab[np.sqrt(((x - 20) / 6.0) ** 2 + ((y - 24) / 8.0) ** 2) <= 1] = 3
    return lab


def test_mind_is_invariant_to_affine_intensity_maps_and_sees_moved_edges():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.normal(size=(1, 1, 40, 40)))
    for a, b in ((3.0, 7.0), (-0.5, 1.0)):  # inversions too
        assert mind_loss(a * x + b, x).item() < 1e-6
    ct = np.array([-1000.0, -100.0, 40.0, -800.0])  # air, fat, soft, lung: fat < soft
    mr = np.array([0.0, 1000.0, 420.0, 25.0])  # fat > soft: not a monotone map of CT
    lab, moved = _body(), _body(shift=2)
    to_t = lambda a: torch.from_numpy(a)[None, None]  # noqa: E731
    aligned = mind_loss(to_t(mr[lab] / 1000.0), to_t(ct[lab] / 1000.0)).item()
    shifted = mind_loss(to_t(mr[moved] / 1000.0), to_t(ct[lab] / 1000.0)).item()
    assert shifted > 1.5 * aligned, (aligned, shifted)


def test_mind_bad_input():
    with pytest.raises(ValueError, match="2 or 3 spatial"):
        mind_descriptor(torch.zeros(4, 5))
    with pytest.raises(ValueError, match="differs"):
        mind_loss(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))


def test_mind_has_gradients_in_3d():
    x = torch.randn(1, 1, 8, 8, 8, requires_grad=True)
    mind_loss(x, torch.randn(1, 1, 8, 8, 8)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


class _Pairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        return {"ct": torch.rand(1, 32, 32, generator=g) * 2 - 1, "mr": torch.rand(1, 32, 32, generator=g) * 2 - 1}


@pytest.mark.parametrize("weight", [0.0, 5.0])
def test_cyclegan_structure_term_is_logged_and_weighted(weight, tmp_path):
    import lightning as L

    torch.manual_seed(0)
    model = CycleGAN(generator=GeneratorConfig(features=4, n_blocks=1),
                     discriminator=DiscriminatorConfig(features=4, layers=2), lambda_structure=weight)
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", max_epochs=1, limit_val_batches=0,
                        enable_checkpointing=False)
    trainer.fit(model, torch.utils.data.DataLoader(_Pairs(), batch_size=2))
    m = trainer.callback_metrics
    parts = (m["train/adv_epoch"] + 10.0 * m["train/cycle_epoch"] + 5.0 * m["train/identity_epoch"]
             + weight * m["train/structure_epoch"])
    assert m["train/loss_g_epoch"].item() == pytest.approx(parts.item(), rel=1e-5)
    assert (m["train/structure_epoch"].item() > 0) == (weight > 0)
