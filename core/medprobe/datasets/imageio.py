"""Reading image files and converting any pixel format to 8-bit RGB.

Every loader hands images out through :func:`to_rgb`, so grayscale, palette, RGBA, 16-bit
PNG/TIFF and DICOM all come out as ``PIL.Image.Image`` in mode ``"RGB"`` (H x W x 3, uint8).
Resizing and normalisation stay in the model adapters.

High bit depths are scaled by their *bit range*, not by 255 and not per-image min-max:

- a PNG ``sBIT`` chunk, when present, gives the significant bits (e.g. 12 for a 12-bit X-ray
  stored in 16 bits), so values are divided by ``2**12 - 1`` (unless a value exceeds that range:
  then the writer scaled the data to the full depth and the inferred range applies);
- otherwise the bit range is inferred from the largest value, rounded up to an even number of
  bits between 8 and 16 (10, 12, 14, 16 are the depths scanners write): a 16-bit file whose
  maximum is 3000 is read as 12-bit data and divided by 4095;
- 16-bit colour PNG / TIFF files (48-bit RGB, 64-bit RGBA, 32-bit grey + alpha), for which
  Pillow has no full-depth mode and would keep only the high byte, are decoded at full depth
  (the file is decoded twice, once for each byte of every sample) and scaled by their bit range
  like grey images: 12-bit values (4000, 2000, 1000) become (249, 125, 62), not (15, 7, 3);
- float images in [0, 1] are multiplied by 255; other floats and signed images with negative
  values are scaled by their min-max range. A float image holding NaN or +-Inf is a bad sample
  (never silently turned into black pixels).

**Pixel limit.** A file whose header announces more than :func:`max_pixels` pixels (default
:data:`DEFAULT_MAX_PIXELS` = 64 Mpx, e.g. 8000 x 8000; set ``MEDPROBE_MAX_PIXELS`` to change it) is
a bad sample naming its size, refused before its pixels are decoded (a small file can announce a
huge image: a decompression bomb).

Alpha is composited onto black (the background of medical images); palette images are expanded.
DICOM files (``.dcm``/``.dicom`` or the ``DICM`` magic) are read by :mod:`.dicom` (needs the
optional ``pydicom``).
"""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .pixels import (  # noqa: F401  (re-exported: the pixel rules are part of this module's contract)
    _LIMIT_HINT,
    DEFAULT_MAX_PIXELS,
    MAX_PIXELS_ENV,
    ImageDecodeError,
    bit_range,
    check_finite,
    check_pixel_limit,
    max_pixels,
    scale_to_uint8,
)

#: file extensions the folder loaders treat as images (lower case)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm", ".dicom"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
#: images whose shorter side is below this many pixels are rejected as bad samples
MIN_SIDE = 8
#: Pillow modes of colour images (a 16-bit raw mode for one of them is read at full depth or refused)
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "CMYK", "LA", "PA", "YCbCr", "LAB", "HSV")
#: Pillow raw modes of 16-bit colour samples (kept as their high byte by Pillow) -> the raw mode
#: that unpacks the other byte of each sample
_HIGH_LOW_RAWMODES = {
    "RGB;16B": "RGB;16L",
    "RGB;16L": "RGB;16B",
    "RGBA;16B": "RGBA;16L",
    "RGBA;16L": "RGBA;16B",
    "RGBX;16B": "RGBX;16L",
    "RGBX;16L": "RGBX;16B",
}


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
    """The significant bits of the grey or colour channels (the largest of R, G, B) from a PNG
    ``sBIT`` chunk, or ``None`` if absent."""
    try:
        with open(path, "rb") as fh:
            if fh.read(8) != b"\x89PNG\r\n\x1a\n":
                return None
            colour_type = 0
            while True:
                header = fh.read(8)
                if len(header) < 8:
                    return None
                length, ctype = struct.unpack(">I4s", header)
                if ctype == b"IHDR":
                    data = fh.read(length)
                    colour_type = data[9] if len(data) >= 10 else 0
                    fh.seek(4, 1)
                    continue
                if ctype == b"sBIT":
                    data = fh.read(length)
                    channels = data[:3] if colour_type in (2, 6) else data[:1]
                    return int(max(channels)) if channels else None
                if ctype in (b"IDAT", b"IEND"):
                    return None
                fh.seek(length + 4, 1)  # chunk data + CRC
    except OSError:
        return None


def read_image(path: Path) -> Image.Image:
    """Open and fully decode ``path`` (any mode, EXIF orientation applied).

    Raises :class:`ImageDecodeError` with the reason for unreadable (permission denied), empty,
    truncated, corrupt, too large (:func:`max_pixels`) or non-image files, and for float images
    holding NaN / Inf. The returned image keeps its own mode (use :func:`to_rgb` for model
    input), except 16-bit colour files, which have no Pillow mode: they come back as 8-bit
    ``"RGB"`` / ``"RGBA"`` already scaled by their bit range, with ``info["source_mode"]`` (e.g.
    ``"RGB;16"``). A 16-bit PNG with an ``sBIT`` chunk carries it in
    ``image.info["significant_bits"]``.
    """
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        fh = open(path, "rb")
    except PermissionError:
        raise ImageDecodeError("permission denied: the file cannot be opened for reading (fix its permissions, e.g. chmod a+r)") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
    with fh:
        try:
            head = fh.read(132)
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
        if path.suffix.lower() in DICOM_EXTENSIONS or (not path.suffix and len(head) == 132 and head[128:] == b"DICM"):
            from .dicom import read_dicom

            return read_dicom(path)
        img = _decode(fh, path, size)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not make a readable image unusable
        pass
    if img.mode.startswith("I;16") and path.suffix.lower() == ".png":
        bits = png_significant_bits(path)
        if bits:
            img.info["significant_bits"] = bits
    if img.mode == "F":
        check_finite(np.asarray(img))
    return img


