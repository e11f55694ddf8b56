"""``medsynth project``: the output folder's latent reproduces its reconstruction, the reconstruction is closer to the
tile than the class's mean tile, the restyle grid keeps the tile's layers, and mistakes are usage errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from gan.cli import main
from gan.nets.stylegan2 import load_exported
from gan.style import load_latent, sample_images, synthesize, to_uint8
from tests.gan.style.tiny import tiny_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return tiny_export(tmp_path_factory)


@pytest.fixture(scope="module")
def tile(export, tmp_path_factory):
    """A tile the generator made (seed 9, class 2), as a PNG."""
    G = load_exported(export)
    path = tmp_path_factory.mktemp("tile") / "tile.png"
    Image.fromarray(to_uint8(sample_images(G, [9], label=2)[0])).save(path)
    return path


def test_project_writes_a_latent_that_reproduces_a_closer_reconstruction(export, tile, tmp_path):
    out = tmp_path / "proj"
    assert main(["project", "--ckpt", str(export), "--image", str(tile), "--steps", "30", "--out", str(out),
                 "--space", "w+", "--label", "necrosis", "--lpips-weights", "random", "--mse-weight", "1",
                 "--mix-seeds", "0-2", "--mix-layers", "coarse"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["latent.safetensors", "projection.json", "reconstruction.json",
                                                    "reconstruction.png", "restyle.json", "restyle.png",
                                                    "target.json", "target.png"]
    G = load_exported(export)
    w, noise, header = load_latent(out / "latent.safetensors")
    recon = to_uint8(G.synthesis(w, noise=noise)[0])
    assert np.array_equal(np.asarray(Image.open(out / "reconstruction.png")), recon)
    target = np.asarray(Image.open(tile))
    assert np.array_equal(np.asarray(Image.open(out / "target.png")), target)
    mean_tile = to_uint8(synthesize(G, G.mapping.class_w_avg[2].expand(1, G.num_ws, -1).clone())[0])
    err = lambda a: float(np.mean((a.astype(float) - target.astype(float)) ** 2))  # noqa: E731
    assert err(recon) < 0.7 * err(mean_tile), "the fit is closer to the tile than the class's mean tile"
    record = json.loads((out / "projection.json").read_text())
    assert record["space"] == "w+" and record["label_index"] == 2 and len(record["losses"]["total"]) == 30
    assert record["checkpoint_sha256"] == header["checkpoint_sha256"] == "0" * 64
    assert "random" in record["lpips"]
    restyle = json.loads((out / "restyle.json").read_text())["provenance"]
    assert restyle["mix_seeds"] == [0, 1, 2] and restyle["mix_layers"] == [0, 1, 2, 3]


def test_projection_in_w_has_one_w_for_all_layers(export, tile, tmp_path):
    out = tmp_path / "w"
    assert main(["project", "--ckpt", str(export), "--image", str(tile), "--steps", "2", "--out", str(out),
                 "--lpips-weights", "random"]) == 0
    w, _, header = load_latent(out / "latent.safetensors")
    assert header["w_plus"] == "false" and torch.equal(w, w[:, :1].expand_as(w))


def test_mistakes_are_usage_errors(export, tile, tmp_path, capsys):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(big)
    base = ["project", "--ckpt", str(export), "--steps", "2", "--lpips-weights", "random"]
    assert main([*base, "--image", str(big), "--out", str(tmp_path / "a")]) == 2
    assert f"--image {big}: the tile is 64 x 64 px but the generator makes 32 x 32 tiles" in capsys.readouterr().err
    assert main([*base, "--image", str(tmp_path / "none.png"), "--out", str(tmp_path / "b")]) == 2
    assert "none.png: no such file" in capsys.readouterr().err
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert main([*base, "--image", str(text), "--out", str(tmp_path / "c")]) == 2
    assert f"--image {text}: not an image file" in capsys.readouterr().err
    missing = tmp_path / "vgg16.pth"
    assert main(["project", "--ckpt", str(export), "--image", str(tile), "--out", str(tmp_path / "d"),
                 "--lpips-weights", str(missing)]) == 2
    assert "--lpips-weights:" in capsys.readouterr().err
    existing = tmp_path / "e"
    existing.mkdir()
    assert main([*base, "--image", str(tile), "--out", str(existing)]) == 2
    assert f"{existing}: projection folder exists; pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.png", "e", "notes.png"], "nothing else written"
