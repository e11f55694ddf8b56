"""`medsynth evaluate` on image sets (gan.commands.evaluate): folders of PNGs and slides written here, numbers checked
against references computed independently in the test (PIL + numpy/scipy Fréchet distance, numpy KID)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import linalg
from torch import nn

from data.image_sets import TileScale
from gan.commands.evaluate import (
    FeatureSettings,
    ImageSetInputs,
    KIDSettings,
    evaluate_images,
    parse_metrics,
)
from gan.metrics import FeatureStats, FrechetInceptionDistance, ModuleExtractor, kid
from gan.metrics.features import protocol_record
from gan.release import AuditSettings

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


def _sets(real, fake, **kw) -> ImageSetInputs:
    as_t = lambda x: tuple(Path(p) for p in (x if isinstance(x, (list, tuple)) else [x]))  # noqa: E731
    return ImageSetInputs(real=as_t(real), fake=as_t(fake), **{k: as_t(v) for k, v in kw.items()})


@pytest.fixture()
def image_sets(tmp_path: Path) -> tuple[Path, Path, list[Path], list[Path]]:
    real = _write_images(tmp_path / "real", 30, seed=1, classes=True)
    fake = _write_images(tmp_path / "fake", 26, seed=2, shift=25.0)
    return tmp_path / "real", tmp_path / "fake", real, fake


def test_fid_kid_from_png_folders_match_references(image_sets, extractor, net, tmp_path):
    real_dir, fake_dir, real, fake = image_sets
    report = evaluate_images(_sets(real_dir, fake_dir), metrics="fid,kid", out=tmp_path / "rep", extractor=extractor,
                             features=FeatureSettings(batch_size=7), kid=KIDSettings(subsets=5, subset_size=12),
                             quiet=True)
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
    assert "NOT COMPARABLE" not in md


def test_npz_real_stats_and_protocol_mismatch(image_sets, extractor, net, tmp_path):
    real_dir, fake_dir, real, fake = image_sets
    fr, ff = _reference_features(net, real), _reference_features(net, fake)
    stats = FeatureStats.from_features(fr, protocol_record("pytorch-fid", extractor))
    npz = stats.save(tmp_path / "real_stats.npz")
    report = evaluate_images(_sets(npz, fake_dir), metrics=["fid"], out=tmp_path / "rep", extractor=extractor,
                             quiet=True)
    assert report["fid"]["value"] == pytest.approx(_scipy_fid(fr, ff), rel=1e-4)
    assert report["input_kinds"]["real"] == "stats"
    clean = FeatureStats.from_features(fr, protocol_record("clean", extractor)).save(tmp_path / "clean.npz")
    with pytest.raises(ValueError, match="not comparable"):
        evaluate_images(_sets(clean, fake_dir), metrics="fid", out=tmp_path / "r2", extractor=extractor, quiet=True)
    with pytest.raises(ValueError, match="FID only"):
        evaluate_images(_sets(npz, fake_dir), metrics="fid,kid", out=tmp_path / "r3", extractor=extractor, quiet=True)
    assert not (tmp_path / "r2").exists() and not (tmp_path / "r3").exists()  # a failed evaluation writes nothing


def test_bad_inputs_are_refused(image_sets, extractor, tmp_path):
    real_dir, fake_dir, _, _ = image_sets
    ckpt = tmp_path / "g.ckpt"
    ckpt.write_bytes(b"x")
    with pytest.raises(ValueError, match="is a checkpoint.*medsynth generate"):
        evaluate_images(_sets(real_dir, ckpt), metrics="fid", out=tmp_path / "r", extractor=extractor, quiet=True)
    with pytest.raises(ValueError, match="--train"):
        evaluate_images(_sets(real_dir, fake_dir), metrics="memorization", out=tmp_path / "r", extractor=extractor)
    with pytest.raises(ValueError, match="FeatureExtractor"):
        evaluate_images(_sets(real_dir, fake_dir), metrics="fid", out=tmp_path / "r", extractor=nn.Identity())
    with pytest.raises(ValueError, match="unknown metric 'fd'"):
        parse_metrics("fid,fd")
    with pytest.raises(ValueError, match="run `medsynth evaluate` once for each group"):
        parse_metrics("fid,psnr")


def test_an_existing_report_folder_is_refused_unless_overwrite(image_sets, extractor, tmp_path):
    real_dir, fake_dir, _, _ = image_sets
    out = tmp_path / "rep"
    out.mkdir()
    (out / "old.txt").write_text("previous report")
    with pytest.raises(FileExistsError, match="report folder exists; pass --overwrite"):
        evaluate_images(_sets(real_dir, fake_dir), metrics="fid", out=out, extractor=extractor, quiet=True)
    assert (out / "old.txt").is_file()
    evaluate_images(_sets(real_dir, fake_dir), metrics="fid", out=out, extractor=extractor, overwrite=True, quiet=True)
    assert not (out / "old.txt").exists() and (out / "report.json").is_file()


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
    report = evaluate_images(_sets(tmp_path / "heldout", tmp_path / "gen", train=tmp_path / "train",
                                   heldout=tmp_path / "heldout"),
                             metrics="memorization", out=tmp_path / "rep", extractor=extractor, quiet=True,
                             audit=AuditSettings(quantile=0.05, cells=2, min_cell=5))
    mem = report["memorization"]
    assert set(copies) <= set(mem["flagged_files"])
    assert report["counts"] == {"fake": 40, "train": 40, "heldout": 40}
    saved = json.loads((tmp_path / "rep" / "memorization" / "memorization.json").read_text())
    assert saved["protocol"]["extractor"] == "tiny-test-net"
    assert (tmp_path / "rep" / "memorization" / "nn_distance_histogram.png").is_file()
    assert mem["cells"] == {"requested": 2, "used": 2, "min_cell": 5, "rule": mem["cells"]["rule"]}
    assert (tmp_path / "rep" / mem["files"]["json"]).is_file()


@pytest.mark.filterwarnings("ignore:held-out set has")
def test_memorization_cells_adapt_to_small_sets(tmp_path, extractor):
    """32 generated images and the default 10 cells of 20: one cell (the global test) instead of an error."""
    _write_images(tmp_path / "train", 40, seed=3)
    _write_images(tmp_path / "heldout", 40, seed=4)
    _write_images(tmp_path / "gen", 32, seed=5)
    report = evaluate_images(_sets(tmp_path / "heldout", tmp_path / "gen", train=tmp_path / "train",
                                   heldout=tmp_path / "heldout"),
                             metrics="memorization", out=tmp_path / "rep", extractor=extractor, quiet=True)
    assert report["memorization"]["cells"]["used"] == 1
    assert report["memorization"]["data_copying_test"]["n_cells"] == 1
    with pytest.raises(ValueError, match="lower --audit-min-cell"):
        evaluate_images(_sets(tmp_path / "heldout", tmp_path / "gen", train=tmp_path / "train",
                              heldout=tmp_path / "heldout"), metrics="memorization", out=tmp_path / "r2",
                        extractor=extractor, audit=AuditSettings(min_cell=33), quiet=True)


def test_fid_from_whole_slide_tiles(tmp_path, extractor, image_sets):
    from data.slides.datasets import TileDataset
    from data.slides.phantom import make_phantom_slide

    _, fake_dir, _, fake = image_sets
    slide = make_phantom_slide(tmp_path / "slides" / "s0.svs", width=2048, height=1536, seed=0).path
    report = evaluate_images(_sets([slide], fake_dir), metrics="fid", out=tmp_path / "rep", extractor=extractor,
                             tiles=TileScale(tile_size=64, mpp=1.0), features=FeatureSettings(batch_size=8),
                             quiet=True)
    tiles = TileDataset([slide], tile_size=64, mpp=1.0)
    metric = FrechetInceptionDistance(extractor=extractor)
    metric.update(torch.stack([tiles[i]["image"] for i in range(len(tiles))]), real=True)
    for img in _pil_batch(fake):
        metric.update(img, real=False)
    assert report["input_kinds"]["real"] == "slides"
    assert report["counts"]["real"] == len(tiles) > 10
    assert report["fid"]["value"] == pytest.approx(metric.compute().value, rel=1e-6)
    assert report["inputs"]["mpp"] == 1.0 and report["inputs"]["tile_size"] == 64
    with pytest.raises(ValueError, match="--mpp or --magnification"):
        evaluate_images(_sets(tmp_path / "slides", fake_dir), metrics="fid", out=tmp_path / "r2", extractor=extractor)


def test_cli_weights_random_is_stamped_not_comparable(tmp_path):
    from gan.cli import main

    _write_images(tmp_path / "real", 8, seed=1)
    _write_images(tmp_path / "fake", 8, seed=2, shift=25.0)
    assert main(["--quiet", "evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--metrics", "kid", "--weights", "random", "--kid-subsets", "3", "--kid-subset-size", "4",
                 "--out", str(tmp_path / "rep")]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert report["feature_protocol"]["weights"] == "random(seed=0)"
    assert report["feature_protocol"]["comparable"] is False and report["comparable"] is False
    assert report["kid"]["protocol"]["comparable"] is False
    assert "NOT COMPARABLE" in (tmp_path / "rep" / "report.md").read_text()


_HELP_PROBE = """
import argparse, sys, time
t = time.perf_counter()
from gan.commands import evaluate
p = argparse.ArgumentParser(prog="medsynth evaluate", description=evaluate.DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
evaluate.add_arguments(p)
text = p.format_help()
print(text)
print("ELAPSED", time.perf_counter() - t)
print("HEAVY", sorted(m for m in ("torch", "numpy", "lightning", "PIL") if m in sys.modules))
"""


def test_help_is_plain_text_and_imports_no_torch():
    res = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True, check=True)
    assert "HEAVY []" in res.stdout, res.stdout[-300:]
    assert float(res.stdout.split("ELAPSED")[1].split()[0]) < 0.5
    for markup in ("``", ":func:", ":class:", ":mod:"):
        assert markup not in res.stdout
    assert "--weights" in res.stdout and "Examples:" in res.stdout and "--baseline" in res.stdout
    # and through the console script's parser
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "gan.cli", "evaluate", "--help"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert time.perf_counter() - t0 < 5.0 and "--splits" in res.stdout and "(default: test)" in res.stdout


def test_the_package_exports_the_names_of_both_evaluations():
    """``gan.commands.evaluate`` is the CLI; the evaluations' names are exported from it (lazily) unchanged."""
    from gan.commands import evaluate
    from gan.commands.evaluate import images, volumes

    assert evaluate.build_extractor is images.build_extractor and evaluate.evaluate_images is images.evaluate_images
    assert evaluate.VolumeSettings is volumes.VolumeSettings and evaluate.TrainingWindows is volumes.TrainingWindows
    assert all(hasattr(evaluate, name) for name in evaluate.__all__)
    with pytest.raises(AttributeError, match="no attribute 'evaluate_everything'"):
        evaluate.evaluate_everything  # noqa: B018
