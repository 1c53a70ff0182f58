"""Fault corpus rows 25-30: CSV manifests with missing columns, unknown or escaping paths,
duplicate rows, numeric-looking labels, and malformed text. The manifest and its images are
never written to."""

from __future__ import annotations

import json
import os

import pytest

from faultkit import noise, png
from medprobe.datasets import open_dataset


@pytest.fixture
def study(tmp_path):
    """``study/img/0.png .. 5.png`` next to where each test writes its manifest."""
    root = tmp_path / "study"
    for i in range(6):
        png(root / "img" / f"{i}.png", noise())
    return root


def _show(medprobe, unchanged, csv_path, *extra):
    with unchanged(csv_path.parent):
        return medprobe("datasets", "show", f"csv:{csv_path}", *extra)


def test_row25_missing_path_or_label_column(study, medprobe, unchanged):
    m = study / "missing_col.csv"
    m.write_text("path,patient\nimg/0.png,p1\n")
    result = _show(medprobe, unchanged, m)
    assert result.code == 2 and result.err.strip() == (
        f"Error: {m}: missing the label column; expected one of label, class, target, diagnosis, category "
        "(or name it with label_col=...); columns are: path, patient")
    m.write_text("file_name,label\nimg/0.png,a\n")
    result = _show(medprobe, unchanged, m)
    assert result.code == 2 and result.err.strip() == (
        f"Error: {m}: missing the path column; expected one of path, image, image_path, file, filename, filepath, "
        "file_path (or name it with path_col=...); columns are: file_name, label")


def test_row26_unknown_path(study, medprobe, unchanged):
    m = study / "unknown_path.csv"
    m.write_text("path,label\nimg/0.png,a\nimg/1.png,b\nimg/missing.png,a\n")
    result = _show(medprobe, unchanged, m)
    assert result.code == 2
    assert f"  - {m} line 4 (img/missing.png): file not found" in result.err.splitlines()


def test_row27_paths_escaping_the_manifest_folder_are_refused(study, tmp_path, medprobe, unchanged):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0\n")
    os.symlink(secret, study / "img" / "link.png")
    m = study / "traversal.csv"
    m.write_text(f"path,label\nimg/0.png,a\nimg/1.png,b\n../passwd,a\n{secret},b\nimg/../../passwd,a\nimg/link.png,b\n")
    result = _show(medprobe, unchanged, m)
    assert result.code == 2
    lines = result.err.splitlines()
    assert lines[0].startswith("Error: 4 bad sample(s) in dataset")
    for n, raw in ((4, "../passwd"), (5, str(secret)), (6, "img/../../passwd"), (7, "img/link.png")):
        assert f"  - {m} line {n} ({raw}): path escapes the manifest's folder {study}" in lines
    ds = open_dataset(f"csv:{m}", skip_bad=True)
    assert sorted(s.id for s in ds.samples) == ["img/0.png", "img/1.png"]


def test_row28_duplicate_rows(study, medprobe, unchanged):
    m = study / "dup_rows.csv"
    m.write_text("path,label\nimg/0.png,a\nimg/1.png,b\nimg/0.png,a\nimg/1.png,a\n")
    result = _show(medprobe, unchanged, m)
    assert result.code == 2
    assert f"  - {m} line 4 (img/0.png): path listed again (first on line 2)" in result.err.splitlines()
    assert f"  - {m} line 5 (img/1.png): path listed again (first on line 3)" in result.err.splitlines()


