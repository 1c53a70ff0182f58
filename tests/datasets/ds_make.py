"""Builders for the on-disk dataset layouts the dataset tests read (written into tmp dirs).

Every image gets distinct random pixels (seeded), so only the duplicates a test makes on
purpose are duplicates.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

_counter = iter(range(10**9))


def noise(size: tuple[int, int] = (24, 20), channels: int = 1, seed: int | None = None) -> np.ndarray:
    """Random uint8 pixels, (H, W) or (H, W, C)."""
    rng = np.random.default_rng(next(_counter) if seed is None else seed)
    shape = (size[1], size[0]) if channels == 1 else (size[1], size[0], channels)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def write_image(path: Path, arr: np.ndarray | None = None, fmt: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise() if arr is None else arr).save(path, format=fmt)
    return path


def make_imagefolder(root: Path, counts: dict[str, int], splits: dict[str, float] | None = None) -> dict[str, dict[str, int]]:
    """``root/<class>/img_i.png`` or, with ``splits``, ``root/<split>/<class>/img_i.png``.

    Returns the expected counts ``{split or "total": {class: n}}``.
    """
    expected: dict[str, dict[str, int]] = {}
    for cls, n in counts.items():
        if splits is None:
            for i in range(n):
                write_image(root / cls / f"img_{i}.png")
            expected.setdefault("total", {})[cls] = n
            continue
        for split, frac in splits.items():
            k = max(1, int(round(n * frac)))
            for i in range(k):
                write_image(root / split / cls / f"{cls}_{i}.png")
            expected.setdefault(split, {})[cls] = k
    return expected


def make_busi(root: Path, counts: dict[str, int] | None = None, duplicate: bool = True) -> Path:
    """Dataset_BUSI_with_GT with ``*_mask.png`` (and ``_mask_1``) next to the images.

    One mask holds garbage bytes: reading it as an image would be a bad sample. With
    ``duplicate``, ``benign (2).png`` is re-saved as ``malignant (3).png`` (a duplicate across
    classes and likely splits) and ``normal (1).png`` as ``normal (2).png`` (same label).
    """
    counts = counts or {"benign": 6, "malignant": 4, "normal": 3}
    base = root / "Dataset_BUSI_with_GT"
    for cls, n in counts.items():
        for i in range(1, n + 1):
            write_image(base / cls / f"{cls} ({i}).png", noise((30, 26)))
            write_image(base / cls / f"{cls} ({i})_mask.png", (noise((30, 26)) > 128).astype(np.uint8) * 255)
        (base / cls / f"{cls} (1)_mask_1.png").write_bytes(b"not a png at all")
    if duplicate:
        shutil.copy(base / "benign" / "benign (2).png", base / "malignant" / f"malignant ({counts['malignant'] + 1}).png")
        arr = np.asarray(Image.open(base / "normal" / "normal (1).png"))
        Image.fromarray(arr).save(base / "normal" / f"normal ({counts['normal'] + 1}).png", compress_level=1)
    (base / ".DS_Store").write_bytes(b"\x00\x01")
    return base


KERMANY = {
    "train": {
        "NORMAL": ["IM-0115-0001.jpeg", "IM-0115-0002.jpeg", "IM-0117-0001.jpeg", "NORMAL2-IM-1427-0001.jpeg", "IM-0119-0001.jpeg"],
        "PNEUMONIA": [
            "person1_bacteria_1.jpeg",
            "person1_bacteria_2.jpeg",
            "person3_virus_5.jpeg",
            "person4_bacteria_7.jpeg",
            "person4_virus_8.jpeg",
            "person5_bacteria_9.jpeg",
            "person6_virus_11.jpeg",
            "person7_bacteria_12.jpeg",
        ],
    },
    "val": {"NORMAL": ["NORMAL2-IM-1430-0001.jpeg"], "PNEUMONIA": ["person1946_bacteria_4874.jpeg"]},
    "test": {
        "NORMAL": ["IM-0001-0001.jpeg", "IM-0003-0001.jpeg", "NORMAL2-IM-0007-0001.jpeg"],
        "PNEUMONIA": ["person100_bacteria_475.jpeg", "person101_bacteria_484.jpeg", "person102_virus_189.jpeg"],
    },
}


def make_kermany(root: Path, with_val: bool = True, leak: bool = False) -> Path:
    """The Kaggle ``chest_xray`` layout; ``leak`` adds a train patient's image to test."""
    base = root / "chest_xray"
    for split, classes in KERMANY.items():
        if split == "val" and not with_val:
            continue
        for cls, names in classes.items():
            for name in names:
                write_image(base / split / cls / name, noise((40, 32)), fmt="JPEG")
    if leak:
        write_image(base / "test" / "PNEUMONIA" / "person4_bacteria_99.jpeg", noise((40, 32)), fmt="JPEG")
    # the Kaggle archive also holds a nested copy and macOS metadata
    write_image(base / "chest_xray" / "train" / "NORMAL" / "IM-0115-0001.jpeg", noise((40, 32)), fmt="JPEG")
    (base / "__MACOSX").mkdir()
    (base / "__MACOSX" / "._x.jpeg").write_bytes(b"\x00")
    return base


