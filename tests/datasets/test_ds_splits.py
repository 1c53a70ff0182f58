"""Seeded stratified splits, patient grouping, carving val from an official train, subsets."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from medprobe.datasets import Sample, open_dataset
from medprobe.datasets.splits import assign, subset

FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def _samples(n, n_classes=3, group_size=None, seed=0):
    rng = random.Random(seed)
    out = []
    patient = 0
    i = 0
    while i < n:
        size = group_size(rng) if group_size else 1
        label = rng.randrange(n_classes)
        for _ in range(min(size, n - i)):
            out.append(Sample(f"s{i:05d}", label, None, f"p{patient}" if group_size else None))
            i += 1
        patient += 1
    return out


def test_stratified_proportions_per_class():
    samples = _samples(600, n_classes=3)
    split = assign(samples, 0, FRACTIONS)
    table = Counter((s.label, s.split) for s in split)
    for label in range(3):
        total = sum(table[(label, sp)] for sp in FRACTIONS)
        for sp, frac in FRACTIONS.items():
            assert abs(table[(label, sp)] - frac * total) <= 1, (label, sp, table)


@pytest.mark.parametrize("seed", range(6))
def test_grouped_split_never_puts_a_patient_in_two_splits(seed):
    samples = _samples(400, n_classes=2, group_size=lambda r: r.randint(1, 6), seed=seed)
    split = assign(samples, seed, FRACTIONS)
    where = defaultdict(set)
    for s in split:
        where[s.group].add(s.split)
    assert all(len(sp) == 1 for sp in where.values())
    counts = Counter(s.split for s in split)
    assert set(counts) == set(FRACTIONS)
    assert abs(counts["train"] / len(split) - 0.7) < 0.06


def test_split_is_deterministic_and_independent_of_listing_order():
    samples = _samples(200, group_size=lambda r: r.randint(1, 4))
    first = {s.id: s.split for s in assign(samples, 3, FRACTIONS)}
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    assert {s.id: s.split for s in assign(shuffled, 3, FRACTIONS)} == first
    assert {s.id: s.split for s in assign(samples, 4, FRACTIONS)} != first


def test_adding_one_sample_moves_almost_nothing():
    samples = _samples(500)
    before = {s.id: s.split for s in assign(samples, 0, FRACTIONS)}
    after = {s.id: s.split for s in assign(samples + [Sample("new", 1)], 0, FRACTIONS)}
    assert sum(before[k] != after[k] for k in before) <= 3


def test_subset_keeps_every_split_and_class():
    samples = assign(_samples(300, n_classes=3), 0, FRACTIONS)
    small = subset(samples, 30, seed=0)
    assert len(small) == 30
    strata = Counter((s.split, s.label) for s in small)
    assert len(strata) == 9 and strata[("train", 0)] >= strata[("val", 0)]
    assert subset(samples, 30, seed=0) == small and subset(samples, 30, seed=1) != small


def test_open_dataset_uses_a_grouped_split_on_synthetic_patients():
    ds = open_dataset("synthetic:lesions?n=150&size=32", seed=5)
    assert ds.split_method == "seeded-stratified-grouped" and ds.fractions == (0.7, 0.15, 0.15)
    assert ds.group_leaks() == {}
    assert all(s.split in ("train", "val", "test") for s in ds.samples)
    ids = ds.split_ids()
    assert sorted(sum(ids.values(), [])) == sorted(s.id for s in ds.samples)


def test_custom_fractions_and_limit_through_the_spec():
    ds = open_dataset("digits?fractions=0.5,0.25,0.25&limit=100", seed=1)
    counts = Counter(s.split for s in ds.samples)
    assert len(ds) == 100 and counts["train"] == 50 and counts["val"] == 25 and counts["test"] == 25
    assert "fractions=0.5,0.25,0.25" in ds.spec and "limit=100" in ds.spec
    assert open_dataset(ds.spec).fingerprint() == ds.fingerprint()


def test_fingerprint_changes_with_the_split_and_with_labels(tmp_path):
    from ds_make import make_imagefolder

    make_imagefolder(tmp_path, {"a": 6, "b": 6})
    base = open_dataset(f"imagefolder:{tmp_path}")
    assert open_dataset(f"imagefolder:{tmp_path}").fingerprint() == base.fingerprint()
    assert open_dataset(f"imagefolder:{tmp_path}", seed=1).fingerprint() != base.fingerprint()
    swapped = open_dataset(f"imagefolder:{tmp_path}", classes=("b", "a"))
    assert swapped.classes == ["b", "a"] and swapped.fingerprint() != base.fingerprint()
