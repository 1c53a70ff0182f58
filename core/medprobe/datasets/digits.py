"""``digits``: scikit-learn's bundled handwritten digits (real images, not medical).

1797 grey 8 x 8 images of the digits 0 to 9 (about 180 per class), shipped inside
scikit-learn, so it works offline. Pixel values 0..16 are scaled to 0..255 and each image is
resampled (bilinear) to ``size x size`` (default 64) so that model preprocessing has something
to work with. No official split: seeded, stratified 70 / 15 / 15. Sample ids are the row
numbers (``0000`` .. ``1796``).
"""

from __future__ import annotations

import numpy as np

from .base import ArrayDataset, Sample
from .errors import DatasetSpecError


def digits(location: str = "", size: int = 64) -> ArrayDataset:
    """Load sklearn's digits (see the module doc)."""
    if location:
        raise DatasetSpecError(f"digits takes no location (got 'digits:{location}'); use 'digits' or 'digits?size=64'")
    if not 8 <= size <= 1024:
        raise DatasetSpecError(f"digits: size must be between 8 and 1024 px, got {size}")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(np.asarray(bunch.images, dtype=np.float64) * (255.0 / 16.0)).astype(np.uint8)
    targets = np.asarray(bunch.target, dtype=np.int64)
    samples = []
    index = {}
    for row, lab in enumerate(targets.tolist()):
        sid = f"{row:04d}"
        samples.append(Sample(sid, int(lab), None, None, f"sklearn.datasets.load_digits()[{row}]"))
        index[sid] = ("images", row)
    return ArrayDataset(
        "digits",
        [str(d) for d in range(10)],
        samples,
        arrays={"images": images},
        index=index,
        resize=None if size == 8 else size,
        location="",
        notes=["scikit-learn digits: real handwritten digits, not medical images"],
    )
