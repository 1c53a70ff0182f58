"""Builders of bad inputs for the fault suite (every file is written into a test's tmp folder).

Each builder writes the smallest input that shows one fault kind; images are a few pixels wide
(the 100-Mpx bomb is a 97 KB file: its pixels are never decoded). Helpers to run the real
``medprobe`` entry point and to checksum folders live here too (see ``conftest.py``).
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

_seed = iter(range(10**9))


def noise(w: int = 16, h: int = 12, channels: int = 1) -> np.ndarray:
    """Distinct random uint8 pixels, (H, W) or (H, W, C)."""
    rng = np.random.default_rng(next(_seed))
    shape = (h, w) if channels == 1 else (h, w, channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def png(path: Path, arr: np.ndarray | None = None, **save) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise() if arr is None else arr).save(path, format=save.pop("format", "PNG"), **save)
    return path


def image_folder(root: Path, counts: dict[str, int] | None = None) -> Path:
    """``root/<class>/ok_<i>.png`` with distinct noise images (default 3 per class a and b)."""
    for cls, n in (counts or {"a": 3, "b": 3}).items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            png(root / cls / f"ok_{i}.png")
    return root


def jpeg_bytes(w: int = 32, h: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise(w, h, 3)).save(buf, format="JPEG")
    return buf.getvalue()


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


def png16(path: Path, arr: np.ndarray, sbit: bytes | None = None) -> Path:
    """A 16-bit PNG written by hand (Pillow cannot write 16-bit colour): ``arr`` is (H, W) grey,
    (H, W, 2) grey + alpha, (H, W, 3) RGB or (H, W, 4) RGBA uint16. Rows use the Sub filter
    (every byte minus the byte one pixel to the left), so the decoder must unfilter 6- or 8-byte
    pixels correctly."""
    a = np.asarray(arr, dtype=np.uint16)
    channels = 1 if a.ndim == 2 else a.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    h, w = a.shape[:2]
    bpp = 2 * channels
    rows = []
    for y in range(h):
        raw = np.frombuffer(a[y].astype(">u2").tobytes(), dtype=np.uint8).astype(np.int16)
        sub = raw.copy()
        sub[bpp:] = (raw[bpp:] - raw[:-bpp]) % 256
        rows.append(b"\x01" + sub.astype(np.uint8).tobytes())
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))
    if sbit is not None:
        data += _chunk(b"sBIT", sbit)
    data += _chunk(b"IDAT", zlib.compress(b"".join(rows))) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def tiff48(path: Path, arr: np.ndarray, byteorder: str = "<") -> Path:
    """An uncompressed 48-bit RGB TIFF written by hand, little (``"<"``) or big (``">"``) endian."""
    a = np.asarray(arr, dtype=np.uint16)
    h, w, _ = a.shape
    data = a.astype(byteorder + "u2").tobytes()
    tags = [(256, 3, w), (257, 3, h), (258, 3, None), (259, 3, 1), (262, 3, 2), (273, 4, None), (277, 3, 3),
            (278, 3, h), (279, 4, len(data)), (284, 3, 1)]
    ifd = 8
    bits_at = ifd + 2 + 12 * len(tags) + 4
    data_at = bits_at + 6
    out = (b"II" if byteorder == "<" else b"MM") + struct.pack(byteorder + "HI", 42, ifd) + struct.pack(byteorder + "H", len(tags))
    for tag, typ, value in tags:
        if tag == 258:
            out += struct.pack(byteorder + "HHII", tag, typ, 3, bits_at)
        elif tag == 273:
            out += struct.pack(byteorder + "HHII", tag, typ, 1, data_at)
        elif typ == 3:
            out += struct.pack(byteorder + "HHIHH", tag, typ, 1, value, 0)
        else:
            out += struct.pack(byteorder + "HHII", tag, typ, 1, value)
    out += struct.pack(byteorder + "I", 0) + struct.pack(byteorder + "HHH", 16, 16, 16) + data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out)
    return path


def png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header announces ``w x h`` grey pixels and whose data is a few zero bytes."""
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    data += _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def png_bomb(path: Path, w: int = 10000, h: int = 10000) -> Path:
    """A valid all-black ``w x h`` grey PNG streamed row by row (100 Mpx in about 97 KB)."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    parts = [comp.compress(row) for _ in range(h)]
    parts.append(comp.flush())
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    data += _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def dicom(path: Path, pixels: np.ndarray | None = None, *, with_pixels: bool = True) -> Path:
    """A minimal uncompressed 16-bit grey DICOM file (pydicom needed): the dataset tests' writer."""
    datasets = str(Path(__file__).resolve().parents[1] / "datasets")
    if datasets not in sys.path:
        sys.path.insert(0, datasets)
    from ds_make import write_dicom

    pixels = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) if pixels is None else pixels
    return write_dicom(path, pixels, with_pixels=with_pixels)


def medmnist_arrays(n: int = 6, rgb: bool = False, dtype=np.uint8) -> dict[str, np.ndarray]:
    """The six MedMNIST arrays, ``n`` images of 28 x 28 per split, labels 0/1 alternating."""
    rng = np.random.default_rng(next(_seed))
    out = {}
    for split in ("train", "val", "test"):
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        out[f"{split}_images"] = rng.integers(0, 256, shape).astype(dtype)
        out[f"{split}_labels"] = (np.arange(n) % 2).reshape(n, 1).astype(np.uint8)
    out["label_names"] = np.array(["benign", "malignant"])
    return out


def npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


# -- running medprobe and checking what it wrote ----------------------------------------------
@dataclass
class Result:
    """What one ``medprobe`` invocation gave: exit status, stdout, stderr."""

    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("Error: ")]


def digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under ``root`` (symlinks by their target text)."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            key = os.fsencode(full.relative_to(root)).decode("utf-8", "backslashreplace")
            if full.is_symlink():
                out[key] = "link:" + os.readlink(full)
                continue
            try:
                out[key] = hashlib.sha256(full.read_bytes()).hexdigest()
            except PermissionError:
                out[key] = "unreadable"
    return out


ENTRY = "import sys; from medprobe.cli import main; sys.argv[0] = 'medprobe'; main()"


def unprivileged_prefix() -> list[str] | None:
    """The command prefix that makes file permissions bite: nothing for a normal user; for root,
    ``setpriv`` dropping every capability (so ``chmod 000`` files are unreadable), or ``None``
    when that is impossible here."""
    if os.geteuid() != 0:
        return []
    probe = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "true"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        ok = False
    return probe[:-1] if ok else None


def run_subprocess(args: list[str], prefix: list[str] | None = None, env: dict[str, str] | None = None, timeout: int = 120) -> Result:
    """Run ``medprobe ARGS`` in a fresh interpreter (optionally behind ``prefix``)."""
    environ = dict(os.environ)
    environ["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    environ.update(env or {})
    proc = subprocess.run([*(prefix or []), sys.executable, "-c", ENTRY, *args], capture_output=True, text=True,
                          env=environ, timeout=timeout, errors="backslashreplace")
    return Result(proc.returncode, proc.stdout, proc.stderr)
