"""Fault corpus rows 16-24: file names, links, permissions, empty and lopsided class folders,
duplicates. Permission rows run ``medprobe`` in a subprocess with every capability dropped, so
``chmod 000`` bites even when the suite runs as root."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from faultkit import image_folder, noise, png
from medprobe.datasets import open_dataset


def test_row16_non_utf8_file_name_is_a_named_bad_sample(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    png(root / "a" / "tmp.png")
    os.replace(os.fsencode(root / "a" / "tmp.png"), os.fsencode(root / "a") + b"/caf\xe9.png")  # latin-1: not UTF-8
    with unchanged(root):
        result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 2 and "Traceback" not in result.err
    assert (f"  - {root}/a/caf\\xe9.png: file name is not valid UTF-8; rename the file "
            "(e.g. convmv -f latin1 -t utf8 --notest)") in result.err.splitlines()
    ds = open_dataset(f"imagefolder:{root}", skip_bad=True)
    assert [s.id for s in ds.samples if s.id.startswith("a/")] == ["a/ok_0.png", "a/ok_1.png", "a/ok_2.png"]
    assert ds.info()["skipped"] == [["a/caf\\xe9.png", "file name is not valid UTF-8; rename the file "
                                                        "(e.g. convmv -f latin1 -t utf8 --notest)"]]
    assert json.dumps(ds.info())  # the whole description is UTF-8 text again
    # a class folder with such a name: its files are bad samples, the class name is shown escaped
    os.mkdir(os.fsencode(root) + b"/b\xe9")
    png(root / "tmp2.png")
    os.replace(os.fsencode(root / "tmp2.png"), os.fsencode(root) + b"/b\xe9/x.png")
    result = medprobe("datasets", "show", f"imagefolder:{root}", "--skip-bad")
    assert result.code == 0 and "classes: 0=a, 1=b, 2=b\\xe9" in result.out
    assert f"  {root}/b\\xe9/x.png: file name is not valid UTF-8; rename the file" in result.out.replace(
        " (e.g. convmv -f latin1 -t utf8 --notest)", "")


def test_row17_link_loop_self_link_and_dangling_link_are_listed_with_their_reason(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img")
    os.symlink("self.png", root / "a" / "self.png")  # points at itself
    os.symlink("loop_b.png", root / "a" / "loop_a.png")
    os.symlink("loop_a.png", root / "a" / "loop_b.png")
    os.symlink("gone.png", root / "b" / "dangling.png")
    os.symlink(root / "a", root / "b" / "back")  # a folder link inside the root: not walked (no image counted twice)
    outside = png(tmp_path / "outside.png")
    os.symlink(outside, root / "b" / "out.png")
    with unchanged(root):
        result = medprobe("datasets", "show", f"imagefolder:{root}", "--json")
    assert result.code == 0, result.err
    info = json.loads(result.out)
    ignored = info["ignored_files"]
    assert ignored["symbolic link loop"] == {"count": 3, "examples": ["a/loop_a.png", "a/loop_b.png", "a/self.png"]}
    assert ignored["broken symbolic link (target missing)"] == {"count": 1, "examples": ["b/dangling.png"]}
    assert ignored["link outside the dataset root"] == {"count": 1, "examples": ["b/out.png"]}
    assert info["counts"]["total"] == {"a": 3, "b": 3}


def test_row18_unreadable_file_is_permission_denied_not_corrupt(tmp_path, unprivileged, unchanged):
    root = image_folder(tmp_path / "img")
    locked = png(root / "a" / "locked.png")
    locked.chmod(0)
    try:
        with unchanged(root):
            result = unprivileged("datasets", "show", f"imagefolder:{root}")
    finally:
        locked.chmod(0o644)
    assert result.code == 2, result
    assert (f"  - {locked}: permission denied: the file cannot be opened for reading "
            "(fix its permissions, e.g. chmod a+r)") in result.err.splitlines()
    assert "corrupt" not in result.err and "Traceback" not in result.err


def test_row19_unreadable_class_folder_is_an_error_naming_it(tmp_path, unprivileged, unchanged):
    root = image_folder(tmp_path / "img")
    (root / "b").chmod(0)
    try:
        result = unprivileged("datasets", "show", f"imagefolder:{root}")
    finally:
        (root / "b").chmod(0o755)
    assert result.code == 2, result
    assert result.err.strip() == (
        f"Error: cannot list folder '{root / 'b'}' (Permission denied); fix its permissions (e.g. chmod a+rx) "
        "or move it out of the dataset")
    assert result.out == ""


def test_row20_empty_folder(tmp_path, medprobe):
    (tmp_path / "img").mkdir()
    result = medprobe("datasets", "show", f"imagefolder:{tmp_path / 'img'}")
    assert result.code == 2 and result.err.strip() == f"Error: imagefolder: '{tmp_path / 'img'}' has no class folders"


def test_row21_all_class_folders_empty(tmp_path, medprobe):
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
    result = medprobe("datasets", "show", f"imagefolder:{tmp_path / 'img'}")
    assert result.code == 2
    assert result.err.strip() == f"Error: dataset 'imagefolder' ({tmp_path / 'img'}): no images found"


def test_row21b_one_empty_class_folder_is_warned_with_its_name(tmp_path, medprobe):
    root = image_folder(tmp_path / "img")
    (root / "c").mkdir()
    result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 0
    assert f"warning: class folder '{root / 'c'}' holds no image files" in result.out.splitlines()
    assert ("warning: class(es) with 0 samples: c (a probe cannot learn them; check the data, or leave the class out)"
            in result.out.splitlines())


def test_row22_one_class_only_is_warned_and_refused_at_probe(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img", {"only": 12})
    result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 0 and "classes: 0=only" in result.out
    assert "warning: only one class (only): probing and classification need at least two" in result.out.splitlines()
    runs = tmp_path / "runs"
    result = medprobe("extract", "--model", "example-cnn", "--tiny", "--dataset", f"imagefolder:{root}", "--store", runs,
                      "--batch-size", "4")
    # the CLI refuses before loading the model (nothing written) ...
    assert result.code == 2 and len(result.err.splitlines()) == 1
    assert "leaves 1 class(es) (12 samples): a probe needs at least two classes" in result.err
    assert not runs.exists() or not any(runs.iterdir())
    # ... and a run made through the Python API is refused by probe, naming the run
    from medprobe.features.extract import extract

    run_dir = extract("example-cnn", f"imagefolder:{root}", runs, tiny=True, batch_size=4, progress=False).path
    with unchanged(run_dir):
        result = medprobe("probe", run_dir)
    assert result.code == 2 and result.err == f"Error: {run_dir}: probing needs at least two classes\n"


def test_row23_class_with_one_image_is_warned(tmp_path, medprobe):
    root = image_folder(tmp_path / "img", {"a": 6, "b": 1})
    result = medprobe("datasets", "show", f"imagefolder:{root}")
    assert result.code == 0
    warnings = [l for l in result.out.splitlines() if l.startswith("warning: ")]
    assert "warning: split 'val' has no samples of class(es): b" in warnings
    assert "warning: split 'test' has no samples of class(es): b" in warnings


def test_row24_duplicates_across_splits_and_a_relabelled_copy(tmp_path, medprobe, unchanged):
    root = image_folder(tmp_path / "img", {"a": 8, "b": 8})
    for i in range(8):  # every image of a copied under b: some copies land in another split
        shutil.copy(root / "a" / f"ok_{i}.png", root / "b" / f"copy_{i}.png")
    with unchanged(root):
        result = medprobe("datasets", "show", f"imagefolder:{root}", "--json")
    assert result.code == 0
    info = json.loads(result.out)
    assert len(info["duplicates"]) == 8 and all(d["conflicting_labels"] for d in info["duplicates"])
    cross = sum(d["cross_split"] for d in info["duplicates"])
    assert cross >= 1
    assert f"{cross} set(s) of identical images span more than one split (kept; pass --dedup to drop them)" in info["warnings"]
    assert any(w.startswith("8 set(s) of identical images carry different labels: a/ok_0.png, b/copy_0.png")
               or w.startswith("8 set(s) of identical images carry different labels: ") for w in info["warnings"])
    deduped = json.loads(medprobe("datasets", "show", f"imagefolder:{root}", "--json", "--dedup").out)
    assert len(deduped["dropped_duplicates"]) == 16 and deduped["num_samples"] == 8  # conflicting copies: all dropped
