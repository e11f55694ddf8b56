"""Functional MAE / PSNR / SSIM against numpy and scikit-image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from gan.metrics import mae, psnr, ssim, ssim_map

WINDOW = (-1024.0, 3000.0)


def _pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A structured 'CT' target in HU, a noisy biased prediction, and an off-centre box mask."""
    rng = np.random.default_rng(seed)
    smooth = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 2.0)
    target = smooth / smooth.std() * 1200.0 + 100.0  # spans beyond the [-1024, 3000] window
    pred = target + rng.normal(20.0, 150.0, shape)
    mask = np.zeros(shape, dtype=bool)
    mask[tuple(slice(2, s - 5) for s in shape)] = True
    return pred, target, mask


def _skimage_masked_ssim(pred, target, data_range, mask, **kwargs) -> float:
    """skimage's full SSIM map, cropped like skimage's mean, averaged over the cropped mask."""
    _, smap = structural_similarity(target, pred, data_range=data_range, full=True, **kwargs)
    win = kwargs.get("win_size") or (11 if kwargs.get("gaussian_weights") else 7)
    pad = (win - 1) // 2
    return float(crop(smap, pad)[crop(mask, pad)].mean(dtype=np.float64))


GAUSS = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)


def test_mae_masked_matches_numpy():
    pred, target, mask = _pair((30, 26, 22), 0)
    pred[10, 10, 10] = 5000.0  # beyond the window, inside the mask
    assert float(mae(pred, target, mask=mask)) == pytest.approx(np.abs(pred - target)[mask].mean(), rel=1e-12)
    assert float(mae(pred, target)) == pytest.approx(np.abs(pred - target).mean(), rel=1e-12)
    clipped = np.abs(np.clip(pred, *WINDOW) - np.clip(target, *WINDOW))[mask].mean()
    assert float(mae(pred, target, WINDOW, mask)) == pytest.approx(clipped, rel=1e-12)
    assert clipped != pytest.approx(np.abs(pred - target)[mask].mean(), rel=1e-6)


def test_psnr_masked_matches_skimage():
    pred, target, mask = _pair((30, 26, 22), 1)
    ref = peak_signal_noise_ratio(target[mask], pred[mask], data_range=4024.0)
    assert float(psnr(pred, target, 4024.0, mask)) == pytest.approx(ref, rel=1e-12)
    ref_win = peak_signal_noise_ratio(
        np.clip(target, *WINDOW)[mask], np.clip(pred, *WINDOW)[mask], data_range=4024.0
    )
    assert float(psnr(pred, target, WINDOW, mask)) == pytest.approx(ref_win, rel=1e-12)
    assert ref_win != pytest.approx(ref, rel=1e-6)  # the window really clips this data
    ref_all = peak_signal_noise_ratio(target, pred, data_range=1000.0)
    assert float(psnr(pred, target, 1000.0)) == pytest.approx(ref_all, rel=1e-12)


def test_psnr_data_range_is_not_inferred_from_the_batch():
    pred, target, mask = _pair((24, 20, 18), 2)
    before = float(psnr(pred, target, WINDOW, mask))
    # a different batch content outside the mask changes the data's min/max but not the formula
    target2, pred2 = target.copy(), pred.copy()
    target2[0, 0, 0], pred2[-1, -1, -1] = -3000.0, 2900.0
    after = float(psnr(pred2, target2, WINDOW, mask))
    mse = np.mean((np.clip(pred, *WINDOW) - np.clip(target, *WINDOW))[mask] ** 2)
    assert before == pytest.approx(10 * np.log10(4024.0**2 / mse), rel=1e-12)
    assert after == pytest.approx(before, rel=1e-12)
    inferred = peak_signal_noise_ratio(target2[mask], pred2[mask], data_range=np.ptp(target2))
    assert after != pytest.approx(inferred, rel=1e-3)


def test_ssim_2d_gaussian_matches_skimage():
    pred, target, mask = _pair((37, 45), 3)
    ref_full = structural_similarity(target, pred, data_range=4024.0, **GAUSS)
    assert float(ssim(pred, target, 4024.0)) == pytest.approx(ref_full, rel=1e-10)
    ref = _skimage_masked_ssim(pred, target, 4024.0, mask, **GAUSS)
    assert float(ssim(pred, target, 4024.0, mask)) == pytest.approx(ref, rel=1e-10)


def test_ssim_window_clips_and_measures_from_low():
    pred, target, mask = _pair((37, 45), 4)
    low, high = WINDOW
    ref = _skimage_masked_ssim(
        np.clip(pred, low, high) - low, np.clip(target, low, high) - low, high - low, mask, **GAUSS
    )
    assert float(ssim(pred, target, WINDOW, mask)) == pytest.approx(ref, rel=1e-10)
    # equals SSIM of the window rescaled to [0, 1] with data_range 1
    ref01 = _skimage_masked_ssim(
        (np.clip(pred, low, high) - low) / (high - low),
        (np.clip(target, low, high) - low) / (high - low),
        1.0,
        mask,
        **GAUSS,
    )
    assert ref == pytest.approx(ref01, rel=1e-9)


