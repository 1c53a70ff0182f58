"""Seeded, stratified, patient-grouped splits and stratified subsets.

Used when a dataset has no official split (or lacks some of its parts):

- **Units.** When any sample carries a ``group`` (patient id), all samples of a group form one
  unit and a unit never straddles two splits; samples without a group are units of their own.
  Without groups every sample is a unit.
- **Stratification.** Units are bucketed by their majority label (ties: lowest label id). Within
  a bucket, units are put in a seeded order and the sequence is cut at the cumulative fractions
  (a unit goes to the split its middle sample falls in), so each class is split 70 / 15 / 15 up
  to one unit.
- **Seeding and stability.** The order is ``sha256(seed:unit key)``, so the split depends only on
  the seed and the unit keys (not on file-system listing order), and adding or removing one file
  only moves the few units next to a cut point.

Default fractions are 70 / 15 / 15 (train / val / test).
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Mapping, Sequence

from .base import SPLITS, Sample

DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.15, 0.15)


def _order_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode("utf-8")).hexdigest()


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Validate train/val/test fractions (three non-negative numbers, train > 0, sum 1 +- 1e-6)."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or any(f < 0 for f in fr) or fr[0] <= 0 or abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers train,val,test with train > 0 summing to 1, got {fractions!r}")
    return fr  # type: ignore[return-value]


def assign(samples: Sequence[Sample], seed: int, fractions: Mapping[str, float]) -> list[Sample]:
    """Return ``samples`` with ``split`` set, split by ``fractions`` (``{split: fraction}``).

    Grouped when any sample has a group (see the module doc); the result keeps the input order.
    """
    names = [s for s in SPLITS if fractions.get(s, 0.0) > 0]
    if not names:
        raise ValueError("at least one split needs a positive fraction")
    grouped = any(s.group is not None for s in samples)
    units: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        key = f"group:{s.group}" if grouped and s.group is not None else f"sample:{s.id}"
        units[key].append(i)
    buckets: dict[int, list[str]] = defaultdict(list)
    for key, members in units.items():
        labels = Counter(samples[i].label for i in members)
        top = max(labels.values())
        buckets[min(lab for lab, n in labels.items() if n == top)].append(key)
    chosen: dict[str, str] = {}
    total_fraction = sum(fractions[n] for n in names)
    for label in sorted(buckets):
        keys = sorted(buckets[label], key=lambda k: _order_key(seed, k))
        total = sum(len(units[k]) for k in keys)
        bounds, acc = [], 0.0
        for n in names:
            acc += fractions[n] / total_fraction
            bounds.append(acc * total)
        before = 0
        for key in keys:
            size = len(units[key])
            middle = before + size / 2.0
            chosen[key] = next((n for n, b in zip(names, bounds) if middle < b), names[-1])
            before += size
    out = list(samples)
    for key, members in units.items():
        for i in members:
            out[i] = replace(samples[i], split=chosen[key])
    return out


def _largest_remainder(sizes: dict, total: int) -> dict:
    """Integer shares of ``total`` proportional to ``sizes`` (largest-remainder rounding, ties
    in key order), each at least one when ``total`` allows and never above its size."""
    keys = list(sizes)
    n = sum(sizes.values())
    exact = {k: sizes[k] * total / n for k in keys}
    quota = {k: int(exact[k]) for k in keys}
    left = total - sum(quota.values())
    for k in sorted(keys, key=lambda k: (-(exact[k] - quota[k]), keys.index(k)))[:left]:
        quota[k] += 1
    if total >= len(keys):
        for k in keys:
            if quota[k] == 0:
                donor = max(keys, key=lambda d: (quota[d] - exact[d], quota[d]))
                quota[donor] -= 1
                quota[k] = 1
    return quota


def subset(samples: Sequence[Sample], limit: int, seed: int) -> list[Sample]:
    """A seeded subset of ``limit`` samples keeping each split's and each class's share.

    Quotas are rounded by largest remainder, first per split, then per class within a split;
    every non-empty (split, class) stratum keeps at least one sample when ``limit`` allows.
    Samples are taken in ``sha256(seed:id)`` order within a stratum.
    """
    if limit >= len(samples):
        return list(samples)
    strata: dict[str, dict[int, list[Sample]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        strata[s.split or ""][s.label].append(s)
    split_keys = sorted(strata, key=lambda k: SPLITS.index(k) if k in SPLITS else 9)
    n_strata = sum(len(strata[k]) for k in split_keys)
    split_sizes = {k: sum(len(v) for v in strata[k].values()) for k in split_keys}
    split_quota = _largest_remainder(split_sizes, limit)
    if limit >= n_strata:  # room for one per class in every split
        need = {k: len(strata[k]) for k in split_keys}
        for k in split_keys:
            while split_quota[k] < need[k]:
                donor = max(split_keys, key=lambda d: split_quota[d] - need[d])
                split_quota[donor] -= 1
                split_quota[k] += 1
    kept: set[str] = set()
    for k in split_keys:
        labels = dict(sorted(strata[k].items()))
        quota = _largest_remainder({lab: len(v) for lab, v in labels.items()}, split_quota[k])
        for lab, members in labels.items():
            ordered = sorted(members, key=lambda s: _order_key(seed, s.id))
            kept.update(s.id for s in ordered[: quota[lab]])
    return [s for s in samples if s.id in kept]
