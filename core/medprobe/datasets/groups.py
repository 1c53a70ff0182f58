"""Leakage groups: exact and near-duplicate image clusters, and one group label per sample.

Probes must never score an image whose copy they were trained on. This module finds the copies and
turns them (and patient ids) into *groups* that folds and splits keep together:

* **exact duplicates** share a content hash (:func:`medprobe.datasets.imageio.pixel_hash`, computed
  by :meth:`Dataset.scan <medprobe.datasets.base.Dataset.scan>` for every sample);
* **near duplicates** have perceptual hashes (:func:`perceptual_hash`, a 64-bit DCT pHash) at a
  Hamming distance of at most :data:`NEAR_THRESHOLD` bits: a resized, re-encoded (JPEG) or slightly
  brightened copy stays within it, distinct images fall far outside (``tests/datasets/test_duplicates*.py``);
* a **duplicate cluster** is a connected component of the "exact or near duplicate" relation;
* :func:`sample_groups` gives every sample one label: samples linked by a patient id or by a
  duplicate relation share a label (a component of the union of both relations). The label is
  ``patient:<id>`` (the smallest patient id in the component) when the component has a patient,
  ``dup:<first sample id>`` for a duplicate cluster without patient ids, else the sample id itself.

:func:`leakage_summary` counts what was found for a set of samples (the ``leakage`` block of a run
manifest, ``docs/feature-store.md``). Pure numpy / Pillow; no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

#: Hamming distance (bits out of 64) at or below which two perceptual hashes are near duplicates.
#: Measured (docs/datasets.md, "Near duplicates: the threshold"): of 1,200 altered copies of 200
#: synthetic lesion images (half / 1.4x size, brightness x0.9 / x1.1 / +15, JPEG q=60) 99.75% are
#: within 6 bits (max 8); distinct lesion images are >= 12 bits apart.
NEAR_THRESHOLD = 6
#: side of the grey thumbnail the DCT is taken of, and of the low-frequency block kept
PHASH_SIDE = 32
PHASH_BLOCK = 8
#: how many example pairs a leakage summary lists
EXAMPLES = 5


def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix (n, n): ``C @ x`` is the DCT of a length-n signal."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    c = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    c[0] /= np.sqrt(2.0)
    return c


_DCT = _dct_matrix(PHASH_SIDE)


def perceptual_hash(image: Image.Image | np.ndarray) -> int:
    """64-bit DCT perceptual hash of an image (any mode / size).

    The image is converted to grey, resized to 32 x 32 (box filter), its 2-D DCT-II taken, and the
    8 x 8 lowest-frequency coefficients compared with their median (the DC term excluded from the
    median): bit ``8*r + c`` is 1 where coefficient ``(r, c)`` exceeds it. Brightness offsets move
    only the DC term; resizing and re-encoding barely move the low frequencies.
    """
    if isinstance(image, np.ndarray):
        from .imageio import array_to_image

        image = array_to_image(image)
    grey = image.convert("L").resize((PHASH_SIDE, PHASH_SIDE), Image.Resampling.BOX)
    a = np.asarray(grey, dtype=np.float64)
    # rounded so that float noise cannot set bits: a flat image hashes to its DC bit alone, and
    # all blank images (of any size or grey level) are near duplicates of each other
    coeff = np.round((_DCT @ a @ _DCT.T)[:PHASH_BLOCK, :PHASH_BLOCK].ravel(), 6)
    median = np.median(coeff[1:])
    bits = coeff > median
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two hashes."""
    return int(bin(int(a) ^ int(b)).count("1"))


class _UnionFind:
    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)


