"""The dataset contract: :class:`Sample` and :class:`Dataset`.

A loader (registered through the ``register_datasets`` hook) returns a :class:`Dataset` whose
samples may or may not carry an official split. :func:`medprobe.datasets.open_dataset` then
*prepares* it (:mod:`.prepare`): assigns the split, checks every image, records skips and
duplicates. After that every sample has a split and the dataset is read-only.

Subclasses implement :meth:`Dataset.read` (the raw decoded image) and may override
:meth:`Dataset.scan` (size, mode and content hash used by the checks). :class:`FileDataset`
reads files under a root folder; :class:`ArrayDataset` reads slices of in-memory numpy arrays.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from .errors import BadSample, BadSampleError
from .groups import NEAR_THRESHOLD, perceptual_hash
from .imageio import (
    ImageDecodeError,
    MIN_SIDE,
    array_hash,
    array_to_image,
    check_finite,
    check_size,
    pixel_hash,
    read_image,
    to_rgb,
)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One labelled image.

    ``id`` is stable across runs (a path relative to the dataset root, or an index);
    ``label`` indexes :attr:`Dataset.classes`; ``split`` is ``"train"``, ``"val"`` or ``"test"``
    once the dataset is opened (``None`` only inside a loader, before the split is assigned);
    ``group`` is the patient / subject id when known; ``source`` names where the pixels come
    from (an absolute file path, or ``file.npz::train_images[12]``) and is used in messages.
    """

    id: str
    label: int
    split: str | None = None
    group: str | None = None
    source: str = ""


@dataclass(frozen=True)
class ScanResult:
    """What the checks read from one sample: size, source pixel mode, content hash and the 64-bit
    perceptual hash of :func:`medprobe.datasets.groups.perceptual_hash` (``None``: not decoded)."""

    width: int
    height: int
    mode: str
    hash: str | None
    phash: int | None = None


@dataclass(frozen=True)
class DuplicateSet:
    """Samples with identical pixels (same content hash)."""

    hash: str
    ids: tuple[str, ...]
    splits: tuple[str, ...]
    labels: tuple[int, ...]

    @property
    def cross_split(self) -> bool:
        return len(set(self.splits)) > 1

    @property
    def conflicting_labels(self) -> bool:
        return len(set(self.labels)) > 1

    def to_dict(self, classes: list[str]) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "ids": list(self.ids),
            "splits": list(self.splits),
            "labels": [classes[i] for i in self.labels],
            "cross_split": self.cross_split,
            "conflicting_labels": self.conflicting_labels,
        }


