"""`medsynth evaluate` (gan.evaluate): folders of PNGs and NIfTI volumes written here, numbers checked against
references computed independently in the test (PIL + numpy/scipy Fréchet distance, numpy masked MAE/PSNR, and the
metric functions called directly per patient)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from torch import nn

from data.errors import VolumeError
from gan.evaluate import build_parser, evaluate, find_volume_pairs, parse_metrics, run
from gan.metrics import FeatureStats, FrechetInceptionDistance, ModuleExtractor, kid, volume_metrics
from gan.metrics.features import protocol_record

SIZE = 32  # extractor input size
MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.Conv2d(8, 6, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


@pytest.fixture(scope="module")
def net() -> nn.Module:
    return _tiny_net().eval()


@pytest.fixture()
def extractor(net: nn.Module) -> ModuleExtractor:
    return ModuleExtractor(net, name="tiny-test-net", input_size=SIZE, mean=MEAN, std=STD)


def _write_images(root: Path, n: int, seed: int, *, shift: float = 0.0, classes: bool = False) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / (f"class{i % 2}" if classes else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = 24 if i % 3 else 40  # mixed sizes: grouped per batch, resized by the protocol
        base = rng.normal(128 + shift, 40, size=(size, size, 3)).clip(0, 255).astype(np.uint8)
        if i == 4:  # a grey image: converted to RGB as pytorch-fid does
            img = Image.fromarray(base[..., 0], mode="L")
        else:
            img = Image.fromarray(base, mode="RGB")
        p = folder / f"img{i:03d}.png"
        img.save(p)
        paths.append(p)
    return sorted(paths)


def _pil_batch(paths: list[Path]) -> list[torch.Tensor]:
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)[None])
    return out


def _reference_features(net: nn.Module, paths: list[Path]) -> np.ndarray:
    """Features computed by hand: uint8 / 255, bilinear resize (pytorch-fid), channel normalisation, net."""
    feats = []
    mean, std = torch.tensor(MEAN).view(1, 3, 1, 1), torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        for img in _pil_batch(paths):
            x = F.interpolate(img.float() / 255.0, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
            feats.append(net((x - mean) / std).double().numpy())
    return np.concatenate(feats)


def _scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


@pytest.fixture()
def image_sets(tmp_path: Path) -> tuple[Path, Path, list[Path], list[Path]]:
    real = _write_images(tmp_path / "real", 30, seed=1, classes=True)
    fake = _write_images(tmp_path / "fake", 26, seed=2, shift=25.0)
    return tmp_path / "real", tmp_path / "fake", real, fake


def test_fid_kid_from_png_folders_match_references(image_sets, extractor, net, tmp_path):
    real_dir, fake_dir, real, fake = image_sets
    report = evaluate(real=real_dir, fake=fake_dir, metrics="fid,kid", out=tmp_path / "rep", extractor=extractor,
                      batch_size=7, kid_subsets=5, kid_subset_size=12, quiet=True)
    # reference 1: the FID metric fed the same images loaded with PIL, one at a time
    metric = FrechetInceptionDistance(extractor=extractor)
    for img in _pil_batch(real):
        metric.update(img, real=True)
    for img in _pil_batch(fake):
        metric.update(img, real=False)
    assert report["fid"]["value"] == pytest.approx(metric.compute().value, rel=1e-6)
    # reference 2: features by hand, Fréchet distance with numpy/scipy
    fr, ff = _reference_features(net, real), _reference_features(net, fake)
    expected = _scipy_fid(fr, ff)
    assert expected > 0.01  # the two sets differ
    assert report["fid"]["value"] == pytest.approx(expected, rel=1e-4)
    assert report["counts"] == {"real": 30, "fake": 26}
    assert report["fid"]["protocol"]["n_real"] == 30 and report["fid"]["protocol"]["n_fake"] == 26
    kid_mean, kid_std = kid(fr, ff, subsets=5, subset_size=12, seed=0)
    assert report["kid"]["mean"] == pytest.approx(kid_mean, rel=1e-4)
    assert report["kid"]["std"] == pytest.approx(kid_std, rel=1e-4)
    on_disk = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert on_disk["fid"]["value"] == report["fid"]["value"]
    assert on_disk["software"]["torch"] == torch.__version__
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| FID |" in md and "| KID |" in md


def test_npz_real_stats_and_protocol_mismatch(image_sets, extractor, net, tmp_path):
    real_dir, fake_dir, real, fake = image_sets
    fr, ff = _reference_features(net, real), _reference_features(net, fake)
    stats = FeatureStats.from_features(fr, protocol_record("pytorch-fid", extractor))
    npz = stats.save(tmp_path / "real_stats.npz")
    report = evaluate(real=npz, fake=fake_dir, metrics=["fid"], out=tmp_path / "rep", extractor=extractor, quiet=True)
    assert report["fid"]["value"] == pytest.approx(_scipy_fid(fr, ff), rel=1e-4)
    assert report["input_kinds"]["real"] == "stats"
    clean = FeatureStats.from_features(fr, protocol_record("clean", extractor)).save(tmp_path / "clean.npz")
    with pytest.raises(ValueError, match="not comparable"):
        evaluate(real=clean, fake=fake_dir, metrics="fid", out=tmp_path / "r2", extractor=extractor, quiet=True)
    with pytest.raises(ValueError, match="FID only"):
        evaluate(real=npz, fake=fake_dir, metrics="fid,kid", out=tmp_path / "r3", extractor=extractor, quiet=True)


def test_bad_inputs_are_refused(image_sets, extractor, tmp_path):
    real_dir, fake_dir, _, _ = image_sets
    ckpt = tmp_path / "g.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a checkpoint.*medsynth generate"):
        evaluate(real=real_dir, fake=ckpt, metrics="fid", out=tmp_path / "r", extractor=extractor, quiet=True)
    with pytest.raises(ValueError, match="--train"):
        evaluate(real=real_dir, fake=fake_dir, metrics="memorization", out=tmp_path / "r", extractor=extractor)
    with pytest.raises(ValueError, match="FeatureExtractor"):
        evaluate(real=real_dir, fake=fake_dir, metrics="fid", out=tmp_path / "r", extractor=nn.Identity())
    with pytest.raises(ValueError, match="unknown metric 'fd'"):
        parse_metrics("fid,fd")
    with pytest.raises(ValueError, match="run `medsynth evaluate` once for each group"):
        parse_metrics("fid,psnr")


@pytest.mark.filterwarnings("ignore:held-out set has")
def test_memorization_flags_copied_training_images(tmp_path, extractor):
    train = _write_images(tmp_path / "train", 40, seed=3)
    _write_images(tmp_path / "heldout", 40, seed=4)
    _write_images(tmp_path / "gen", 36, seed=5)
    copies = []
    for j, src in enumerate(train[:4]):  # four generated images are exact copies of training images
        dst = tmp_path / "gen" / f"zz_copy{j}.png"
        dst.write_bytes(src.read_bytes())
        copies.append(str(dst))
    report = evaluate(real=tmp_path / "heldout", fake=tmp_path / "gen", metrics="memorization", out=tmp_path / "rep",
                      train=tmp_path / "train", heldout=tmp_path / "heldout", extractor=extractor, quiet=True,
                      audit_quantile=0.05, audit_cells=2, audit_min_cell=5)
    mem = report["memorization"]
    assert set(copies) <= set(mem["flagged_files"])
    assert report["counts"] == {"fake": 40, "train": 40, "heldout": 40}
    saved = json.loads((tmp_path / "rep" / "memorization" / "memorization.json").read_text())
    assert saved["protocol"]["extractor"] == "tiny-test-net"
    assert (tmp_path / "rep" / "memorization" / "nn_distance_histogram.png").is_file()


# ---------------------------------------------------------------------------------------------- paired volumes

SHAPE = (24, 22, 14)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([1.5, 1.5, 2.5, 1.0]) if affine is None else affine),
             path)


@pytest.fixture()
def volume_dirs(tmp_path: Path) -> Path:
    rng = np.random.default_rng(7)
    for i in range(3):
        ct = rng.normal(0, 400, size=SHAPE).clip(-1024, 2500)
        ct[:4] = -1024
        pred = ct + rng.normal(30 * i, 60 + 40 * i, size=SHAPE)
        mask = np.zeros(SHAPE, np.uint8)
        mask[3:21, 2:20, 1:13] = 1
        _save(tmp_path / "real" / f"p{i}" / "ct.nii.gz", ct)
        _save(tmp_path / "fake" / f"p{i}" / "ct.nii.gz", pred)
        _save(tmp_path / "masks" / f"p{i}" / "ct.nii.gz", mask)
    return tmp_path


def test_paired_volume_metrics_match_direct_calls(volume_dirs, tmp_path):
    root = volume_dirs
    window = (-1000.0, 2000.0)
    report = evaluate(real=root / "real", fake=root / "fake", metrics="mae,psnr,ssim", out=tmp_path / "rep",
                      mask_dir=root / "masks", window=window, quiet=True)
    rows = {r["patient"]: r for r in report["patients"]}
    assert sorted(rows) == ["p0/ct", "p1/ct", "p2/ct"]
    per = {k: [] for k in ("mae", "psnr", "ssim")}
    for i in range(3):
        ct = nib.load(root / "real" / f"p{i}" / "ct.nii.gz").get_fdata()
        pred = nib.load(root / "fake" / f"p{i}" / "ct.nii.gz").get_fdata()
        mask = nib.load(root / "masks" / f"p{i}" / "ct.nii.gz").get_fdata() > 0
        direct = volume_metrics(pred, ct, mask, protocol="default", data_range=window)
        # independent numpy: masked MAE on raw values, PSNR on window-clipped values with R = window width
        mae_np = np.abs(pred - ct)[mask].mean()
        mse = ((np.clip(pred, *window) - np.clip(ct, *window)) ** 2)[mask].mean()
        psnr_np = 10 * np.log10((window[1] - window[0]) ** 2 / mse)
        row = rows[f"p{i}/ct"]
        assert row["mae"] == pytest.approx(mae_np, rel=1e-5)
        assert row["psnr"] == pytest.approx(psnr_np, rel=1e-5)
        for k in per:
            assert row[k] == pytest.approx(direct[k], rel=1e-9)
            per[k].append(direct[k])
    for k, v in per.items():
        assert report["summary"][k]["mean"] == pytest.approx(np.mean(v), rel=1e-9)
        assert report["summary"][k]["std"] == pytest.approx(np.std(v), rel=1e-9)
    assert np.std(per["mae"]) > 1.0  # the patients differ, so mean and std are informative
    assert report["volume_protocol"]["window"] == list(window)
    assert (tmp_path / "rep" / "paired_metrics.png").is_file()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert f"| mae | {report['summary']['mae']['mean']:.6g} ± " in md


def test_paired_shape_and_affine_mismatch_name_both_files(volume_dirs, tmp_path):
    root = volume_dirs
    bad = root / "fake" / "p1" / "ct.nii.gz"
    _save(bad, np.zeros((24, 22, 13)))
    with pytest.raises(VolumeError) as info:
        evaluate(real=root / "real", fake=root / "fake", metrics="mae", out=tmp_path / "r", quiet=True)
    assert str(bad) in str(info.value) and str(root / "real" / "p1" / "ct.nii.gz") in str(info.value)
    _save(bad, np.zeros(SHAPE), affine=np.diag([1.0, 1.5, 2.5, 1.0]))
    with pytest.raises(VolumeError, match="affine differs"):
        evaluate(real=root / "real", fake=root / "fake", metrics="mae", out=tmp_path / "r", quiet=True)
    bad.unlink()
    with pytest.raises(VolumeError, match="no fake counterpart"):
        find_volume_pairs(root / "real", root / "fake")


def test_cli_round_trip_paired_flat_files(tmp_path):
    rng = np.random.default_rng(11)
    for name in ("a", "b"):
        ct = rng.normal(0, 300, size=SHAPE)
        _save(tmp_path / "real" / f"{name}.nii.gz", ct)
        _save(tmp_path / "fake" / f"{name}.nii.gz", ct + rng.normal(0, 50, size=SHAPE))
        _save(tmp_path / "base" / f"{name}.nii.gz", np.zeros(SHAPE))
    parser = build_parser(argparse.ArgumentParser(prog="medsynth evaluate"))
    args = parser.parse_args([
        "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--metrics", "mae,psnr,ssim",
        "--out", str(tmp_path / "rep"), "--protocol", "synthrad2023", "--baseline", str(tmp_path / "base"), "--quiet",
    ])
    report = run(args)
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == report
    assert report["volume_protocol"]["name"] == "synthrad2023"
    assert report["volume_protocol"]["window"] == [-1024.0, 3000.0]
    for name in ("a", "b"):
        ct = nib.load(tmp_path / "real" / f"{name}.nii.gz").get_fdata()
        pred = nib.load(tmp_path / "fake" / f"{name}.nii.gz").get_fdata()
        row = next(r for r in report["patients"] if r["patient"] == name)
        direct = volume_metrics(pred, ct, None, protocol="synthrad2023")
        base = volume_metrics(np.zeros(SHAPE), ct, None, protocol="synthrad2023")
        assert row["ssim"] == pytest.approx(direct["ssim"], rel=1e-9)
        assert row["baseline_mae"] == pytest.approx(np.abs(ct).mean(), rel=1e-5)
        assert row["baseline_psnr"] == pytest.approx(base["psnr"], rel=1e-9)
    assert report["summary"]["mae"]["mean"] < report["summary"]["baseline_mae"]["mean"]
    # the same through the console entry point
    from gan.cli import main

    assert main(["evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--metrics", "mae,psnr,ssim",
                 "--out", str(tmp_path / "rep2"), "--protocol", "synthrad2023", "--quiet"]) == 0
    again = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert again["summary"]["mae"] == report["summary"]["mae"]


def test_fid_from_whole_slide_tiles(tmp_path, extractor, image_sets):
    from data.slide_phantom import make_phantom_slide
    from data.tiles import TileDataset

    _, fake_dir, _, fake = image_sets
    slide = make_phantom_slide(tmp_path / "slides" / "s0.svs", width=2048, height=1536, seed=0).path
    report = evaluate(real=[slide], fake=fake_dir, metrics="fid", out=tmp_path / "rep", extractor=extractor,
                      tile_size=64, mpp=1.0, batch_size=8, quiet=True)
    tiles = TileDataset([slide], tile_size=64, mpp=1.0)
    metric = FrechetInceptionDistance(extractor=extractor)
    metric.update(torch.stack([tiles[i]["image"] for i in range(len(tiles))]), real=True)
    for img in _pil_batch(fake):
        metric.update(img, real=False)
    assert report["input_kinds"]["real"] == "slides"
    assert report["counts"]["real"] == len(tiles) > 10
    assert report["fid"]["value"] == pytest.approx(metric.compute().value, rel=1e-6)
    with pytest.raises(ValueError, match="--mpp or --magnification"):
        evaluate(real=tmp_path / "slides", fake=fake_dir, metrics="fid", out=tmp_path / "r2", extractor=extractor)


class _MeanAbs(nn.Module):
    """Stand-in for 2.5D LPIPS: mean |a - b| per sample of (N, 1, D, H, W) volumes."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().flatten(1).mean(1)


