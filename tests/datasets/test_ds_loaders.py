"""Every loader on files generated in its real on-disk layout."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ds_make import COVID_SPLIT, KERMANY, make_busi, make_covid_ct, make_imagefolder, make_kermany, make_medmnist, write_image
from medprobe.datasets import BadSamplesError, DatasetLayoutError, open_dataset


def _rgb_ok(ds):
    for s in ds.samples[:3]:
        img = ds.load_image(s)
        assert img.mode == "RGB" and min(img.size) >= 8


def test_imagefolder_without_split_folders(tmp_path):
    expected = make_imagefolder(tmp_path, {"benign": 10, "malignant": 7, "normal": 5})
    ds = open_dataset(f"imagefolder:{tmp_path}")
    assert ds.classes == ["benign", "malignant", "normal"]
    assert ds.counts()["total"] == expected["total"]
    assert ds.split_method == "seeded-stratified"
    assert {s.split for s in ds.samples} == {"train", "val", "test"}
    assert ds.samples[0].id == "benign/img_0.png" and ds.samples[0].source == str(tmp_path / "benign" / "img_0.png")
    assert ds.spec == f"imagefolder:{tmp_path}?seed=0"
    _rgb_ok(ds)


def test_imagefolder_with_split_folders_is_the_official_split(tmp_path):
    expected = make_imagefolder(tmp_path, {"a": 8, "b": 6}, splits={"train": 0.6, "valid": 0.2, "test": 0.2})
    ds = open_dataset(f"imagefolder:{tmp_path}")
    counts = ds.counts()
    assert ds.split_method == "official"
    assert counts["train"] == expected["train"] and counts["val"] == expected["valid"] and counts["test"] == expected["test"]
    assert all(s.id.startswith({"train": "train/", "val": "valid/", "test": "test/"}[s.split]) for s in ds.samples)


def test_imagefolder_train_test_only_carves_val_from_train(tmp_path):
    make_imagefolder(tmp_path, {"a": 20, "b": 20}, splits={"train": 0.8, "test": 0.2})
    ds = open_dataset(f"imagefolder:{tmp_path}")
    assert ds.split_method == "official+carved(val from train)"
    for s in ds.samples:
        folder = s.id.split("/")[0]
        assert (s.split == "test") == (folder == "test")
    assert ds.counts()["val"] == {"a": 3, "b": 3}


def test_imagefolder_group_regex_and_mask_warning(tmp_path):
    for cls in ("a", "b"):
        for patient in range(6):
            for k in range(3):
                write_image(tmp_path / cls / f"pat{cls}{patient}" / f"slice{k}.png")
    write_image(tmp_path / "a" / "pata0" / "slice0_mask.png")
    ds = open_dataset(f"imagefolder:{tmp_path}", group_regex=r"^([^/]+)/")
    assert ds.split_method == "seeded-stratified-grouped"
    assert ds.info()["groups"]["count"] == 12 and ds.group_leaks() == {}
    assert any("look like segmentation masks" in w for w in ds.warnings)
    excluded = open_dataset(f"imagefolder:{tmp_path}?group_regex=^([^/]%2B)/&exclude=*_mask*")
    assert "a/pata0/slice0_mask.png" not in {s.id for s in excluded.samples}
    assert excluded.info()["ignored_files"]["excluded by option"]["count"] == 1


def test_imagefolder_refuses_mixed_layouts(tmp_path):
    make_imagefolder(tmp_path, {"a": 2})
    write_image(tmp_path / "train" / "a" / "x.png")
    with pytest.raises(DatasetLayoutError, match=r"mixes split folders \(train\) with other folders \(a\)"):
        open_dataset(f"imagefolder:{tmp_path}")


def test_csv_manifest_relative_paths_split_and_patients(tmp_path):
    rows = ["image,diagnosis,patient_id,split"]
    for i in range(12):
        write_image(tmp_path / "imgs" / f"{i}.png")
        rows.append(f"imgs/{i}.png,{'malignant' if i % 3 == 0 else 'benign'},P{i // 2},{'train' if i < 8 else 'test'}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    ds = open_dataset(f"csv:{tmp_path / 'manifest.csv'}")
    assert ds.classes == ["benign", "malignant"]
    assert ds.split_method == "official+carved(val from train)"
    assert ds.counts()["test"] == {"benign": 3, "malignant": 1}
    assert ds.group_leaks() == {}  # val carved out of train by patient
    assert next(s for s in ds.samples if s.id == "imgs/3.png").group == "P1"
    _rgb_ok(ds)


def test_csv_without_split_is_split_by_patient_and_semicolons_work(tmp_path):
    rows = ["path;label;patient"]
    for i in range(40):
        write_image(tmp_path / f"{i}.png")
        rows.append(f"{i}.png;{i % 2};pt{i // 4}")
    (tmp_path / "m.csv").write_text("\n".join(rows))
    ds = open_dataset(f"csv:{tmp_path / 'm.csv'}")
    assert ds.classes == ["0", "1"] and ds.split_method == "seeded-stratified-grouped"
    assert ds.group_leaks() == {} and ds.info()["groups"]["count"] == 10


def test_medmnist_npz_with_names_in_the_file(tmp_path):
    path = make_medmnist(tmp_path / "pneumoniamnist.npz", names=["normal", "pneumonia"])
    ds = open_dataset(f"medmnist:{path}")
    assert ds.split_method == "official" and ds.classes == ["normal", "pneumonia"]
    assert ds.counts()["train"] == {"normal": 6, "pneumonia": 6} and ds.counts()["test"] == {"normal": 3, "pneumonia": 3}
    assert ds.samples[0].id.split("/")[0] in ("train", "val", "test")
    img = ds.load_image(next(s for s in ds.samples if s.id == "train/0"))
    raw = np.load(path)["train_images"][0]
    np.testing.assert_array_equal(np.asarray(img)[:, :, 0], raw)
    assert ds.info()["image_modes"] == {"L": 22} and ds.info()["image_sizes"] == {"28x28": 22}


def test_medmnist_rgb_without_names_and_bad_labels(tmp_path):
    path = make_medmnist(tmp_path / "dermamnist_64.npz", rgb=True, n_classes=3)
    ds = open_dataset(f"medmnist:{path}")
    assert ds.name == "medmnist-dermamnist"
    if ds.classes[0] == "class_0":  # medmnist not installed: names fall back to the ids
        assert any("class names unknown" in w for w in ds.warnings)
    assert ds.info()["image_modes"] == {"RGB": 22}
    multi = tmp_path / "chestmnist.npz"
    np.savez(multi, train_images=np.zeros((2, 28, 28), np.uint8), train_labels=np.zeros((2, 14), np.uint8))
    with pytest.raises(DatasetLayoutError, match="multi-label data is not supported"):
        open_dataset(f"medmnist:{multi}")
    wrong = tmp_path / "x.npz"
    np.savez(wrong, train_images=np.zeros((3, 28, 28), np.uint8), train_labels=np.array([0, 1, 5]), label_names=np.array(["a", "b"]))
    with pytest.raises(BadSamplesError, match=r"x\.npz::train_images\[2\]: unknown label 5 \(classes: a, b\)"):
        open_dataset(f"medmnist:{wrong}")


def test_busi_masks_are_never_read_and_duplicates_are_found(tmp_path):
    make_busi(tmp_path)
    ds = open_dataset(f"busi:{tmp_path}")  # the parent of Dataset_BUSI_with_GT works too
    assert ds.classes == ["benign", "malignant", "normal"]
    assert ds.counts()["total"] == {"benign": 6, "malignant": 5, "normal": 4}
    assert not any("mask" in s.id for s in ds.samples) and not ds.skipped  # the garbage mask was never opened
    assert ds.info()["ignored_files"]["segmentation mask (*_mask*)"]["count"] == 16
    dup_ids = sorted(tuple(sorted(d.ids)) for d in ds.duplicates)
    assert dup_ids == [("benign/benign (2).png", "malignant/malignant (5).png"), ("normal/normal (1).png", "normal/normal (4).png")]
    conflicting = next(d for d in ds.duplicates if d.conflicting_labels)
    assert "benign" in conflicting.to_dict(ds.classes)["labels"] and "malignant" in conflicting.to_dict(ds.classes)["labels"]
    assert any("carry different labels" in w for w in ds.warnings)
    assert any("no patient ids" in w for w in ds.warnings)

    dedup = open_dataset(f"busi:{tmp_path / 'Dataset_BUSI_with_GT'}", dedup=True)
    # conflicting copies are all dropped; of the same-label pair one copy stays
    assert sorted(dedup.dropped_duplicates) == ["benign/benign (2).png", "malignant/malignant (5).png", "normal/normal (4).png"]
    assert len(dedup) == 12 and "dedup=1" in dedup.spec


def test_busi_duplicates_across_splits_are_reported(tmp_path):
    make_busi(tmp_path, counts={"benign": 30, "malignant": 10, "normal": 10}, duplicate=False)
    base = tmp_path / "Dataset_BUSI_with_GT" / "benign"
    for i in range(1, 11):  # ten re-saved copies: several must land in another split than their original
        Image.open(base / f"benign ({i}).png").save(base / f"benign ({100 + i}).png")
    ds = open_dataset(f"busi:{tmp_path}")
    assert len(ds.duplicates) == 10
    cross = [d for d in ds.duplicates if d.cross_split]
    assert cross and any("span more than one split" in w for w in ds.warnings)
    dedup = open_dataset(f"busi:{tmp_path}", dedup=True)
    assert len(dedup.dropped_duplicates) == 10 and not dedup.duplicates[0].conflicting_labels
    kept = {s.id for s in dedup.samples}
    assert all(d.ids[0] in kept and not set(d.ids[1:]) & kept for d in dedup.duplicates)


def test_busi_missing_class_folder(tmp_path):
    (tmp_path / "benign").mkdir()
    with pytest.raises(DatasetLayoutError, match="no folder for class\\(es\\) malignant, normal"):
        open_dataset(f"busi:{tmp_path}")


def test_chest_xray_official_split_and_patient_ids(tmp_path):
    make_kermany(tmp_path)
    ds = open_dataset(f"chest-xray:{tmp_path}")
    assert ds.classes == ["NORMAL", "PNEUMONIA"] and ds.split_method == "official"
    for split, classes in KERMANY.items():
        assert ds.counts()[split] == {c: len(v) for c, v in classes.items()}
    groups = {s.id: s.group for s in ds.samples}
    assert groups["train/PNEUMONIA/person1_bacteria_1.jpeg"] == "person1"
    assert groups["train/NORMAL/IM-0115-0002.jpeg"] == "IM-0115"
    assert groups["train/NORMAL/NORMAL2-IM-1427-0001.jpeg"] == "NORMAL2-IM-1427"
    assert ds.group_leaks() == {}
    assert not any(s.id.startswith("chest_xray/") for s in ds.samples)  # nested Kaggle copy ignored
    _rgb_ok(ds)


def test_chest_xray_leak_warning_and_grouped_val_carving(tmp_path):
    make_kermany(tmp_path, with_val=False, leak=True)
    ds = open_dataset(f"chest-xray:{tmp_path / 'chest_xray'}")
    assert ds.group_leaks() == {"person4": ["train", "test"]}
    assert any("person4 (train/test)" in w for w in ds.warnings)
    assert ds.split_method == "official+carved(val from train)"
    val_groups = {s.group for s in ds.samples if s.split == "val"}
    train_groups = {s.group for s in ds.samples if s.split == "train"}
    assert val_groups and not val_groups & train_groups


def test_covid_ct_with_published_lists(tmp_path):
    make_covid_ct(tmp_path)
    ds = open_dataset(f"covid-ct:{tmp_path}")
    assert ds.classes == ["NonCOVID", "COVID"] and ds.split_method == "official"
    for split in ("train", "val", "test"):
        assert ds.counts()[split] == {c: len(set(COVID_SPLIT[c][split])) for c in ("NonCOVID", "COVID")}
    assert any("testCT_COVID.txt: 1 name(s) listed more than once" in n for n in ds.notes)
    assert ds.info()["image_modes"] == {"L": len(ds)}


def test_covid_ct_list_problems_are_bad_samples(tmp_path):
    make_covid_ct(tmp_path)
    write_image(tmp_path / "Images-processed" / "CT_NonCOVID" / "99.png")
    lst = tmp_path / "Data-split" / "COVID" / "valCT_COVID.txt"
    lst.write_text(lst.read_text() + "missing-p1-1.png\nkjr-21-e24-p2-8.png\n")
    with pytest.raises(BadSamplesError) as err:
        open_dataset(f"covid-ct:{tmp_path}")
    reasons = {b.id: b.reason for b in err.value.bad}
    assert reasons["Images-processed/CT_NonCOVID/99.png"] == "not named in any CT_NonCOVID split list"
    assert reasons["Images-processed/CT_COVID/kjr-21-e24-p2-8.png"] == "listed in more than one split list"
    assert reasons["Images-processed/CT_COVID/missing-p1-1.png"].startswith("listed in valCT_COVID.txt but no such file")


def test_covid_ct_without_lists_is_split_by_seed(tmp_path):
    make_covid_ct(tmp_path, lists=False)
    ds = open_dataset(f"covid-ct:{tmp_path}")
    assert ds.split_method == "seeded-stratified" and len(ds) == 14
    assert any("no Data-split lists" in w for w in ds.warnings)


def test_digits_is_the_shipped_real_image_set():
    ds = open_dataset("digits")
    assert len(ds) == 1797 and ds.classes == [str(d) for d in range(10)]
    assert ds.spec == "digits?size=64&seed=0" and not ds.synthetic
    img = ds.load_image(ds.samples[0])
    assert img.size == (64, 64) and img.mode == "RGB"
    assert sum(ds.counts()["test"].values()) in range(265, 275)


def test_synthetic_is_flagged_everywhere():
    ds = open_dataset("synthetic:lesions?n=30&size=32")
    assert ds.synthetic and ds.info()["synthetic"] and "SYNTHETIC" in ds.notes[0]
    assert ds.spec == "synthetic:lesions?n=30&size=32&seed=0"
    assert ds.load_image(ds.samples[0]).size == (32, 32)


def test_medmnist_class_names_from_the_installed_package_without_running_its_init(tmp_path, monkeypatch):
    """medmnist's ``__init__`` imports torch; only its ``info.py`` (INFO dict) may be executed."""
    pkg = tmp_path / "site" / "medmnist"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('medmnist/__init__ must not be imported by medprobe')\n")
    (pkg / "info.py").write_text(
        'INFO = {"breastmnist": {"python_class": "BreastMNIST", "task": "binary-class",\n'
        '                        "label": {"0": "malignant", "1": "normal, benign"}}}\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    path = make_medmnist(tmp_path / "breastmnist_224.npz", names=["ignored", "names"])
    ds = open_dataset(f"medmnist:{path}")
    assert ds.classes == ["malignant", "normal, benign"]
    assert "class names from medmnist package INFO['breastmnist']" in ds.notes
