"""Pixel arrays: the bit-range scaling to 8 bits, the non-finite check and the pixel limit.

Shared by the image readers (:mod:`.imageio`, :mod:`.dicom`) and the array datasets; the rules
are documented in :mod:`.imageio` and docs/datasets.md.
"""

from __future__ import annotations

import os

import numpy as np

#: default largest image (width x height) read; ``MEDPROBE_MAX_PIXELS`` overrides it
DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "MEDPROBE_MAX_PIXELS"
_LIMIT_HINT = f"a decompression bomb or a huge scan; set {MAX_PIXELS_ENV} to read larger images"


class ImageDecodeError(ValueError):
    """A file cannot be used as an image; the message is the reason (the caller adds the path)."""


def max_pixels() -> int:
    """The pixel limit: ``MEDPROBE_MAX_PIXELS`` (a positive integer) or :data:`DEFAULT_MAX_PIXELS`."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        from .errors import DatasetSpecError

        raise DatasetSpecError(f"{MAX_PIXELS_ENV}={os.environ[MAX_PIXELS_ENV]!r} is not a positive number of pixels (e.g. 100000000)")
    return value


def check_pixel_limit(width: int, height: int) -> None:
    """Raise :class:`ImageDecodeError` when ``width x height`` exceeds :func:`max_pixels`."""
    limit = max_pixels()
    if width * height > limit:
        raise ImageDecodeError(
            f"image is {width}x{height} px ({width * height / 1e6:.3g} Mpx), above the {limit / 1e6:g} Mpx limit "
            f"({_LIMIT_HINT})"
        )


def check_finite(arr: np.ndarray) -> None:
    """Raise :class:`ImageDecodeError` when a float array holds NaN or +-Inf values."""
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        finite = np.isfinite(arr)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            nan = int(np.count_nonzero(np.isnan(arr)))
            raise ImageDecodeError(
                f"{bad} of {finite.size} pixel values are not finite ({nan} NaN, {bad - nan} +-Inf); "
                "fix or drop the image (--skip-bad records it as skipped)"
            )


def bit_range(max_value: float, significant_bits: int | None = None) -> int:
    """The number of bits the data uses: ``significant_bits`` if given and no value exceeds it
    (a writer that scaled the data up to the full sample depth, as the PNG spec asks, is read by
    the inferred range instead), else inferred.

    Inferred = bits needed for ``max_value``, rounded up to an even number in [8, 16]
    (values above 65535 use their exact bit length).
    """
    if significant_bits and max_value <= 2 ** int(significant_bits) - 1:
        return int(significant_bits)
    needed = int(max(max_value, 0)).bit_length()
    if needed <= 8:
        return 8
    if needed <= 16:
        return needed + (needed % 2)
    return needed


def scale_to_uint8(arr: np.ndarray, significant_bits: int | None = None) -> np.ndarray:
    """Scale an integer, bool or float array to uint8 (same shape) by its bit range (module doc)."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.size == 0:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.floating):
        check_finite(arr)
        data = arr.astype(np.float64)
        lo, hi = float(data.min()), float(data.max())
        if lo >= 0.0 and hi <= 1.0:
            return np.round(data * 255.0).astype(np.uint8)
        return _minmax(data, lo, hi)
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0:
        return _minmax(arr.astype(np.float64), float(lo), float(hi))
    top = float(2 ** bit_range(hi, significant_bits) - 1)
    return np.round(np.clip(arr.astype(np.float64), 0, top) * (255.0 / top)).astype(np.uint8)


def _minmax(data: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if hi <= lo:
        return np.zeros(data.shape, dtype=np.uint8)
    return np.round((data - lo) * (255.0 / (hi - lo))).astype(np.uint8)