def test_ssim_3d_gaussian_matches_skimage():
    pred, target, mask = _pair((22, 27, 19), 5)
    ref = _skimage_masked_ssim(pred, target, 4024.0, mask, **GAUSS)
    assert float(ssim(pred, target, 4024.0, mask)) == pytest.approx(ref, rel=1e-10)
    ref_full = structural_similarity(target, pred, data_range=4024.0, **GAUSS)
    assert float(ssim(pred, target, 4024.0)) == pytest.approx(ref_full, rel=1e-10)


@pytest.mark.parametrize("shape", [(31, 29), (15, 18, 13)])
def test_ssim_uniform_window_matches_skimage_defaults(shape):
    pred, target, mask = _pair(shape, 6)
    ref = _skimage_masked_ssim(pred, target, 4024.0, mask)  # skimage defaults: 7-box, sample covariance
    got = ssim(pred, target, 4024.0, mask, gaussian=False, sample_covariance=True)
    assert float(got) == pytest.approx(ref, rel=1e-10)
    ref5 = _skimage_masked_ssim(pred, target, 4024.0, mask, win_size=5, use_sample_covariance=False)
    got5 = ssim(pred, target, 4024.0, mask, gaussian=False, win_size=5)
    assert float(got5) == pytest.approx(ref5, rel=1e-10)


@pytest.mark.parametrize("shape", [(23, 30), (13, 16, 12)])
def test_ssim_map_equals_skimage_full_map_including_borders(shape):
    pred, target, _ = _pair(shape, 7)
    _, ref = structural_similarity(target, pred, data_range=4024.0, full=True, **GAUSS)
    np.testing.assert_allclose(ssim_map(pred, target, 4024.0).numpy(), ref, rtol=1e-9, atol=1e-12)
    _, ref_box = structural_similarity(target, pred, data_range=4024.0, full=True)
    got_box = ssim_map(pred, target, 4024.0, gaussian=False, sample_covariance=True).numpy()
    np.testing.assert_allclose(got_box, ref_box, rtol=1e-9, atol=1e-12)


def test_ssim_data_range_is_not_inferred_from_the_batch():
    pred, target, mask = _pair((40, 44), 8)
    mask[:] = False
    mask[4:16, 4:16] = True
    before = float(ssim(pred, target, 4024.0, mask))
    target2 = target.copy()
    target2[-1, -1] = 20000.0  # far outside the mask's windows: only the batch's range changes
    after = float(ssim(pred, target2, 4024.0, mask))
    assert after == pytest.approx(before, rel=1e-12)
    assert before == pytest.approx(_skimage_masked_ssim(pred, target, 4024.0, mask, **GAUSS), rel=1e-10)
    inferred = _skimage_masked_ssim(pred, target2, float(np.ptp(target2)), mask, **GAUSS)
    assert after != pytest.approx(inferred, rel=1e-4)


def test_torch_and_numpy_inputs_agree_and_identical_images_score_one():
    pred, target, mask = _pair((20, 24, 18), 9)
    pred32, target32 = pred.astype(np.float32), target.astype(np.float32)
    a = ssim(pred32, target32, WINDOW, mask)
    b = ssim(torch.from_numpy(pred32), torch.from_numpy(target32), WINDOW, torch.from_numpy(mask))
    assert float(a) == pytest.approx(float(b), rel=1e-12)
    assert a.dtype == torch.float64
    assert float(ssim(target, target, WINDOW, mask)) == pytest.approx(1.0, abs=1e-12)
    assert float(psnr(target, target, WINDOW, mask)) == float("inf")
    assert float(mae(target, target, mask=mask)) == 0.0


def test_bad_inputs_raise_clear_errors():
    pred, target, mask = _pair((20, 20, 20), 10)
    with pytest.raises(ValueError, match="differs from target shape"):
        psnr(pred[:-1], target, 1.0)
    with pytest.raises(ValueError, match="mask: shape"):
        psnr(pred, target, 1.0, mask[:-1])
    with pytest.raises(ValueError, match="selects no voxels"):
        mae(pred, target, mask=np.zeros_like(mask))
    with pytest.raises(ValueError, match="spatial dimensions"):
        ssim(pred[None], target[None], 1.0)
    with pytest.raises(ValueError, match="smaller than the SSIM window"):
        ssim(pred[:8], target[:8], 1.0)
    bad = pred.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(ValueError, match="pred: contains NaN"):
        mae(bad, target)
    with pytest.raises(ValueError, match="data_range"):
        psnr(pred, target, 0.0)
    with pytest.raises(ValueError, match="data_range"):
        psnr(pred, target, (3000.0, -1024.0))
    with pytest.raises(ValueError, match="mask: contains negative"):
        mae(pred, target, mask=-mask.astype(np.int8))
    with pytest.raises(ValueError, match="win_size"):
        ssim(pred, target, 1.0, win_size=7)
    edge = np.zeros_like(mask)
    edge[0] = True
    with pytest.raises(ValueError, match="border"):
        ssim(pred, target, 1.0, edge)


def test_integer_and_big_endian_arrays_are_read_as_values():
    pred, target, mask = _pair((20, 22, 18), 11)
    p16, t16 = np.round(pred).astype(">i2"), np.round(target).astype(">i2")  # NIfTI data may be big-endian
    ref = peak_signal_noise_ratio(
        np.clip(t16.astype(np.float64), *WINDOW)[mask], np.clip(p16.astype(np.float64), *WINDOW)[mask],
        data_range=4024.0,
    )
    assert float(psnr(p16, t16, WINDOW, mask.astype(">u1"))) == pytest.approx(ref, rel=1e-12)
