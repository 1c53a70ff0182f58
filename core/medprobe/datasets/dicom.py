"""DICOM files to display-ready images (optional extra: ``pip install 'medprobe[dicom]'``).

The conversion follows the DICOM pixel pipeline:

1. stored values -> modality values: ``value * RescaleSlope + RescaleIntercept`` (e.g. CT
   Hounsfield units); defaults slope 1, intercept 0;
2. VOI windowing from the header's ``WindowCenter`` / ``WindowWidth`` (the first pair when the
   header lists several), with the linear function of DICOM PS3.3 C.11.2.1.2 (``LINEAR_EXACT``
   honoured); without a window, the modality values' min-max range is used;
3. ``MONOCHROME1`` (0 = white) is inverted so that higher means brighter, like ``MONOCHROME2``.

Multi-frame files use their first frame. Colour files (``SamplesPerPixel`` = 3) are returned as
RGB, scaled by their bit range. Compressed transfer syntaxes need pydicom's decoder plugins
(pylibjpeg, gdcm); without them the file is reported as a bad sample with pydicom's reason.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .pixels import ImageDecodeError, check_pixel_limit, scale_to_uint8


def _first(value, default: float) -> float:
    """A DICOM (possibly multi-valued) numeric element as one float."""
    if value is None or value == "":
        return default
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return default


def window(values: np.ndarray, center: float, width: float, exact: bool = False) -> np.ndarray:
    """Map modality ``values`` (any shape) through a VOI window to floats in [0, 1] (same shape)."""
    if exact:
        lo, hi = center - width / 2.0, center + width / 2.0
        return np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    width = max(width, 1.0)
    # PS3.3 C.11.2.1.2.1: y = ((x - (c - 0.5)) / (w - 1) + 0.5), clipped to the output range
    return np.clip((values - (center - 0.5)) / max(width - 1.0, 1e-12) + 0.5, 0.0, 1.0)


def read_dicom(path: Path) -> Image.Image:
    """Read one DICOM file as an ``"L"`` (grey, H x W) or ``"RGB"`` (H x W x 3) PIL image."""
    try:
        import pydicom
    except ImportError:
        raise ImageDecodeError(
            "is a DICOM file but pydicom is not installed (pip install 'medprobe[dicom]')"
        ) from None
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:  # pydicom raises InvalidDicomError and plain errors on bad headers
        raise ImageDecodeError(f"not a readable DICOM file: {exc}") from None
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM file has no pixel data")
    check_pixel_limit(int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0))
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise ImageDecodeError(f"cannot decode DICOM pixel data (transfer syntax {syntax}): {exc}") from None
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    frames = int(_first(getattr(ds, "NumberOfFrames", 1), 1.0))
    if frames > 1:
        arr = arr[0]
    if samples == 3:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageDecodeError(f"colour DICOM with unexpected pixel array shape {arr.shape}")
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        return Image.fromarray(scale_to_uint8(arr, bits))
    if arr.ndim != 2:
        raise ImageDecodeError(f"grey DICOM with unexpected pixel array shape {arr.shape}")
    slope = _first(getattr(ds, "RescaleSlope", None), 1.0)
    intercept = _first(getattr(ds, "RescaleIntercept", None), 0.0)
    values = arr.astype(np.float64) * slope + intercept
    center = _first(getattr(ds, "WindowCenter", None), float("nan"))
    width = _first(getattr(ds, "WindowWidth", None), float("nan"))
    if np.isfinite(center) and np.isfinite(width) and width > 0:
        exact = str(getattr(ds, "VOILUTFunction", "LINEAR")).upper() == "LINEAR_EXACT"
        unit = window(values, center, width, exact=exact)
    else:
        lo, hi = float(values.min()), float(values.max())
        unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        unit = 1.0 - unit
    return Image.fromarray(np.round(unit * 255.0).astype(np.uint8))
