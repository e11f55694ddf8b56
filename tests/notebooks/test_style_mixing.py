"""``notebooks/style_mixing.ipynb`` runs end to end with nbclient: on a tiny export (every figure drawn, the export
loaded without Lightning), and without any model (it trains and exports a tiny fallback model)."""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from PIL import Image

from gan.nets.stylegan2 import load_exported
from gan.style import sample_images, to_uint8
from tests.gan.style.tiny import tiny_export

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "style_mixing.ipynb"


def _run(tmp_path: Path, **params) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    assert "parameters" in first.metadata.get("tags", []), "the first code cell holds the parameters"
    names = {line.split("=")[0].strip() for line in first.source.splitlines() if "=" in line and line[0] != " "}
    assert set(params) <= names, f"unknown parameters {set(params) - names}"
    first.source += "\n" + "\n".join(f"{k} = {v!r}" for k, v in params.items())
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return nb


def _images(nb: nbformat.NotebookNode) -> int:
    return sum("image/png" in out.get("data", {}) for c in nb.cells if c.cell_type == "code" for out in c.outputs)


def _text(nb: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for c in nb.cells if c.cell_type == "code" for out in c.outputs)


@pytest.mark.skipif(sys.platform == "win32", reason="kernel start-up paths")
def test_notebook_runs_on_a_tiny_export(tmp_path_factory, tmp_path):
    export = tiny_export(tmp_path_factory)
    tile = tmp_path / "tile.png"
    Image.fromarray(to_uint8(sample_images(load_exported(export), [21], label=0)[0])).save(tile)
    nb = _run(tmp_path, MODEL=str(export), SLIDES=None, TILE=str(tile), PROJECT_STEPS=5, LPIPS_WEIGHTS="random",
              FALLBACK_DIR=str(tmp_path / "fallback"), ROW_SEEDS=[0, 1], COL_SEEDS=[2, 3])
    text = _text(nb)
    assert f"{export}: 32 px, num_ws 8" in text and "rare class: necrosis" in text
    assert "projected" in text and "5 steps" in text
    assert _images(nb) >= 6, "mixing (presets and one row), truncation, interpolation, projection, restyle"
    assert not (tmp_path / "fallback").exists(), "no fallback model with a model at hand"
    assert np.asarray(Image.open(tile)).shape == (32, 32, 3)


def test_notebook_trains_a_fallback_model_without_one(tmp_path):
    nb = _run(tmp_path, MODEL=str(tmp_path / "missing"), SLIDES=None, TILE=None, PROJECT_STEPS=2,
              LPIPS_WEIGHTS="random", FALLBACK_DIR=str(tmp_path / "fallback"), FALLBACK_STEPS=2,
              ROW_SEEDS=[0], COL_SEEDS=[1, 2])
    assert "training a tiny model for 2 steps" in _text(nb)
    G = load_exported(tmp_path / "fallback")
    assert G.num_classes == 4 and G.resolution == 32
    assert _images(nb) >= 6
