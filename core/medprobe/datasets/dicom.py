"""DICOM files to display-ready images (optional extra: ``pip install 'medprobe[dicom]'``).

The conversion follows the DICOM pixel pipeline:

1. stored values -> modality values: the Modality LUT Sequence when present (pydicom's
   ``apply_modality_lut``), else ``value * RescaleSlope + RescaleIntercept`` (e.g. CT Hounsfield
   units; defaults slope 1, intercept 0);
2. VOI windowing from the header's ``WindowCenter`` / ``WindowWidth`` (the first pair when the
   header lists several), with the linear function of DICOM PS3.3 C.11.2.1.2 (``LINEAR_EXACT``
   honoured); else a VOI LUT Sequence (pydicom's ``apply_voi_lut``, scaled by the LUT's output
   bit depth); without either, the modality values' min-max range is used;
3. ``MONOCHROME1`` (0 = white) is inverted so that higher means brighter, like ``MONOCHROME2``.

Enhanced multi-frame objects (enhanced CT / MR) keep the rescale and window of step 1-2 in the
functional groups (Pixel Value Transformation and Frame VOI LUT sequences, shared or of the
frame); they are read from there when the top-level elements are absent.

Multi-frame files use their first frame (frame 0; the same pixels as the single-frame copy of
that frame). Colour files (``SamplesPerPixel`` = 3; YBR encodings are converted to RGB by
pydicom) are returned as RGB, scaled by their bit range (16-bit: /257, 32-bit by its stored
bits). ``PALETTE COLOR`` images go through their palette (pydicom's ``apply_color_lut``) to RGB,
scaled by the palette's entry bit depth. A file without the 128-byte preamble and ``DICM``
prefix (legacy, no file meta) is read with ``force`` and decoded in the transfer syntax it was
read in. Segmentation objects (``SEG``) are label masks, not images, and are refused.
Compressed transfer syntaxes need a decoder (Pillow decodes JPEG baseline and JPEG 2000;
JPEG lossless / JPEG-LS need pylibjpeg or gdcm); without one the file is reported as a bad
sample naming the transfer syntax and pydicom's reason.
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


def _dcmread(path: Path):
    """pydicom's dataset of ``path``; a legacy file without preamble / file meta is read with
    ``force`` and given the transfer syntax it was parsed in (so its pixels can be decoded)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path))
    except InvalidDicomError as first:
        try:
            ds = pydicom.dcmread(str(path), force=True)
        except Exception:
            raise ImageDecodeError(f"not a readable DICOM file: {first}") from None
        if "PixelData" not in ds or "Rows" not in ds:
            raise ImageDecodeError(f"not a readable DICOM file: {first}") from None
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

        implicit, little = ds.original_encoding
        meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        if "TransferSyntaxUID" not in meta:
            meta.TransferSyntaxUID = (
                ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
            )
        ds.file_meta = meta
        return ds
    except Exception as exc:  # pydicom raises plain errors on bad headers
        raise ImageDecodeError(f"not a readable DICOM file: {exc}") from None


def _functional(ds, sequence: str, keyword: str):
    """``keyword`` from the functional groups of frame 0 (per-frame first, then shared), or None."""
    for groups in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        items = getattr(ds, groups, None)
        if not items:
            continue
        inner = getattr(items[0], sequence, None)
        if inner and keyword in inner[0]:
            return getattr(inner[0], keyword)
    return None


def _element(ds, keyword: str, sequence: str):
    """A top-level element, else the enhanced multi-frame functional-group copy of it."""
    value = getattr(ds, keyword, None)
    return value if value not in (None, "") else _functional(ds, sequence, keyword)


def _palette_rgb(ds, arr: np.ndarray) -> Image.Image:
    """A ``PALETTE COLOR`` frame (H, W) through its palette -> RGB.

    pydicom 3.0's ``apply_color_lut`` reads plain (non-segmented) 16-bit palette data in the
    machine's byte order; in an Explicit VR Big Endian file that gives a palette whose every
    entry is byte-swapped (a near-black image; the big-endian copy of OBXXXX1A in pydicom-data
    shows it). The palette words are swapped to little-endian first, so both files decode alike.
    """
    from pydicom.pixels import apply_color_lut

    if ds.original_encoding[1] is False:
        for colour in ("Red", "Green", "Blue"):
            key = f"{colour}PaletteColorLookupTableData"
            data = getattr(ds, key, None)
            if isinstance(data, bytes) and len(data) % 2 == 0:
                setattr(ds, key, np.frombuffer(data, dtype=">u2").astype("<u2").tobytes())
    try:
        rgb = np.asarray(apply_color_lut(arr, ds))
    except Exception as exc:
        raise ImageDecodeError(f"PALETTE COLOR DICOM whose palette cannot be applied: {exc}") from None
    descriptor = getattr(ds, "RedPaletteColorLookupTableDescriptor", None)
    bits = int(descriptor[2]) if descriptor is not None and len(descriptor) == 3 else (16 if rgb.dtype != np.uint8 else 8)
    return Image.fromarray(scale_to_uint8(rgb, bits))


