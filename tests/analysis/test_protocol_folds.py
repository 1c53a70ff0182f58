"""The cv protocol's fold assignment and its bad-input errors (no training involved)."""

from __future__ import annotations

import numpy as np
import pytest

from medprobe.analysis.protocol import FoldError, ProbeSettings, make_design, stratified_group_folds
from medprobe.analysis.results import ProbeError


def _data(n=200, k_classes=3, seed=0, group_size=1):
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n // group_size), group_size)
    y = rng.integers(0, k_classes, n // group_size)[groups]  # a group shares its class (one patient)
    sp = np.array(["train", "val", "test"])[rng.integers(0, 3, n)]
    return y, sp, groups


@pytest.mark.parametrize("group_size", [1, 3])
def test_folds_are_stratified_grouped_and_cover_every_sample_once(group_size):
    y, sp, groups = _data(n=300, group_size=group_size)
    k = 5
    design = make_design(y, sp, ProbeSettings(k=k, seeds=(0, 1)), groups=groups)
    for s in (0, 1):
        fold = design.folds[s]
        # grouped: every group lies in exactly one fold
        for g in np.unique(groups):
            assert np.unique(fold[groups == g]).size == 1
        # stratified: each fold's class counts within a group's size of n_c / k
        for c in range(3):
            counts = np.bincount(fold[y == c], minlength=k)
            assert counts.max() - counts.min() <= 2 * group_size, (c, counts)
        plans = [p for p in design.plans if p.seed == s]
        scored = np.concatenate([p.score for p in plans])
        assert np.array_equal(np.sort(scored), np.arange(y.size))  # every sample scored exactly once
        for p in plans:
            # the scored fold takes no part in training or selection
            assert not np.intersect1d(p.score, np.concatenate([p.sel_train, p.sel_val, p.fit])).size
            assert np.array_equal(np.sort(np.concatenate([p.sel_train, p.sel_val])), np.sort(p.fit))
            assert not np.intersect1d(groups[p.score], groups[p.fit]).size
    assert not np.array_equal(design.folds[0], design.folds[1])  # each seed draws its own folds


def test_fold_assignment_is_deterministic_and_seeded():
    y, _, groups = _data(n=120)
    a = stratified_group_folds(y, groups, 4, seed=3)
    assert np.array_equal(a, stratified_group_folds(y, groups, 4, seed=3))
    assert set(np.unique(a)) == {0, 1, 2, 3}


def test_permutations_are_routed_to_one_seed_each_and_cover_all_folds():
    y, sp, _ = _data(n=90)
    d = make_design(y, sp, ProbeSettings(k=3, seeds=(0, 1, 2), n_permutations=7))
    assert d.perm_labels.shape == (7, 90)
    for r in range(7):
        plans = [p for p in d.plans if r in p.perms]
        assert {p.seed_index for p in plans} == {r % 3} and len(plans) == 3
        assert np.array_equal(np.sort(d.perm_labels[r]), np.sort(y))  # a permutation of the labels


def test_holdout_keeps_the_test_rows_out_of_the_folds():
    y, sp, _ = _data(n=150)
    d = make_design(y, sp, ProbeSettings(k=3, seeds=(0,), holdout=True))
    test_rows = np.flatnonzero(sp == "test")
    assert np.array_equal(np.sort(d.rows[d.scored]), np.sort(np.setdiff1d(np.arange(150), test_rows)))
    hold = [p for p in d.plans if p.role == "holdout"]
    assert len(hold) == 1 and np.array_equal(np.sort(d.rows[hold[0].score]), test_rows)
    for p in d.plans:
        if p.role == "cv":
            assert not np.isin(d.rows[np.concatenate([p.fit, p.score])], test_rows).any()


def test_too_few_samples_of_a_class_names_the_class_and_workable_k():
    y = np.array([0] * 40 + [1] * 40 + [2] * 4)
    sp = np.array(["train"] * y.size)
    with pytest.raises(FoldError, match=r"class 'effusion' has 4 samples in 4 group\(s\).*use --k 4 or less"):
        make_design(y, sp, ProbeSettings(k=5), class_names=["normal", "mass", "effusion"])
    y2 = np.array([0] * 40 + [1] * 2)
    with pytest.raises(FoldError, match=r"class 1 has 2 samples.*no k >= 3 is workable"):
        make_design(y2, np.array(["train"] * y2.size), ProbeSettings(k=5))


def test_group_larger_than_a_fold_names_the_group_and_workable_k():
    y = np.tile([0, 1], 50)
    groups = np.array([f"p{i}" for i in range(100)], dtype=object)
    groups[:30] = "patient-7"
    with pytest.raises(FoldError, match=r"group 'patient-7' holds 30 of 100 samples.*use --k 3 or less"):
        make_design(y, np.array(["train"] * 100), ProbeSettings(k=5), groups=groups)


def test_fold_with_one_class_is_refused_before_training():
    # two large patients of class 1: every grouped fold assignment leaves a fold without class 1
    y = np.array([0] * 12 + [1] * 6)
    groups = np.array([f"a{i}" for i in range(12)] + ["b1"] * 2 + ["b2"] * 2 + ["b3"] * 2)
    with pytest.raises(FoldError, match=r"class 1 has 6 samples in 3 group\(s\).*use --k 3 or less"):
        make_design(y, np.array(["train"] * 18), ProbeSettings(k=4), groups=groups)


def test_settings_validation():
    with pytest.raises(ProbeError, match="k >= 3"):
        ProbeSettings(k=2)
    with pytest.raises(ProbeError, match="protocol must be one of"):
        ProbeSettings(protocol="loo")
    assert ProbeSettings(seeds=4).seeds == (0, 1, 2, 3)
    s, hyper = ProbeSettings.split_options({"seed": 5, "hidden": 8, "k": 4})
    assert s.seeds == (5, 6, 7) and s.k == 4 and hyper == {"hidden": 8}
    assert ProbeSettings().dir_name("linear") == "linear-cv5-seeds0-1-2"
    assert ProbeSettings(protocol="split", seeds=(0,)).dir_name("mlp") == "mlp-split-seeds0"
