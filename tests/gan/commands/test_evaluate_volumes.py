"""`medsynth evaluate` on paired volumes (gan.commands.evaluate): NIfTI volumes written here with nibabel, numbers
checked against numpy (masked MAE/PSNR, the windows and baselines computed by hand) and against the metric functions
called directly per patient in the window of each patient's modality."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from data.errors import VolumeError
from data.image_sets import find_volume_pairs
from gan.commands.evaluate import VolumeSettings, add_arguments, evaluate_args, evaluate_volumes
from gan.metrics import volume_metrics

SHAPE = (24, 22, 14)


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None, modality: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array.astype(np.float32), np.diag([1.5, 1.5, 2.5, 1.0]) if affine is None else affine),
             path)
    if modality is not None:  # a BIDS-style JSON sidecar declaring the modality
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps({"modality": modality}))


def _load(path: Path) -> np.ndarray:
    return nib.load(path).get_fdata()


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


CT = VolumeSettings(modality="ct")


def test_paired_volume_metrics_match_direct_calls(volume_dirs, tmp_path):
    root = volume_dirs
    window = (-1000.0, 2000.0)
    report = evaluate_volumes(find_volume_pairs(root / "real", root / "fake", mask_dir=root / "masks"),
                              metrics="mae,psnr,ssim", out=tmp_path / "rep", settings=VolumeSettings(window=window),
                              quiet=True)
    rows = {r["patient"]: r for r in report["patients"]}
    assert sorted(rows) == ["p0/ct", "p1/ct", "p2/ct"]
    per = {k: [] for k in ("mae", "psnr", "ssim")}
    for i in range(3):
        ct = _load(root / "real" / f"p{i}" / "ct.nii.gz")
        pred = _load(root / "fake" / f"p{i}" / "ct.nii.gz")
        mask = _load(root / "masks" / f"p{i}" / "ct.nii.gz") > 0
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
        evaluate_volumes(find_volume_pairs(root / "real", root / "fake"), metrics="mae", out=tmp_path / "r",
                         settings=CT, quiet=True)
    assert str(bad) in str(info.value) and str(root / "real" / "p1" / "ct.nii.gz") in str(info.value)
    _save(bad, np.zeros(SHAPE), affine=np.diag([1.0, 1.5, 2.5, 1.0]))
    with pytest.raises(VolumeError, match="affine differs"):
        evaluate_volumes(find_volume_pairs(root / "real", root / "fake"), metrics="mae", out=tmp_path / "r",
                         settings=CT, quiet=True)
    bad.unlink()
    with pytest.raises(VolumeError, match="no fake counterpart"):
        find_volume_pairs(root / "real", root / "fake")
    assert not (tmp_path / "r").exists()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="medsynth evaluate")
    add_arguments(p)
    return p


def test_cli_round_trip_paired_flat_files(tmp_path):
    rng = np.random.default_rng(11)
    for name in ("a", "b"):
        ct = rng.normal(0, 300, size=SHAPE)
        _save(tmp_path / "real" / f"{name}.nii.gz", ct)
        _save(tmp_path / "fake" / f"{name}.nii.gz", ct + rng.normal(0, 50, size=SHAPE))
        _save(tmp_path / "base" / f"{name}.nii.gz", np.zeros(SHAPE))
    args = _parser().parse_args([
        "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--metrics", "mae,psnr,ssim",
        "--out", str(tmp_path / "rep"), "--protocol", "synthrad2023", "--baseline", str(tmp_path / "base"),
        "--modality", "ct",
    ])
    args.quiet = True
    report = evaluate_args(args)
    assert json.loads((tmp_path / "rep" / "report.json").read_text()) == report
    assert report["volume_protocol"]["name"] == "synthrad2023"
    assert report["volume_protocol"]["window"] == [-1024.0, 3000.0]
    for name in ("a", "b"):
        ct = _load(tmp_path / "real" / f"{name}.nii.gz")
        pred = _load(tmp_path / "fake" / f"{name}.nii.gz")
        row = next(r for r in report["patients"] if r["patient"] == name)
        direct = volume_metrics(pred, ct, None, protocol="synthrad2023")
        base = volume_metrics(np.zeros(SHAPE), ct, None, protocol="synthrad2023")
        assert row["ssim"] == pytest.approx(direct["ssim"], rel=1e-9)
        assert row["baseline_mae"] == pytest.approx(np.abs(ct).mean(), rel=1e-5)
        assert row["baseline_psnr"] == pytest.approx(base["psnr"], rel=1e-9)
    assert report["summary"]["mae"]["mean"] < report["summary"]["baseline_mae"]["mean"]
    # the same through the console entry point
    from gan.cli import main

    assert main(["--quiet", "evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                 "--metrics", "mae,psnr,ssim", "--out", str(tmp_path / "rep2"), "--protocol", "synthrad2023",
                 "--modality", "ct"]) == 0
    again = json.loads((tmp_path / "rep2" / "report.json").read_text())
    assert again["summary"]["mae"] == report["summary"]["mae"]
    # one overwrite policy: an existing report folder is refused (exit status 2), then replaced with --overwrite
    argv = ["--quiet", "evaluate", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"), "--metrics",
            "mae", "--out", str(tmp_path / "rep2"), "--modality", "ct"]
    assert main(argv) == 2
    assert json.loads((tmp_path / "rep2" / "report.json").read_text()) == again
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((tmp_path / "rep2" / "report.json").read_text())["metric_columns"] == ["mae"]


class _MeanAbs(nn.Module):
    """Stand-in for 2.5D LPIPS: mean |a - b| per sample of (N, 1, D, H, W) volumes."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a - b).abs().flatten(1).mean(1)


