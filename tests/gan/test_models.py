"""CycleGAN / Pix2Pix LightningModules: training steps, evaluation against an independent reference,
exact mid-epoch resume, weights-only checkpoints, translation with geometry preserved."""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import lightning as L
import nibabel as nib
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from data.datamodules import VolumeTranslationDataModule
from gan.models import CycleGAN, Pix2Pix
from gan.models.image_pool import ImagePool
from gan.models.translation import linear_decay

TINY = dict(features=4, n_blocks=1, d_features=4, d_layers=2, inference_batch=32)


def _dm(root: Path, **kw) -> VolumeTranslationDataModule:
    args = dict(source="ct", target="mr", paired=False, patch_size=(32, 32), batch_size=2, val_fraction=0.2,
                test_fraction=0.2, seed=0, augment=False)
    args.update(kw)
    return VolumeTranslationDataModule(str(root), **args)


def _trainer(tmp: Path, **kw) -> L.Trainer:
    args = dict(default_root_dir=str(tmp), logger=False, enable_progress_bar=False, enable_model_summary=False,
                accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=4, num_sanity_val_steps=0,
                enable_checkpointing=False, deterministic=True)
    args.update(kw)
    return L.Trainer(**args)


def test_linear_decay_matches_the_reference_rule():
    f = linear_decay(3, 4)
    # pytorch-CycleGAN-and-pix2pix: 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1), epoch_count=1
    assert [round(f(e), 6) for e in range(8)] == [round(1.0 - max(0, e + 1 - 3) / 5.0, 6) for e in range(8)]


def test_image_pool_returns_history_and_restores_exactly():
    pool = ImagePool(3, seed=0)
    imgs = [torch.full((1, 1, 2, 2), float(i)) for i in range(10)]
    for i in range(3):
        assert torch.equal(pool.query(imgs[i]), imgs[i])  # filling up: returned as is
    outs = [pool.query(imgs[i])[0, 0, 0, 0].item() for i in range(3, 10)]
    assert any(o < 3 for o in outs), "some queries return older images"
    state = pool.state_dict()
    clone = ImagePool(3, seed=99)
    clone.load_state_dict(state)
    x = torch.full((4, 1, 2, 2), 42.0)
    assert torch.equal(pool.query(x), clone.query(x))


