"""Training data: samples per split, light augmentation, class weights, batch order. No torch.

Augmentation (training split only, trainable backbones only) acts on the RGB PIL image *before*
the model's own preprocessing (the adapter's eval transform / image processor, from the
checkpoint's pretrained config), so every family keeps its own resize, crop and normalisation:

* random resized crop: a crop covering a uniform ``AUGMENT["crop_scale"]`` fraction (0.75 to 1)
  of the image area, aspect ratio log-uniform in ``AUGMENT["crop_ratio"]`` (3/4 to 4/3), resized
  back to the image's size (bicubic);
* horizontal flip with probability ``AUGMENT["hflip"]`` (0.5).

Both draw from a ``numpy.random.Generator`` seeded from the run seed and the epoch, so a run is
reproducible.

Class imbalance: the cross-entropy is weighted by inverse class frequency on the training split,
``w_c = N_train / (K * n_c)`` (balanced classes give every weight 1; a class with half the
average count weighs 2). A class with no training sample is an error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .record import SPLITS, TrainError

AUGMENT = {"crop_scale": (0.75, 1.0), "crop_ratio": (3 / 4, 4 / 3), "hflip": 0.5}
CLASS_WEIGHTING = "inverse class frequency on the training split: w_c = N_train / (K * n_c)"


@dataclass
class SplitData:
    """The dataset's samples per split, with labels (n,) int64 per split."""

    dataset: Any
    samples: dict[str, list[Any]]
    labels: dict[str, np.ndarray]
    n_classes: int

    @classmethod
    def from_dataset(cls, ds: Any) -> "SplitData":
        samples = {s: ds.by_split(s) for s in SPLITS}
        empty = [s for s in SPLITS if not samples[s]]
        if empty:
            raise TrainError(
                f"dataset '{ds.spec}': split(s) {empty} are empty; training needs train (fit), val (early stopping) "
                "and test (scored once)"
            )
        k = len(ds.classes)
        if k < 2:
            raise TrainError(f"dataset '{ds.spec}' has {k} class; a classifier needs at least two")
        labels = {s: np.array([x.label for x in samples[s]], dtype=np.int64) for s in SPLITS}
        return cls(dataset=ds, samples=samples, labels=labels, n_classes=k)

    def counts(self) -> dict[str, int]:
        return {s: len(self.samples[s]) for s in SPLITS}

    def images(self, split: str, index: Sequence[int]) -> list[Image.Image]:
        """RGB PIL images of the given rows of ``split``."""
        return [self.dataset.load_image(self.samples[split][i]) for i in index]


def class_weights(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """(K,) float32 inverse-frequency weights ``N / (K * n_c)`` of the training labels (n,)."""
    k = len(classes)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=k)
    missing = [classes[c] for c in range(k) if counts[c] == 0]
    if missing:
        raise TrainError(f"the training split has no sample of class(es) {missing}; cannot train a {k}-class classifier")
    return (counts.sum() / (k * counts)).astype(np.float32)


def augment(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Random resized crop then horizontal flip (see the module docstring); same size out."""
    w, h = image.size
    area = w * h
    lo, hi = AUGMENT["crop_scale"]
    rlo, rhi = AUGMENT["crop_ratio"]
    for _ in range(10):
        target = area * rng.uniform(lo, hi)
        ratio = math.exp(rng.uniform(math.log(rlo), math.log(rhi)))
        cw = int(round(math.sqrt(target * ratio)))
        ch = int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x0 = int(rng.integers(0, w - cw + 1))
            y0 = int(rng.integers(0, h - ch + 1))
            image = image.resize((w, h), Image.Resampling.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
            break
    if rng.random() < AUGMENT["hflip"]:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image


def epoch_batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A shuffled order of ``n`` training rows cut into batches of ``batch_size``. A last batch of
    a single row is dropped when there are others (BatchNorm cannot train on one pooled sample)."""
    order = rng.permutation(n)
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def eval_batches(n: int, batch_size: int) -> list[np.ndarray]:
    """Rows ``0..n-1`` in order, in batches of ``batch_size``."""
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
