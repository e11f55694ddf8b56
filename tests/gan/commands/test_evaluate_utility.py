"""`medsynth evaluate --utility` (gan.commands.evaluate): from the command line on tiny tile sets whose answer is known
(tests/gan/utility/helpers), the report's verdict, tables, plot and the synthetic set's manifest; user errors exit 2."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

from gan.cli import main
from tests.gan.utility.helpers import CHECKPOINT_SHA, write_heldout, write_synthetic, write_training

TINY = ["--classifier", "tiny", "--utility-steps", "60", "--utility-lr", "3e-3"]


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny classifiers: as fast, and no stalls on a busy 2-core machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("utility_cli")
    return {"train": write_training(root / "train"), "heldout": write_heldout(root / "heldout"),
            "copies": write_synthetic(root / "copies", blank=False)}


def test_cli_utility_report_says_synthetic_beats_oversampling(sets, tmp_path) -> None:
    out = tmp_path / "rep"
    assert main(["--quiet", "evaluate", "--train", str(sets["train"]), "--heldout", str(sets["heldout"]), "--fake",
                 str(sets["copies"]), "--utility", *TINY, "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    util = report["utility"]
    assert util["synthetic_beats_oversampling"] is True and util["rare_class"] == "rare"
    assert util["synthetic_manifest"]["checkpoint_sha256"] == [CHECKPOINT_SHA]
    assert util["settings"]["classifier"] == "tiny" and util["seeds"] == [0, 1, 2]
    assert report["values"]["utility/synthetic_beats_oversampling"] == 1.0
    assert report["files"]["utility_plot"] == "utility.png" and (out / "utility.png").is_file()
    md = (out / "report.md").read_text()
    assert f"**{util['verdict']}.**" in md and "| synthetic (164 tiles) |" in md and "cccccccccccccccc" in md


def test_cli_utility_user_errors_exit_2(sets, tmp_path, capsys) -> None:
    base = ["evaluate", "--fake", str(sets["copies"]), "--utility", *TINY, "--out", str(tmp_path / "r")]
    assert main(base) == 2
    assert "--utility needs --train" in capsys.readouterr().err
    assert main([*base, "--train", str(sets["train"]), "--heldout", str(sets["heldout"]), "--utility-seeds", "0",
                 "1"]) == 2
    assert "at least 3 distinct seeds" in capsys.readouterr().err
    assert main([*base, "--train", str(sets["train"]), "--heldout", str(sets["train"])]) == 2
    assert "share 3 slide(s)" in capsys.readouterr().err  # splits by slide, never by tile
    assert main([*base, "--train", str(sets["train"])]) == 2  # no --heldout: split by slide; rare lives on one slide
    assert "on one side only" in capsys.readouterr().err
    assert main([*base, "--train", str(sets["train"]), "--heldout", str(sets["heldout"]), "--metrics", "mae"]) == 2
    assert "cannot run beside the paired-volume metrics" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
