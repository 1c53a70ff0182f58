"""Metrics agree with scikit-learn; chance, bootstrap and Wilson intervals behave as documented."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from medprobe.analysis import metrics as M


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [2, 3, 5])
def test_label_metrics_match_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, k, 200))
    assert M.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))
    assert M.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))
    assert M.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"))


def test_macro_f1_counts_predicted_only_labels_like_sklearn():
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 2, 1, 1])  # class 2 never true
    assert M.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0))
    assert M.balanced_accuracy(y, p) == pytest.approx(0.75)


@pytest.mark.parametrize("seed", [0, 3])
def test_auroc_matches_sklearn_binary_and_multiclass_with_ties(seed):
    rng = np.random.default_rng(seed)
    y2 = rng.integers(0, 2, 150)
    s2 = np.round(rng.random((150, 2)), 1)  # coarse scores: many ties
    assert M.auroc(y2, s2) == pytest.approx(skm.roc_auc_score(y2, s2[:, 1]))
    y3 = rng.integers(0, 3, 150)
    logits = rng.normal(size=(150, 3)) + np.eye(3)[y3]
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert M.auroc(y3, prob) == pytest.approx(skm.roc_auc_score(y3, prob, multi_class="ovr", average="macro"))


def test_auroc_undefined_with_one_class_and_classification_metrics_bundle():
    assert M.auroc(np.zeros(5, int), np.random.default_rng(0).random((5, 2))) is None
    scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    out = M.classification_metrics(np.array([0, 1, 1, 1]), scores)
    assert set(out) == set(M.METRIC_NAMES)
    assert out["accuracy"] == pytest.approx(0.75)
    assert out["auroc"] == pytest.approx(1.0)


def test_chance_is_majority_training_class_scored_on_test():
    assert M.chance_accuracy([0, 1, 1, 2], [1, 1, 0, 2, 2]) == pytest.approx(0.4)
    assert M.chance_accuracy([2, 2, 0, 0], [0, 2, 2]) == pytest.approx(1 / 3)  # tie -> smallest label 0


def test_bootstrap_ci_is_seeded_covers_accuracy_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small = rng.random(100) < 0.7
    lo, hi = M.bootstrap_ci(small, seed=5)
    assert (lo, hi) == M.bootstrap_ci(small, seed=5)
    assert lo <= small.mean() <= hi
    big = rng.random(4000) < 0.7
    lo2, hi2 = M.bootstrap_ci(big, seed=5)
    assert hi2 - lo2 < (hi - lo) / 3
    # normal approximation: half-width ~ 1.96 * sqrt(p (1 - p) / n)
    assert (hi2 - lo2) / 2 == pytest.approx(1.96 * np.sqrt(0.21 / 4000), rel=0.15)


def test_wilson_interval_known_value():
    lo, hi = M.wilson_ci(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4)
    assert hi == pytest.approx(0.5962, abs=1e-4)
    assert M.wilson_ci(0, 10)[0] == 0.0


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="differ in length"):
        M.accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="integer"):
        M.accuracy([0.5, 1.0], [0, 1])
    with pytest.raises(ValueError, match=r"\(n, K\)"):
        M.auroc([0, 1], [0.2, 0.8])


def test_seed_bootstrap_ci_equals_a_direct_computation():
    from medprobe.analysis.metrics import seed_bootstrap_ci, seed_bootstrap_draws, seed_spread

    rng = np.random.default_rng(4)
    correct = rng.random((3, 80)) < np.array([[0.6], [0.7], [0.8]])
    lo, hi = seed_bootstrap_ci(correct, n_boot=500, seed=9)
    seed_idx, sample_idx = seed_bootstrap_draws(3, 80, n_boot=500, seed=9)
    direct = [correct[s][sample_idx[b]].mean() for b, s in enumerate(seed_idx)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(direct, [0.025, 0.975])))
    # seed variance widens the interval: identical seeds give a narrower one
    same = np.repeat(correct[1:2], 3, axis=0)
    lo2, hi2 = seed_bootstrap_ci(same, n_boot=500, seed=9)
    assert hi - lo > hi2 - lo2
    assert seed_spread([0.6, 0.7, 0.8]) == pytest.approx({"sd": 0.1, "min": 0.6, "max": 0.8})
    assert seed_spread([0.5])["sd"] == 0.0
    with pytest.raises(ValueError):
        seed_bootstrap_ci(np.zeros((2, 0), bool))
