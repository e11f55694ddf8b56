"""Sliced Wasserstein distance (gan.metrics.swd): its core against POT's sliced Wasserstein on the same projections,
the 1-D distance against scipy, the Laplacian pyramid against a scipy.ndimage re-implementation of the Progressive GAN
code, the ranking of degraded tile sets against held-out real tiles, per class, batch/order invariance and DDP."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
from scipy import ndimage
from scipy.stats import wasserstein_distance

from gan.metrics import SlicedWassersteinDistance, sliced_wasserstein_distance
from gan.metrics.swd import (
    laplacian_pyramid,
    pyramid_resolutions,
    random_projections,
    sliced_wasserstein,
    wasserstein_1d,
)

FAST = {"patches_per_image": 48, "projections": 128}


def _tiles(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Seeded 'tissue-like' RGB tiles: smooth blobs of two stains plus fine grain, uint8."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, 3, size, size), dtype=np.uint8)
    for i in range(n):
        blobs = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.0, mode="wrap") * 6
        grain = rng.normal(size=(size, size))
        stain = np.stack([0.8 * blobs, 1.0 * blobs, 0.4 * blobs]) + 0.6 * grain[None] + rng.normal(0, 0.3, (3, 1, 1))
        out[i] = np.clip(150 + 40 * stain, 0, 255).astype(np.uint8)
    return torch.from_numpy(out)


def _blur(x: torch.Tensor, sigma: float = 1.2) -> torch.Tensor:
    arr = ndimage.gaussian_filter(x.numpy().astype(np.float64), (0, 0, sigma, sigma))
    return torch.from_numpy(np.clip(arr + 0.5, 0, 255).astype(np.uint8))


def _shift(x: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.int16) + torch.tensor([35, -10, -30], dtype=torch.int16).view(1, 3, 1, 1)).clamp(0, 255).to(
        torch.uint8)


@pytest.mark.parametrize("n_a,n_b", [(300, 300), (300, 217)])
def test_core_equals_pot_sliced_wasserstein_on_the_same_projections(n_a: int, n_b: int) -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(n_a, 20)), rng.normal(0.4, 1.3, size=(n_b, 20))
    proj = random_projections(20, 64, seed=3)
    assert torch.allclose(proj.norm(dim=0), torch.ones(64, dtype=torch.float64))
    ours = sliced_wasserstein(torch.from_numpy(a), torch.from_numpy(b), proj, block=17)
    ref = ot.sliced_wasserstein_distance(a, b, projections=proj.numpy(), p=1)
    assert ours == pytest.approx(float(ref), rel=1e-10)


def test_wasserstein_1d_equals_scipy() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(50, 3)), rng.exponential(size=(37, 3))
    ours = wasserstein_1d(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert ours == pytest.approx([wasserstein_distance(a[:, j], b[:, j]) for j in range(3)], rel=1e-10)


def _karras_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """The Progressive GAN code's pyr_down / pyr_up / Laplacian pyramid (metrics/sliced_wasserstein.py), in numpy."""
    g = np.float64([[1, 4, 6, 4, 1]])
    g = (g.T @ g / 256.0)[None, None]

    def down(m: np.ndarray) -> np.ndarray:
        return ndimage.convolve(m, g, mode="mirror")[:, :, ::2, ::2]

    def up(m: np.ndarray) -> np.ndarray:
        res = np.zeros((m.shape[0], m.shape[1], m.shape[2] * 2, m.shape[3] * 2), m.dtype)
        res[:, :, ::2, ::2] = m
        return ndimage.convolve(res, g * 4.0, mode="mirror")

    pyr = [x.astype(np.float64)]
    for _ in range(1, levels):
        pyr.append(down(pyr[-1]))
    return [pyr[i] - up(pyr[i + 1]) for i in range(levels - 1)] + [pyr[-1]]


def test_laplacian_pyramid_equals_the_progressive_gan_code() -> None:
    x = _tiles(3, seed=2, size=64)
    ours = laplacian_pyramid(x.float(), 3)
    ref = _karras_pyramid(x.numpy(), 3)
    assert [tuple(t.shape[2:]) for t in ours] == [(64, 64), (32, 32), (16, 16)]
    for o, r in zip(ours, ref):
        np.testing.assert_allclose(o.numpy(), r, atol=2e-3)
    assert pyramid_resolutions(64) == [64, 32, 16] and pyramid_resolutions(128, 16)[-1] == 16


def test_degraded_sets_score_worse_than_held_out_real_tiles() -> None:
    real, held, other = _tiles(48, seed=10), _tiles(48, seed=11), _tiles(48, seed=12)
    score, finest = {}, {}
    for norm in ("karras", "real"):
        metric = SlicedWassersteinDistance(normalisation=norm, reset_real_features=False, **FAST)
        metric.update(real, real=True)
        for name, fake in (("heldout", held), ("blurred", _blur(other)), ("shifted", _shift(other))):
            metric.reset()
            metric.update(fake, real=False)
            result = metric.compute()
            score[norm, name], finest[norm, name] = result.value, result.per_level["32"]
    # measured (seed 10): karras held-out 49.4, blurred 103.0 (finest level 37.3 vs 139.0), shifted 50.7;
    # real held-out 52.7, blurred 366.3, shifted 515.4
    assert score["karras", "blurred"] > 1.6 * score["karras", "heldout"]
    assert finest["karras", "blurred"] > 3 * finest["karras", "heldout"]  # blur removes the finest band
    assert score["real", "blurred"] > 3 * score["real", "heldout"]
    assert score["real", "shifted"] > 3 * score["real", "heldout"]  # a stain shift counts with the reals' statistics
    # the paper's per-set normalisation is blind to a global per-channel shift (documented): near the floor
    assert score["karras", "shifted"] < 1.3 * score["karras", "heldout"]


