"""Utility scores (gan.utility.scores) against scikit-learn on the same predictions, and the verdict rule."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support, roc_auc_score

from gan.utility import auroc, classification_scores, mean_std, paired_difference, verdict


def test_per_class_scores_balanced_accuracy_and_auroc_equal_sklearn() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)
    probs = rng.dirichlet([1, 1, 1], size=200)
    probs[truth == 2, 2] += 0.3  # some signal for the rare class
    probs = np.round(probs / probs.sum(1, keepdims=True), 2)  # ties in the AUROC
    out = classification_scores(truth, probs, classes=["a", "b", "rare"], rare=2)
    pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(truth, pred, labels=[0, 1, 2], zero_division=0)
    for i, name in enumerate(["a", "b", "rare"]):
        assert out["per_class"][name] == pytest.approx({"precision": p[i], "recall": r[i], "f1": f[i],
                                                        "support": s[i]})
    assert out["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, pred))
    assert out["rare_auroc"] == pytest.approx(roc_auc_score(truth == 2, probs[:, 2]))


def test_a_class_never_predicted_scores_zero_and_one_sided_auroc_is_none() -> None:
    out = classification_scores([0, 0, 1], np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]]), classes=["x", "y"],
                                rare=1)
    assert out["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert auroc([0.1, 0.2], [True, True]) is None


def test_mean_std_and_the_verdict_rule() -> None:
    ms = mean_std([0.5, 0.7, None, 0.6])  # a seed without a value (e.g. a one-sided AUROC) is left out
    assert (ms["mean"], ms["std"], ms["n"]) == pytest.approx((0.6, 0.1, 3)) and ms["values"][2] is None
    diff = paired_difference([0.9, 0.8, 0.85], [0.5, 0.5, 0.45])  # 0.4, 0.3, 0.4
    beats, line = verdict(diff, rare_class="necrosis")
    assert beats and line == ("synthetic beats oversampling on rare-class (necrosis) recall by +0.367 ± 0.058 (mean "
                              "± std of the paired difference over 3 seeds)")
    noisy = paired_difference([0.9, 0.3, 0.6], [0.5, 0.55, 0.45])  # mean +0.1, std 0.33: within the noise
    assert verdict(noisy, rare_class="r")[0] is False
    assert verdict(paired_difference([0.1] * 3, [0.2] * 3), rare_class="r")[1].startswith(
        "synthetic does not beat oversampling on rare-class (r) recall: difference -0.100 ± 0.000")