def _open(fh, path: Path, size: int) -> Image.Image:
    fh.seek(0)
    try:
        opened = Image.open(fh)
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"not an image: Pillow cannot identify the file format ({size} bytes, extension '{path.suffix}')"
        ) from None
    if getattr(opened, "n_frames", 1) > 1:
        opened.seek(0)  # multi-frame TIFF/GIF: the first frame
    check_pixel_limit(*opened.size)
    return opened


def _rawmode(opened: Image.Image) -> str | None:
    """The raw mode of a single-tile image (tiles are ``(codec, extents, offset, args)``)."""
    if len(opened.tile) != 1 or len(opened.tile[0]) < 4:
        return None
    args = opened.tile[0][3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(opened: Image.Image, rawmode: str) -> None:
    tile = opened.tile[0]
    args = tile[3]
    args = rawmode if isinstance(args, str) else (rawmode, *args[1:])
    fields = (tile[0], tile[1], tile[2], args, *tile[4:])
    opened.tile = [type(tile)(*fields) if hasattr(tile, "_fields") else fields]


def _decode(fh, path: Path, size: int) -> Image.Image:
    try:
        opened = _open(fh, path, size)
        raw = _rawmode(opened)
        if raw in _HIGH_LOW_RAWMODES or raw == "LA;16B":
            return _decode_16bit_colour(fh, path, size, opened, raw)
        if raw and ";16" in raw and opened.mode in _COLOUR_MODES:
            # another 16-bit colour layout (premultiplied alpha, CMYK, ...): Pillow would keep only the
            # high byte of each sample, so refuse rather than guess
            opened.close()
            raise ImageDecodeError(
                f"16-bit colour layout {raw} cannot be read at full depth; save the image as 16-bit RGB or RGBA "
                "(or 8-bit)"
            )
        with opened:
            opened.load()
            return opened.copy()  # detached from the file, which the caller closes
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own limit (twice its MAX_IMAGE_PIXELS) hit first
        found = re.search(r"\((\d+) pixels\)", str(exc))
        count = f"{int(found.group(1)) / 1e6:.3g} Mpx" if found else "too many pixels"
        raise ImageDecodeError(
            f"image has {count}, above the {max_pixels() / 1e6:g} Mpx limit and Pillow's decompression-bomb limit "
            f"({_LIMIT_HINT}; Pillow's is PIL.Image.MAX_IMAGE_PIXELS)"
        ) from None
    except PermissionError:
        raise ImageDecodeError("permission denied while reading the file (fix its permissions, e.g. chmod a+r)") from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        reason = str(exc) or type(exc).__name__
        if "truncated" in reason.lower():
            raise ImageDecodeError(f"truncated image data: {reason}") from None
        raise ImageDecodeError(f"corrupt image data: {reason}") from None


def _decode_16bit_colour(fh, path: Path, size: int, opened: Image.Image, raw: str) -> Image.Image:
    """Full-depth decode of a 16-bit colour file: one pass per byte of each 16-bit sample."""
    if raw == "LA;16B":  # grey + alpha, 2 x 16 bits: read each pixel as one big-endian 32-bit integer
        with opened:
            _with_rawmode(opened, "I;32B")
            if hasattr(opened, "_mode"):  # Pillow >= 10.1: ``mode`` is a read-only property
                opened._mode = "I"
            else:  # pragma: no cover - older Pillow
                opened.mode = "I"
            opened.load()
            packed = np.asarray(opened).astype(np.uint32)
        grey, alpha = (packed >> 16).astype(np.uint16), (packed & 0xFFFF).astype(np.uint16)
        planes = np.dstack([grey, alpha])
        channels = "LA"
    else:
        with opened:
            opened.load()
            first = np.asarray(opened)
        second_img = _open(fh, path, size)
        with second_img:
            _with_rawmode(second_img, _HIGH_LOW_RAWMODES[raw])
            second_img.load()
            second = np.asarray(second_img)
        # the file's own raw mode unpacks the most significant byte of each sample (for either byte
        # order); the swapped one unpacks the least significant byte
        planes = first.astype(np.uint16) * 256 + second.astype(np.uint16)
        channels = opened.mode
    bits = png_significant_bits(path) if path.suffix.lower() == ".png" else None
    colour = planes[..., :1] if channels == "LA" else planes[..., :3]
    out = scale_to_uint8(colour, bits)
    if channels == "LA":
        out = np.repeat(out, 3, axis=2)
    if channels in ("RGBA", "LA"):
        alpha = scale_to_uint8(planes[..., -1:], 16)
        img = Image.fromarray(np.ascontiguousarray(np.concatenate([out, alpha], axis=2)), "RGBA")
        img.info["source_mode"] = "LA;16" if channels == "LA" else "RGBA;16"
    else:
        img = Image.fromarray(np.ascontiguousarray(out), "RGB")
        img.info["source_mode"] = "RGB;16"
    if bits:
        img.info["significant_bits"] = bits
    return img


def check_size(img: Image.Image, min_side: int = MIN_SIDE) -> None:
    """Raise :class:`ImageDecodeError` for images smaller than ``min_side`` on either side."""
    w, h = img.size
    if min(w, h) < min_side:
        raise ImageDecodeError(f"image is {w}x{h} px, smaller than the {min_side} px minimum side")


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
