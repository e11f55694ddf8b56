"""Per-patient volume metrics, the SynthRAD protocols, patient averaging and lesion SUV errors.

The references below are written independently, step by step, with numpy / scipy / scikit-image calls
following each protocol's published evaluation code (SynthRAD2023 ``metrics/functions/image_metrics.py``,
SynthRAD2025 ``evaluation/image_metrics.py``).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.signal import fftconvolve
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

from gan.metrics import LesionSUVMetrics, VolumeMetrics, lesion_suv_errors, volume_metrics

SHAPE = (40, 48, 36)


def _ct_phantom(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Target CT (air, soft tissue, bone beyond 3071 HU), a flawed prediction and a body mask.

    The body is an elliptic cylinder along the first axis, cut by the field of view like a real CT, so
    the mask touches two faces of the volume (edge padding and border crops matter).
    """
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    body = (grid[1] / 0.85) ** 2 + (grid[2] / 0.75) ** 2 <= 1.0
    bone = sum((g / r) ** 2 for g, r in zip(grid, (0.25, 0.3, 0.2))) <= 1.0
    texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 1.5)
    target = np.where(body, 40.0 + 400.0 * texture / texture.std(), -1000.0)
    target = np.where(bone, 2600.0 + 900.0 * texture / texture.std(), target)  # up to ~5000 HU
    target += rng.normal(0.0, 10.0, shape)
    pred = ndimage.shift(target, (0.6, -0.4, 0.3), order=1, mode="nearest")
    pred += rng.normal(15.0, 60.0, shape)
    pred[~body] += rng.normal(0.0, 300.0, int((~body).sum()))  # garbage outside the body
    pred[body & (rng.random(shape) < 0.01)] = -1500.0  # some voxels below -1024 inside the body
    return pred, target, body


# ---------------------------------------------------------------------------------------------- refs


def ref_default(pred, target, mask, low=-1024.0, high=3000.0):
    gt_c, pr_c = np.clip(target, low, high), np.clip(pred, low, high)
    _, smap = structural_similarity(
        gt_c - low, pr_c - low, data_range=high - low, gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, full=True,
    )
    return {
        "mae": np.abs(pred - target)[mask].mean(),
        "psnr": peak_signal_noise_ratio(gt_c[mask], pr_c[mask], data_range=high - low),
        "ssim": crop(smap, 5)[crop(mask, 5)].mean(dtype=np.float64),
    }


def ref_synthrad2023(pred, target, mask, low=-1024.0, high=3000.0):
    m = np.where(mask > 0, 1.0, 0.0)
    mae = np.sum(np.abs(target * m - pred * m)) / m.sum()
    gt = np.where(target < low, low, target)
    gt = np.where(gt > high, high, gt)
    pr = np.where(pred < low, low, pred)
    pr = np.where(pr > high, high, pr)
    psnr = peak_signal_noise_ratio(gt[m == 1], pr[m == 1], data_range=high - low)
    gt = np.where(m == 0, low, np.clip(target, low, high)) - low
    pr = np.where(m == 0, low, np.clip(pred, low, high)) - low
    _, smap = structural_similarity(gt, pr, data_range=high - low, full=True)
    ssim = crop(smap, 3)[crop(m, 3).astype(bool)].mean(dtype=np.float64)
    return {"mae": mae, "psnr": psnr, "ssim": ssim}


def _ref_level_map(x, y, r, w):
    """One MS-SSIM level as SynthRAD2025: 7-box, sample covariance, clipped L, C, S, all raised to w."""
    f = lambda a: ndimage.uniform_filter(a, size=7)  # noqa: E731  (mode='reflect' by default)
    norm = 7**3 / (7**3 - 1)
    ux, uy = f(x), f(y)
    vx = norm * (f(x * x) - ux * ux)
    vy = norm * (f(y * y) - uy * uy)
    vxy = norm * (f(x * y) - ux * uy)
    sx, sy = np.clip(vx, 0, None) ** 0.5, np.clip(vy, 0, None) ** 0.5
    c1, c2 = (0.01 * r) ** 2, (0.03 * r) ** 2
    c3 = c2 / 2
    lum = np.clip((2 * ux * uy + c1) / (ux * ux + uy * uy + c1), 0, None)
    con = np.clip((2 * sx * sy + c2) / (vx + vy + c2), 0, None)
    st = np.clip((vxy + c3) / (sx * sy + c3), 0, None)
    return lum**w * con**w * st**w