def test_paired_lpips_gets_window_mapped_volumes(volume_dirs, tmp_path):
    root = volume_dirs
    window = (-500.0, 1500.0)
    report = evaluate_volumes(find_volume_pairs(root / "real", root / "fake"), metrics="lpips,mae",
                              out=tmp_path / "rep", settings=VolumeSettings(window=window), lpips=_MeanAbs(),
                              quiet=True)
    for i in range(3):
        ct = _load(root / "real" / f"p{i}" / "ct.nii.gz")
        pred = _load(root / "fake" / f"p{i}" / "ct.nii.gz")
        expected = np.abs(np.clip(pred, *window) - np.clip(ct, *window)).mean() * 2 / (window[1] - window[0])
        row = next(r for r in report["patients"] if r["patient"] == f"p{i}/ct")
        assert row["lpips"] == pytest.approx(expected, rel=1e-5)


def test_logs_to_an_active_wandb_run(volume_dirs, tmp_path, monkeypatch):
    import types

    logged: list[dict] = []
    stub = types.SimpleNamespace(run=object(), log=logged.append,
                                 Table=lambda columns, data: {"columns": columns, "data": data})
    monkeypatch.setitem(sys.modules, "wandb", stub)
    pairs = find_volume_pairs(volume_dirs / "real", volume_dirs / "fake")
    report = evaluate_volumes(pairs, metrics="mae", out=tmp_path / "rep", settings=CT, quiet=True)
    assert len(logged) == 1
    assert logged[0]["evaluate/mae"] == report["summary"]["mae"]["mean"]
    assert [row[0] for row in logged[0]["evaluate/patients"]["data"]] == ["p0/ct", "p1/ct", "p2/ct"]
    stub.run = None
    evaluate_volumes(pairs, metrics="mae", out=tmp_path / "rep", settings=CT, overwrite=True, quiet=True)
    assert len(logged) == 1


# ---------------------------------------------------------------------------------------- modality and windows


def _mr(rng: np.random.Generator, scale: float) -> np.ndarray:
    mr = rng.gamma(2.0, scale, size=SHAPE)
    mr[:3] = 0.0  # air
    return mr


