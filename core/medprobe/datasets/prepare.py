"""Turn what a loader returned into a ready dataset: split, check, skip, deduplicate.

Steps, in order (each leaves a trace in :meth:`Dataset.info`):

1. **Split.** Every sample has an official split -> kept (``split_method="official"``). An
   official split with ``train`` but without ``val`` and/or ``test`` -> the missing parts are
   carved out of ``train`` with the same seeded, stratified, patient-grouped procedure
   (``"official+carved"``). No official split -> :func:`.splits.assign` over all samples
   (``"seeded-stratified"``, or ``"seeded-stratified-grouped"`` when group ids exist). The split
   depends only on sample ids, labels, groups and the seed, never on file contents, so skipping
   a bad file does not move any other sample.
2. **Limit.** ``limit=N`` keeps a seeded subset stratified by (split, class).
3. **Check.** Every kept sample is decoded in full, its size checked and its pixels hashed
   (threads; synthetic data is not decoded). About 15 ms per 1500 x 1200 JPEG on one core, so
   the 5,856 Kermany X-rays take a minute or less; a progress bar shows on a terminal.
4. **Bad samples.** Loader-detected problems (unknown labels, escaping paths) and check failures
   raise :class:`.errors.BadSamplesError` listing each file and reason, or with ``skip_bad``
   are removed and recorded in ``skipped``.
5. **Duplicates.** Samples with identical pixel hashes are recorded (``duplicates``); with
   ``dedup`` one copy is kept (the first by split train < val < test, then id) and the others
   are dropped and listed; when the copies disagree on the label, all of them are dropped.
   Exact and near duplicates (perceptual hash within ``near_threshold`` bits) of the kept
   samples form ``duplicate_clusters`` (:mod:`.groups`), which grouped probes keep in one fold.
6. **Warnings.** Patients in several splits, duplicates across splits, classes with 0
   samples, classes missing from a split.

Before step 1, samples whose file name is not valid UTF-8 become bad samples (ids are UTF-8
text in manifests and reports): their names are shown with ``\\xNN`` escapes.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from tqdm import tqdm

from .base import SPLITS, Dataset, DuplicateSet, Sample, ScanResult
from .groups import duplicate_clusters
from .errors import BadSample, BadSamplesError, DatasetLayoutError
from .imageio import ImageDecodeError
from .splits import DEFAULT_FRACTIONS, assign, check_fractions, subset

#: folders with at least this many images show a progress bar while being checked (on a terminal)
PROGRESS_FROM = 500


def prepare(
    ds: Dataset,
    *,
    spec: str,
    seed: int = 0,
    dedup: bool = False,
    skip_bad: bool = False,
    limit: int | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
) -> Dataset:
    """Run the steps of the module doc on ``ds`` in place and return it."""
    fr = check_fractions(fractions)
    ds.spec, ds.seed = spec, seed
    _check_loader_output(ds)
    samples = sorted(ds.samples, key=lambda s: s.id)
    samples, ds.split_method, used = _split(samples, seed, fr)
    ds.fractions = fr if used else None
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be a positive number of samples, got {limit}")
        samples = subset(samples, limit, seed)
    scans, bad = _scan_all(ds, samples)
    bad = list(ds.bad) + bad
    if bad and not skip_bad:
        raise BadSamplesError(spec, bad)
    bad_ids = {b.id for b in bad}
    ds.skipped = sorted(bad, key=lambda b: b.id)
    samples = [s for s in samples if s.id not in bad_ids]
    ds.scans = {s.id: scans[s.id] for s in samples if s.id in scans}
    ds.duplicates = find_duplicates(samples, ds.scans)
    if dedup and ds.duplicates:
        drop = _duplicates_to_drop(ds.duplicates)
        ds.dropped_duplicates = sorted(drop)
        samples = [s for s in samples if s.id not in drop]
        for sid in drop:
            ds.scans.pop(sid, None)
    ds.duplicate_clusters = duplicate_clusters(samples, ds.scans, ds.near_threshold)
    ds.samples = samples
    ds.warnings.extend(_warnings(ds))
    return ds


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a non-UTF-8 file name shown as ``\\xNN`` escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _refuse_non_utf8_names(ds: Dataset) -> None:
    """Samples whose file name is not valid UTF-8 become bad samples (ids, manifests and reports
    are UTF-8 text); the name is shown with ``\\xNN`` escapes."""
    keep = []
    for s in ds.samples:
        if _utf8(s.id) and _utf8(s.source):
            keep.append(s)
            continue
        ds.bad.append(
            BadSample(
                printable(s.id),
                printable(s.source or s.id),
                "file name is not valid UTF-8; rename the file (e.g. convmv -f latin1 -t utf8 --notest)",
            )
        )
    ds.samples = keep
    ds.ignored = {k: [printable(v) for v in vs] for k, vs in ds.ignored.items()}
    ds.classes = [printable(c) for c in ds.classes]  # a class folder with such a name: its files are bad above
    ds.warnings = [printable(w) for w in ds.warnings]
    ds.notes = [printable(n) for n in ds.notes]


def _check_loader_output(ds: Dataset) -> None:
    where = f"dataset '{ds.name}' ({ds.location})"
    if not ds.classes:
        raise DatasetLayoutError(f"{where}: the loader found no classes")
    _refuse_non_utf8_names(ds)
    seen: set[str] = set()
    for s in ds.samples:
        if s.id in seen:
            raise DatasetLayoutError(f"{where}: sample id '{s.id}' occurs twice")
        seen.add(s.id)
        if not 0 <= s.label < len(ds.classes):
            raise DatasetLayoutError(f"{where}: sample '{s.id}' has label {s.label} outside 0..{len(ds.classes) - 1}")
        if s.split not in (None, *SPLITS):
            raise DatasetLayoutError(f"{where}: sample '{s.id}' has split {s.split!r}, expected one of {SPLITS}")
    if not ds.samples and not ds.bad:
        raise DatasetLayoutError(f"{where}: no images found")


def _split(samples: list[Sample], seed: int, fr: tuple[float, float, float]) -> tuple[list[Sample], str, bool]:
    """Returns (samples with splits, method, whether ``fr`` was used)."""
    if not samples:
        return samples, "none", False
    with_split = [s for s in samples if s.split is not None]
    grouped = any(s.group is not None for s in samples)
    if not with_split:
        fractions = dict(zip(SPLITS, fr))
        return assign(samples, seed, fractions), "seeded-stratified-grouped" if grouped else "seeded-stratified", True
    if len(with_split) != len(samples):
        missing = next(s for s in samples if s.split is None)
        raise DatasetLayoutError(
            f"{len(samples) - len(with_split)} sample(s) have no split while others have an official one "
            f"(first: {missing.source or missing.id}); give every sample a split or none"
        )
    present = {s.split for s in samples}
    missing_parts = [sp for sp in SPLITS if sp not in present]
    if not missing_parts or "train" not in present:
        return samples, "official", False
    carve = {"train": fr[0], **{sp: fr[SPLITS.index(sp)] for sp in missing_parts}}
    total = sum(carve.values())
    carve = {k: v / total for k, v in carve.items()}
    train = [s for s in samples if s.split == "train"]
    carved = {s.id: s for s in assign(train, seed, carve)}
    return [carved.get(s.id, s) for s in samples], "official+carved(" + ",".join(missing_parts) + " from train)", True


def _scan_one(ds: Dataset, sample: Sample) -> ScanResult | BadSample:
    try:
        return ds.scan(sample)
    except ImageDecodeError as exc:
        return BadSample(sample.id, sample.source or sample.id, str(exc))


def _scan_all(ds: Dataset, samples: list[Sample]) -> tuple[dict[str, ScanResult], list[BadSample]]:
    workers = 1 if ds.synthetic or len(samples) < 16 else min(8, os.cpu_count() or 1)
    # a bar on stderr for large folders only, and only on a terminal (disable=None)
    show = not ds.synthetic and len(samples) >= PROGRESS_FROM
    with tqdm(total=len(samples), desc=f"checking {ds.name}", unit="img", leave=False, disable=None if show else True) as bar:

        def one(s: Sample) -> ScanResult | BadSample:
            result = _scan_one(ds, s)
            bar.update(1)
            return result

        if workers == 1:
            results = [one(s) for s in samples]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, samples))
    scans: dict[str, ScanResult] = {}
    bad: list[BadSample] = []
    for s, r in zip(samples, results):
        if isinstance(r, BadSample):
            bad.append(r)
        else:
            scans[s.id] = r
    return scans, bad


def find_duplicates(samples: Sequence[Sample], scans: dict[str, ScanResult]) -> list[DuplicateSet]:
    """Sets of samples whose content hashes are equal, ordered by (split, id) inside a set."""
    by_hash: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        r = scans.get(s.id)
        if r is not None and r.hash is not None:
            by_hash[r.hash].append(s)
    out = []
    for h, group in by_hash.items():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda s: (SPLITS.index(s.split) if s.split in SPLITS else 9, s.id))
        out.append(
            DuplicateSet(h, tuple(s.id for s in group), tuple(s.split or "" for s in group), tuple(s.label for s in group))
        )
    return sorted(out, key=lambda d: d.ids[0])


def _duplicates_to_drop(sets: Sequence[DuplicateSet]) -> set[str]:
    drop: set[str] = set()
    for d in sets:
        drop.update(d.ids if d.conflicting_labels else d.ids[1:])
    return drop


def _warnings(ds: Dataset) -> list[str]:
    out: list[str] = []
    leaks = ds.group_leaks()
    if leaks:
        example = ", ".join(f"{g} ({'/'.join(sp)})" for g, sp in list(leaks.items())[:5])
        out.append(f"{len(leaks)} patient/group id(s) appear in more than one split (leakage): {example}")
    cross = [d for d in ds.duplicates if d.cross_split]
    if cross:
        action = "dropped (--dedup)" if ds.dropped_duplicates else "kept; pass --dedup to drop them"
        out.append(f"{len(cross)} set(s) of identical images span more than one split ({action})")
    near = [c for c in ds.duplicate_clusters if not c.exact and c.cross_split]
    if near:
        out.append(
            f"{len(near)} cluster(s) of near-duplicate images (perceptual hash within {ds.near_threshold} bits) span "
            "more than one split (kept; grouped probes keep each cluster in one fold): "
            + "; ".join(" ~ ".join(c.ids[:2]) for c in near[:3])
        )
    conflicting = [d for d in ds.duplicates if d.conflicting_labels]
    if conflicting:
        out.append(
            f"{len(conflicting)} set(s) of identical images carry different labels: "
            + "; ".join(", ".join(d.ids) for d in conflicting[:3])
        )
    if len(ds.classes) == 1:
        out.append(f"only one class ({ds.classes[0]}): probing and classification need at least two")
    counts = ds.counts()
    empty_classes = [c for c, n in counts["total"].items() if n == 0]
    if empty_classes and ds.samples:
        out.append(
            f"class(es) with 0 samples: {', '.join(empty_classes)} (a probe cannot learn them; check the data, "
            "or leave the class out)"
        )
    for sp in SPLITS:
        if not any(counts[sp].values()):
            if ds.samples:
                out.append(f"split '{sp}' is empty")
            continue
        empty = [c for c, n in counts[sp].items() if n == 0 and counts["total"][c] > 0]
        if empty:
            out.append(f"split '{sp}' has no samples of class(es): {', '.join(empty)}")
    if ds.skipped:
        out.append(f"{len(ds.skipped)} bad sample(s) skipped (--skip-bad); see 'skipped'")
    return out