COVID_SPLIT = {
    "COVID": {
        "train": ["2020.01.24.919183-p27-132.png", "2020.01.24.919183-p27-133.png", "kjr-21-e24-p2-8.png", "bmj.m606.full-p4-22%0.png"],
        "val": ["PIIS0140673620301549_0%0.png"],
        "test": ["2020.03.22.20040782-p25-1542.png", "2020.03.22.20040782-p25-1542.png"],  # listed twice, as upstream
    },
    "NonCOVID": {
        "train": ["0.jpg", "1%0.jpg", "10%1.png", "11.jpg", "LIDC_IDRI_1.png"],
        "val": ["12.png"],
        "test": ["13.jpg", "14.png"],
    },
}


def make_covid_ct(root: Path, lists: bool = True) -> Path:
    for cls, splits in COVID_SPLIT.items():
        folder = root / "Images-processed" / f"CT_{cls}"
        for names in splits.values():
            for name in dict.fromkeys(names):
                fmt = "JPEG" if name.endswith(".jpg") else "PNG"
                write_image(folder / name, noise((36, 30)), fmt=fmt)
        if lists:
            for split, names in splits.items():
                lst = root / "Data-split" / cls / f"{split}CT_{cls}.txt"
                lst.parent.mkdir(parents=True, exist_ok=True)
                lst.write_text("\n".join(names) + "\n")
    (root / "COVID-CT-MetaInfo.xlsx").write_bytes(b"PK\x03\x04 not read")
    return root


def make_medmnist(path: Path, sizes: dict[str, int] | None = None, rgb: bool = False, names: list[str] | None = None, n_classes: int = 2) -> Path:
    sizes = sizes or {"train": 12, "val": 4, "test": 6}
    rng = np.random.default_rng(7)
    arrays: dict[str, np.ndarray] = {}
    for split, n in sizes.items():
        shape = (n, 28, 28, 3) if rgb else (n, 28, 28)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % n_classes).reshape(n, 1).astype(np.uint8)
    if names is not None:
        arrays["label_names"] = np.array(names)
    np.savez(path, **arrays)
    return path


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    slope: float | None = None,
    intercept: float | None = None,
    center: float | list[float] | None = None,
    width: float | list[float] | None = None,
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    with_pixels: bool = True,
) -> Path:
    """A minimal uncompressed (explicit VR little endian) single-frame grey DICOM file
    (``with_pixels=False``: the header alone, no PixelData element)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if signed else 0
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    if center is not None:
        ds.WindowCenter = center
    if width is not None:
        ds.WindowWidth = width
    if with_pixels:
        ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(ds, "save_as") and "enforce_file_format" in pydicom.dataset.Dataset.save_as.__code__.co_varnames:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.preamble = b"\x00" * 128
        ds.save_as(path, write_like_original=False)
    return path