@pytest.fixture()
def mr_dirs(tmp_path: Path) -> Path:
    """Three MR patients of very different intensity scales, declared MR by their sidecars."""
    rng = np.random.default_rng(3)
    root = tmp_path / "mr_set"
    for i, scale in enumerate((40.0, 150.0, 600.0)):
        mr = _mr(rng, scale)
        _save(root / "real" / f"p{i}" / "mr.nii.gz", mr, modality="MR")
        _save(root / "fake" / f"p{i}" / "mr.nii.gz", mr + rng.normal(0, 0.2 * scale, SHAPE), modality="MR")
    return root


def test_mr_volumes_are_scored_in_each_patients_own_window(mr_dirs, tmp_path):
    report = evaluate_volumes(find_volume_pairs(mr_dirs / "real", mr_dirs / "fake"), metrics="mae,psnr,ssim",
                              out=tmp_path / "rep", quiet=True)
    proto = report["volume_protocol"]
    assert proto["modality"] == "MR" and proto["window"] is None and "per patient" in proto["window_rule"]
    for i in range(3):
        mr, pred = _load(mr_dirs / "real" / f"p{i}" / "mr.nii.gz"), _load(mr_dirs / "fake" / f"p{i}" / "mr.nii.gz")
        window = tuple(np.percentile(mr.astype(np.float32), [0.5, 99.5]))  # as training normalises each MR volume
        direct = volume_metrics(pred, mr, None, protocol="default", data_range=window)
        row = report["patients"][i]
        assert row["window"] == pytest.approx(list(window), rel=1e-6)
        for k in ("mae", "psnr", "ssim"):
            assert row[k] == pytest.approx(direct[k], rel=1e-6)
        if i < 2:  # MR scales far from the CT window's 4024 HU width: the silent CT default of old was far off
            assert abs(volume_metrics(pred, mr, None, protocol="default")["psnr"] - row["psnr"]) > 3.0
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "modality MR, window MR: per patient" in md and "| patient | window | mae |" in md


def test_unknown_mixed_or_contradicting_modality_is_refused_naming_the_file(volume_dirs, mr_dirs, tmp_path):
    pairs = find_volume_pairs(volume_dirs / "real", volume_dirs / "fake")  # no sidecars: modality unknown
    with pytest.raises(VolumeError, match="declares no modality.*--modality ct\\|mr\\|pet") as info:
        evaluate_volumes(pairs, metrics="mae", out=tmp_path / "r", quiet=True)
    assert str(volume_dirs / "real" / "p0" / "ct.nii.gz") in str(info.value)
    mixed = tmp_path / "mixed"
    for i, code in enumerate(("CT", "MR")):
        _save(mixed / "real" / f"p{i}.nii.gz", np.zeros(SHAPE), modality=code)
        _save(mixed / "fake" / f"p{i}.nii.gz", np.zeros(SHAPE))
    with pytest.raises(VolumeError, match=r"p1.nii.gz: is MR but .*p0.nii.gz is CT"):
        evaluate_volumes(find_volume_pairs(mixed / "real", mixed / "fake"), metrics="mae", out=tmp_path / "r",
                         quiet=True)
    with pytest.raises(VolumeError, match="declared MR .* --modality says CT"):
        evaluate_volumes(find_volume_pairs(mr_dirs / "real", mr_dirs / "fake"), metrics="mae", out=tmp_path / "r",
                         settings=CT, quiet=True)
    _save(mr_dirs / "fake" / "p1" / "mr.nii.gz", np.zeros(SHAPE), modality="CT")
    with pytest.raises(VolumeError, match="synthetic volume is declared CT"):
        evaluate_volumes(find_volume_pairs(mr_dirs / "real", mr_dirs / "fake"), metrics="mae", out=tmp_path / "r",
                         quiet=True)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------ a split of a data folder