def ref_synthrad2025(pred, target, mask, low=-1024.0, high=3071.0):
    gt0 = np.where(mask == 0, -1024, target)
    pr0 = np.where(mask == 0, -1024, pred)
    m = np.where(mask > 0, 1.0, 0.0)
    mae = np.sum(np.abs(gt0 * m - pr0 * m)) / m.sum()
    psnr = peak_signal_noise_ratio(
        np.clip(gt0, low, high)[m == 1], np.clip(pr0, low, high)[m == 1], data_range=high - low
    )
    gt = np.where(m == 0, low, np.clip(gt0, low, high)) - low
    pr = np.where(m == 0, low, np.clip(pr0, low, high)) - low
    pads = [(max((97 - n) // 2, 0), max(97 - n - (97 - n) // 2, 0)) for n in gt.shape]
    gt, pr, mk = (np.pad(a, pads, mode="edge") for a in (gt, pr, m))
    values = []
    for w in (0.0448, 0.2856, 0.3001, 0.2363, 0.1333):
        smap = _ref_level_map(gt, pr, high - low, w)
        values.append(crop(smap, 3)[crop(mk, 3).astype(bool)].mean(dtype=np.float64))
        box = np.ones((2, 2, 2)) / 8
        gt, pr = (fftconvolve(a, box, mode="same")[::2, ::2, ::2] for a in (gt, pr))
        mk = mk[::2, ::2, ::2]
    return {"mae": mae, "psnr": psnr, "ms_ssim": np.prod([np.clip(v, 0, 1) for v in values])}


REFS = {"default": ref_default, "synthrad2023": ref_synthrad2023, "synthrad2025": ref_synthrad2025}


def _assert_close(got: dict, ref: dict, rel: float = 1e-9) -> None:
    assert set(got) == set(ref)
    for key in ref:
        assert got[key] == pytest.approx(float(ref[key]), rel=rel), key


# ---------------------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("protocol", ["default", "synthrad2023", "synthrad2025"])
def test_protocols_match_step_by_step_reference(protocol):
    pred, target, mask = _ct_phantom(SHAPE, 0)
    got = volume_metrics(pred, target, mask, protocol=protocol)
    _assert_close(got, REFS[protocol](pred, target, mask))


def test_protocols_really_differ():
    pred, target, mask = _ct_phantom(SHAPE, 1)
    d = volume_metrics(pred, target, mask)
    s23 = volume_metrics(pred, target, mask, protocol="synthrad2023")
    s25 = volume_metrics(pred, target, mask, protocol="synthrad2025")
    assert d["mae"] == pytest.approx(s23["mae"], rel=1e-12)  # both unclipped over the mask
    assert s25["mae"] == pytest.approx(s23["mae"], rel=1e-12)
    assert d["ssim"] != pytest.approx(s23["ssim"], rel=1e-4)  # Gaussian vs 7-box on masked volume
    assert s25["psnr"] != pytest.approx(s23["psnr"], rel=1e-6)  # window 3071 vs 3000
    assert 0.0 < s25["ms_ssim"] < 1.0


def test_synthrad2025_identical_volumes_score_one_and_custom_window():
    pred, target, mask = _ct_phantom(SHAPE, 2)
    same = volume_metrics(target, target, mask, protocol="synthrad2025")
    assert same["ms_ssim"] == pytest.approx(1.0, abs=1e-12)
    got = volume_metrics(pred, target, mask, protocol="synthrad2025", data_range=(-1000.0, 2000.0))
    _assert_close(got, ref_synthrad2025(pred, target, mask, low=-1000.0, high=2000.0))
    got23 = volume_metrics(pred, target, mask, protocol="synthrad2023", data_range=(-1000.0, 2200.0))
    _assert_close(got23, ref_synthrad2023(pred, target, mask, low=-1000.0, high=2200.0))


def test_synthrad2025_mask_missing_the_centre_gives_nan_like_the_challenge():
    pred, target, _ = _ct_phantom(SHAPE, 17)
    corner = np.zeros(SHAPE, dtype=bool)
    corner[2:12, 2:12, 2:12] = True  # the single voxel left at the coarsest level is not in the mask
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        ref = ref_synthrad2025(pred, target, corner)["ms_ssim"]
    assert np.isnan(ref)
    with pytest.warns(RuntimeWarning, match="no mask voxel survives"):
        got = volume_metrics(pred, target, corner, protocol="synthrad2025")
    assert np.isnan(got["ms_ssim"])


@pytest.mark.parametrize("protocol", ["default", "synthrad2023", "synthrad2025"])
def test_axis_order_does_not_matter(protocol):
    pred, target, mask = _ct_phantom(SHAPE, 3)
    zyx = volume_metrics(pred, target, mask, protocol=protocol)
    for perm in ((2, 1, 0), (1, 2, 0)):
        xyz = volume_metrics(
            pred.transpose(perm), target.transpose(perm), mask.transpose(perm), protocol=protocol
        )
        for key in zyx:
            assert xyz[key] == pytest.approx(zyx[key], rel=1e-10), (perm, key)


def test_data_range_is_the_window_not_the_data():
    pred, target, mask = _ct_phantom(SHAPE, 4)
    # shrink the content to a narrow HU band: the formula keeps R = 4024
    pred_n, target_n = pred * 0.1, target * 0.1
    got = volume_metrics(pred_n, target_n, mask)
    mse = np.mean((pred_n - target_n)[mask] ** 2)
    assert got["psnr"] == pytest.approx(10 * np.log10(4024.0**2 / mse), rel=1e-12)
    inferred = peak_signal_noise_ratio(target_n[mask], pred_n[mask], data_range=np.ptp(target_n[mask]))
    assert got["psnr"] != pytest.approx(inferred, rel=1e-3)
    _assert_close(got, ref_default(pred_n, target_n, mask))


def test_torch_inputs_match_numpy():
    pred, target, mask = _ct_phantom(SHAPE, 5)
    p32, t32 = pred.astype(np.float32), target.astype(np.float32)
    for protocol in ("default", "synthrad2025"):
        a = volume_metrics(p32, t32, mask, protocol=protocol)
        tensors = (torch.from_numpy(p32), torch.from_numpy(t32), torch.from_numpy(mask))
        b = volume_metrics(*tensors, protocol=protocol)
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-12)


@pytest.mark.parametrize("protocol", ["default", "synthrad2025"])
def test_volume_metrics_tracker_averages_patients_not_voxels(protocol):
    small = _ct_phantom((24, 28, 22), 6)
    large = _ct_phantom(SHAPE, 7)
    ref = [REFS[protocol](*small), REFS[protocol](*large)]
    metric = VolumeMetrics(protocol=protocol)
    metric.update(*small)
    metric.update(*large)
    out = metric.compute()
    assert int(out["num_patients"]) == 2
    for key in ref[0]:
        values = np.array([float(r[key]) for r in ref])
        assert float(out[key]) == pytest.approx(values.mean(), rel=1e-9), key
        assert float(out[f"{key}_std"]) == pytest.approx(values.std(), rel=1e-6, abs=1e-12), key
    # MAE weighted by voxel count would differ: the tracker must not pool voxels
    pooled = np.concatenate(
        [np.abs(p - t)[m] for p, t, m in (small, large)]
    ).mean()
    assert float(out["mae"]) != pytest.approx(pooled, rel=1e-4)


def test_volume_metrics_states_sum_like_ddp_ranks():
    patients = [_ct_phantom((24, 28, 22), s) for s in (8, 9, 10)]
    rank0, rank1, single = VolumeMetrics(), VolumeMetrics(), VolumeMetrics()
    rank0.update(*patients[0])
    rank1.update(*patients[1])
    rank1.update(*patients[2])
    for p in patients:
        single.update(*p)
    rank0.merge_state(rank1)  # what the "sum" dist_reduce_fx does across ranks
    merged, ref = rank0.compute(), single.compute()
    for key in ref:
        assert float(merged[key]) == pytest.approx(float(ref[key]), rel=1e-12)
    expected = np.mean([ref_default(*p)["ssim"] for p in patients])
    assert float(merged["ssim"]) == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------------------------------------- SUV


def _pet_with_lesions(seed: int):
    rng = np.random.default_rng(seed)
    shape = (20, 22, 18)
    target = rng.uniform(0.5, 2.0, shape)
    pred = target + rng.normal(0.0, 0.3, shape)
    lesions = [
        (slice(2, 5), slice(3, 7), slice(2, 4)),  # 24 voxels
        (slice(10, 16), slice(10, 15), slice(8, 14)),  # 180 voxels
    ]
    mask = np.zeros(shape, dtype=bool)
    for box in lesions:
        target[box] += rng.uniform(3.0, 12.0, target[box].shape)
        pred[box] += rng.uniform(2.0, 10.0, pred[box].shape)
        mask[box] = True
    return pred, target, mask, lesions


def _numpy_suv(pred, target, sel):
    tmax, pmax, tmean, pmean = target[sel].max(), pred[sel].max(), target[sel].mean(), pred[sel].mean()
    return {
        "suvmax_abs_error": abs(pmax - tmax),
        "suvmax_rel_error": abs(pmax - tmax) / tmax,
        "suvmean_abs_error": abs(pmean - tmean),
        "suvmean_rel_error": abs(pmean - tmean) / tmean,
    }


def test_lesion_suv_errors_match_numpy():
    pred, target, mask, lesions = _pet_with_lesions(11)
    out = lesion_suv_errors(pred, target, mask)
    assert out["num_lesions"] == 2
    for key, value in _numpy_suv(pred, target, mask).items():
        assert out[key] == pytest.approx(value, rel=1e-12)
    by_size = sorted(out["lesions"], key=lambda d: d["num_voxels"])
    assert [d["num_voxels"] for d in by_size] == [24, 180]
    for entry, box in zip(by_size, lesions):
        sel = np.zeros_like(mask)
        sel[box] = True
        for key, value in _numpy_suv(pred, target, sel).items():
            assert entry[key] == pytest.approx(value, rel=1e-12)
        assert entry["target_suvmax"] == pytest.approx(target[box].max(), rel=1e-12)


def test_lesion_connectivity_edge_touching_boxes():
    pred, target, _, _ = _pet_with_lesions(12)
    mask = np.zeros(target.shape, dtype=bool)
    mask[2:5, 2:5, 2:5] = True
    mask[5:8, 5:8, 2:5] = True  # shares only an edge with the first box
    assert lesion_suv_errors(pred, target, mask)["num_lesions"] == 1  # 18-connected
    assert lesion_suv_errors(pred, target, mask, connectivity=1)["num_lesions"] == 2
    empty = lesion_suv_errors(pred, target, np.zeros_like(mask))
    assert empty["num_lesions"] == 0 and np.isnan(empty["suvmax_abs_error"])


def test_lesion_suv_tracker_patient_and_lesion_means():
    a, b = _pet_with_lesions(13), _pet_with_lesions(14)
    metric = LesionSUVMetrics()
    metric.update(*a[:3])
    metric.update(*b[:3])
    out = metric.compute()
    assert int(out["num_patients"]) == 2 and int(out["num_lesions"]) == 4
    per_patient = [_numpy_suv(p, t, m) for p, t, m, _ in (a, b)]
    per_lesion = []
    for p, t, _, boxes in (a, b):
        for box in boxes:
            sel = np.zeros(t.shape, dtype=bool)
            sel[box] = True
            per_lesion.append(_numpy_suv(p, t, sel))
    for key in per_patient[0]:
        assert float(out[key]) == pytest.approx(np.mean([d[key] for d in per_patient]), rel=1e-12)
        assert float(out[f"lesion_{key}"]) == pytest.approx(np.mean([d[key] for d in per_lesion]), rel=1e-12)


# ---------------------------------------------------------------------------------------------- errors


def test_bad_arguments_raise_clear_errors():
    pred, target, mask = _ct_phantom((24, 28, 22), 15)
    with pytest.raises(ValueError, match="protocol"):
        volume_metrics(pred, target, mask, protocol="synthrad2024")
    with pytest.raises(ValueError, match="needs a \\(low, high\\) window"):
        volume_metrics(pred, target, mask, protocol="synthrad2023", data_range=4024.0)
    with pytest.raises(ValueError, match="3 spatial dimensions"):
        volume_metrics(pred[0], target[0], mask[0], protocol="synthrad2025")
    with pytest.raises(ValueError, match="selects no voxels"):
        volume_metrics(pred, target, np.zeros_like(mask))
    with pytest.raises(ValueError, match="needs a \\(low, high\\) window"):
        VolumeMetrics(protocol="synthrad2025", data_range=4095.0)
    p, t, m, _ = _pet_with_lesions(16)
    t[m] = 0.0
    with pytest.raises(ValueError, match="target SUVmean or SUVmax <= 0"):
        lesion_suv_errors(p, t, m)