def test_functional_gives_the_floor_and_settings() -> None:
    real, held, fake = _tiles(24, seed=20), _tiles(24, seed=21), _blur(_tiles(24, seed=22))
    out = sliced_wasserstein_distance(real, fake, floor_images=held, seed=5, **FAST)
    assert set(out["per_level"]) == {"32", "16"}
    assert out["swd"] == pytest.approx(np.mean(list(out["per_level"].values())))
    assert out["floor"]["swd"] < out["swd"]
    assert out["settings"]["seed"] == 5 and out["settings"]["projections"] == 128 and out["settings"]["scale"] == 1e3
    floats = sliced_wasserstein_distance(real.float() / 127.5 - 1.0, fake, seed=5, **FAST)  # [-1, 1] input
    assert floats["swd"] == pytest.approx(out["swd"], rel=1e-9)
    again = sliced_wasserstein_distance(real, fake, seed=5, **FAST)
    assert again["swd"] == out["swd"]  # seeded: reproducible
    assert sliced_wasserstein_distance(real, fake, seed=6, **FAST)["swd"] != out["swd"]
    sub = sliced_wasserstein_distance(real, fake, seed=5, max_descriptors=600, **FAST)  # of 24 x 48 per level
    assert sub["settings"]["max_descriptors"] == 600 and sub["swd"] == pytest.approx(out["swd"], rel=0.25)
    assert sub["swd"] != out["swd"]


def test_batches_order_and_classes() -> None:
    real, fake = _tiles(20, seed=30), _tiles(18, seed=31)
    rl, fl = torch.arange(20) % 2, torch.arange(18) % 2
    one = SlicedWassersteinDistance(num_classes=2, class_names=["a", "b"], **FAST)
    one.update(real, real=True, labels=rl)
    one.update(fake, real=False, labels=fl)
    res = one.compute()
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    many = SlicedWassersteinDistance(num_classes=2, class_names=["a", "b"], **FAST)
    for i in range(0, 20, 7):  # other batches, other order: the same patches (seeded by image content)
        many.update(real[perm][i:i + 7], real=True, labels=rl[perm][i:i + 7])
    many.update(fake, real=False, labels=fl)
    assert many.compute().value == pytest.approx(res.value, rel=1e-9)
    for c in (0, 1):
        ref = sliced_wasserstein_distance(real[rl == c], fake[fl == c], **FAST)
        assert res.per_class[c]["value"] == pytest.approx(ref["swd"], rel=1e-9)
    scalars = res.scalars("val/swd")
    assert scalars["val/swd"] == res.value and scalars["val/swd/b"] == res.per_class[1]["value"]
    assert "val/swd/16px" in scalars


def test_bad_inputs_are_refused() -> None:
    metric = SlicedWassersteinDistance(**FAST)
    metric.update(_tiles(2, seed=0), real=True)
    with pytest.raises(ValueError, match="one size"):
        metric.update(_tiles(2, seed=0, size=48), real=False)
    with pytest.raises(ValueError, match="smaller than min_resolution"):
        sliced_wasserstein_distance(_tiles(2, 0, size=8), _tiles(2, 1, size=8))
    with pytest.raises(ValueError, match="normalisation"):
        SlicedWassersteinDistance(normalisation="none")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        sliced_wasserstein_distance(_tiles(2, 0).float(), _tiles(2, 1))


def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    if sys.platform.startswith("linux"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        real, fake = _tiles(10, seed=40), _tiles(9, seed=41)
        metric = SlicedWassersteinDistance(num_classes=2, **FAST)
        metric.update(real[rank::2], real=True, labels=(torch.arange(10) % 2)[rank::2])
        metric.update(fake[rank::2], real=False, labels=(torch.arange(9) % 2)[rank::2])
        res = metric.compute()
        Path(out_dir, f"{rank}.json").write_text(json.dumps({"value": res.value, "c0": res.per_class[0]["value"]}))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed not built")
def test_ddp_two_processes_equal_single_process(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    real, fake = _tiles(10, seed=40), _tiles(9, seed=41)
    single = SlicedWassersteinDistance(num_classes=2, **FAST)
    single.update(real, real=True, labels=torch.arange(10) % 2)
    single.update(fake, real=False, labels=torch.arange(9) % 2)
    ref = single.compute()
    for r in range(2):
        res = json.loads((tmp_path / f"{r}.json").read_text())
        assert res["value"] == pytest.approx(ref.value, rel=1e-6)
        assert res["c0"] == pytest.approx(ref.per_class[0]["value"], rel=1e-6)
