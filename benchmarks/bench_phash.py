"""The near-duplicate threshold of medprobe.datasets.groups, measured (docs/datasets.md).

    PYTHONPATH=core:plugins:zoo OMP_NUM_THREADS=1 python benchmarks/bench_phash.py

Prints the Hamming distances of altered copies (resized, brightened, JPEG) of synthetic lesion
images to their originals, the smallest distance between distinct images, the digits clusters at
4 and 6 bits, and the time of the all-pairs comparison of 6,000 hashes.
"""

from __future__ import annotations

import io
import time
from collections import Counter

import numpy as np
from PIL import Image, ImageEnhance

from medprobe.datasets import open_dataset
from medprobe.datasets.groups import duplicate_clusters, hamming, near_pairs, perceptual_hash


def copies(im: Image.Image) -> list[Image.Image]:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=60)
    return [
        im.resize((im.width // 2, im.height // 2), Image.Resampling.BILINEAR),
        im.resize((im.width * 7 // 5, im.height * 7 // 5), Image.Resampling.BICUBIC),
        ImageEnhance.Brightness(im).enhance(1.1),
        ImageEnhance.Brightness(im).enhance(0.9),
        Image.fromarray(np.clip(np.asarray(im).astype(int) + 15, 0, 255).astype(np.uint8)),
        Image.open(io.BytesIO(buf.getvalue())),
    ]


def main() -> None:
    lesions = open_dataset("synthetic:lesions?n=200&size=160")
    dist: Counter[int] = Counter()
    hashes = []
    for s in lesions.samples:
        im = lesions.load_image(s)
        h = perceptual_hash(im)
        hashes.append(h)
        dist.update(hamming(h, perceptual_hash(c)) for c in copies(im))
    print("altered copies, bits -> count:", dict(sorted(dist.items())), "of", sum(dist.values()))
    pairs = [hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1 :]]
    print(f"distinct lesion images: {len(pairs)} pairs, min distance {min(pairs)} bits")
    digits = open_dataset("digits")
    for th in (4, 6):
        p = near_pairs([digits.scans[s.id].phash for s in digits.samples], th)
        cl = duplicate_clusters(digits.samples, digits.scans, th)
        same = all(digits.samples[i].label == digits.samples[j].label for i, j in p)
        print(f"digits at {th} bits: {len(p)} pairs, {len(cl)} clusters (largest {max(len(c.ids) for c in cl)}), "
              f"all pairs the same digit: {same}")
    rand = [int(x) for x in np.random.default_rng(0).integers(0, 2**63, 6000)]
    t = time.perf_counter()
    near_pairs(rand)
    print(f"all pairs of 6,000 hashes: {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