@pytest.fixture()
def data_dir(tmp_path: Path) -> Path:
    """Six patients (ct, mr with sidecars, body_mask), a splits file, and synthetic MR for the two test patients."""
    rng = np.random.default_rng(5)
    root = tmp_path / "data"
    for i in range(6):
        ct = rng.normal(40, 300, size=SHAPE).clip(-1024, 3000)
        ct[:3] = -1000.0
        mr = _mr(rng, 50.0 + 40 * i)
        body = np.zeros(SHAPE, np.uint8)
        body[3:, 1:21, 1:13] = 1
        _save(root / f"p{i}" / "ct.nii.gz", ct, modality="CT")
        _save(root / f"p{i}" / "mr.nii.gz", mr, modality="MR")
        _save(root / f"p{i}" / "body_mask.nii.gz", body, modality="SEG")
    splits = {"train": ["p0", "p1", "p2"], "train_mr": ["p1", "p2"], "val": ["p3"], "test": ["p4", "p5"]}
    (tmp_path / "splits.json").write_text(json.dumps(splits))
    _save(tmp_path / "fake" / "p4" / "mr.nii.gz", _load(root / "p4" / "mr.nii.gz") * 1.1, modality="MR")
    _save(tmp_path / "fake" / "p5.nii.gz", _load(root / "p5" / "mr.nii.gz") + 20.0)  # the flat naming, no sidecar
    return tmp_path


def _split_argv(root: Path, out: str, *extra: str) -> list[str]:
    return ["--quiet", "evaluate", "--data", str(root / "data"), "--splits", str(root / "splits.json"), "--split",
            "test", "--target", "mr", "--mask", "body_mask", "--fake", str(root / "fake"), "--metrics",
            "mae,psnr,ssim", "--out", str(root / out), *extra]


def _mr_window(mr: np.ndarray) -> tuple[float, float]:
    return tuple(float(v) for v in np.percentile(mr.astype(np.float32), [0.5, 99.5]))


def test_data_split_with_the_copy_baseline_matches_a_direct_computation(data_dir):
    from gan.cli import main

    assert main(_split_argv(data_dir, "rep", "--baseline", "copy", "--source", "ct")) == 0
    report = json.loads((data_dir / "rep" / "report.json").read_text())
    assert [r["patient"] for r in report["patients"]] == ["p4", "p5"]
    assert report["volume_protocol"]["modality"] == "MR" and report["inputs"]["split"] == "test"
    fakes = {"p4": data_dir / "fake" / "p4" / "mr.nii.gz", "p5": data_dir / "fake" / "p5.nii.gz"}
    for row in report["patients"]:
        pid = row["patient"]
        mr, ct = _load(data_dir / "data" / pid / "mr.nii.gz"), _load(data_dir / "data" / pid / "ct.nii.gz")
        body = _load(data_dir / "data" / pid / "body_mask.nii.gz") > 0
        lo, hi = _mr_window(mr)
        copy = (np.clip(ct, -1024, 3000) + 1024) / 4024 * (hi - lo) + lo  # CT window -> [-1, 1] -> the MR window
        direct = volume_metrics(_load(fakes[pid]), mr, body, protocol="default", data_range=(lo, hi))
        base = volume_metrics(copy, mr, body, protocol="default", data_range=(lo, hi))
        for k in ("mae", "psnr", "ssim"):
            assert row[k] == pytest.approx(direct[k], rel=1e-6)
            assert row[f"baseline_{k}"] == pytest.approx(base[k], rel=1e-6)
        assert row["mask_voxels"] == int(body.sum())


