"""Shared synthetic data for the analysis tests (small: every test file runs in seconds)."""

from __future__ import annotations

import numpy as np
import pytest


def make_split(n: int, rng: np.random.Generator, frac=(0.6, 0.2)) -> np.ndarray:
    """(n,) of train/val/test in a shuffled order (so reordering by split is exercised)."""
    n_tr, n_va = int(frac[0] * n), int(frac[1] * n)
    s = np.array(["train"] * n_tr + ["val"] * n_va + ["test"] * (n - n_tr - n_va))
    return s[rng.permutation(n)]


def planted_features(labels: np.ndarray, strengths, widths, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """key -> (N, D) float32: class means of the given strength plus unit noise, then an
    arbitrary per-column offset and scale (so standardisation matters)."""
    k = int(labels.max()) + 1
    out = {}
    for i, (s, d) in enumerate(zip(strengths, widths)):
        means = rng.normal(size=(k, d)) * s
        x = rng.normal(size=(labels.size, d)) + means[labels]
        x = x * rng.uniform(0.5, 5.0, size=d) + rng.normal(scale=10.0, size=d)
        out[f"layer.{i:02d}/image-mean"] = x.astype(np.float32)
    return out


@pytest.fixture
def separable():
    """Well-separated 3-class data, 4 layers of mixed widths (two share a width)."""
    rng = np.random.default_rng(11)
    n = 300
    y = rng.integers(0, 3, size=n)
    return planted_features(y, [1.5, 1.5, 1.2, 2.0], [16, 24, 16, 32], rng), y, make_split(n, rng)


@pytest.fixture
def strong():
    """Strongly separated 3-class data, 3 layers (the paper's MLP recipe, lr 1e-4, needs a clear signal)."""
    rng = np.random.default_rng(12)
    n = 300
    y = rng.integers(0, 3, size=n)
    return planted_features(y, [4.0, 4.0, 5.0], [16, 24, 16], rng), y, make_split(n, rng)
