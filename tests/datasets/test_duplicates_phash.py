"""The perceptual hash and its documented threshold: altered copies fall inside, distinct images
outside (the validation behind ``medprobe.datasets.groups.NEAR_THRESHOLD``)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from medprobe.datasets.groups import NEAR_THRESHOLD, _dct_matrix, hamming, near_pairs, perceptual_hash
from medprobe.datasets.synthetic import render


def _images(n: int = 24, size: int = 128) -> list[Image.Image]:
    """Distinct ultrasound-like images (synthetic renderer; other patients, other lesions)."""
    return [Image.fromarray(render(3, i, i % 3, i, size)).convert("RGB") for i in range(n)]


def _jpeg(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


COPIES = {
    "resized to half": lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
    "resized up 1.75x": lambda im: im.resize((im.width * 7 // 4, im.height * 7 // 4), Image.Resampling.BICUBIC),
    "JPEG q=75": lambda im: _jpeg(im, 75),
    "brightness +8": lambda im: Image.fromarray(np.clip(np.asarray(im).astype(int) + 8, 0, 255).astype(np.uint8)),
    "brightness x1.05": lambda im: ImageEnhance.Brightness(im).enhance(1.05),
    "grey PNG": lambda im: im.convert("L"),
}


def test_dct_matrix_is_orthonormal_and_matches_scipy():
    from scipy.fft import dct

    c = _dct_matrix(32)
    np.testing.assert_allclose(c @ c.T, np.eye(32), atol=1e-12)
    x = np.random.default_rng(0).normal(size=32)
    np.testing.assert_allclose(c @ x, dct(x, norm="ortho"), atol=1e-10)


@pytest.mark.parametrize("name", sorted(COPIES))
def test_altered_copies_are_within_the_threshold(name):
    for img in _images(12):
        d = hamming(perceptual_hash(img), perceptual_hash(COPIES[name](img)))
        assert d <= NEAR_THRESHOLD, f"{name}: {d} bits"


def test_distinct_images_are_far_outside_the_threshold():
    imgs = _images(24)
    hashes = [perceptual_hash(im) for im in imgs]
    dists = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    assert min(dists) > 2 * NEAR_THRESHOLD, min(dists)
    noise = [Image.fromarray(np.random.default_rng(k).integers(0, 256, (40, 40), dtype=np.uint8)) for k in range(24)]
    nh = [perceptual_hash(im) for im in noise]
    assert near_pairs(hashes + nh) == []


def test_near_pairs_matches_brute_force():
    rng = np.random.default_rng(1)
    base = [int(x) for x in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes: list[int | None] = base + [base[3] ^ 0b1011, base[7] ^ (1 << 62), None, base[3]]
    brute = sorted((i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                   if hashes[i] is not None and hashes[j] is not None and hamming(hashes[i], hashes[j]) <= NEAR_THRESHOLD)
    assert near_pairs(hashes, chunk=7) == brute
    assert (3, 40) in brute and (7, 41) in brute and (3, 43) in brute


def test_phash_of_a_flat_image_is_defined():
    grey = perceptual_hash(Image.new("RGB", (30, 20), (10, 10, 10)))
    assert grey == perceptual_hash(Image.new("L", (64, 64), 200)) == 1  # the DC bit only
    assert hamming(grey, perceptual_hash(Image.new("L", (16, 16), 0))) <= NEAR_THRESHOLD