def test_paired_lpips_gets_window_mapped_volumes(volume_dirs, tmp_path):
    root = volume_dirs
    window = (-500.0, 1500.0)
    report = evaluate(real=root / "real", fake=root / "fake", metrics="lpips,mae", out=tmp_path / "rep",
                      window=window, lpips=_MeanAbs(), quiet=True)
    for i in range(3):
        ct = nib.load(root / "real" / f"p{i}" / "ct.nii.gz").get_fdata()
        pred = nib.load(root / "fake" / f"p{i}" / "ct.nii.gz").get_fdata()
        expected = np.abs(np.clip(pred, *window) - np.clip(ct, *window)).mean() * 2 / (window[1] - window[0])
        row = next(r for r in report["patients"] if r["patient"] == f"p{i}/ct")
        assert row["lpips"] == pytest.approx(expected, rel=1e-5)


def test_logs_to_an_active_wandb_run(volume_dirs, tmp_path, monkeypatch):
    import types

    logged: list[dict] = []
    stub = types.SimpleNamespace(run=object(), log=logged.append,
                                 Table=lambda columns, data: {"columns": columns, "data": data})
    monkeypatch.setitem(__import__("sys").modules, "wandb", stub)
    root = volume_dirs
    report = evaluate(real=root / "real", fake=root / "fake", metrics="mae", out=tmp_path / "rep", quiet=True)
    assert len(logged) == 1
    assert logged[0]["evaluate/mae"] == report["summary"]["mae"]["mean"]
    assert [row[0] for row in logged[0]["evaluate/patients"]["data"]] == ["p0/ct", "p1/ct", "p2/ct"]
    stub.run = None
    evaluate(real=root / "real", fake=root / "fake", metrics="mae", out=tmp_path / "rep", quiet=True)
    assert len(logged) == 1