def test_data_split_with_the_mean_baseline_matches_a_direct_computation(data_dir):
    from gan.cli import main

    assert main(_split_argv(data_dir, "rep", "--baseline", "mean")) == 0
    report = json.loads((data_dir / "rep" / "report.json").read_text())
    total = count = 0.0
    for pid in ("p1", "p2"):  # train_mr: where unpaired training draws its MR from
        mr = _load(data_dir / "data" / pid / "mr.nii.gz")
        body = _load(data_dir / "data" / pid / "body_mask.nii.gz") > 0
        total += np.clip(mr, *_mr_window(mr))[body].sum()
        count += body.sum()
    mean = total / count
    assert f"({mean:.6g})" in report["volume_protocol"]["baseline"]
    for row in report["patients"]:
        mr = _load(data_dir / "data" / row["patient"] / "mr.nii.gz")
        body = _load(data_dir / "data" / row["patient"] / "body_mask.nii.gz") > 0
        lo, hi = _mr_window(mr)
        base = volume_metrics(np.where(body, mean, lo), mr, body, protocol="default", data_range=(lo, hi))
        for k in ("mae", "psnr", "ssim"):
            assert row[f"baseline_{k}"] == pytest.approx(base[k], rel=1e-6)


def test_data_split_errors_name_what_is_missing(data_dir, tmp_path):
    from gan.cli import main

    with pytest.raises(Exception, match="has no split 'tset'; it has test, train, train_mr, val"):
        evaluate_args(_parser().parse_args(_split_argv(data_dir, "r", "--split", "tset")[2:]))
    with pytest.raises(ValueError, match="--baseline copy needs the source volumes"):
        evaluate_args(_parser().parse_args(_split_argv(data_dir, "r", "--baseline", "copy")[2:]))
    assert main(_split_argv(data_dir, "r", "--modality", "ct")) == 2  # contradicts --target mr
    (data_dir / "fake" / "p5.nii.gz").unlink()
    with pytest.raises(VolumeError, match=r"no synthetic volume of patient p5: expected .*p5/mr.nii.gz"):
        evaluate_args(_parser().parse_args(_split_argv(data_dir, "r")[2:]))
    assert not (data_dir / "r").exists()


def test_the_baselines_are_one_definition_for_numpy_and_torch():
    """``evaluate`` (numpy) and the translation modules (torch) make the trivial baselines with the same two
    functions: the same values both ways, matching the formulas written out here."""
    from data.intensity import WindowParams
    from gan.metrics.volume_evaluation import copy_baseline, mean_baseline

    rng = np.random.default_rng(11)
    unit = rng.uniform(-1.0, 1.0, size=SHAPE).astype(np.float32)
    body = rng.random(SHAPE) > 0.4
    for window in (WindowParams(-1024.0, 3000.0), WindowParams(3.5, 812.25), WindowParams(0.0, 20.0, log=True)):
        lo, hi = (np.log1p(window.low), np.log1p(window.high)) if window.log else (window.low, window.high)
        expected = (unit.astype(np.float64) + 1.0) / 2.0 * (hi - lo) + lo
        expected = np.expm1(expected) if window.log else expected
        got = copy_baseline(unit, window)
        assert got.dtype == np.float64 and np.allclose(got, expected, rtol=1e-12, atol=1e-9)
        as_tensor = copy_baseline(torch.from_numpy(unit), window)
        assert as_tensor.dtype == torch.float64 and np.allclose(as_tensor.numpy(), got, rtol=1e-14, atol=0)
        if not window.log:  # linear windows: the same operations, bit for bit (expm1 differs in the last bit)
            assert np.array_equal(as_tensor.numpy(), got)
    got = mean_baseline(body, 41.5, -1024.0)
    assert got.dtype == np.float64 and np.array_equal(got, np.where(body, 41.5, -1024.0))
    as_tensor = mean_baseline(torch.from_numpy(body), 41.5, -1024.0)
    assert as_tensor.dtype == torch.float64 and np.array_equal(as_tensor.numpy(), got)


_HELP_PROBE = """
import sys
from gan.cli import main
try:
    main(["evaluate", "--help"])
except SystemExit:
    pass
print("HEAVY", sorted(m for m in ("torch", "numpy", "lightning") if m in sys.modules))
"""


def test_cli_help_does_not_import_torch():
    res = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HEAVY []" in res.stdout and "--mr-percentiles" in res.stdout