class Dataset:
    """A labelled image dataset: classes, samples, and a way to read each sample's image.

    Attributes filled by the loader: ``name`` (short, safe in file names: ``busi``,
    ``synthetic-lesions``), ``classes`` (index = label id), ``samples``,
    ``location`` (normalised: absolute path, or the synthetic set's name), ``options`` (the
    loader options that shape the data), ``notes`` / ``warnings`` (text for ``datasets show``),
    ``ignored`` (files seen but not used, e.g. masks, as ``{reason: [relative paths]}``) and
    ``bad`` (samples the loader already knows are unusable, e.g. unknown labels).

    Attributes filled by :func:`~medprobe.datasets.open_dataset`: ``spec``, ``seed``,
    ``split_method``, ``skipped``, ``duplicates``, ``dropped_duplicates``, ``scans``,
    ``duplicate_clusters`` (exact and near duplicates, :mod:`.groups`) and ``near_threshold``.
    """

    #: True for generated data (every report flags it)
    synthetic: bool = False

    def __init__(
        self,
        name: str,
        classes: Iterable[str],
        samples: Iterable[Sample],
        *,
        location: str = "",
        options: Mapping[str, Any] | None = None,
        notes: Iterable[str] = (),
        warnings: Iterable[str] = (),
        ignored: Mapping[str, list[str]] | None = None,
        bad: Iterable[BadSample] = (),
    ):
        self.name = name
        self.classes: list[str] = list(classes)
        self.samples: list[Sample] = list(samples)
        self.location = location
        self.options: dict[str, Any] = dict(options or {})
        self.notes: list[str] = list(notes)
        self.warnings: list[str] = list(warnings)
        self.ignored: dict[str, list[str]] = {k: list(v) for k, v in (ignored or {}).items()}
        self.bad: list[BadSample] = list(bad)
        # filled by prepare()
        self.spec: str = name
        self.seed: int = 0
        self.split_method: str = ""
        self.fractions: tuple[float, float, float] | None = None
        self.skipped: list[BadSample] = []
        self.duplicates: list[DuplicateSet] = []
        self.dropped_duplicates: list[str] = []
        self.scans: dict[str, ScanResult] = {}
        self.duplicate_clusters: list[Any] = []
        self.near_threshold: int = NEAR_THRESHOLD
        self.min_side: int = MIN_SIDE

    # ------------------------------------------------------------------ reading
    def read(self, sample: Sample) -> Image.Image:
        """The decoded image in its own mode (subclasses); raise :class:`ImageDecodeError`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement read()")

    def scan(self, sample: Sample) -> ScanResult:
        """Decode ``sample`` fully, check its size and hash its pixels.

        Raises :class:`ImageDecodeError` with the reason when the sample is unusable.
        """
        img = self.read(sample)
        check_size(img, self.min_side)
        return ScanResult(img.size[0], img.size[1], img.info.get("source_mode", img.mode), pixel_hash(img),
                          perceptual_hash(to_rgb(img)))

    def load_image(self, sample: Sample) -> Image.Image:
        """The sample's image as an RGB ``PIL.Image.Image`` (H x W x 3, uint8)."""
        try:
            return to_rgb(self.read(sample))
        except ImageDecodeError as exc:
            raise BadSampleError(BadSample(sample.id, sample.source, str(exc))) from None

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        flag = ", synthetic" if self.synthetic else ""
        return f"<Dataset {self.spec!r}: {len(self.samples)} samples, {len(self.classes)} classes{flag}>"

    def by_split(self, split: str) -> list[Sample]:
        """The samples of one split, in id order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return [s for s in self.samples if s.split == split]

    def split_ids(self) -> dict[str, list[str]]:
        """The recorded split: ``{"train": [ids], "val": [ids], "test": [ids]}`` (ids sorted)."""
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        for s in self.samples:
            if s.split in out:
                out[s.split].append(s.id)
        return {k: sorted(v) for k, v in out.items()}

    def fingerprint(self) -> str:
        """sha256 hex of the class names and every ``(id, label, split)``, sorted by id.

        Two datasets with the same fingerprint give every model the same images, labels and
        split; it changes when a sample, a label or the split changes.
        """
        rows = sorted((s.id, s.label, s.split or "") for s in self.samples)
        payload = json.dumps({"classes": self.classes, "samples": rows}, separators=(",", ":"), ensure_ascii=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def counts(self) -> dict[str, dict[str, int]]:
        """Samples per split and class: ``{split: {class_name: n}}`` plus ``"total"``."""
        table = {sp: {c: 0 for c in self.classes} for sp in (*SPLITS, "total")}
        for s in self.samples:
            name = self.classes[s.label]
            if s.split in table:
                table[s.split][name] += 1
            table["total"][name] += 1
        return table

    def group_leaks(self) -> dict[str, list[str]]:
        """Groups (patients) found in more than one split: ``{group: [splits]}``."""
        seen: dict[str, set[str]] = {}
        for s in self.samples:
            if s.group is not None and s.split is not None:
                seen.setdefault(s.group, set()).add(s.split)
        return {g: sorted(sp, key=SPLITS.index) for g, sp in sorted(seen.items()) if len(sp) > 1}

    def leakage(self) -> tuple[dict[str, Any], list[str]]:
        """The leakage summary (exact / near-duplicate clusters, cross-split copies) and one group
        label per sample (patient, else duplicate cluster, else sample id): :mod:`.groups`."""
        from .groups import dataset_leakage

        return dataset_leakage(self)

    def info(self) -> dict[str, Any]:
        """Everything ``medprobe datasets show --json`` prints (JSON-serialisable)."""
        groups = {s.group for s in self.samples if s.group is not None}
        sizes = Counter(f"{r.width}x{r.height}" for r in self.scans.values())
        modes = Counter(r.mode for r in self.scans.values())
        leaks = self.group_leaks()
        return {
            "name": self.name,
            "spec": self.spec,
            "synthetic": self.synthetic,
            "classes": list(self.classes),
            "num_samples": len(self.samples),
            "split_method": self.split_method,
            "fractions": list(self.fractions) if self.fractions else None,
            "seed": self.seed,
            "counts": self.counts(),
            "image_sizes": dict(sizes.most_common()),
            "image_modes": dict(modes.most_common()),
            "groups": {
                "count": len(groups),
                "samples_with_group": sum(1 for s in self.samples if s.group is not None),
                "in_several_splits": leaks,
            },
            "duplicates": [d.to_dict(self.classes) for d in self.duplicates],
            "near_duplicates": [c.to_dict() for c in self.duplicate_clusters if not c.exact],
            "leakage": self.leakage()[0],
            "dropped_duplicates": list(self.dropped_duplicates),
            "skipped": [[b.id, b.reason] for b in self.skipped],
            "skipped_sources": [b.source for b in self.skipped],
            "ignored_files": {k: {"count": len(v), "examples": v[:5]} for k, v in self.ignored.items()},
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "fingerprint": self.fingerprint(),
        }


class FileDataset(Dataset):
    """Samples are image files under ``root``; ``sample.source`` is the absolute file path."""

    def __init__(self, name: str, classes: Iterable[str], samples: Iterable[Sample], *, root: Path, **kwargs: Any):
        super().__init__(name, classes, samples, location=kwargs.pop("location", str(root)), **kwargs)
        self.root = root

    def read(self, sample: Sample) -> Image.Image:
        return read_image(Path(sample.source))


class ArrayDataset(Dataset):
    """Samples are slices of numpy image arrays held in memory.

    ``arrays`` maps a name (e.g. ``"train_images"``) to an array of shape ``(N, H, W)`` or
    ``(N, H, W, C)``; ``index`` maps a sample id to ``(array name, row)``. ``resize`` (optional)
    resamples each image to ``resize x resize`` pixels (bilinear); the checks then report that size.
    """

    def __init__(
        self,
        name: str,
        classes: Iterable[str],
        samples: Iterable[Sample],
        *,
        arrays: Mapping[str, np.ndarray],
        index: Mapping[str, tuple[str, int]],
        resize: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(name, classes, samples, **kwargs)
        self.arrays = dict(arrays)
        self.index = dict(index)
        self.resize = resize

    def _array(self, sample: Sample) -> np.ndarray:
        name, row = self.index[sample.id]
        return self.arrays[name][row]

    def read(self, sample: Sample) -> Image.Image:
        img = array_to_image(self._array(sample))
        if self.resize and img.size != (self.resize, self.resize):
            img = img.resize((self.resize, self.resize), Image.Resampling.BILINEAR)
        return img

    def scan(self, sample: Sample) -> ScanResult:
        arr = self._array(sample)
        if arr.ndim not in (2, 3):
            raise ImageDecodeError(f"array slot has shape {arr.shape}, expected H x W or H x W x C")
        h, w = arr.shape[:2]
        if min(h, w) < self.min_side:
            raise ImageDecodeError(f"image is {w}x{h} px, smaller than the {self.min_side} px minimum side")
        check_finite(arr)
        channels = 1 if arr.ndim == 2 else arr.shape[2]
        mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(channels, f"{channels}ch")
        if arr.dtype != np.uint8:
            mode = f"{mode}({arr.dtype})"
        if self.resize:
            w = h = self.resize
        return ScanResult(w, h, mode, array_hash(arr), perceptual_hash(array_to_image(arr)))