def near_pairs(hashes: Sequence[int | None], threshold: int = NEAR_THRESHOLD, chunk: int = 1024) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose hashes differ by at most ``threshold`` bits.

    All pairs are compared (chunks of ``chunk`` rows against every later row; ~0.1 s for 6,000
    images); ``None`` hashes (samples that were not decoded) match nothing.
    """
    idx = np.array([i for i, h in enumerate(hashes) if h is not None], dtype=np.int64)
    if idx.size < 2:
        return []
    h = np.array([hashes[i] for i in idx], dtype=np.uint64)
    out: list[tuple[int, int]] = []
    for lo in range(0, h.size, chunk):
        block = h[lo : lo + chunk]
        dist = np.bitwise_count(block[:, None] ^ h[None, :])  # (chunk, M) uint8
        rows, cols = np.nonzero(dist <= threshold)
        keep = cols > rows + lo
        out.extend(zip(idx[rows[keep] + lo].tolist(), idx[cols[keep]].tolist()))
    return sorted(out)


@dataclass(frozen=True)
class DuplicateCluster:
    """A connected set of exact / near-duplicate samples (ids sorted)."""

    ids: tuple[str, ...]
    splits: tuple[str, ...]
    #: every member has the same content hash
    exact: bool
    #: the closest pairs that link the cluster, as sample-id pairs (near or exact)
    pairs: tuple[tuple[str, str], ...]

    @property
    def cross_split(self) -> bool:
        return len(set(self.splits)) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"ids": list(self.ids), "splits": list(self.splits), "exact": self.exact,
                "cross_split": self.cross_split, "pairs": [list(p) for p in self.pairs]}


def duplicate_clusters(
    samples: Sequence[Any],
    scans: Mapping[str, Any],
    threshold: int = NEAR_THRESHOLD,
) -> list[DuplicateCluster]:
    """Clusters (size >= 2) of samples linked by equal content hashes or by perceptual hashes within
    ``threshold`` bits. ``samples``: objects with ``id`` / ``split``; ``scans``: sample id ->
    :class:`~medprobe.datasets.base.ScanResult` (``hash``, ``phash``; missing ones link nothing)."""
    samples = list(samples)
    n = len(samples)
    uf = _UnionFind(n)
    pairs: list[tuple[int, int]] = []
    first_of_hash: dict[str, int] = {}
    for i, s in enumerate(samples):
        r = scans.get(s.id)
        h = getattr(r, "hash", None)
        if h is None:
            continue
        if h in first_of_hash:
            uf.union(first_of_hash[h], i)
            pairs.append((first_of_hash[h], i))
        else:
            first_of_hash[h] = i
    phashes = [getattr(scans.get(s.id), "phash", None) for s in samples]
    for i, j in near_pairs(phashes, threshold):
        if uf.find(i) != uf.find(j):
            pairs.append((i, j))
        uf.union(i, j)
    members: dict[int, list[int]] = {}
    for i in range(n):
        members.setdefault(uf.find(i), []).append(i)
    pairs_of: dict[int, list[tuple[int, int]]] = {}
    for i, j in pairs:
        pairs_of.setdefault(uf.find(i), []).append((i, j))
    out = []
    for root, idx in members.items():
        if len(idx) < 2:
            continue
        idx = sorted(idx, key=lambda k: samples[k].id)
        hashes = {getattr(scans.get(samples[k].id), "hash", None) for k in idx}
        out.append(DuplicateCluster(
            ids=tuple(samples[k].id for k in idx),
            splits=tuple(samples[k].split or "" for k in idx),
            exact=len(hashes) == 1 and None not in hashes,
            pairs=tuple((samples[i].id, samples[j].id) for i, j in pairs_of.get(root, [])),
        ))
    return sorted(out, key=lambda c: c.ids[0])


def sample_groups(samples: Sequence[Any], clusters: Sequence[DuplicateCluster] = ()) -> list[str]:
    """One group label per sample, in the order of ``samples`` (see the module doc).

    Samples sharing a patient id (``sample.group``) or a duplicate cluster share a label, so a
    grouped split or fold never puts a patient, or copies of one image, on both sides.
    """
    samples = list(samples)
    pos = {s.id: i for i, s in enumerate(samples)}
    uf = _UnionFind(len(samples))
    first_of_patient: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.group is not None:
            j = first_of_patient.setdefault(str(s.group), i)
            uf.union(i, j)
    for c in clusters:
        idx = [pos[sid] for sid in c.ids if sid in pos]
        for k in idx[1:]:
            uf.union(idx[0], k)
    members: dict[int, list[int]] = {}
    for i in range(len(samples)):
        members.setdefault(uf.find(i), []).append(i)
    label: dict[int, str] = {}
    for root, idx in members.items():
        patients = sorted(str(samples[k].group) for k in idx if samples[k].group is not None)
        if patients:
            label[root] = f"patient:{patients[0]}"
        elif len(idx) > 1:
            label[root] = "dup:" + min(samples[k].id for k in idx)
        else:
            label[root] = samples[idx[0]].id
    return [label[uf.find(i)] for i in range(len(samples))]


def leakage_summary(
    samples: Sequence[Any],
    clusters: Sequence[DuplicateCluster],
    threshold: int = NEAR_THRESHOLD,
    checked: bool = True,
) -> dict[str, Any]:
    """The ``leakage`` block for ``samples`` (clusters are restricted to them first).

    ``exact_clusters``: clusters whose members are all identical; ``near_clusters``: the other
    clusters (at least one near-duplicate link); ``samples_in_clusters``: samples in any cluster;
    ``cross_split_samples``: samples whose cluster spans more than one split, ``cross_split_by_split``
    the same per split (the issue's "23 of 66 test images have a copy in train" is
    ``cross_split_by_split["test"] == 23``); ``examples``: up to :data:`EXAMPLES` linked id pairs,
    cross-split ones first; ``threshold``: the pHash Hamming threshold; ``checked``: false when the
    images were not decoded (generated data), so nothing could be found.
    """
    keep = {s.id: (s.split or "") for s in samples}
    exact = near = in_clusters = cross = 0
    by_split: dict[str, int] = {}
    examples_cross: list[list[str]] = []
    examples_other: list[list[str]] = []
    for c in clusters:
        ids = [i for i in c.ids if i in keep]
        if len(ids) < 2:
            continue
        splits = {keep[i] for i in ids}
        if c.exact:
            exact += 1
        else:
            near += 1
        in_clusters += len(ids)
        pairs = [list(p) for p in c.pairs if p[0] in keep and p[1] in keep] or [ids[:2]]
        if len(splits) > 1:
            cross += len(ids)
            for i in ids:
                by_split[keep[i]] = by_split.get(keep[i], 0) + 1
            examples_cross.extend(p for p in pairs if keep[p[0]] != keep[p[1]])
        else:
            examples_other.extend(pairs[:1])
    return {
        "checked": checked,
        "exact_clusters": exact,
        "near_clusters": near,
        "samples_in_clusters": in_clusters,
        "cross_split_samples": cross,
        "cross_split_by_split": dict(sorted(by_split.items())),
        "threshold": threshold,
        "method": f"sha256 of decoded pixels (exact); 64-bit DCT pHash, Hamming <= {threshold} (near)",
        "examples": (examples_cross + examples_other)[:EXAMPLES],
    }


def dataset_leakage(ds: Any, samples: Sequence[Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The leakage block and the per-sample group labels of an opened dataset, restricted to
    ``samples`` (default all; e.g. the subset an extraction uses), in their order."""
    samples = list(ds.samples if samples is None else samples)
    clusters = getattr(ds, "duplicate_clusters", None)
    if clusters is None:  # a Dataset prepared elsewhere: cluster now from its scans
        clusters = duplicate_clusters(samples, getattr(ds, "scans", {}), getattr(ds, "near_threshold", NEAR_THRESHOLD))
    checked = any(getattr(r, "hash", None) is not None for r in getattr(ds, "scans", {}).values())
    summary = leakage_summary(samples, clusters, getattr(ds, "near_threshold", NEAR_THRESHOLD), checked=checked)
    patients = {s.group for s in samples if s.group is not None}
    summary["patient_groups"] = len(patients)
    leaks = {}
    for s in samples:
        if s.group is not None:
            leaks.setdefault(s.group, set()).add(s.split)
    summary["patients_in_several_splits"] = sum(1 for v in leaks.values() if len(v) > 1)
    return summary, sample_groups(samples, clusters)


