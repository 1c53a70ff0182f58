"""Fault corpus rows 31-36: MedMNIST ``.npz`` files with non-finite pixels, pickled objects,
the wrong container or wrong shapes; BUSI folders with masks or a missing class."""

from __future__ import annotations

import json
import pickle
import zipfile

import numpy as np
import pytest

from faultkit import medmnist_arrays, noise, npz, png
from medprobe.datasets import open_dataset


def _refused(medprobe, unchanged, path, expected):
    with unchanged(path.parent):
        result = medprobe("datasets", "show", f"medmnist:{path}")
    assert result.code == 2 and "Traceback" not in result.err, result
    assert result.err.strip() == expected, result.err
    return result


@pytest.mark.parametrize("value, name, counts", [(np.nan, "nan_float.npz", "784 NaN, 0 +-Inf"),
                                                  (np.inf, "inf_float.npz", "0 NaN, 1 +-Inf")])
def test_row31_row32_non_finite_pixels_are_bad_samples(tmp_path, medprobe, unchanged, value, name, counts):
    arrays = medmnist_arrays(dtype=np.float32)
    arrays = {k: (v / 255.0 if k.endswith("_images") else v) for k, v in arrays.items()}
    if np.isnan(value):
        arrays["train_images"][2] = np.nan  # a whole image of NaN
    else:
        arrays["train_images"][2, 5, 7] = np.inf  # one pixel
    path = npz(tmp_path / name, arrays)
    bad = 784 if np.isnan(value) else 1
    with unchanged(tmp_path):
        result = medprobe("datasets", "show", f"medmnist:{path}")
    assert result.code == 2
    assert (f"  - {path}::train_images[2]: {bad} of 784 pixel values are not finite ({counts}); "
            "fix or drop the image (--skip-bad records it as skipped)") in result.err.splitlines()
    ds = open_dataset(f"medmnist:{path}", skip_bad=True)
    assert [b.id for b in ds.skipped] == ["train/2"] and len(ds) == 17
    # never a silently black image, also when a caller converts the array itself
    from medprobe.datasets.imageio import ImageDecodeError, array_to_image

    with pytest.raises(ImageDecodeError, match="not finite"):
        array_to_image(arrays["train_images"][2])


def test_row33_pickled_objects_are_refused_and_nothing_is_executed(tmp_path, medprobe, unchanged):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    images = np.empty(2, dtype=object)
    images[0], images[1] = np.zeros((28, 28)), Evil()
    obj = npz(tmp_path / "evil_obj.npz", {"train_images": images, "train_labels": np.zeros((2, 1), np.uint8)})
    _refused(medprobe, unchanged, obj,
             f"Error: {obj}: array 'train_images' holds pickled Python objects; refused (allow_pickle=False)")
    raw = tmp_path / "rawpickle.npz"
    raw.write_bytes(pickle.dumps(Evil()))
    with unchanged(tmp_path):
        result = medprobe("datasets", "show", f"medmnist:{raw}")
    assert result.code == 2 and result.err.strip() == (
        f"Error: {raw}: is a Python pickle, not an .npz archive; refused (medprobe never unpickles data files)")
    assert not marker.exists()  # the payload never ran


def test_row34_npy_renamed_npz(tmp_path, medprobe, unchanged):
    path = tmp_path / "single.npz"
    with open(path, "wb") as fh:
        np.save(fh, np.zeros((4, 28, 28), np.uint8))
    _refused(medprobe, unchanged, path,
             f"Error: {path}: is a single .npy array (shape (4, 28, 28)), not an .npz archive; "
             "save the splits with numpy.savez(path, train_images=..., train_labels=..., ...)")


def _variant(tmp_path, name, **changes):
    arrays = medmnist_arrays()
    arrays.update(changes)
    return npz(tmp_path / name, arrays)


def test_row35_wrong_labels_shapes_and_containers(tmp_path, medprobe, unchanged):
    cases = [
        (_variant(tmp_path, "float_labels.npz", train_labels=np.zeros((6, 1), np.float32)),
         "'train_labels' has dtype float32; integer class ids expected"),
        (_variant(tmp_path, "len_mismatch.npz", train_labels=np.zeros((5, 1), np.uint8)),
         "'train_labels' has shape (5, 1) for 6 images"),
        (_variant(tmp_path, "multilabel.npz", train_labels=np.zeros((6, 14), np.uint8)),
         "'train_labels' has shape (6, 14): multi-label data is not supported (one label per image)"),
        (_variant(tmp_path, "volume3d.npz", train_images=np.zeros((6, 28, 28, 28), np.uint8)),
         "'train_images' has shape (6, 28, 28, 28): 3-D volumes are not supported"),
    ]
    for path, reason in cases:
        _refused(medprobe, unchanged, path, f"Error: {path}: {reason}")
    neg = _variant(tmp_path, "neg_labels.npz", train_labels=np.array([[0], [1], [-1], [0], [1], [0]], np.int64))
    with unchanged(tmp_path):
        result = medprobe("datasets", "show", f"medmnist:{neg}")
    assert result.code == 2
    assert f"  - {neg}::train_images[2]: unknown label -1 (classes: benign, malignant)" in result.err.splitlines()
    notzip = tmp_path / "notzip.npz"
    notzip.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with unchanged(tmp_path):
        result = medprobe("datasets", "show", f"medmnist:{notzip}")
    assert result.code == 2 and result.err.startswith(f"Error: {notzip}: not a readable .npz archive (")


def test_row36_busi_masks_are_ignored_and_a_missing_class_is_named(tmp_path, medprobe, unchanged):
    base = tmp_path / "busi" / "Dataset_BUSI_with_GT"
    for cls in ("benign", "malignant", "normal"):
        for i in (1, 2, 3):
            png(base / cls / f"{cls} ({i}).png", noise(30, 26))
            png(base / cls / f"{cls} ({i})_mask.png", noise(30, 26))
        (base / cls / f"{cls} (1)_mask_1.png").write_bytes(b"not a png: never read")
    with unchanged(tmp_path / "busi"):
        result = medprobe("datasets", "show", f"busi:{tmp_path / 'busi'}", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["num_samples"] == 9 and info["ignored_files"]["segmentation mask (*_mask*)"]["count"] == 12
    missing = tmp_path / "busi_missing"
    png(missing / "benign" / "benign (1).png")
    png(missing / "normal" / "normal (1).png")
    result = medprobe("datasets", "show", f"busi:{missing}")
    assert result.code == 2 and result.err.strip() == (
        f"Error: busi: '{missing}' has no folder for class(es) malignant; expected benign/, malignant/, normal/ "
        "(found: benign, normal)")