def test_row29_numeric_labels_are_merged_by_value_and_ordered_numerically(study, medprobe, unchanged):
    for i in range(6, 12):
        png(study / "img" / f"{i}.png", noise())
    m = study / "num_labels_mixed.csv"
    labels = ["1", "01", "1.0", "2", "10", "2", "10", "1", "2", "10", "1", "2"]
    m.write_text("path,label\n" + "".join(f"img/{i}.png,{lab}\n" for i, lab in enumerate(labels)))
    result = _show(medprobe, unchanged, m, "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    assert info["classes"] == ["1", "2", "10"]  # '01' and '1.0' are the class '1'; 2 before 10
    assert info["counts"]["total"] == {"1": 5, "2": 4, "10": 3}
    assert ("num_labels_mixed.csv: labels in column 'label' look numeric: read as numbers, classes ordered "
            "numerically: 1, 2, 10; spellings of the same number merged into one class: '01', '1', '1.0' -> '1' "
            "(pass classes=... to name and order the classes yourself)") in info["warnings"]
    # an explicit class list wins, and a numeric spelling matches the class of the same number
    ds = open_dataset(f"csv:{m}", classes=("10", "2", "1"))
    assert ds.classes == ["10", "2", "1"] and ds.counts()["total"] == {"10": 3, "2": 4, "1": 5}
    assert any("'01' -> '1'" in w and "'1.0' -> '1'" in w for w in ds.warnings)
    # text labels are left alone (no warning)
    m.write_text("path,label\n" + "".join(f"img/{i}.png,{'benign' if i % 2 else 'malignant'}\n" for i in range(6)))
    assert not [w for w in open_dataset(f"csv:{m}").warnings if "numeric" in w]


CSV_FAULTS = {
    "empty_label.csv": ("path,label\nimg/0.png,a\nimg/1.png,\n", "  - {m} line 3 (img/1.png): empty label in column 'label'"),
    "header_only.csv": ("path,label\n", "Error: {m}: the manifest has a header but no rows"),
    "empty.csv": ("", "Error: {m}: empty manifest (no header row)"),
    "bad_split.csv": ("path,label,split\nimg/0.png,a,train\nimg/1.png,b,holdout\n",
                      "  - {m} line 3 (img/1.png): split 'holdout' is not train/val/test"),
    "ragged.csv": ("path,label\nimg/0.png,a\nimg/1.png,b,extra\n", "Error: {m} line 3: 3 fields but the header has 2"),
}


@pytest.mark.parametrize("name", sorted(CSV_FAULTS))
def test_row30_malformed_manifests(study, medprobe, unchanged, name):
    text, expected = CSV_FAULTS[name]
    m = study / name
    m.write_text(text)
    result = _show(medprobe, unchanged, m)
    assert result.code == 2
    assert expected.format(m=m) in result.err.splitlines(), result.err


def test_row30_latin1_manifest_is_refused_and_a_bom_is_accepted(study, medprobe, unchanged):
    m = study / "latin1.csv"
    m.write_bytes("path,label\nimg/0.png,b\xe9nin\nimg/1.png,malin\n".encode("latin-1"))
    result = _show(medprobe, unchanged, m)
    assert result.code == 2 and result.err.strip() == (
        f"Error: {m}: not UTF-8 text (invalid continuation byte at byte 22); save it as UTF-8 "
        "(e.g. iconv -f latin1 -t utf-8 latin1.csv > utf8.csv)")
    bom = study / "bom.csv"
    bom.write_bytes("\ufeffpath,label\nimg/0.png,bénin\nimg/1.png,malin\n".encode("utf-8"))
    result = _show(medprobe, unchanged, bom, "--json")
    assert result.code == 0 and json.loads(result.out)["classes"] == ["bénin", "malin"]


def test_row29_numeric_spellings_and_order():
    from medprobe.datasets.manifest import label_classes

    classes, mapping, warning = label_classes({"1e1", "10", "0.50", ".5", "-0", "0", "+2", "2.000", "x"}, "m.csv: labels")
    assert classes == ["0", "0.5", "2", "10", "x"]  # numbers in numeric order, then text
    assert mapping == {"1e1": "10", "10": "10", "0.50": "0.5", ".5": "0.5", "-0": "0", "0": "0", "+2": "2",
                       "2.000": "2", "x": "x"}
    assert warning.startswith("m.csv: labels look numeric: read as numbers, classes ordered numerically: 0, 0.5, 2, 10, x")
    assert "text labels (x) come after the numbers" in warning
    for text in ({"a", "b"}, {"1a", "v2"}, {"nan", "inf"}):  # not numbers
        assert label_classes(text, "m") == (sorted(text), {t: t for t in text}, None)
