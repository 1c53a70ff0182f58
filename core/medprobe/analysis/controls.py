"""Probe controls the paper lacked: a permutation null and a Hewitt–Liang control task.

Both produce extra *label sets*: (N,) integer label vectors over the same rows as the real
labels. The probe trainers fit one head per label set next to the real one, in the same batched
pass, with the same probe and hyper-parameter rules.

Permutation null
    ``n`` label sets in which the labels are shuffled *within* the train split and, separately,
    within the val split; test labels stay real. The probe is fitted on the shuffled labels exactly
    as on the real ones (``linear``: at the C chosen for the real labels of that layer, refitted
    on train+val; ``mlp``: trained on shuffled train labels, epoch chosen on shuffled val labels)
    and scored on the real test labels. ``permutation_p = (1 + #{null accuracy >= observed}) /
    (1 + n)``: the smallest reachable p is ``1 / (1 + n)``.

    Under the ``cv`` protocol (:mod:`.protocol`) the labels are permuted over all cv rows; each
    permuted set goes through the k folds of one seed, is trained at the real labels'
    hyper-parameter of each fold (not re-selected; the ``tuned`` MLP recipe re-selects) and scored
    against the permuted labels of the scored folds (:data:`CV_PERMUTATION_DEFINITION`).

Control task (after Hewitt & Liang, 2019)
    Every *group* gets one random label, fixed for the group, drawn from the empirical class
    distribution of the training labels; every sample takes its group's label. A group is whatever
    the caller passes as ``groups``: sample ids (each image is its own type, the default) or
    duplicate-cluster / patient ids (near-duplicates share a control label). The draw is a hash of
    ``(seed, group id)``, so the same sample id gets the same control label in every model's run
    and in every row order. The control probe gets the full selection procedure on the control
    labels (its own C / epoch chosen on control val labels) and is scored on the control test
    labels.

    With one group per sample and no duplicates across splits, test control labels are
    unpredictable, so control accuracy sits near its chance level and ``selectivity = accuracy −
    control_accuracy`` behaves like a chance-corrected accuracy. With duplicate clusters that cross
    splits, the control task becomes learnable exactly to the extent the features identify the
    cluster: a high control accuracy then exposes memorisation of identities (leakage) rather than
    class knowledge, and selectivity shrinks accordingly.

    Informative only where a group recurs on both sides: the protocol (:func:`~.protocol.make_design`)
    trains the control task only when some group has rows both among the fitted and among the
    scored rows (``split``). Otherwise -- always under ``cv``, whose folds are grouped by the same
    groups, and under ``split`` with one group per image -- control labels are unlearnable by
    construction, so no selectivity is reported: the layer result carries ``control_note``
    ("control task not informative: ...") and ``selectivity = None``.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

CONTROL_TASK_DEFINITION = (
    "Hewitt-Liang control task: each group (sample id by default, or duplicate cluster / patient id) "
    "gets one label drawn from the empirical training class distribution by hashing (seed, group id); "
    "same probe and selection procedure as the real task; selectivity = accuracy - control accuracy"
)
CV_PERMUTATION_DEFINITION = (
    "labels permuted over the cv rows; permutation r goes through the k folds of seed r mod S, fitted at the real "
    "labels' hyper-parameter of each fold (not re-selected) and scored against the permuted labels; "
    "p = (1 + #{null accuracy >= observed seed-mean accuracy}) / (1 + n_permutations)"
)
PERMUTATION_DEFINITION = (
    "labels shuffled within train and within val (test labels real); same probe and hyper-parameters; "
    "p = (1 + #{null accuracy >= observed}) / (1 + n_permutations)"
)


def _uniform_from_key(seed: int, key: str) -> float:
    digest = hashlib.sha256(f"medprobe-control/{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def control_labels(
    labels: np.ndarray,
    splits: np.ndarray,
    n_classes: int,
    *,
    groups: Sequence[Any] | np.ndarray | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Control-task labels (N,) int64.

    ``labels`` (N,) int64 real labels (only the train rows are read, for the class distribution);
    ``splits`` (N,) of "train"/"val"/"test"; ``groups`` (N,) hashable group ids (default: the row
    index, i.e. one group per sample — pass sample ids to make the assignment independent of row
    order). Every member of a group gets the same label.
    """
    labels = np.asarray(labels)
    splits = np.asarray(splits)
    n = labels.shape[0]
    if groups is None:
        groups = np.arange(n)
    groups = np.asarray(groups)
    if groups.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {groups.shape}")
    train = labels[splits == "train"]
    if train.size == 0:
        raise ValueError("control_labels needs training labels for the class distribution")
    freq = np.bincount(train, minlength=n_classes)[:n_classes].astype(np.float64)
    cdf = np.cumsum(freq / freq.sum())
    cdf[-1] = 1.0
    uniq, inverse = np.unique(groups.astype(str), return_inverse=True)
    u = np.array([_uniform_from_key(seed, g) for g in uniq])
    group_label = np.searchsorted(cdf, u, side="right").clip(0, n_classes - 1)
    return group_label[inverse].astype(np.int64)


def permuted_labels(labels: np.ndarray, splits: np.ndarray, n_permutations: int, *, seed: int = 0) -> np.ndarray:
    """(n_permutations, N) int64 label sets: train labels shuffled within train, val labels within
    val, test labels unchanged. Seeded with ``numpy.random.default_rng([seed, 104729])``."""
    labels = np.asarray(labels, dtype=np.int64)
    splits = np.asarray(splits)
    rng = np.random.default_rng([seed, 104729])
    out = np.repeat(labels[None, :], n_permutations, axis=0)
    for name in ("train", "val"):
        idx = np.flatnonzero(splits == name)
        for r in range(n_permutations):
            out[r, idx] = labels[idx[rng.permutation(idx.size)]]
    return out


def permutation_p(observed: float, null: Sequence[float] | np.ndarray) -> float:
    """``(1 + #{null >= observed}) / (1 + len(null))`` (Phipson & Smyth's unbiased estimate)."""
    null = np.asarray(null, dtype=np.float64)
    if null.size == 0:
        raise ValueError("permutation_p needs at least one null accuracy")
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + null.size))


def null_summary(null: Sequence[float] | np.ndarray) -> dict[str, float | int]:
    """Mean, standard deviation, 95th percentile and maximum of the null accuracies."""
    null = np.asarray(null, dtype=np.float64)
    return {
        "n": int(null.size),
        "mean": float(null.mean()),
        "std": float(null.std()),
        "q95": float(np.quantile(null, 0.95)),
        "max": float(null.max()),
    }


def selectivity(accuracy: float, control_accuracy: float) -> float:
    """Accuracy on the real task minus accuracy on the control task."""
    return float(accuracy - control_accuracy)
