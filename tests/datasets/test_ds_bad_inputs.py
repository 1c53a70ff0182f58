"""The bad-input corpus: each broken file ends in an error naming the file and the reason, or
(with skip_bad) in a recorded skip; never in a silent drop or a wrong label."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ds_make import noise, write_image
from medprobe.datasets import BadSamplesError, DatasetLayoutError, open_dataset


@pytest.fixture
def corpus(tmp_path):
    """An image folder with 4 good images per class and one of each broken-file kind."""
    root = tmp_path / "data"
    for cls in ("benign", "malignant"):
        for i in range(4):
            write_image(root / cls / f"ok_{i}.png")
    buf = io.BytesIO()
    Image.fromarray(noise((64, 64))).save(buf, format="JPEG")
    (root / "benign" / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (root / "benign" / "empty.png").write_bytes(b"")
    (root / "malignant" / "notes.png").write_text("radiologist notes, saved with the wrong extension\n")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(root / "malignant" / "dot.png")
    (root / "malignant" / "readme.txt").write_text("not an image extension: ignored and counted")
    return root


BROKEN = {
    "benign/truncated.jpg": "truncated image data",
    "benign/empty.png": "empty file (0 bytes)",
    "malignant/notes.png": "not an image: Pillow cannot identify the file format",
    "malignant/dot.png": "image is 1x1 px, smaller than the 8 px minimum side",
}


def test_broken_files_fail_with_file_and_reason(corpus):
    with pytest.raises(BadSamplesError) as err:
        open_dataset(f"imagefolder:{corpus}")
    message = str(err.value)
    assert "4 bad sample(s)" in message and "--skip-bad" in message
    for rel, reason in BROKEN.items():
        line = next(l for l in message.splitlines() if rel.split("/")[1] in l)
        assert str(corpus / rel) in line and reason in line
    assert {b.id for b in err.value.bad} == set(BROKEN)


def test_skip_bad_counts_and_lists_every_skip(corpus):
    ds = open_dataset(f"imagefolder:{corpus}", skip_bad=True)
    info = ds.info()
    assert {sid: reason for sid, reason in info["skipped"]}.keys() == BROKEN.keys()
    for sid, reason in info["skipped"]:
        assert BROKEN[sid] in reason
    assert len(ds) == 8 and info["counts"]["total"] == {"benign": 4, "malignant": 4}
    assert all(ds.classes[s.label] == s.id.split("/")[0] for s in ds.samples)  # labels untouched
    assert info["ignored_files"]["not an image extension"]["examples"] == ["malignant/readme.txt"]
    assert any("4 bad sample(s) skipped" in w for w in info["warnings"])
    assert "skip_bad=1" in ds.spec


def test_skipping_a_bad_file_does_not_move_any_other_sample(corpus):
    """The split is made from ids and labels before files are read: repairing the broken files
    later gives the same split for every other sample."""
    skipped = open_dataset(f"imagefolder:{corpus}", skip_bad=True).split_ids()
    for rel in BROKEN:
        (corpus / rel).unlink()
        write_image(corpus / rel, fmt="PNG")
    repaired = open_dataset(f"imagefolder:{corpus}").split_ids()
    assert {sp: [i for i in ids if i not in BROKEN] for sp, ids in repaired.items()} == skipped


def test_unknown_label_in_image_folder_and_csv(tmp_path):
    for cls in ("benign", "malignant", "other"):
        for i in range(3):
            write_image(tmp_path / "f" / cls / f"{i}.png")
    with pytest.raises(BadSamplesError, match=r"other/0\.png: unknown label 'other' \(classes: benign, malignant\)"):
        open_dataset(f"imagefolder:{tmp_path / 'f'}?classes=benign,malignant")
    ds = open_dataset(f"imagefolder:{tmp_path / 'f'}", classes=("benign", "malignant"), skip_bad=True)
    assert len(ds) == 6 and len(ds.skipped) == 3

    (tmp_path / "f" / "m.csv").write_text("path,label\nbenign/0.png,benign\nmalignant/0.png,tumour\nbenign/1.png,\n")
    with pytest.raises(BadSamplesError) as err:
        open_dataset(f"csv:{tmp_path / 'f' / 'm.csv'}?classes=benign,malignant")
    text = str(err.value)
    assert "m.csv line 3 (malignant/0.png): unknown label 'tumour' (classes: benign, malignant)" in text
    assert "m.csv line 4 (benign/1.png): empty label in column 'label'" in text


def test_csv_with_a_missing_column(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("path,patient\na.png,p1\n")
    with pytest.raises(DatasetLayoutError) as err:
        open_dataset(f"csv:{tmp_path / 'm.csv'}")
    assert str(tmp_path / "m.csv") in str(err.value)
    assert "missing the label column; expected one of label, class" in str(err.value)
    assert "columns are: path, patient" in str(err.value)
    with pytest.raises(DatasetLayoutError, match="column 'dx' \\(label\\) not found"):
        open_dataset(f"csv:{tmp_path / 'm.csv'}?label_col=dx")


def test_paths_escaping_the_root_are_refused(tmp_path):
    root = tmp_path / "study"
    for i in range(3):
        write_image(root / "img" / f"{i}.png")
    secret = write_image(tmp_path / "outside.png")
    (root / "link.png").symlink_to(secret)
    (root / "m.csv").write_text(
        "path,label\nimg/0.png,a\nimg/1.png,b\nimg/2.png,a\n../outside.png,b\n"
        f"{secret},a\nimg/../../outside.png,b\nlink.png,a\n"
    )
    with pytest.raises(BadSamplesError) as err:
        open_dataset(f"csv:{root / 'm.csv'}")
    assert len(err.value.bad) == 4
    assert all(f"path escapes the manifest's folder {root}" in b.reason for b in err.value.bad)
    assert "m.csv line 5 (../outside.png)" in str(err.value) and "line 8 (link.png)" in str(err.value)
    ds = open_dataset(f"csv:{root / 'm.csv'}", skip_bad=True)
    assert sorted(s.id for s in ds.samples) == ["img/0.png", "img/1.png", "img/2.png"]

    # an image folder never follows a link out of its root either
    (root / "img").rename(root / "a")
    (root / "a" / "escape.png").symlink_to(secret)
    ds = open_dataset(f"imagefolder:{root}?exclude=link.png")
    assert "a/escape.png" not in {s.id for s in ds.samples}
    assert ds.info()["ignored_files"]["link outside the dataset root"]["examples"] == ["a/escape.png"]


def test_npz_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "evil.npz"
    images = np.empty(2, dtype=object)
    images[0], images[1] = np.zeros((28, 28)), {"payload": "code"}
    np.savez(path, train_images=images, train_labels=np.zeros((2, 1), np.uint8))
    with pytest.raises(DatasetLayoutError) as err:
        open_dataset(f"medmnist:{path}")
    assert str(path) in str(err.value)
    assert "array 'train_images' holds pickled Python objects; refused (allow_pickle=False)" in str(err.value)


def test_bad_samples_cannot_be_skipped_into_an_empty_dataset_silently(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.png").write_bytes(b"")
    ds = open_dataset(f"imagefolder:{tmp_path}", skip_bad=True)
    assert len(ds) == 0 and ds.info()["skipped"] == [["a/x.png", "empty file (0 bytes)"]]
