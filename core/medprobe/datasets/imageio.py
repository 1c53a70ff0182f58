"""Reading image files and converting any pixel format to 8-bit RGB.

Every loader hands images out through :func:`to_rgb`, so grayscale, palette, RGBA, 16-bit
PNG/TIFF and DICOM all come out as ``PIL.Image.Image`` in mode ``"RGB"`` (H x W x 3, uint8).
Resizing and normalisation stay in the model adapters.

High bit depths are scaled by their *bit range*, not by 255 and not per-image min-max:

- a PNG ``sBIT`` chunk, when present, gives the significant bits (e.g. 12 for a 12-bit X-ray
  stored in 16 bits), so values are divided by ``2**12 - 1``;
- otherwise the bit range is inferred from the largest value, rounded up to an even number of
  bits between 8 and 16 (10, 12, 14, 16 are the depths scanners write): a 16-bit file whose
  maximum is 3000 is read as 12-bit data and divided by 4095;
- float images in [0, 1] are multiplied by 255; other floats and signed images with negative
  values are scaled by their min-max range.

Alpha is composited onto black (the background of medical images); palette images are expanded.
DICOM files (``.dcm``/``.dicom`` or the ``DICM`` magic) are read by :mod:`.dicom` (needs the
optional ``pydicom``).
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: file extensions the folder loaders treat as images (lower case)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
#: images whose shorter side is below this many pixels are rejected as bad samples
MIN_SIDE = 8


class ImageDecodeError(ValueError):
    """A file cannot be used as an image; the message is the reason (the caller adds the path)."""


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_dicom(path: Path) -> bool:
    """DICOM by extension, or by the ``DICM`` magic at byte 128 (extension-less DICOM files)."""
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def png_significant_bits(path: Path) -> int | None:
    """The grey-channel significant bits from a PNG ``sBIT`` chunk, or ``None`` if absent."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            while True:
                header = fh.read(8)
                if len(header) < 8:
                    return None
                length, ctype = struct.unpack(">I4s", header)
                if ctype == b"sBIT":
                    data = fh.read(length)
                    return int(data[0]) if data else None
                if ctype in (b"IDAT", b"IEND"):
                    return None
                fh.seek(length + 4, 1)  # chunk data + CRC
    except OSError:
        return None


def read_image(path: Path) -> Image.Image:
    """Open and fully decode ``path`` (any mode, EXIF orientation applied).

    Raises :class:`ImageDecodeError` with the reason for empty, truncated, corrupt or non-image
    files. The returned image keeps its own mode; use :func:`to_rgb` for model input. A 16-bit
    PNG with an ``sBIT`` chunk carries it in ``image.info["significant_bits"]``.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    if is_dicom(path):
        from .dicom import read_dicom

        return read_dicom(path)
    try:
        with Image.open(path) as opened:
            if getattr(opened, "n_frames", 1) > 1:
                opened.seek(0)  # multi-frame TIFF/GIF: the first frame
            opened.load()
            img = opened.copy()  # detached from the file, which is closed here
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"not an image: Pillow cannot identify the file format ({size} bytes, extension '{path.suffix}')"
        ) from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(f"too many pixels ({exc})") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason:
            raise ImageDecodeError(f"truncated image data: {reason}") from None
        raise ImageDecodeError(f"corrupt image data: {reason}") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a readable image unusable
        pass
    if img.mode.startswith("I;16") and path.suffix.lower() == ".png":
        bits = png_significant_bits(path)
        if bits:
            img.info["significant_bits"] = bits
    return img


def check_size(img: Image.Image, min_side: int = MIN_SIDE) -> None:
    """Raise :class:`ImageDecodeError` for images smaller than ``min_side`` on either side."""
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageDecodeError(f"image is {w}x{h} px, smaller than the {min_side} px minimum side")


def bit_range(max_value: float, significant_bits: int | None = None) -> int:
    """The number of bits the data uses: ``significant_bits`` if given, else inferred.

    Inferred = bits needed for ``max_value``, rounded up to an even number in [8, 16]
    (values above 65535 use their exact bit length).
    """
    if significant_bits:
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
        data = np.nan_to_num(arr.astype(np.float64))
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


def array_to_image(arr: np.ndarray, significant_bits: int | None = None) -> Image.Image:
    """A numpy image ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` as an RGB PIL image."""
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(scale_to_uint8(a, significant_bits)).convert("RGB")
    if a.ndim == 3 and a.shape[2] in (3, 4):
        rgb = scale_to_uint8(a[:, :, :3], significant_bits)
        if a.shape[2] == 4:
            alpha = scale_to_uint8(a[:, :, 3]).astype(np.float32) / 255.0
            rgb = np.round(rgb.astype(np.float32) * alpha[:, :, None]).astype(np.uint8)
        return Image.fromarray(np.ascontiguousarray(rgb))
    raise ImageDecodeError(f"unsupported image array shape {tuple(a.shape)} (expected H x W or H x W x 1/3/4)")


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL image to 8-bit RGB (see the module doc for bit depths and alpha)."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "F") or mode.startswith("I;16"):
        return array_to_image(np.asarray(img), img.info.get("significant_bits"))
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode == "PA":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def pixel_hash(img: Image.Image) -> str:
    """sha256 over mode, size and decoded pixels: equal for exact duplicates whatever the file name,
    container metadata or PNG compression level."""
    h = hashlib.sha256()
    h.update(f"{img.mode}|{img.size[0]}x{img.size[1]}|".encode())
    h.update(img.tobytes())
    return h.hexdigest()


def array_hash(arr: np.ndarray) -> str:
    """sha256 over dtype, shape and bytes of a numpy image."""
    a = np.ascontiguousarray(arr)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
    return h.hexdigest()
