"""``medmnist:PATH.npz``: the MedMNIST ``.npz`` layout, with its official split.

Keys ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``test_images``,
``test_labels``; images ``(N, H, W)`` (grey) or ``(N, H, W, 3)`` (RGB), labels ``(N,)`` or
``(N, 1)`` integers. The file is read with ``allow_pickle=False``: an ``.npz`` holding pickled
objects is refused. Multi-label (ChestMNIST) and 3-D (``*3d``) files are refused with a reason.

Class names come from the ``medmnist`` package's ``INFO[flag]["label"]`` when it is installed
(flag = file name without the ``_<size>`` suffix, e.g. ``pneumoniamnist_224.npz`` ->
``pneumoniamnist``; only ``medmnist/info.py`` is executed, never the torch-importing package),
else from an optional ``label_names`` / ``classes`` string array in the
npz, else ``class_0``, ``class_1``, ... (with a warning). Labels outside the class list are bad
samples. Sample ids are ``<split>/<row>``.
"""

from __future__ import annotations

import importlib.util
import re
import zipfile
from pathlib import Path

import numpy as np

from .base import ArrayDataset, Sample
from .errors import BadSample, DatasetLayoutError
from .layout import resolve_root

SPLIT_KEYS = ("train", "val", "test")
NAME_KEYS = ("label_names", "classes")


def medmnist_flag(path: Path) -> str:
    """``pneumoniamnist_224.npz`` -> ``pneumoniamnist``."""
    return re.sub(r"_\d+$", "", path.stem).lower()


def package_class_names(flag: str) -> list[str] | None:
    """Class names from the installed ``medmnist`` package's ``INFO``, or ``None``.

    Only ``medmnist/info.py`` (plain dictionaries) is executed: ``import medmnist`` would run the
    package's ``__init__``, which imports torch.
    """
    try:
        spec = importlib.util.find_spec("medmnist")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    info_path = Path(list(spec.submodule_search_locations)[0]) / "info.py"
    if not info_path.is_file():
        return None
    info_spec = importlib.util.spec_from_file_location("_medprobe_medmnist_info", info_path)
    if info_spec is None or info_spec.loader is None:
        return None
    module = importlib.util.module_from_spec(info_spec)
    try:
        info_spec.loader.exec_module(module)
        labels = module.INFO[flag]["label"]
        return [str(labels[k]) for k in sorted(labels, key=int)]
    except Exception:  # an unknown flag or another INFO layout: fall back to the npz
        return None


def _load(npz_path: Path) -> dict[str, np.ndarray]:
    try:
        archive = np.load(npz_path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise DatasetLayoutError(
                f"{npz_path}: is a Python pickle, not an .npz archive; refused (medprobe never unpickles data files)"
            ) from None
        raise DatasetLayoutError(f"{npz_path}: not a readable .npz archive ({exc})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetLayoutError(f"{npz_path}: not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetLayoutError(
            f"{npz_path}: is a single .npy array (shape {getattr(archive, 'shape', '?')}), not an .npz archive; "
            "save the splits with numpy.savez(path, train_images=..., train_labels=..., ...)"
        )
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as exc:
                if "pickle" in str(exc).lower():
                    raise DatasetLayoutError(
                        f"{npz_path}: array '{key}' holds pickled Python objects; refused (allow_pickle=False)"
                    ) from None
                raise DatasetLayoutError(f"{npz_path}: array '{key}' cannot be read ({exc})") from None
            except (OSError, zipfile.BadZipFile, EOFError) as exc:
                raise DatasetLayoutError(f"{npz_path}: array '{key}' is corrupt ({exc})") from None
    return arrays


def medmnist(location: str) -> ArrayDataset:
    """Read a MedMNIST ``.npz`` (see the module doc)."""
    npz_path = resolve_root(location, "medmnist", want_dir=False)
    arrays = _load(npz_path)
    present = [sp for sp in SPLIT_KEYS if f"{sp}_images" in arrays]
    if not present:
        raise DatasetLayoutError(
            f"{npz_path}: no '<split>_images' arrays; keys are: {', '.join(sorted(arrays)) or '(none)'} "
            "(expected train_images, train_labels, val_images, val_labels, test_images, test_labels)"
        )
    label_max = -1
    for sp in present:
        images, key_l = arrays[f"{sp}_images"], f"{sp}_labels"
        if key_l not in arrays:
            raise DatasetLayoutError(f"{npz_path}: '{sp}_images' has no matching '{key_l}'")
        labels = arrays[key_l]
        if images.ndim == 4 and images.shape[-1] not in (1, 3):
            raise DatasetLayoutError(f"{npz_path}: '{sp}_images' has shape {images.shape}: 3-D volumes are not supported")
        if images.ndim not in (3, 4):
            raise DatasetLayoutError(f"{npz_path}: '{sp}_images' has shape {images.shape}; expected (N, H, W) or (N, H, W, 3)")
        if labels.ndim == 2 and labels.shape[1] != 1:
            raise DatasetLayoutError(
                f"{npz_path}: '{key_l}' has shape {labels.shape}: multi-label data is not supported (one label per image)"
            )
        if labels.ndim not in (1, 2) or len(labels) != len(images):
            raise DatasetLayoutError(f"{npz_path}: '{key_l}' has shape {labels.shape} for {len(images)} images")
        if not np.issubdtype(labels.dtype, np.integer):
            raise DatasetLayoutError(f"{npz_path}: '{key_l}' has dtype {labels.dtype}; integer class ids expected")
        if len(labels):
            label_max = max(label_max, int(labels.max()))
    flag = medmnist_flag(npz_path)
    warnings: list[str] = []
    names = package_class_names(flag)
    source = f"medmnist package INFO['{flag}']"
    if names is None:
        key = next((k for k in NAME_KEYS if k in arrays), None)
        if key is not None:
            names = [str(v) for v in arrays[key].reshape(-1).tolist()]
            source = f"npz array '{key}'"
        else:
            names = [f"class_{i}" for i in range(label_max + 1)]
            source = "label ids (no class names found)"
            warnings.append(
                f"{npz_path.name}: class names unknown (install medmnist or add a 'label_names' array); using class_0..class_{label_max}"
            )
    samples: list[Sample] = []
    index: dict[str, tuple[str, int]] = {}
    bad: list[BadSample] = []
    for sp in present:
        labels = arrays[f"{sp}_labels"].reshape(-1)
        for row, lab in enumerate(labels.tolist()):
            sid = f"{sp}/{row}"
            src = f"{npz_path}::{sp}_images[{row}]"
            if not 0 <= lab < len(names):
                bad.append(BadSample(sid, src, f"unknown label {lab} (classes: {', '.join(names)})"))
                continue
            index[sid] = (f"{sp}_images", row)
            samples.append(Sample(sid, int(lab), sp, None, src))
    return ArrayDataset(
        f"medmnist-{flag}",
        names,
        samples,
        arrays={k: v for k, v in arrays.items() if k.endswith("_images")},
        index=index,
        location=str(npz_path),
        notes=[f"class names from {source}", "official MedMNIST split"],
        warnings=warnings,
        bad=bad,
    )