def test_cyclegan_trains_and_evaluates_against_a_numpy_reference(phantom_dir, tmp_path):
    from skimage.metrics import structural_similarity

    dm = _dm(phantom_dir)
    model = CycleGAN(source="ct", target="mr", **TINY)
    trainer = _trainer(tmp_path, limit_val_batches=1)
    before = [p.detach().clone() for p in model.generator.parameters()]
    trainer.fit(model, datamodule=dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.generator.parameters())), "generator was updated"
    assert model.window_sums[0, 3] > 0 and model.training_windows()["ct"] == (-1024.0, 3000.0, False)
    # recompute the logged validation metrics for the one validated patient independently
    batch = next(iter(dm.val_dataloader()))
    pred_unit = model.translate_volume(batch["ct"])[0, 0].numpy().astype(np.float64)
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
    assert trainer.callback_metrics["val/baseline_mae"].item() == pytest.approx(np.abs(base - target)[mask].mean(), rel=1e-4)
    clip = lambda a: np.clip(a, low, high)  # noqa: E731 - default protocol clips to the evaluation window
    _, smap = structural_similarity(clip(pred), clip(target), data_range=high - low, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    pad = 5  # skimage crops (win_size - 1) // 2 with its Gaussian window of 11
    inner = np.zeros_like(mask)
    inner[pad:-pad, pad:-pad, pad:-pad] = True
    assert trainer.callback_metrics["val/ssim"].item() == pytest.approx(smap[mask & inner].mean(), abs=2e-3)


def test_translate_volume_2p5d_and_3d_shapes(phantom_dir):
    vol = torch.rand(1, 1, 30, 26, 9) * 2 - 1
    m25 = CycleGAN(mode="2.5d", slices=3, **TINY)
    assert m25.translate_volume(vol).shape == vol.shape, "odd in-plane sizes are padded and cropped back"
    m3 = Pix2Pix(mode="3d", roi_size=(16, 16, 16), generator_arch="resnet", **TINY)
    assert m3.translate_volume(vol).shape == vol.shape
    with pytest.raises(ValueError, match="3 sizes"):
        Pix2Pix(mode="3d", roi_size=None)
    with pytest.raises(ValueError, match="CT targets only"):
        Pix2Pix(target="pet", eval_protocol="synthrad2023")


def test_pix2pix_lesion_weighting_and_pet_metrics(phantom_dir, tmp_path):
    dm = _dm(phantom_dir, target="pet", paired=True, mask_keys=["lesion_mask"], mode="2.5d", slices=3)
    model = Pix2Pix(source="ct", target="pet", mode="2.5d", slices=3, generator_arch="unet", num_downs=5, features=4,
                    d_features=4, d_layers=2, lesion_weight=5.0)
    trainer = _trainer(tmp_path, limit_val_batches=1)
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


def test_target_mean_and_windows_accumulate_per_sample_windows():
    """The running training-target mean (the ``mean`` baseline) against numpy, with a different window per sample
    (MR percentiles differ per volume) and a log window; and the recorded mean training windows."""
    model = Pix2Pix(source="ct", target="pet", **TINY)
    g = torch.Generator().manual_seed(0)
    y = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    body = (torch.rand(3, 1, 8, 8, generator=g) > 0.3).float()
    low, high = torch.tensor([0.0, 1.0, 0.0]), torch.tensor([20.0, 30.0, 15.0])
    for log in (torch.zeros(3), torch.ones(3)):
        model.target_sum.zero_()
        model.target_count.zero_()
        model._track_target(y, body, {"low": low, "high": high, "log": log})
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
    batch = {"ct": y, "pet": y, "window": {"ct": {"low": torch.full((3,), -1024.0), "high": torch.full((3,), 3000.0),
                                                  "log": torch.zeros(3)},
                                           "pet": {"low": low, "high": high, "log": torch.zeros(3)}}}
    model._record_windows(batch)
    model._record_windows(batch)
    w = model.training_windows()
    assert w["ct"] == (-1024.0, 3000.0, False)
    assert w["pet"] == pytest.approx((low.mean().item(), high.mean().item(), False))


class _Killed(RuntimeError):
    """Stands in for a killed job."""


class _Crash(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.at_step:
            raise _Killed(f"killed at step {trainer.global_step}")


def _resume_run(root: Path, tmp: Path, *, crash_at: int | None, ckpt: str | None) -> CycleGAN:
    L.seed_everything(0, workers=True)
    dm = _dm(root, augment=True)
    model = CycleGAN(source="ct", target="mr", dropout=0.5, **TINY)  # dropout makes the RNG state matter
    cbs: list[Callback] = [ModelCheckpoint(dirpath=str(tmp / "ckpt"), every_n_train_steps=2, save_top_k=-1,
                                           filename="{step}")]
    if crash_at is not None:
        cbs.append(_Crash(crash_at))
    trainer = _trainer(tmp, max_epochs=2, limit_train_batches=5, limit_val_batches=0, enable_checkpointing=True,
                       callbacks=cbs)
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt)
    except _Killed:
        assert crash_at is not None
    return model


def test_resume_mid_epoch_gives_identical_weights(phantom_dir, tmp_path):
    full = _resume_run(phantom_dir, tmp_path / "full", crash_at=None, ckpt=None)
    # manual optimisation: two optimizer steps (G, D) per batch, so global step 4 = 2 batches into epoch 0
    _resume_run(phantom_dir, tmp_path / "crashed", crash_at=6, ckpt=None)
    ckpt = tmp_path / "crashed" / "ckpt" / "step=4.ckpt"
    assert ckpt.exists(), sorted(p.name for p in (tmp_path / "crashed" / "ckpt").iterdir())
    state = torch.load(ckpt, weights_only=True)  # no pickled code needed
    assert state["image_pools"]["a"]["images"] and "rng_states" in state
    assert state["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 0, "samples": 4}]
    resumed = _resume_run(phantom_dir, tmp_path / "resumed", crash_at=None, ckpt=str(ckpt))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), f"{name} differs after resume"
    assert len(full.pool_a.images) == len(resumed.pool_a.images)


def test_translate_cli_keeps_geometry_and_refuses_wrong_direction(phantom_dir, tmp_path):
    from gan.cli import main
    from gan.translate import load_translation_model

    dm = _dm(phantom_dir)
    model = CycleGAN(source="ct", target="mr", **TINY)
    trainer = _trainer(tmp_path, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    ckpt = tmp_path / "model.ckpt"
    trainer.save_checkpoint(ckpt)
    out = tmp_path / "out" / "mr.nii.gz"
    src = phantom_dir / "p0" / "ct.nii.gz"
    assert main(["translate", "--ckpt", str(ckpt), "--input", str(src), "--output", str(out)]) == 0
    a, b = nib.load(str(src)), nib.load(str(out))
    np.testing.assert_array_equal(a.affine, b.affine)
    assert a.shape == b.shape and b.get_fdata().std() > 0
    prov = json.loads(out.with_name("mr.json").read_text())
    assert prov["provenance"]["direction"] == "ct->mr" and prov["provenance"]["synthetic"] is True
    assert prov["affine"] == a.affine.tolist()
    # DICOM output is marked derived
    import pydicom

    dcm_dir = tmp_path / "dcm"
    main(["translate", "--ckpt", str(ckpt), "--input", str(src), "--output", str(tmp_path / "o2.nii.gz"), "--dicom-out", str(dcm_dir)])
    first = pydicom.dcmread(sorted(dcm_dir.glob("*.dcm"))[0])
    assert "DERIVED" in first.ImageType and first.Modality == "MR"
    # wrong direction: an MR volume (modality from a sidecar) into a CT->MR checkpoint
    mr_in = tmp_path / "mr_in.nii.gz"
    shutil.copy(phantom_dir / "p0" / "mr.nii.gz", mr_in)
    mr_in.with_name("mr_in.json").write_text(json.dumps({"modality": "MR"}))
    with pytest.raises(ValueError, match="translates ct -> mr.*--direction reverse"):
        main(["translate", "--ckpt", str(ckpt), "--input", str(mr_in), "--output", str(tmp_path / "x.nii.gz")])
    assert main(["translate", "--ckpt", str(ckpt), "--input", str(mr_in), "--output", str(tmp_path / "ct.nii.gz"),
                 "--direction", "reverse"]) == 0
    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(ValueError, match="not a medsynth translation checkpoint"):
        load_translation_model(bad)


@pytest.mark.slow
def test_validation_logs_2p5d_fid_equal_to_a_direct_metric(phantom_dir, tmp_path):
    from gan.metrics import FIDInceptionV3, Volume25DFID

    dm = _dm(phantom_dir, val_fraction=0.2)
    model = CycleGAN(source="ct", target="mr", fid_weights="random", fid_max_slices=3, **TINY)
    trainer = _trainer(tmp_path, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    logged = trainer.callback_metrics["val/fid_2p5d"].item()
    batch = next(iter(dm.val_dataloader()))
    # an independent metric on the axial slices only (each axis costs a 2048x2048 matrix square root)
    ref = Volume25DFID(extractor=FIDInceptionV3(pretrained=False, seed=0), axes=(2,), max_slices_per_axis=3,
                       min_images_for_fid=2, kid=True, kid_subsets=50, kid_subset_size=100)
    ref.update(batch["mr"][0].clamp(-1, 1), real=True)
    ref.update(model.translate_volume(batch["ct"])[0].clamp(-1, 1), real=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ref.compute()
    assert trainer.callback_metrics["val/fid_axis2"].item() == pytest.approx(res.per_axis[2].value, rel=1e-4)
    assert trainer.callback_metrics["val/kid_axis2"].item() == pytest.approx(res.kid_per_axis[2].mean, rel=1e-4, abs=1e-7)
    kids = [trainer.callback_metrics[f"val/kid_axis{a}"].item() for a in range(3)]
    assert trainer.callback_metrics["val/kid_2p5d"].item() == pytest.approx(sum(kids) / 3, rel=1e-6, abs=1e-9)
    per_axis = [trainer.callback_metrics[f"val/fid_axis{a}"].item() for a in range(3)]
    assert logged == pytest.approx(sum(per_axis) / 3, rel=1e-6)


class _RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "recording"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.records.append(dict(metrics))


class _RandomPairs(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(i)
        w = {"ct": {"low": -1024.0, "high": 3000.0, "log": False}, "pet": {"low": 0.0, "high": 20.0, "log": False}}
        return {"ct": torch.rand(1, 32, 32, generator=g) * 2 - 1, "pet": torch.rand(1, 32, 32, generator=g) * 2 - 1,
                "window": w}


@pytest.mark.parametrize("every", [1, 2])
def test_training_losses_are_logged_per_interval_and_as_epoch_means(every, tmp_path):
    torch.manual_seed(0)
    logger = _RecordingLogger()
    model = Pix2Pix(source="ct", target="pet", generator_arch="unet", num_downs=5, features=4, d_features=4, d_layers=2)
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=logger, log_every_n_steps=every, enable_progress_bar=False,
                        enable_model_summary=False, accelerator="cpu", max_epochs=1, limit_val_batches=0,
                        enable_checkpointing=False)
    trainer.fit(model, torch.utils.data.DataLoader(_RandomPairs(), batch_size=2))  # 4 batches
    steps = [r["train/loss_g_step"] for r in logger.records if "train/loss_g_step" in r]
    epochs = [r["train/loss_g_epoch"] for r in logger.records if "train/loss_g_epoch" in r]
    assert len(steps) == 4 // every and len(epochs) == 1
    if every == 1:  # equal batch sizes: the epoch value is the mean of the step values
        assert epochs[0] == pytest.approx(float(np.mean(steps)), rel=1e-5)
    assert trainer.callback_metrics["train/l1_epoch"] > 0


def test_channels_last_trains_and_translates_like_contiguous(tmp_path):
    torch.manual_seed(0)
    kw = dict(source="ct", target="pet", generator_arch="unet", num_downs=5, features=4, d_features=4, d_layers=2)
    ref, cl = Pix2Pix(**kw), Pix2Pix(channels_last=True, **kw)
    cl.load_state_dict(ref.state_dict())
    cl.setup("fit")
    conv = next(m for m in cl.generator.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    vol = torch.rand(1, 1, 40, 36, 5) * 2 - 1
    torch.testing.assert_close(cl.translate_volume(vol), ref.translate_volume(vol), rtol=1e-4, atol=1e-5)
    trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", max_epochs=1, limit_val_batches=0, enable_checkpointing=False)
    trainer.fit(cl, torch.utils.data.DataLoader(_RandomPairs(), batch_size=2))
    assert torch.isfinite(trainer.callback_metrics["train/loss_g_epoch"])
    m3 = CycleGAN(mode="3d", roi_size=(16, 16, 16), channels_last=True, **TINY)
    m3.setup("predict")
    assert m3.memory_format == torch.channels_last_3d
    assert m3.translate_volume(torch.rand(1, 1, 20, 18, 17) * 2 - 1).shape == (1, 1, 20, 18, 17)


def test_bf16_mixed_precision_trains_both_models(tmp_path):
    torch.manual_seed(0)
    for model in (Pix2Pix(source="ct", target="pet", generator_arch="unet", num_downs=5, features=4, d_features=4, d_layers=2),
                  CycleGAN(source="ct", target="pet", lambda_structure=5.0, **TINY)):
        trainer = L.Trainer(default_root_dir=str(tmp_path), logger=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", precision="bf16-mixed", max_epochs=1,
                            limit_val_batches=0, enable_checkpointing=False)
        trainer.fit(model, torch.utils.data.DataLoader(_RandomPairs(), batch_size=2))
        losses = {k: v for k, v in trainer.callback_metrics.items() if k.endswith("_epoch")}
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        assert all(p.dtype == torch.float32 for p in model.parameters()), "bf16 autocast keeps float32 master weights"
