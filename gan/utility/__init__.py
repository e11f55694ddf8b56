"""The downstream-utility test: does a synthetic rare-case set help a classifier more than oversampling?

* ``tiles``: labelled real tile sets (class and slide per tile: folders, CSV or slides with region manifests), the
  synthetic set and its manifest summary, splits by slide;
* ``classifier``: the classifier (torchvision ResNet-18 from scratch, a tiny CNN, or a timm backbone with local
  weights);
* ``regimes``: the three training sets (real only, real + oversampled rare, real + synthetic rare);
* ``training``: the seeded training loop and prediction, the same for every regime;
* ``scores``: per-class precision/recall/F1, balanced accuracy, AUROC, mean ± std, the verdict;
* ``experiment``: :func:`utility_test` (tensors) and :func:`run_utility` (tile sets), the report section.
"""
from gan.utility.classifier import CLASSIFIERS, TileClassifier, build_classifier
from gan.utility.experiment import MIN_SEEDS, UtilitySettings, run_utility, utility_test
from gan.utility.regimes import REGIMES, Regime, build_regimes
from gan.utility.scores import auroc, classification_scores, mean_std, paired_difference, verdict
from gan.utility.tiles import (
    LabelledTiles,
    check_disjoint_slides,
    image_set_labels,
    load_tiles,
    open_labelled_tiles,
    open_synthetic_tiles,
    split_by_slide,
    synthetic_manifest,
)
from gan.utility.training import TrainSettings, predict_probabilities, train_classifier

__all__ = [
    "CLASSIFIERS",
    "MIN_SEEDS",
    "REGIMES",
    "LabelledTiles",
    "Regime",
    "TileClassifier",
    "TrainSettings",
    "UtilitySettings",
    "auroc",
    "build_classifier",
    "build_regimes",
    "check_disjoint_slides",
    "classification_scores",
    "image_set_labels",
    "load_tiles",
    "mean_std",
    "open_labelled_tiles",
    "open_synthetic_tiles",
    "paired_difference",
    "predict_probabilities",
    "run_utility",
    "split_by_slide",
    "synthetic_manifest",
    "train_classifier",
    "utility_test",
    "verdict",
]
