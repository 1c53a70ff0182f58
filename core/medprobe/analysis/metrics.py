"""Classification metrics of one probe on one layer, plus the chance line and confidence intervals.

Pure numpy (scipy only for tie-aware ranks), no torch. Inputs are 1-D integer label arrays and,
for AUROC, an (n, K) array of class scores (probabilities). Every function returns a plain
Python ``float`` (or ``None`` where the metric is undefined, e.g. AUROC with one class in the
test set), so results go straight into JSON.

Definitions (they match scikit-learn's defaults; ``tests/analysis/test_metrics.py`` checks it):

``accuracy``            fraction of exact matches (primary metric, as in the paper).
``balanced_accuracy``   mean recall over the classes present in ``y_true``.
``macro_f1``            unweighted mean of per-class F1 over the labels present in ``y_true`` or
                        ``y_pred``.
``auroc``               binary (K = 2): ROC AUC of the class-1 score; K > 2: one-vs-rest AUC per
                        class present in ``y_true``, averaged (macro). Ties get average ranks.
``chance_accuracy``     majority-class chance: accuracy on the test labels of always predicting
                        the most frequent *training* class (ties -> the smallest label).
``bootstrap_ci``        percentile 95% interval of test accuracy over ``n_boot`` resamples of the
                        test set (with replacement), seeded.
``wilson_ci``           Wilson score 95% interval of a proportion (used for ``P_final``).
``seed_bootstrap_ci``   hierarchical bootstrap of the seed-mean accuracy: each draw one probe seed and a
                        resample of the samples (the layer CI of the probe protocol).
``seed_spread``         sd / min / max of per-seed accuracies.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METRIC_NAMES = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


def _as_labels(y: Any, name: str) -> np.ndarray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true {t.shape} and y_pred {p.shape} differ in length")
    if t.size == 0:
        raise ValueError("metrics need at least one sample")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples with ``y_pred == y_true``; inputs (n,) int."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def balanced_accuracy(y_true: Any, y_pred: Any) -> float:
    """Mean per-class recall over the classes present in ``y_true``; inputs (n,) int."""
    t, p = _pair(y_true, y_pred)
    recalls = [float(np.mean(p[t == c] == c)) for c in np.unique(t)]
    return float(np.mean(recalls))


def macro_f1(y_true: Any, y_pred: Any) -> float:
    """Unweighted mean F1 over the labels in ``y_true`` ∪ ``y_pred``; inputs (n,) int."""
    t, p = _pair(y_true, y_pred)
    scores = []
    for c in np.union1d(t, p):
        tp = float(np.sum((t == c) & (p == c)))
        fp = float(np.sum((t != c) & (p == c)))
        fn = float(np.sum((t == c) & (p != c)))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


def _binary_auc(positive: np.ndarray, score: np.ndarray) -> float | None:
    """Mann-Whitney AUC of ``score`` for the boolean ``positive`` (n,); ``None`` if one class."""
    from scipy.stats import rankdata

    n_pos = int(positive.sum())
    n_neg = int(positive.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)  # average ranks for ties
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auroc(y_true: Any, scores: Any) -> float | None:
    """ROC AUC from class scores.

    ``y_true`` (n,) int in ``0..K-1``; ``scores`` (n, K) float (probabilities or logits, any
    monotone per-class score). K = 2: AUC of ``scores[:, 1]``. K > 2: one-vs-rest AUC of every
    class present in ``y_true``, macro-averaged (equals scikit-learn's ``multi_class="ovr"``
    whenever every class occurs). ``None`` when fewer than two classes are present.
    """
    t = _as_labels(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != t.shape[0]:
        raise ValueError(f"scores must be (n, K) with n = {t.shape[0]}, got {s.shape}")
    k = s.shape[1]
    if t.size and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1} for {k} score columns")
    if k == 2:
        return _binary_auc(t == 1, s[:, 1])
    present = np.unique(t)
    if present.size < 2:
        return None
    return float(np.mean([_binary_auc(t == c, s[:, c]) for c in present]))


def classification_metrics(y_true: Any, scores: Any) -> dict[str, float | None]:
    """All of :data:`METRIC_NAMES` from labels (n,) and class scores (n, K); prediction = argmax."""
    s = np.asarray(scores)
    pred = s.argmax(axis=1)
    return {
        "accuracy": accuracy(y_true, pred),
        "balanced_accuracy": balanced_accuracy(y_true, pred),
        "macro_f1": macro_f1(y_true, pred),
        "auroc": auroc(y_true, s),
    }


def chance_accuracy(train_labels: Any, test_labels: Any) -> float:
    """Majority-class chance: accuracy on ``test_labels`` of predicting the most frequent
    class of ``train_labels`` (ties -> smallest label). Inputs (n_train,), (n_test,) int."""
    tr = _as_labels(train_labels, "train_labels")
    te = _as_labels(test_labels, "test_labels")
    if tr.size == 0 or te.size == 0:
        raise ValueError("chance_accuracy needs non-empty train and test labels")
    majority = int(np.argmax(np.bincount(tr)))
    return float(np.mean(te == majority))


def bootstrap_ci(correct: Any, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of accuracy.

    ``correct`` (n,) bool: whether each test sample was classified correctly. The test set is
    resampled ``n_boot`` times with replacement (numpy ``default_rng(seed)``); the interval is the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled accuracies.
    """
    c = np.asarray(correct, dtype=bool)
    if c.ndim != 1 or c.size == 0:
        raise ValueError(f"correct must be a non-empty 1-D bool array, got shape {c.shape}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.size, size=(n_boot, c.size))
    accs = c[idx].mean(axis=1)
    lo, hi = np.quantile(accs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def wilson_ci(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (``n`` > 0)."""
    if n <= 0:
        raise ValueError("wilson_ci needs n > 0")
    from statistics import NormalDist

    z = NormalDist().inv_cdf((1 + level) / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if k == 0 else max(0.0, centre - half)  # exact ends (no rounding residue) at 0 and n
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def seed_bootstrap_draws(n_seeds: int, n: int, *, n_boot: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The draws of :func:`seed_bootstrap_ci`: ``(seed_idx (n_boot,), sample_idx (n_boot, n))``.

    Each draw picks one probe seed uniformly and resamples the n samples with replacement
    (numpy ``default_rng([seed, 2718])``). Exposed so paired statistics can reuse the same draws.
    """
    if n_seeds < 1 or n < 1:
        raise ValueError(f"seed_bootstrap_draws needs n_seeds >= 1 and n >= 1, got {n_seeds}, {n}")
    rng = np.random.default_rng([seed, 2718])
    seed_idx = rng.integers(0, n_seeds, size=n_boot)
    sample_idx = rng.integers(0, n, size=(n_boot, n))
    return seed_idx, sample_idx


def seed_bootstrap_ci(
    correct: Any, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Hierarchical percentile bootstrap interval of the seed-mean accuracy, including seed variance.

    ``correct`` (S, n) bool: per probe seed (rows) whether each scored sample was classified
    correctly (a 1-D (n,) array is one seed). Every draw takes one seed uniformly at random and
    resamples the samples with replacement (:func:`seed_bootstrap_draws`); its statistic is that
    seed's accuracy on the resampled samples. The interval is the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles. So the spread holds both sampling variance and probe-seed
    variance; with one seed it is :func:`bootstrap_ci` on other draws.
    """
    c = np.asarray(correct, dtype=bool)
    if c.ndim == 1:
        c = c[None, :]
    if c.ndim != 2 or c.size == 0:
        raise ValueError(f"correct must be a non-empty (S, n) bool array, got shape {c.shape}")
    seed_idx, sample_idx = seed_bootstrap_draws(c.shape[0], c.shape[1], n_boot=n_boot, seed=seed)
    accs = np.take_along_axis(c[seed_idx], sample_idx, axis=1).mean(axis=1)
    lo, hi = np.quantile(accs, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def seed_spread(accuracies: Any) -> dict[str, float]:
    """``{"sd", "min", "max"}`` of per-seed accuracies (S,); sd with ddof 1 (0 for one seed)."""
    a = np.asarray(accuracies, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"accuracies must be a non-empty 1-D array, got shape {a.shape}")
    return {"sd": float(a.std(ddof=1)) if a.size > 1 else 0.0, "min": float(a.min()), "max": float(a.max())}
