"""``medsynth mix``: the grid PNG holds the style-mixing grid of the checkpoint (and of its export: the same
pixels), its sidecar records how to redraw it, and mistakes are one message with exit status 2."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gan.cli import main
from gan.models.checkpoint import load_generator
from gan.style import style_mix, to_uint8
from gan.style.grid import GAP, LABEL_WIDTH, LINE, TITLE_LINES
from tests.gan.style.tiny import tiny_checkpoint, tiny_export


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory)


def _cells(path, rows, cols, size=32):
    image = np.asarray(Image.open(path).convert("RGB"))
    top = (TITLE_LINES + 1) * LINE
    return np.stack([np.stack([image[top + i * (size + GAP):top + i * (size + GAP) + size,
                                     LABEL_WIDTH + j * (size + GAP):LABEL_WIDTH + j * (size + GAP) + size]
                               for j in range(cols + 1)]) for i in range(rows + 1)])


def test_mix_writes_the_checkpoints_grid_and_its_provenance(ckpt, tmp_path):
    out = tmp_path / "grid.png"
    args = ["mix", "--ckpt", str(ckpt), "--rows", "1,2,3", "--cols", "4-6", "--layers", "0-3", "--out", str(out),
            "--label", "necrosis", "--truncation", "0.7"]
    assert main(args) == 0
    G, info = load_generator(ckpt)
    expected = to_uint8(style_mix(G, [1, 2, 3], [4, 5, 6], [0, 1, 2, 3], label=2, psi=0.7))
    assert np.array_equal(_cells(out, 3, 3), expected)
    prov = json.loads((tmp_path / "grid.json").read_text())["provenance"]
    assert prov["checkpoint_sha256"] == info["checkpoint_sha256"]
    assert (prov["row_seeds"], prov["col_seeds"], prov["layers"]) == ([1, 2, 3], [4, 5, 6], [0, 1, 2, 3])
    assert (prov["label_index"], prov["label_name"], prov["truncation"]) == (2, "necrosis", 0.7)

    export = tmp_path / "export"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(export)]) == 0
    out2 = tmp_path / "grid_export.png"
    assert main([*args[:2], str(export), *args[3:10], str(out2), *args[11:]]) == 0
    assert np.array_equal(_cells(out2, 3, 3), expected), "the export draws the checkpoint's grid"


def test_mix_without_label_uses_the_first_class_and_presets_work(tmp_path_factory, tmp_path):
    export = tiny_export(tmp_path_factory)
    out = tmp_path / "fine.png"
    assert main(["mix", "--ckpt", str(export), "--rows", "1", "--cols", "2,3", "--layers", "fine", "--out",
                 str(out)]) == 0
    prov = json.loads((tmp_path / "fine.json").read_text())["provenance"]
    assert prov["label_index"] == 0 and prov["label_name"] == "stroma" and prov["layers"] == [6, 7]


@pytest.mark.parametrize("change, message", [
    ({"--layers": "0-8"}, "--layers '0-8': layers [8] outside [0, 8)"),
    ({"--label": "fat"}, "--label: unknown class 'fat'"),
    ({"--out": "grid.jpg"}, "give a file name ending in .png"),
])
def test_mistakes_are_usage_errors(tmp_path_factory, tmp_path, capsys, change, message):
    export = tiny_export(tmp_path_factory)
    opts = {"--ckpt": str(export), "--rows": "1", "--cols": "2", "--layers": "0-3", "--out": "grid.png"}
    opts.update(change)
    opts["--out"] = str(tmp_path / opts["--out"])
    assert main(["mix", *[x for kv in opts.items() for x in kv]]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir()), "nothing written"


def test_bad_seed_list_is_refused_by_the_parser(tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["mix", "--ckpt", str(tmp_path), "--rows", "1,x", "--cols", "2", "--out", str(tmp_path / "g.png")])
    assert e.value.code == 2


def test_existing_grid_is_refused_unless_overwrite(tmp_path_factory, tmp_path, capsys):
    export = tiny_export(tmp_path_factory)
    out = tmp_path / "grid.png"
    out.write_bytes(b"old")
    args = ["mix", "--ckpt", str(export), "--rows", "1", "--cols", "2", "--out", str(out)]
    assert main(args) == 2
    assert f"{out}: grid image exists; pass --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"old"
    assert main([*args, "--overwrite"]) == 0
    assert Image.open(out).format == "PNG"
