"""CycleGAN / Pix2Pix: training updates the nets, validation metrics equal independent references (numpy,
scikit-image, a direct 2.5D FID), whole-volume inference shapes, the mean baseline, channels-last and bf16."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from gan.inference import translate_volume
from gan.models import CycleGAN, Pix2Pix
from tests.helpers import TINY_CYCLEGAN, TINY_PIX2PIX, RandomPairs, cpu_trainer, volume_dm


def test_cyclegan_trains_and_evaluates_against_a_numpy_reference(phantom_dir, tmp_path):
    from skimage.metrics import structural_similarity

    dm = volume_dm(phantom_dir)
    model = CycleGAN(**TINY_CYCLEGAN)
    trainer = cpu_trainer(tmp_path, limit_val_batches=1)
    before = [p.detach().clone() for p in model.generator.parameters()]
    trainer.fit(model, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters())), "generator was updated"
    # recompute the logged validation metrics for the one validated patient independently
    batch = next(iter(dm.val_dataloader()))
    pred_unit = model.translate(batch["ct"])[0, 0].numpy().astype(np.float64)
    w = batch["window"]["mr"]
    low, high = float(w["low"]), float(w["high"])
    pred = (pred_unit + 1) / 2 * (high - low) + low
    target = batch["mr_phys"][0, 0].numpy().astype(np.float64)
    mask = batch["body_mask"][0, 0].numpy() > 0.5
    mae = np.abs(pred - target)[mask].mean()
    assert trainer.callback_metrics["val/mae"].item() == pytest.approx(mae, rel=1e-4)
    # the baseline copies the CT (network range) through the MR window
    ct_unit = batch["ct"][0, 0].numpy().astype(np.float64)
    base = (ct_unit + 1) / 2 * (high - low) + low
    assert trainer.callback_metrics["val/baseline_mae"].item() == pytest.approx(np.abs(base - target)[mask].mean(),
                                                                                rel=1e-4)
    clip = lambda a: np.clip(a, low, high)  # noqa: E731 - default protocol clips to the evaluation window
    _, smap = structural_similarity(clip(pred), clip(target), data_range=high - low, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    pad = 5  # skimage crops (win_size - 1) // 2 with its Gaussian window of 11
    inner = np.zeros_like(mask)
    inner[pad:-pad, pad:-pad, pad:-pad] = True
    assert trainer.callback_metrics["val/ssim"].item() == pytest.approx(smap[mask & inner].mean(), abs=2e-3)


def test_translate_volume_2p5d_and_3d_shapes():
    vol = torch.rand(1, 1, 30, 26, 9) * 2 - 1
    m25 = CycleGAN(mode="2.5d", slices=3, **TINY_CYCLEGAN)
    assert m25.translate(vol).shape == vol.shape, "odd in-plane sizes are padded and cropped back"
    m3 = Pix2Pix(mode="3d", generator={"arch": "resnet", "features": 4, "n_blocks": 1},
                 evaluation={"roi_size": (16, 16, 16)})
    assert m3.translate(vol).shape == vol.shape
    with pytest.raises(ValueError, match="3 sizes"):
        Pix2Pix(mode="3d")
    with pytest.raises(ValueError, match="CT targets only"):
        Pix2Pix(target="pet", evaluation={"protocol": "synthrad2023"})


def test_2d_inference_equals_slice_by_slice_translation():
    """The batched, padded 2.5D inference against translating each slice stack on its own (edges repeated)."""
    torch.manual_seed(0)
    m = CycleGAN(mode="2.5d", slices=3, **TINY_CYCLEGAN).eval()
    vol = torch.rand(1, 1, 28, 24, 5) * 2 - 1
    out = translate_volume(m.generator, vol, mode="2.5d", slices=3, batch=2)
    for k in range(5):
        idx = [min(max(k + d, 0), 4) for d in (-1, 0, 1)]
        stack = vol[0, 0][:, :, idx].permute(2, 0, 1)[None]  # (1, 3, 28, 24): multiples of 4 already
        with torch.no_grad():
            ref = m.generator(stack)[0, 1]
        torch.testing.assert_close(out[0, 0, :, :, k], ref, rtol=1e-5, atol=1e-6)


def test_pix2pix_lesion_weighting_and_pet_metrics(phantom_dir, tmp_path):
    dm = volume_dm(phantom_dir, target="pet", paired=True, mask_keys=["lesion_mask"], mode="2.5d", slices=3)
    model = Pix2Pix(mode="2.5d", slices=3, lesion_weight=5.0, **TINY_PIX2PIX)
    trainer = cpu_trainer(tmp_path, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    m = trainer.callback_metrics
    for k in ("val/mae", "val/psnr", "val/ssim", "val/baseline_mae"):
        assert torch.isfinite(m[k]), k
    assert model.target_count > 0, "the mean-SUV baseline is accumulated from training targets"
    # the mean baseline is the mean training SUV inside the body, written out independently
    batch = next(iter(dm.val_dataloader()))
    mean = (model.target_sum / model.target_count).item()
    target = batch["pet_phys"][0, 0].numpy().astype(np.float64)
    mask = batch["body_mask"][0, 0].numpy() > 0.5
    base = np.where(mask, mean, 0.0)
    assert m["val/baseline_mae"].item() == pytest.approx(np.abs(base - target)[mask].mean(), rel=1e-4)
    if batch["lesion_mask"].sum() > 0:
        assert "val/lesion_suvmax_abs_error" in m


def test_target_mean_accumulates_per_sample_windows():
    """The running training-target mean (the ``mean`` baseline) against numpy, with a different window per sample
    (MR percentiles differ per volume) and a log window."""
    model = Pix2Pix(**TINY_PIX2PIX)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    body = (torch.rand(3, 1, 8, 8, generator=g) > 0.3).float()
    low, high = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([20.0, 30.0, 15.0])
    for log in (torch.zeros(3), torch.ones(3)):
        model.target_sum.zero_()
        model.target_count.zero_()
        model.track_target(y, body, {"low": low, "high": high, "log": log})
        model.flush_target_sums()  # the sync point (before evaluation and checkpoints) adds the pending sums
        total, count = 0.0, 0
        for i in range(3):
            lo, hi = float(low[i]), float(high[i])
            if log[0]:
                lo, hi = np.log1p(lo), np.log1p(hi)
            x = (y[i].numpy().astype(np.float64) + 1) / 2 * (hi - lo) + lo
            phys = np.expm1(x) if log[0] else x
            sel = body[i].numpy() > 0.5
            total, count = total + phys[sel].sum(), count + sel.sum()
        assert model.target_count.item() == count
        assert model.target_sum.item() == pytest.approx(total, rel=1e-12)


def test_validation_logs_2p5d_fid_equal_to_a_direct_metric(phantom_dir, tmp_path, monkeypatch):
    """The validation's 2.5D FID/KID wiring against a direct metric on the same slices. The extractor is a tiny
    seeded net standing in for the ``fid_weights`` Inception (a 2048-d square root per axis cost a minute);
    Inception itself is tested against pytorch-fid in tests/gan/metrics."""
    from gan.metrics import Volume25DFID
    from tests.gan.metrics.helpers import tiny_extractor

    asked: list[str | None] = []

    def fake_extractor(weights: str | None):
        asked.append(weights)
        return tiny_extractor(0)

    monkeypatch.setattr("gan.models.translation.fid_extractor", fake_extractor)
    dm = volume_dm(phantom_dir, val_fraction=0.2)
    model = CycleGAN(**{**TINY_CYCLEGAN, "evaluation": {"inference_batch": 32, "fid_weights": "random",
                                                        "fid_max_slices": 3}})
    assert asked == ["random"]
    trainer = cpu_trainer(tmp_path, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    logged = trainer.callback_metrics["val/fid_2p5d"].item()
    batch = next(iter(dm.val_dataloader()))
    # an independent metric on the axial slices only
    ref = Volume25DFID(extractor=tiny_extractor(0), axes=(2,), max_slices_per_axis=3,
                       min_images_for_fid=2, kid=True, kid_subsets=50, kid_subset_size=100)
    ref.update(batch["mr"][0].clamp(-1, 1), real=True)
    ref.update(model.translate(batch["ct"])[0].clamp(-1, 1), real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ref.compute()
    assert trainer.callback_metrics["val/fid_axis2"].item() == pytest.approx(res.per_axis[2].value, rel=1e-4)
    assert trainer.callback_metrics["val/kid_axis2"].item() == pytest.approx(res.kid_per_axis[2].mean, rel=1e-4,
                                                                             abs=1e-7)
    kids = [trainer.callback_metrics[f"val/kid_axis{a}"].item() for a in range(3)]
    assert trainer.callback_metrics["val/kid_2p5d"].item() == pytest.approx(sum(kids) / 3, rel=1e-6, abs=1e-9)
    per_axis = [trainer.callback_metrics[f"val/fid_axis{a}"].item() for a in range(3)]
    assert logged == pytest.approx(sum(per_axis) / 3, rel=1e-6)


def test_channels_last_trains_and_translates_like_contiguous(tmp_path):
    torch.manual_seed(0)
    ref, cl = Pix2Pix(**TINY_PIX2PIX), Pix2Pix(channels_last=True, **TINY_PIX2PIX)
    cl.load_state_dict(ref.state_dict())
    cl.setup("fit")
    conv = next(m for m in cl.generator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    vol = torch.rand(1, 1, 40, 36, 5) * 2 - 1
    torch.testing.assert_close(cl.translate(vol), ref.translate(vol), rtol=1e-4, atol=1e-5)
    trainer = cpu_trainer(tmp_path, limit_val_batches=0, limit_train_batches=None, deterministic=False)
    trainer.fit(cl, torch.utils.data.DataLoader(RandomPairs(), batch_size=2))
    assert torch.isfinite(trainer.callback_metrics["train/loss_g_epoch"])
    m3 = CycleGAN(mode="3d", channels_last=True, **{**TINY_CYCLEGAN, "evaluation": {"roi_size": (16, 16, 16)}})
    m3.setup("predict")
    assert m3.memory_format == torch.channels_last_3d
    assert m3.translate(torch.rand(1, 1, 20, 18, 17) * 2 - 1).shape == (1, 1, 20, 18, 17)


def test_bf16_mixed_precision_trains_both_models(tmp_path):
    torch.manual_seed(0)
    for model in (Pix2Pix(**TINY_PIX2PIX), CycleGAN(source="ct", target="pet", lambda_structure=5.0, **TINY_CYCLEGAN)):
        trainer = cpu_trainer(tmp_path, precision="bf16-mixed", limit_val_batches=0, limit_train_batches=None,
                              deterministic=False)
        trainer.fit(model, torch.utils.data.DataLoader(RandomPairs(), batch_size=2))
        losses = {k: v for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        assert all(p.dtype == torch.float32 for p in model.parameters()), "bf16 autocast keeps float32 master weights"
