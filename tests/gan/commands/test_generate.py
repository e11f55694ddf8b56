"""``medsynth generate`` (gan.commands.generate): translated volumes are released only after the memorization audit
passes; a generator that reproduces training volumes is stopped, nothing half-written is left, an interrupted run
resumes, bad inputs are refused by name, and the README's smoke run (``--weights random``) works end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

import gan.commands.generate as gen
from data.volumes import load_volume
from gan.commands import EXIT_AUDIT_FAILED
from gan.commands.translate import Translator
from gan.metrics import ModuleExtractor
from gan.models import CycleGAN
from gan.release import AuditFailed, AuditSettings, ReleasePolicy
from tests.helpers import TINY_CYCLEGAN, cpu_trainer, volume_dm

AUDIT = dict(slices_per_volume=8, audit=AuditSettings(quantile=0.05, cells=2, min_cell=3, batch_size=16))


def _extractor() -> ModuleExtractor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.Conv2d(8, 8, 3, stride=2), nn.Tanh(),
                        nn.AdaptiveAvgPool2d(2), nn.Flatten()).eval()
    return ModuleExtractor(net, name="tiny-test-net", input_size=48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def ckpt(phantom_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gen_ckpt")
    trainer = cpu_trainer(tmp, limit_val_batches=0)
    trainer.fit(CycleGAN(**TINY_CYCLEGAN), datamodule=volume_dm(phantom_dir))
    path = tmp / "model.ckpt"
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def translator(ckpt: Path) -> Translator:
    return Translator.load(ckpt)


def _sets(phantom_dir: Path) -> dict[str, list[Path]]:
    return {"inputs": [phantom_dir / "p4", phantom_dir / "p5"],
            "train": [phantom_dir / f"p{i}" / "mr.nii.gz" for i in range(3)],
            "heldout": [phantom_dir / f"p{i}" / "mr.nii.gz" for i in (3, 4, 5)]}


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".partial") or ".tmp" in p.name]


def _translate_into(monkeypatch: pytest.MonkeyPatch, volumes) -> None:
    """Make the checkpoint 'translate' into the given volumes (a generator that copies its training set)."""
    it = iter(volumes)
    monkeypatch.setattr(Translator, "translate", lambda self, vol, direction="forward": next(it))


def test_clean_generation_is_released_with_manifest_and_audit(translator, phantom_dir, tmp_path):
    s = _sets(phantom_dir)
    out = tmp_path / "synthetic"
    res = gen.generate(translator, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
                       **AUDIT)
    assert res.audit is not None and res.audit.passed, res.audit.reasons
    volumes = [out / item.key for item in res.items]
    assert sorted(p.relative_to(out).as_posix() for p in volumes) == ["p4/mr.nii.gz", "p5/mr.nii.gz"]
    for pid, f in zip(("p4", "p5"), volumes):
        a, b = nib.load(str(phantom_dir / pid / "ct.nii.gz")), nib.load(str(f))
        np.testing.assert_array_equal(a.affine, b.affine)
        assert a.shape == b.shape and np.isfinite(b.get_fdata()).all()
    manifest = json.loads(res.manifest.read_text())
    assert manifest["audit"]["passed"] is True and manifest["released_without_audit"] is False
    assert manifest["direction"] == "ct->mr" and len(manifest["items"]) == 2
    assert manifest["audit"]["n_slices"] == {"generated": 16, "train": 24, "heldout": 24}
    assert (out / manifest["audit"]["files"]["json"]).is_file() and (out / "audit" / "closest_pairs.png").is_file()
    assert _leftovers(tmp_path) == []
    assert manifest["checkpoint_sha256"] == translator.checkpoint.sha256 and manifest["version"]
    assert manifest["items"][0]["input"] == str(phantom_dir / "p4" / "ct.nii.gz")
    assert set(manifest["items"][0]["files"]) == {"p4/mr.nii.gz", "p4/mr.json"}
    assert manifest["audit"]["cells"]["used"] == 2 and manifest["audit"]["comparable"] is True
    with pytest.raises(FileExistsError, match="exists; pass --overwrite"):
        gen.generate(translator, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
                     **AUDIT)
    res = gen.generate(translator, s["inputs"][:1], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
                       policy=ReleasePolicy(overwrite=True), **AUDIT)
    assert [item.key for item in res.items] == ["p4/mr.nii.gz"] and not (out / "p5").exists()


@pytest.mark.parametrize("with_lpips", [False, True])
def test_a_generator_that_copies_training_volumes_is_stopped(with_lpips, translator, phantom_dir, tmp_path,
                                                            monkeypatch):
    from tests.gan.metrics.memorization.helpers import random_lpips  # random backbone, non-negative heads

    lpips = random_lpips("none") if with_lpips else None
    s = _sets(phantom_dir)
    _translate_into(monkeypatch, [load_volume(s["train"][0]), load_volume(s["train"][1])])
    out = tmp_path / "synthetic"
    with pytest.raises(AuditFailed, match="FAILED, nothing released") as info:
        gen.generate(translator, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
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
    assert info.value.flagged and info.value.flagged[0].startswith(("p4/mr.nii.gz[slice", "p5/mr.nii.gz[slice"))


def test_allow_flagged_and_skip_audit_are_recorded(translator, phantom_dir, tmp_path, monkeypatch):
    s = _sets(phantom_dir)
    _translate_into(monkeypatch, [load_volume(s["train"][0])])
    res = gen.generate(translator, s["inputs"][:1], tmp_path / "a", train=s["train"], heldout=s["heldout"],
                       extractor=_extractor(), policy=ReleasePolicy(allow_flagged=True), **AUDIT)
    m = json.loads(res.manifest.read_text())
    assert m["released_despite_failed_audit"] is True and m["audit"]["passed"] is False
    pairs = res.audit.details.pair_images  # closest pairs reloaded from disk: the copy and its training slice are equal
    assert pairs is not None and np.array_equal(pairs[0, 0], pairs[0, 1]) and pairs.shape[2] == 3
    _translate_into(monkeypatch, [load_volume(s["train"][0])])
    res = gen.generate(translator, s["inputs"][:1], tmp_path / "b", train=None, heldout=None,
                       policy=ReleasePolicy(skip_audit=True))
    m = json.loads(res.manifest.read_text())
    assert m["released_without_audit"] is True and m["audit"] == {"run": False} and res.audit is None


def test_bad_inputs_are_refused_and_nothing_is_left(translator, phantom_dir, tmp_path, monkeypatch):
    s = _sets(phantom_dir)
    kw = dict(extractor=_extractor(), **AUDIT)
    with pytest.raises(ValueError, match="needs --train"):
        gen.generate(translator, s["inputs"], tmp_path / "o", train=None, heldout=s["heldout"], **kw)
    with pytest.raises(ValueError, match="share"):
        gen.generate(translator, s["inputs"], tmp_path / "o", train=s["train"], heldout=s["train"][:1], **kw)
    with pytest.raises(ValueError, match="several inputs would be written to ct_mr.nii.gz|several inputs"):
        gen.generate(translator, [phantom_dir / "p4" / "ct.nii.gz", phantom_dir / "p5" / "ct.nii.gz"], tmp_path / "o",
                     train=s["train"], heldout=s["heldout"], **kw)
    with pytest.raises(Exception, match="no such file"):
        gen.generate(translator, [tmp_path / "missing.nii.gz"], tmp_path / "o", train=s["train"],
                     heldout=s["heldout"], **kw)
    with pytest.raises(Exception, match=r"--train: .*looks like CT"):  # the audit compares output-modality volumes
        gen.generate(translator, s["inputs"], tmp_path / "o", train=[phantom_dir / "p0" / "ct.nii.gz"],
                     heldout=s["heldout"], **kw)
    nan = load_volume(s["train"][0])
    nan.array[0, 0, 0] = np.nan
    monkeypatch.setattr(Translator, "translate", lambda self, vol, direction="forward": nan)
    with pytest.raises(Exception, match=r"p4/ct.nii.gz.*NaN"):
        gen.generate(translator, s["inputs"], tmp_path / "o", train=s["train"], heldout=s["heldout"], **kw)
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_an_interrupted_run_resumes_with_the_volumes_already_staged(translator, phantom_dir, tmp_path, monkeypatch):
    s = _sets(phantom_dir)
    real = Translator.translate
    calls: list[str] = []

    def flaky(self, vol, direction="forward"):
        calls.append(vol.source)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user stops the run during the second volume
        return real(self, vol, direction)

    monkeypatch.setattr(Translator, "translate", flaky)
    out = tmp_path / "synthetic"
    with pytest.raises(KeyboardInterrupt):
        gen.generate(translator, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
                     **AUDIT)
    staged = tmp_path / ".synthetic.partial"
    assert not out.exists() and (staged / "p4" / "mr.nii.gz").is_file() and not (staged / "p5").exists()
    calls.clear()
    res = gen.generate(translator, s["inputs"], out, train=s["train"], heldout=s["heldout"], extractor=_extractor(),
                       **AUDIT)
    assert [Path(c).parent.name for c in calls] == ["p5"] and res.resumed == 1 and len(res.items) == 2
    assert not staged.exists() and json.loads(res.manifest.read_text())["audit"]["n_slices"]["generated"] == 16


def test_cli_exit_status(ckpt, phantom_dir, tmp_path, monkeypatch, capsys):
    from gan.cli import main

    monkeypatch.setattr("gan.commands.evaluate.build_extractor", lambda kind, weights, device: _extractor())
    s = _sets(phantom_dir)
    args = ["generate", "--ckpt", str(ckpt), "--input", *map(str, s["inputs"]), "--train", *map(str, s["train"]),
            "--heldout", *map(str, s["heldout"]), "--slices-per-volume", "8", "--quantile", "0.05", "--cells", "2",
            "--min-cell", "3"]
    assert main(args + ["--out", str(tmp_path / "ok")]) == 0
    assert "released 2 synthetic volumes" in capsys.readouterr().out
    assert main(args + ["--out", str(tmp_path / "ok")]) == 2  # exists: refused, one clear line
    assert "pass --overwrite" in capsys.readouterr().err
    _translate_into(monkeypatch, [load_volume(s["train"][0])] * 2)
    assert main(args + ["--out", str(tmp_path / "bad")]) == EXIT_AUDIT_FAILED == 3
    assert (tmp_path / "bad.rejected" / "audit" / "memorization.json").is_file()
    printed = capsys.readouterr().out
    assert "FAILED, nothing released" in printed and "  flagged: p4/mr.nii.gz[slice" in printed


@pytest.mark.filterwarnings("ignore:held-out set has")
def test_smoke_run_with_random_weights_end_to_end(ckpt, phantom_dir, tmp_path, capsys):
    """``--weights random`` through the console script with the real (seeded random) Inception: no weights file
    needed, the cells adapt to the small sets, and the manifest says the audit compares with nothing. (The README's
    demo shape, 32 generated slices at the default --cells 10 / --min-cell 20, is test_release's cells rule.)"""
    from gan.cli import main

    s = _sets(phantom_dir)
    out = tmp_path / "synthetic_mr"
    assert main(["generate", "--ckpt", str(ckpt), "--input", *map(str, s["inputs"]), "--out", str(out), "--train",
                 *map(str, s["train"]), "--heldout", *map(str, s["heldout"]), "--weights", "random",
                 "--slices-per-volume", "4", "--min-cell", "8"]) == 0
    assert "random-weights Inception" in capsys.readouterr().out
    m = json.loads((out / "manifest.json").read_text())
    assert m["audit"]["n_slices"] == {"generated": 8, "train": 12, "heldout": 12}
    assert m["audit"]["cells"] == {"requested": 10, "used": 1, "min_cell": 8, "rule": m["audit"]["cells"]["rule"]}
    assert m["audit"]["comparable"] is False and m["audit"]["feature_protocol"]["weights"] == "random(seed=0)"
    assert any("random" in w and "compare with nothing" in w for w in m["warnings"])
    saved = json.loads((out / "audit" / "memorization.json").read_text())
    assert saved["protocol"]["comparable"] is False


def test_evaluate_takes_the_training_windows_from_the_checkpoint(ckpt, tmp_path):
    """``medsynth evaluate --ckpt``: the checkpoint's datamodule windows, unless an option says otherwise."""
    import argparse

    from gan.commands.evaluate import TrainingWindows, add_arguments, training_windows_from

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    state["datamodule_hyper_parameters"]["ct_window"] = [-1024.0, 1024.0]
    demo_like = tmp_path / "demo_like.ckpt"
    torch.save(state, demo_like)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--fake", "f", "--metrics", "mae", "--out", "o"]
    assert training_windows_from(parser.parse_args(base)) == TrainingWindows()
    got = training_windows_from(parser.parse_args(base + ["--ckpt", str(demo_like)]))
    assert got == TrainingWindows(ct_window=(-1024.0, 1024.0))
    got = training_windows_from(parser.parse_args(base + ["--ckpt", str(demo_like), "--ct-window", "-500", "500",
                                                          "--mr-percentiles", "1", "99"]))
    assert got == TrainingWindows(ct_window=(-500.0, 500.0), mr_percentiles=(1.0, 99.0))


_HELP_PROBE = """
import sys, time
t = time.perf_counter()
from gan.cli import main
try:
    main(["generate", "--help"])
except SystemExit:
    pass
print("ELAPSED", time.perf_counter() - t)
print("HEAVY", sorted(m for m in ("torch", "numpy", "lightning") if m in sys.modules))
"""


def test_help_is_fast_plain_text_and_imports_no_torch():
    res = subprocess.run([sys.executable, "-c", _HELP_PROBE], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "HEAVY []" in res.stdout, res.stdout[-300:]
    assert float(res.stdout.split("ELAPSED")[1].split()[0]) < 1.0
    for markup in ("``", ":func:", ":class:", ":mod:"):
        assert markup not in res.stdout
    assert "Example:" in res.stdout and "--weights WEIGHTS" in res.stdout and "--overwrite" in res.stdout