def read_dicom(path: Path) -> Image.Image:
    """Read one DICOM file as an ``"L"`` (grey, H x W) or ``"RGB"`` (H x W x 3) PIL image."""
    try:
        import pydicom  # noqa: F401
    except ImportError:
        raise ImageDecodeError(
            "is a DICOM file but pydicom is not installed (pip install 'medprobe[dicom]')"
        ) from None
    ds = _dcmread(path)
    if "PixelData" not in ds:
        raise ImageDecodeError("DICOM file has no pixel data")
    if str(getattr(ds, "Modality", "")).upper() == "SEG":
        raise ImageDecodeError("is a DICOM Segmentation (Modality SEG): a label mask, not an image to classify; leave it out of the image folder or manifest")
    check_pixel_limit(int(getattr(ds, "Columns", 0) or 0), int(getattr(ds, "Rows", 0) or 0))
    frames = int(_first(getattr(ds, "NumberOfFrames", 1), 1.0))
    try:
        if frames > 1:  # decode frame 0 only (a cine loop or volume may hold hundreds)
            from pydicom.pixels import pixel_array

            arr = np.asarray(pixel_array(ds, index=0))
        else:
            arr = np.asarray(ds.pixel_array)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        hint = ""
        if getattr(syntax, "is_compressed", False):
            hint = (f" {syntax.name}: compressed pixel data that needs a decoder (JPEG lossless / JPEG-LS: pip install "
                    "pylibjpeg pylibjpeg-libjpeg, or python-gdcm)")
        reason = " ".join(str(exc).split())  # pydicom lists missing plugins on several lines: keep one line
        raise ImageDecodeError(f"cannot decode DICOM pixel data (transfer syntax {syntax}){hint}: {reason}") from None
    samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples == 3:
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ImageDecodeError(f"colour DICOM with unexpected pixel array shape {arr.shape}")
        bits = int(getattr(ds, "BitsStored", 8) or 8)
        return Image.fromarray(scale_to_uint8(arr, bits))
    if arr.ndim != 2:
        raise ImageDecodeError(f"grey DICOM with unexpected pixel array shape {arr.shape}")
    if photometric == "PALETTE COLOR":
        return _palette_rgb(ds, arr)
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        values = np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    else:
        slope = _first(_element(ds, "RescaleSlope", "PixelValueTransformationSequence"), 1.0)
        intercept = _first(_element(ds, "RescaleIntercept", "PixelValueTransformationSequence"), 0.0)
        values = arr.astype(np.float64) * slope + intercept
    center = _first(_element(ds, "WindowCenter", "FrameVOILUTSequence"), float("nan"))
    width = _first(_element(ds, "WindowWidth", "FrameVOILUTSequence"), float("nan"))
    if np.isfinite(center) and np.isfinite(width) and width > 0:
        function = _element(ds, "VOILUTFunction", "FrameVOILUTSequence") or "LINEAR"
        unit = window(values, center, width, exact=str(function).upper() == "LINEAR_EXACT")
    elif "VOILUTSequence" in ds:
        unit = _voi_lut(ds, values)
    else:
        lo, hi = float(values.min()), float(values.max())
        unit = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        unit = 1.0 - unit
    return Image.fromarray(np.round(unit * 255.0).astype(np.uint8))


def _voi_lut(ds, values: np.ndarray) -> np.ndarray:
    """The first VOI LUT of ``ds`` applied to modality ``values``, as floats in [0, 1] (the LUT's
    output range is 0 .. 2**bits - 1, bits from its LUT Descriptor)."""
    from pydicom.pixels import apply_voi_lut

    item = ds.VOILUTSequence[0]
    descriptor = getattr(item, "LUTDescriptor", None)
    if descriptor is None or len(descriptor) != 3:
        raise ImageDecodeError("VOI LUT Sequence item without a 3-value LUT Descriptor")
    out = np.asarray(apply_voi_lut(values.round().astype(np.int64), ds, index=0, prefer_lut=True), dtype=np.float64)
    return np.clip(out / float(2 ** int(descriptor[2]) - 1), 0.0, 1.0)