def summary_line(leakage: Mapping[str, Any] | None) -> str | None:
    """One line for outputs and banners, or ``None`` when there is nothing to say.

    E.g. ``"LEAKAGE: 50 duplicate cluster(s) (50 exact, 0 near; 100 samples), 46 sample(s) have a copy
    in another split (test 23, train 23); folds are grouped by cluster; e.g. test/a.png ~ train/b.png"``.
    """
    if not leakage:
        return None
    if not leakage.get("checked", True):
        return "duplicates not checked (generated data: images are not decoded)"
    n = int(leakage.get("exact_clusters", 0)) + int(leakage.get("near_clusters", 0))
    patients = int(leakage.get("patients_in_several_splits", 0) or 0)
    if not n and not patients:
        return None
    parts = []
    if n:
        by = ", ".join(f"{k} {v}" for k, v in (leakage.get("cross_split_by_split") or {}).items())
        parts.append(
            f"{n} duplicate cluster(s) ({leakage.get('exact_clusters', 0)} exact, {leakage.get('near_clusters', 0)} near "
            f"at pHash Hamming <= {leakage.get('threshold')}; {leakage.get('samples_in_clusters', 0)} samples), "
            f"{leakage.get('cross_split_samples', 0)} sample(s) have a copy in another split" + (f" ({by})" if by else "")
        )
    if patients:
        parts.append(f"{patients} patient(s) in several splits")
    line = "LEAKAGE: " + "; ".join(parts) + "; grouped probes keep each cluster / patient in one fold"
    ex = leakage.get("examples") or []
    if ex:
        line += "; e.g. " + ", ".join(f"{a} ~ {b}" for a, b in ex[:2])
    return line


def run_groups(manifest: Mapping[str, Any]) -> list[str] | None:
    """The per-sample group labels recorded in a run manifest (``dataset.groups``, aligned
    with ``dataset.sample_ids``), or ``None`` for runs extracted before groups were recorded."""
    ds = manifest.get("dataset") or {}
    groups = ds.get("groups")
    if groups is None:
        return None
    if len(groups) != len(ds.get("sample_ids", [])):
        from ..registry import MedprobeError

        raise MedprobeError(
            f"run manifest: dataset.groups has {len(groups)} entries for {len(ds.get('sample_ids', []))} "
            "samples; the manifest is corrupt: re-extract with --no-resume"
        )
    return list(groups)
