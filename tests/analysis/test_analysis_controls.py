"""Control-task labels, permutation label sets and the permutation p-value."""

from __future__ import annotations

import numpy as np
import pytest

from medprobe.analysis.controls import control_labels, permutation_p, permuted_labels, selectivity


def test_control_labels_follow_groups_not_row_order():
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 3, n)
    sp = np.array(["train"] * 240 + ["val"] * 80 + ["test"] * 80)
    ids = np.array([f"img-{i}" for i in range(n)])
    c = control_labels(y, sp, 3, groups=ids, seed=1)
    order = rng.permutation(n)
    c2 = control_labels(y[order], sp[order], 3, groups=ids[order], seed=1)
    assert np.array_equal(c[order], c2)  # same sample id -> same control label, any row order
    assert not np.array_equal(c, control_labels(y, sp, 3, groups=ids, seed=2))
    # duplicate clusters share one label
    clusters = np.arange(n) // 4
    cc = control_labels(y, sp, 3, groups=clusters, seed=1)
    assert all(len(set(cc[clusters == k])) == 1 for k in range(n // 4))
    # drawn from the training class distribution
    skew = np.where(rng.random(n) < 0.8, 0, 1)
    cs = control_labels(skew, sp, 2, groups=ids, seed=0)
    assert 0.7 < np.mean(cs == 0) < 0.9


def test_permuted_labels_shuffle_within_train_and_val_only():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 100)
    sp = np.array(["train"] * 60 + ["val"] * 20 + ["test"] * 20)[rng.permutation(100)]
    perms = permuted_labels(y, sp, 5, seed=3)
    assert perms.shape == (5, 100)
    for p in perms:
        for name in ("train", "val"):
            assert sorted(p[sp == name]) == sorted(y[sp == name])
        assert np.array_equal(p[sp == "test"], y[sp == "test"])
    assert np.array_equal(perms, permuted_labels(y, sp, 5, seed=3))
    assert not np.array_equal(perms[0], perms[1])


def test_permutation_p_and_selectivity():
    assert permutation_p(0.9, [0.3, 0.4, 0.35, 0.5]) == pytest.approx(1 / 5)
    assert permutation_p(0.4, [0.3, 0.4, 0.35, 0.5]) == pytest.approx(3 / 5)
    assert selectivity(0.8, 0.35) == pytest.approx(0.45)
