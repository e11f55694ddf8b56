"""`medsynth evaluate --metrics prdc,swd` (gan.commands.evaluate): numbers equal the functional metrics on the same
images and features, per class and beside the held-out floor; SWD runs without any feature weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gan.commands.evaluate import FidelitySettings, ImageSetInputs, evaluate_images
from gan.metrics import ModuleExtractor, precision_recall_density_coverage, sliced_wasserstein_distance
from gan.metrics.features import extract_features

SWD = {"patches_per_image": 16, "projections": 32}
FIDELITY = FidelitySettings(k=(3, 5), swd_patches=16, swd_projections=32, seed=3)


def _write(root: Path, n: int, seed: int, shift: float = 0.0) -> list[tuple[Path, int]]:
    """``root/c<k>/img<i>.png``, 32x32 RGB noise around a per-class grey level; returns (file, class)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = i % 2
        folder = root / f"c{c}"
        folder.mkdir(parents=True, exist_ok=True)
        arr = rng.normal(90 + 60 * c + shift, 30, size=(32, 32, 3)).clip(0, 255).astype(np.uint8)
        path = folder / f"img{i:03d}.png"
        Image.fromarray(arr).save(path)
        out.append((path, c))
    return sorted(out)


def _load(items: list[tuple[Path, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    imgs = [torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) for p, _ in items]
    return torch.stack(imgs), torch.tensor([c for _, c in items])


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list]]:
    root = tmp_path_factory.mktemp("fidelity")
    return {name: (root / name, _write(root / name, n, seed, shift))
            for name, n, seed, shift in (("real", 24, 1, 0.0), ("heldout", 20, 2, 0.0), ("fake", 22, 3, 25.0))}


@pytest.fixture()
def extractor() -> ModuleExtractor:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ModuleExtractor(net, name="tiny-fidelity", input_size=32)


def test_prdc_and_swd_equal_the_functional_metrics_per_class_and_floor(sets, extractor, tmp_path) -> None:
    inputs = ImageSetInputs(real=(sets["real"][0],), fake=(sets["fake"][0],), heldout=(sets["heldout"][0],))
    report = evaluate_images(inputs, metrics="prdc,swd", out=tmp_path / "rep", extractor=extractor,
                             fidelity=FIDELITY, quiet=True)
    (real, rl), (held, hl), (fake, fl) = (_load(sets[k][1]) for k in ("real", "heldout", "fake"))
    feats = {k: extract_features(x, extractor, "pytorch-fid") for k, x in (("r", real), ("h", held), ("f", fake))}
    prdc = report["prdc"]
    assert prdc["overall"] == pytest.approx(precision_recall_density_coverage(feats["r"], feats["f"]))
    assert prdc["floor"]["overall"] == pytest.approx(precision_recall_density_coverage(feats["r"], feats["h"]))
    assert prdc["per_class"]["c1"] == pytest.approx(precision_recall_density_coverage(feats["r"][rl == 1],
                                                                                      feats["f"][fl == 1]))
    assert prdc["feature_protocol"]["extractor"] == "tiny-fidelity"
    swd = report["swd"]
    ref = sliced_wasserstein_distance(real, fake, floor_images=held, seed=3, **SWD)
    assert swd["value"] == pytest.approx(ref["swd"], rel=1e-9)
    assert swd["floor"]["value"] == pytest.approx(ref["floor"]["swd"], rel=1e-9)
    assert swd["per_class"]["c0"] == pytest.approx(sliced_wasserstein_distance(real[rl == 0], fake[fl == 0], seed=3,
                                                                               **SWD)["swd"], rel=1e-9)
    assert swd["value"] > swd["floor"]["value"]  # the shifted set is farther than held-out reals
    assert report["classes"] == ["c0", "c1"] and report["counts"] == {"fake": 22, "real": 24, "heldout": 20}
    assert report["values"]["swd_floor"] == swd["floor"]["value"] and "prdc_floor_recall" in report["values"]
    saved = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert saved["files"]["fidelity_plot"] == "fidelity.png" and (tmp_path / "rep" / "fidelity.png").is_file()
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Sliced Wasserstein distance" in md and "held-out real (floor)" in md


def test_swd_alone_needs_no_feature_weights(sets, tmp_path, monkeypatch) -> None:
    from gan.cli import main
    from gan.commands.evaluate import images

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("SWD must not build a feature extractor")

    monkeypatch.setattr(images, "build_extractor", refuse)
    out = tmp_path / "rep"
    assert main(["--quiet", "evaluate", "--real", str(sets["real"][0]), "--fake", str(sets["fake"][0]), "--heldout",
                 str(sets["heldout"][0]), "--metrics", "swd", "--swd-patches", "16", "--swd-projections", "32",
                 "--seed", "3", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "feature_protocol" not in report and report["swd"]["settings"]["size"] == 32
    assert report["swd"]["settings"]["normalisation"] == "karras" and report["swd"]["floor"] is not None


def test_user_errors_exit_2_naming_what_is_wrong(sets, tmp_path, capsys) -> None:
    from gan.cli import main

    assert main(["evaluate", "--fake", str(sets["fake"][0]), "--out", str(tmp_path / "r")]) == 2
    assert "nothing to evaluate: give --metrics" in capsys.readouterr().err
    assert main(["evaluate", "--fake", str(sets["fake"][0]), "--metrics", "swd", "--out", str(tmp_path / "r")]) == 2
    assert "--real: --metrics swd needs the real images" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "--fake", "x", "--metrics", "swd", "--extractor", "vgg", "--out", str(tmp_path / "r")])
    assert "timm:<model> or torchvision:<model>" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
