"""``medsynth generate``: translated volumes are released only after the memorization audit passes; a generator
that reproduces training volumes is stopped, nothing half-written is left, and bad inputs are refused by name."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import gan.generate as gen
from data.volumes import load_volume
from gan.metrics import ModuleExtractor
from gan.models import CycleGAN

AUDIT = dict(slices_per_volume=8, quantile=0.05, n_cells=2, min_cell=3, batch_size=16)


def _extractor() -> ModuleExtractor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval()
    return ModuleExtractor(net, name="tiny-test-net", input_size=48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def ckpt(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import lightning as L

    from data.datamodules import VolumeTranslationDataModule

    tmp = tmp_path_factory.mktemp("gen_ckpt")
    dm = VolumeTranslationDataModule(str(phantom_dir), source="ct", target="mr", paired=False, patch_size=(32, 32),
                                     batch_size=2, val_fraction=0.2, test_fraction=0.2, seed=0, augment=False)
    model = CycleGAN(source="ct", target="mr", features=4, n_blocks=1, d_features=4, d_layers=2, inference_batch=32)
    trainer = L.Trainer(default_root_dir=str(tmp), logger=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", max_epochs=1, limit_train_batches=4, limit_val_batches=0,
                        enable_checkpointing=False)
    trainer.fit(model, datamodule=dm)
    path = tmp / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


def _sets(phantom_dir: Path) -> dict[str, list[Path]]:
    return {"inputs": [phantom_dir / "p4", phantom_dir / "p5"],
            "train": [phantom_dir / f"p{i}" / "mr.nii.gz" for i in range(3)],
            "heldout": [phantom_dir / f"p{i}" / "mr.nii.gz" for i in (3, 4, 5)]}


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".partial")]


def test_clean_generation_is_released_with_manifest_and_audit(ckpt, phantom_dir, tmp_path):
    s = _sets(phantom_dir)
    out = tmp_path / "synthetic"
    res = gen.generate(ckpt, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(), **AUDIT)
    assert res.audit is not None and res.audit.passed, res.audit.reasons
    assert sorted(p.relative_to(out).as_posix() for p in res.volumes) == ["p4/mr.nii.gz", "p5/mr.nii.gz"]
    for pid, f in zip(("p4", "p5"), res.volumes):
        a, b = nib.load(str(phantom_dir / pid / "ct.nii.gz")), nib.load(str(f))
        np.testing.assert_array_equal(a.affine, b.affine)
        assert a.shape == b.shape and np.isfinite(b.get_fdata()).all()
    manifest = json.loads(res.manifest.read_text())
    assert manifest["audit"]["passed"] is True and manifest["released_without_audit"] is False
    assert manifest["direction"] == "ct->mr" and len(manifest["items"]) == 2
    assert manifest["audit"]["n_slices"] == {"generated": 16, "train": 24, "heldout": 24}
    assert (out / manifest["audit"]["files"]["json"]).is_file() and (out / "audit" / "closest_pairs.png").is_file()
    assert _leftovers(tmp_path) == []
    with pytest.raises(FileExistsError, match="never overwrites"):
        gen.generate(ckpt, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(), **AUDIT)


@pytest.mark.parametrize("with_lpips", [False, True])
def test_a_generator_that_copies_training_volumes_is_stopped(with_lpips, ckpt, phantom_dir, tmp_path, monkeypatch):
    from tests.gan.test_memorization import _random_lpips  # random backbone, non-negative heads

    lpips = _random_lpips("none") if with_lpips else None
    s = _sets(phantom_dir)
    copies = iter([load_volume(s["train"][0]), load_volume(s["train"][1])])
    monkeypatch.setattr(gen, "translate_volume", lambda model, vol, **kw: next(copies))
    out = tmp_path / "synthetic"
    with pytest.raises(gen.AuditFailed, match="FAILED, nothing released") as info:
        gen.generate(ckpt, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
                     lpips=lpips, **AUDIT)
    assert not out.exists() and _leftovers(tmp_path) == []
    rejected = info.value.report_dir
    assert rejected == tmp_path / "synthetic.rejected"
    assert not list(rejected.rglob("*.nii.gz")), "flagged volumes are deleted, only the report stays"
    report = json.loads((rejected / "audit" / "memorization.json").read_text())
    assert report["passed"] is False and report["n_near_copies"] >= 12
    assert (report["lpips_threshold"] is not None) == with_lpips
    manifest = json.loads((rejected / "manifest.json").read_text())
    assert manifest["rejected"] is True and manifest["items"] == []


def test_allow_flagged_and_skip_audit_are_recorded(ckpt, phantom_dir, tmp_path, monkeypatch):
    s = _sets(phantom_dir)
    monkeypatch.setattr(gen, "translate_volume", lambda model, vol, **kw: load_volume(s["train"][0]))
    res = gen.generate(ckpt, s["inputs"][:1], tmp_path / "a", train=s["train"], heldout=s["heldout"],
                       extractor=_extractor(), allow_flagged=True, **AUDIT)
    m = json.loads(res.manifest.read_text())
    assert m["released_despite_failed_audit"] is True and m["audit"]["passed"] is False
    pairs = res.audit.pair_images  # closest pairs reloaded from disk: the copy and its training slice are equal
    assert pairs is not None and np.array_equal(pairs[0, 0], pairs[0, 1]) and pairs.shape[2] == 3
    res = gen.generate(ckpt, s["inputs"][:1], tmp_path / "b", train=None, heldout=None, skip_audit=True)
    m = json.loads(res.manifest.read_text())
    assert m["released_without_audit"] is True and m["audit"] == {"run": False} and res.audit is None


def test_bad_inputs_are_refused_and_nothing_is_left(ckpt, phantom_dir, tmp_path, monkeypatch):
    s = _sets(phantom_dir)
    kw = dict(extractor=_extractor(), **AUDIT)
    with pytest.raises(ValueError, match="needs --train"):
        gen.generate(ckpt, s["inputs"], tmp_path / "o", train=None, heldout=s["heldout"], **kw)
    with pytest.raises(ValueError, match="share"):
        gen.generate(ckpt, s["inputs"], tmp_path / "o", train=s["train"], heldout=s["train"][:1], **kw)
    with pytest.raises(ValueError, match="several inputs would be written to ct_mr.nii.gz|several inputs"):
        gen.generate(ckpt, [phantom_dir / "p4" / "ct.nii.gz", phantom_dir / "p5" / "ct.nii.gz"], tmp_path / "o",
                     train=s["train"], heldout=s["heldout"], **kw)
    with pytest.raises(Exception, match="no such file"):
        gen.generate(ckpt, [tmp_path / "missing.nii.gz"], tmp_path / "o", train=s["train"], heldout=s["heldout"], **kw)
    nan = load_volume(s["train"][0])
    nan.array[0, 0, 0] = np.nan
    monkeypatch.setattr(gen, "translate_volume", lambda model, vol, **k: nan)
    with pytest.raises(Exception, match=r"p4/ct.nii.gz.*NaN"):
        gen.generate(ckpt, s["inputs"], tmp_path / "o", train=s["train"], heldout=s["heldout"], **kw)
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_cli_exit_status(ckpt, phantom_dir, tmp_path, monkeypatch):
    from gan.cli import main

    monkeypatch.setattr("gan.evaluate.build_extractor", lambda kind, weights, device: _extractor())
    s = _sets(phantom_dir)
    args = ["generate", "--ckpt", str(ckpt), "--input", *map(str, s["inputs"]), "--train", *map(str, s["train"]),
            "--heldout", *map(str, s["heldout"]), "--slices-per-volume", "8", "--quantile", "0.05", "--cells", "2",
            "--min-cell", "3"]
    assert main(args + ["--out", str(tmp_path / "ok")]) == 0
    monkeypatch.setattr(gen, "translate_volume", lambda model, vol, **kw: load_volume(s["train"][0]))
    assert main(args + ["--out", str(tmp_path / "bad")]) == gen.EXIT_AUDIT_FAILED
    assert (tmp_path / "bad.rejected" / "audit" / "memorization.json").is_file()
