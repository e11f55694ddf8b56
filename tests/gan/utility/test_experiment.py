"""The downstream-utility test (gan.utility) on tiny tile sets where the answer is known (tests/gan/utility/helpers):
synthetic copies of held-out-like rare tiles must beat oversampling, blank tiles must not; the regimes share budget,
seeds and initial weights; splits go by slide."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gan.utility import (
    TrainSettings,
    UtilitySettings,
    build_classifier,
    build_regimes,
    open_labelled_tiles,
    open_synthetic_tiles,
    run_utility,
    synthetic_manifest,
    train_classifier,
)
from tests.gan.utility.helpers import CHECKPOINT_SHA, write_heldout, write_synthetic, write_training

FAST = TrainSettings(classifier="tiny", steps=60, batch_size=32, lr=3e-3)


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("utility")
    return {"train": write_training(root / "train"), "heldout": write_heldout(root / "heldout"),
            "copies": write_synthetic(root / "copies", blank=False), "blank": write_synthetic(root / "blank",
                                                                                                 blank=True)}


def _run(sets: dict[str, Path], synthetic: str) -> dict:
    train = open_labelled_tiles([sets["train"]], label="train")
    heldout = open_labelled_tiles([sets["heldout"]], label="heldout")
    fake = open_synthetic_tiles(sets[synthetic], default_class="rare")
    return run_utility(train, heldout, fake, settings=UtilitySettings(train=FAST),
                       synthetic_manifest=synthetic_manifest(sets[synthetic]))


def test_synthetic_copies_of_held_out_like_tiles_beat_oversampling(sets) -> None:
    section = _run(sets, "copies")
    reg = section["regimes"]
    assert section["rare_class"] == "rare" and section["seeds"] == [0, 1, 2]
    # the purple half of the held-out rare tiles is learnt only from the synthetic set
    assert reg["synthetic"]["rare_recall"]["mean"] > reg["oversampled"]["rare_recall"]["mean"] + 0.3
    assert reg["synthetic"]["balanced_accuracy"]["mean"] > reg["real_only"]["balanced_accuracy"]["mean"]
    assert section["synthetic_beats_oversampling"] is True
    assert section["verdict"].startswith("synthetic beats oversampling on rare-class (rare) recall by +")
    assert len(reg["synthetic"]["rare_recall"]["values"]) == 3
    assert set(reg["real_only"]["per_class"]) == {"a", "b", "rare"}
    assert set(reg["real_only"]["per_class"]["rare"]) == {"precision", "recall", "f1"}
    assert reg["oversampled"]["train_size"] == reg["synthetic"]["train_size"] == 124 + 40
    assert reg["oversampled"]["train_class_counts"] == reg["synthetic"]["train_class_counts"]
    assert section["counts"]["synthetic_used"] == 40 and section["counts"]["synthetic_total"] == 40  # no audit image
    assert section["counts"]["train_slides"] == 3 and section["counts"]["heldout_slides"] == 2
    man = section["synthetic_manifest"]
    assert man["checkpoint_sha256"] == [CHECKPOINT_SHA] and man["seeds"] == {"count": 40, "min": 100, "max": 139}
    assert section["settings"]["budget"] == "60 steps x 32 tiles in every regime"


def test_blank_synthetic_tiles_do_not_beat_oversampling(sets) -> None:
    section = _run(sets, "blank")
    reg = section["regimes"]
    assert section["synthetic_beats_oversampling"] is False
    assert section["verdict"].startswith("synthetic does not beat oversampling on rare-class (rare) recall")
    assert reg["synthetic"]["rare_recall"]["mean"] <= reg["oversampled"]["rare_recall"]["mean"] + 0.05


def test_regimes_share_budget_seeds_and_initial_weights() -> None:
    x = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 0])
    syn = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8)
    regimes = build_regimes(x, y, syn, rare=2)
    over = regimes["oversampled"]
    assert over.images.shape[0] == regimes["synthetic"].images.shape[0] == 15
    assert torch.equal(over.images[10:], x[[7, 8, 7, 8, 7]])  # round robin over the real rare tiles
    assert regimes["real_only"].added == 0 and over.added == 5
    a, b = build_classifier("tiny", 3, seed=4), build_classifier("tiny", 3, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    settings = TrainSettings(classifier="tiny", steps=3, batch_size=4)
    one = train_classifier(x, y, num_classes=3, seed=1, settings=settings)
    two = train_classifier(x, y, num_classes=3, seed=1, settings=settings)
    assert all(torch.equal(p, q) for p, q in zip(one.state_dict().values(), two.state_dict().values()))


def test_settings_and_inputs_are_checked(sets, tmp_path) -> None:
    with pytest.raises(ValueError, match="at least 3 distinct seeds"):
        UtilitySettings(seeds=(0, 1))
    with pytest.raises(ValueError, match="classifier must be one of"):
        TrainSettings(classifier="vgg")
    train = open_labelled_tiles([sets["train"]], label="train")
    with pytest.raises(ValueError, match="share 3 slide"):
        run_utility(train, train, open_synthetic_tiles(sets["copies"], default_class="rare"),
                    settings=UtilitySettings(train=FAST))
    other = write_synthetic(tmp_path / "other", blank=False, n=4, label="b")
    with pytest.raises(ValueError, match="no synthetic tile of the rare class 'rare'"):
        run_utility(train, open_labelled_tiles([sets["heldout"]], label="heldout"),
                    open_synthetic_tiles(other, default_class="rare"), settings=UtilitySettings(train=FAST))
