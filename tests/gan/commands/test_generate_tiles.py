"""``medsynth generate`` for StyleGAN2 (gan.commands.generate_tiles): tiles of one class are released through the
memorization audit with a manifest.csv that regenerates each tile bit for bit, an interrupted run resumes to the
same files, a generator that copies its training tiles is stopped, and bad arguments are refused by name."""
from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import gan.commands.generate_tiles as gt
from gan.cli import main
from gan.metrics import ModuleExtractor
from gan.models import StyleGAN2
from gan.models.checkpoint import load_generator
from gan.release import AuditFailed, AuditSettings
from gan.style import sample_images, to_uint8
from tests.helpers import cpu_trainer

TINY = dict(resolution=32, class_names=["blue", "red"], mpp=0.5,
            network={"z_dim": 16, "w_dim": 16, "mapping_layers": 2, "channel_base": 512, "channel_max": 32},
            evaluation={"grid_seeds": 2, "diversity_tiles": 3, "lpips_pretrained": False})
COLOURS = {"red": (200, 40, 40), "blue": (40, 40, 200)}
AUDIT = ["--weights", "random", "--min-cell", "4", "--cells", "2", "--quantile", "0.05", "--batch-size", "16"]


def _tile(colour: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.asarray(colour)[None, None] + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)


def _tile_folder(root: Path, n: int, offset: int) -> Path:
    for name, colour in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_tile(colour, offset + i)).save(root / name / f"t{i:03d}.png")
    return root


class _Tiles(torch.utils.data.Dataset):
    def __init__(self, root: Path) -> None:
        self.files = sorted(root.glob("*/*.png"))
        self.classes = sorted(COLOURS)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        img = torch.from_numpy(np.asarray(Image.open(self.files[i]))).permute(2, 0, 1).float() / 127.5 - 1
        return {"image": img, "label": self.classes.index(self.files[i].parent.name)}


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tiles")
    return {"train": _tile_folder(tmp / "train", 16, 0), "heldout": _tile_folder(tmp / "heldout", 16, 1000)}


