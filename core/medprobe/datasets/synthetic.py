"""``synthetic:lesions``: the embedded demo set, generated from a seed (no files shipped).

Ultrasound-like images of speckled breast tissue in three classes:

- ``normal``: layered tissue only; about half the images hold a small, faint, round dark
  structure (a fat lobule or duct) so that "a dark blob" alone does not give the class away;
- ``round_lesion``: a round or oval, well-circumscribed (sharp-edged) hypoechoic lesion, often
  with posterior acoustic enhancement (a brighter band below it);
- ``spiculated_lesion``: an irregular lesion with lobulated, spiculated, blurred margins and
  heterogeneous interior, often with posterior shadowing (a darker band below it).

Lesion size (radius 8 to 22 % of the image), contrast (interior 15 to 60 % of the surrounding
echo), position, margin blur and posterior effects vary per image; tissue layering, depth
attenuation, brightness and speckle grain vary per *patient*. Patients hold 2 to 4 images of
the same class, so grouped splits are exercised (``group`` = ``patient-NNNN``).

Generation is lazy and deterministic: image ``i`` depends only on ``(seed, i)`` and its
patient's parameters on ``(seed, patient)``; :meth:`SyntheticLesions.read` renders one
``size x size`` grey image (about 6 ms at 224 px), so hundreds of images take a second or two.
Every output of this dataset is flagged ``synthetic``.

Difficulty (checked by ``tests/datasets/test_synthetic.py``): a logistic-regression probe on
a random, untrained 3-layer CNN reaches roughly 0.55 to 0.7 test accuracy (chance 0.33); normal
vs lesion is easy, round vs spiculated is the hard part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .base import Dataset, Sample, ScanResult
from .errors import DatasetLayoutError, DatasetSpecError

CLASSES = ("normal", "round_lesion", "spiculated_lesion")
NAMES = ("lesions",)
SPECKLE = 0.5


@dataclass(frozen=True)
class _Patient:
    brightness: float
    attenuation: float
    layer_freq: float
    grain: float
    gain_field: float


def _patient(seed: int, patient: int) -> _Patient:
    rng = np.random.default_rng([seed, 1, patient])
    return _Patient(
        brightness=float(rng.uniform(0.45, 0.6)),
        attenuation=float(rng.uniform(0.2, 0.7)),
        layer_freq=float(rng.uniform(2.0, 5.0)),
        grain=float(rng.uniform(1.4, 3.0)),
        gain_field=float(rng.uniform(0.1, 0.35)),
    )


def _field(rng: np.random.Generator, cells: int, size: int, resample=Image.Resampling.BICUBIC) -> np.ndarray:
    """A smooth random field ``(size, size)`` float32 with about unit variance."""
    low = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(low).resize((size, size), resample), dtype=np.float32)


def _speckle(rng: np.random.Generator, size: int, grain: float) -> np.ndarray:
    """Fully developed speckle: magnitude of a correlated complex Gaussian field, mean-square 1."""
    cells = max(4, int(round(size / grain)))
    re = _field(rng, cells, size, Image.Resampling.BILINEAR)
    im = _field(rng, cells, size, Image.Resampling.BILINEAR)
    mag = np.hypot(re, im)
    return mag / np.sqrt(np.mean(mag * mag) + 1e-12)


def _soft(x: np.ndarray, width: float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(x / max(width, 1e-6)))


def render(seed: int, index: int, label: int, patient: int, size: int) -> np.ndarray:
    """Render one image: ``(size, size)`` uint8 (see the module doc for the classes)."""
    p = _patient(seed, patient)
    rng = np.random.default_rng([seed, 2, index])
    v, u = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size

    # tissue: wavy horizontal layers, a smooth gain field, depth attenuation, a bright skin line
    warp = _field(rng, 4, size)
    layers = 0.5 + 0.5 * np.sin(2 * np.pi * (v * p.layer_freq + 0.12 * warp + rng.uniform(0, 1)))
    echo = p.brightness * (0.7 + 0.3 * layers) * (1.0 + p.gain_field * _field(rng, 6, size))
    echo *= np.exp(-p.attenuation * v)
    echo += 0.35 * np.exp(-(((v - 0.02) / 0.012) ** 2))

    cx, cy = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.65)
    dx, dy = u - cx, v - cy
    dist = np.hypot(dx, dy)
    theta = np.arctan2(dy, dx)
    mask = None
    if label == 0:
        if rng.random() < 0.4:  # faint round structure: a confounder, not a lesion
            radius = rng.uniform(0.03, 0.08)
            mask = _soft(1.0 - dist / radius, 0.08)
            contrast = rng.uniform(0.65, 0.9)
            echo = echo * (1.0 - mask * (1.0 - contrast))
    else:
        radius = rng.uniform(0.08, 0.22)
        contrast = rng.uniform(0.15, 0.6)
        if label == 1:
            ecc = rng.uniform(0.0, 0.3)
            r_theta = radius * (1.0 + ecc * np.cos(2 * (theta - rng.uniform(0, np.pi))))
            edge = rng.uniform(0.01, 0.04)
        else:
            r_theta = np.full_like(theta, radius)
            for k in range(2, 6):
                r_theta += radius * rng.uniform(0.0, 0.12) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
            for _ in range(int(rng.integers(5, 14))):
                ang = rng.uniform(-np.pi, np.pi)
                diff = (theta - ang + np.pi) % (2 * np.pi) - np.pi
                r_theta += radius * rng.uniform(0.3, 1.0) * np.exp(-((diff / rng.uniform(0.04, 0.1)) ** 2))
            edge = rng.uniform(0.06, 0.16)
        mask = _soft(1.0 - dist / np.maximum(r_theta, 1e-3), edge)
        interior = contrast * (1.0 + (0.08 if label == 1 else 0.3) * _field(rng, 10, size))
        echo = echo * (1.0 - mask) + echo * interior * mask
        # posterior acoustic effect below the lesion: enhancement (round) or shadowing (spiculated)
        strength = rng.uniform(0.2, 0.7)
        column = np.exp(-((dx / (radius * 0.9)) ** 2)) * _soft(dy - radius, 0.03) * np.exp(-np.maximum(dy - radius, 0) / 0.35)
        echo = echo * (1.0 + (strength if label == 1 else -strength) * column)

    img = np.clip(echo, 0.0, None) * (1.0 - SPECKLE + SPECKLE * _speckle(rng, size, p.grain))
    img = np.log1p(8.0 * img) / np.log1p(8.0)  # log compression, as ultrasound displays do
    img += rng.normal(0.0, 0.02, img.shape)
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


class SyntheticLesions(Dataset):
    """The generated lesion set; images are rendered on demand by :meth:`read`."""

    synthetic = True

    def __init__(self, n: int, size: int, seed: int):
        self.size = size
        self.gen_seed = seed
        samples = []
        rng = np.random.default_rng([seed, 0])
        patient, i = 0, 0
        while i < n:
            count = int(rng.integers(2, 5))
            label = patient % len(CLASSES)
            for _ in range(min(count, n - i)):
                samples.append(Sample(f"{i:05d}", label, None, f"patient-{patient:04d}", f"synthetic:lesions seed={seed} index={i}"))
                i += 1
            patient += 1
        super().__init__(
            "synthetic-lesions",
            CLASSES,
            samples,
            location="lesions",
            notes=["SYNTHETIC: generated ultrasound-like images, not patient data"],
        )
        self._labels = {s.id: (int(s.id), s.label, int(s.group.split("-")[1])) for s in samples}

    def read(self, sample: Sample) -> Image.Image:
        index, label, patient = self._labels[sample.id]
        return Image.fromarray(render(self.gen_seed, index, label, patient, self.size))

    def scan(self, sample: Sample) -> ScanResult:
        # generated on demand; distinct (seed, index) pairs never give identical images
        return ScanResult(self.size, self.size, "L", None)


def lesions(location: str, n: int = 300, size: int = 224, seed: int = 0) -> SyntheticLesions:
    """``synthetic:lesions?n=300&size=224&seed=0``: see the module doc."""
    if location not in NAMES:
        raise DatasetLayoutError(f"synthetic: unknown synthetic set '{location}'; available: {', '.join(NAMES)}")
    if n < 3:
        raise DatasetSpecError(f"synthetic:lesions: n must be at least 3 (one per class), got {n}")
    if not 16 <= size <= 1024:
        raise DatasetSpecError(f"synthetic:lesions: size must be between 16 and 1024 px, got {size}")
    return SyntheticLesions(n, size, seed)