@pytest.fixture(scope="module")
def ckpt(sets: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sg_ckpt")
    torch.manual_seed(0)
    trainer = cpu_trainer(tmp, limit_train_batches=2, limit_val_batches=0)
    trainer.fit(StyleGAN2(**TINY), torch.utils.data.DataLoader(_Tiles(sets["train"]), batch_size=8, shuffle=True))
    path = tmp / "sg.ckpt"
    trainer.save_checkpoint(path)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _generate(ckpt: Path, sets: dict[str, Path], out: Path, *extra: str) -> int:
    return main(["--quiet", "generate", "--ckpt", str(ckpt), "--label", "red", "--n", "12", "--seed-start", "5",
                 "--truncation", "0.7", "--gen-batch", "5", "--out", str(out), "--train", str(sets["train"]),
                 "--heldout", str(sets["heldout"]), *AUDIT, *extra])


def test_tiles_are_released_with_a_manifest_that_regenerates_them(ckpt, sets, tmp_path):
    out = tmp_path / "syn"
    assert _generate(ckpt, sets, out) == 0
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert [int(r["seed"]) for r in rows] == list(range(5, 17))
    G, info = load_generator(ckpt)
    assert {r["label_name"] for r in rows} == {"red"} and {r["label"] for r in rows} == {"1"}
    assert {r["checkpoint_sha256"] for r in rows} == {info["checkpoint_sha256"]}
    assert {float(r["mpp"]) for r in rows} == {0.5} and {r["noise_mode"] for r in rows} == {"const"}
    for r in rows:
        tile = out / r["key"]
        assert r["sha256"] == _sha(tile), "manifest.csv holds each file's sha256"
        img = Image.open(tile)
        assert img.size == (32, 32) and img.info["seed"] == r["seed"]
        assert img.info["dpi"][0] == pytest.approx(25400 / 0.5, rel=1e-3), "the training mpp is in the PNG"
        # independent regeneration from the recorded seed, label and truncation, one tile at a time
        again = to_uint8(sample_images(G, [int(r["seed"])], int(r["label"]), float(r["truncation"])))[0]
        diff = np.abs(np.asarray(img).astype(int) - again.astype(int))
        assert diff.max() <= 1 and (diff > 0).mean() < 0.01, "the tile regenerates from its manifest row"
    assert not list(tmp_path.glob(".*partial*"))


def _tiny_extractor() -> ModuleExtractor:
    torch.manual_seed(0)
    return ModuleExtractor(nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(4),
                                         nn.Flatten()).eval(), name="tiny", input_size=32,
                           mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _generate_api(ckpt: Path, sets: dict[str, Path], out: Path, seeds=range(5, 17)):
    G, info = load_generator(ckpt)
    return gt.generate_tiles(G, info, out, label="red", seeds=seeds, truncation=0.7, train=[sets["train"]],
                             heldout=[sets["heldout"]], extractor=_tiny_extractor(),
                             audit=AuditSettings(quantile=0.05, cells=2, min_cell=4, batch_size=16), batch=5)


def test_an_interrupted_run_resumes_to_the_same_files(ckpt, sets, tmp_path, monkeypatch):
    full = tmp_path / "full"
    _generate_api(ckpt, sets, full)
    make = gt.TileSource.make
    calls = {"n": 0}

    def crash_after_7(self, spec, stage):
        calls["n"] += 1
        if calls["n"] > 7:
            raise KeyboardInterrupt
        return make(self, spec, stage)

    monkeypatch.setattr(gt.TileSource, "make", crash_after_7)
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        _generate_api(ckpt, sets, part)
    assert not part.exists(), "nothing is released before every tile and the audit are done"
    monkeypatch.setattr(gt.TileSource, "make", make)
    assert _generate_api(ckpt, sets, part).resumed == 7
    keys = sorted(p.relative_to(full).as_posix() for p in full.glob("red/*.png"))
    assert keys == sorted(p.relative_to(part).as_posix() for p in part.glob("red/*.png")) and len(keys) == 12
    assert all(_sha(full / k) == _sha(part / k) for k in keys), "resumed tiles are bit-identical (fixed blocks)"


def test_a_generator_that_copies_training_tiles_is_stopped(ckpt, sets, tmp_path, monkeypatch):
    copies = np.stack([np.asarray(Image.open(p)) for p in sorted((sets["train"] / "red").glob("*.png"))[:12]])
    monkeypatch.setattr(gt.TileSource, "_tiles_of_block",
                        lambda self, block: copies[block * self.batch:(block + 1) * self.batch])
    out = tmp_path / "copied"
    with pytest.raises(AuditFailed) as err:
        _generate_api(ckpt, sets, out, seeds=range(12))
    assert err.value.flagged, "the copies are named"
    assert not out.exists() and (tmp_path / "copied.rejected").is_dir()
    assert not list((tmp_path / "copied.rejected").rglob("*.png")) or all(
        "audit" in p.parts for p in (tmp_path / "copied.rejected").rglob("*.png")), "no synthetic tile is kept"


@pytest.mark.parametrize("extra, message", [
    (["--label", "necrosis"], "unknown class 'necrosis'"),
    (["--seeds", "3-1"], "--seeds"),
    (["--input", "x.nii.gz"], "--input is for translation"),
])
def test_bad_arguments_are_refused_by_name(ckpt, sets, tmp_path, capsys, extra, message):
    args = ["generate", "--ckpt", str(ckpt), "--out", str(tmp_path / "o"), "--train", str(sets["train"]),
            "--heldout", str(sets["heldout"]), *AUDIT, "--label", "red"]
    args += ["--n", "4"] if "--seeds" not in extra else []
    assert main(args + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_reference_tiles_keep_the_class_and_refuse_a_missing_one(sets):
    tiles, names = gt.reference_tiles([sets["train"]], tile_size=32, mpp=0.5, class_name="red", max_tiles=10,
                                      label="train")
    assert tiles.shape == (10, 3, 32, 32) and tiles.dtype == torch.uint8
    assert float(tiles[:, 0].float().mean()) > float(tiles[:, 2].float().mean()) + 50, "only red tiles"
    with pytest.raises(Exception, match="no tile of class 'necrosis'"):
        gt.reference_tiles([sets["train"]], tile_size=32, mpp=0.5, class_name="necrosis", max_tiles=10,
                           label="train")
