"""``medprobe datasets list`` and ``medprobe datasets show`` on every loader."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from ds_make import KERMANY, make_busi, make_covid_ct, make_imagefolder, make_kermany, make_medmnist, write_image
from medprobe.cli import cli, main


def _show(*args):
    result = CliRunner().invoke(cli, ["datasets", "show", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _show_json(*args):
    return json.loads(_show(*args, "--json"))


def test_list_names_every_builtin_scheme():
    out = CliRunner().invoke(cli, ["datasets", "list"]).output
    for scheme in ("synthetic", "digits", "imagefolder", "csv", "medmnist", "busi", "chest-xray", "covid-ct"):
        assert f"\n{scheme} " in "\n" + out
    data = json.loads(CliRunner().invoke(cli, ["datasets", "list", "--json"]).output)
    assert {d["scheme"] for d in data} >= {"busi", "covid-ct"} and all(d["plugin"] for d in data)


def test_show_synthetic_text_flags_it_and_prints_the_table():
    out = _show("synthetic:lesions?n=60&size=32", "--seed", "1")
    lines = out.splitlines()
    assert lines[0] == "dataset: synthetic:lesions?n=60&size=32&seed=1"
    assert lines[1] == "SYNTHETIC DATA: generated images, not patient data"
    assert "split: seeded-stratified-grouped (70/15/15 train/val/test, seed 1)" in out
    total = next(l for l in lines if l.startswith("total"))
    assert total.split()[-1] == "60"
    assert "in several splits: none" in out and "image sizes: 32x32 (60)" in out


def test_show_json_counts_for_each_loader(tmp_path):
    make_imagefolder(tmp_path / "if", {"a": 5, "b": 4})
    info = _show_json(f"imagefolder:{tmp_path / 'if'}")
    assert info["counts"]["total"] == {"a": 5, "b": 4} and len(sum(info["split_ids"].values(), [])) == 9

    make_busi(tmp_path / "busi")
    info = _show_json(f"busi:{tmp_path / 'busi'}")
    assert info["counts"]["total"] == {"benign": 6, "malignant": 5, "normal": 4}
    assert len(info["duplicates"]) == 2 and info["ignored_files"]["segmentation mask (*_mask*)"]["count"] == 16

    make_kermany(tmp_path / "cx")
    info = _show_json(f"chest-xray:{tmp_path / 'cx'}")
    for split, classes in KERMANY.items():
        assert info["counts"][split] == {c: len(v) for c, v in classes.items()}
    assert info["groups"]["count"] == 18 and info["groups"]["in_several_splits"] == {}

    make_covid_ct(tmp_path / "ct")
    info = _show_json(f"covid-ct:{tmp_path / 'ct'}")
    assert info["counts"]["total"] == {"NonCOVID": 8, "COVID": 6} and info["split_method"] == "official"

    path = make_medmnist(tmp_path / "pneumoniamnist.npz", names=["normal", "pneumonia"])
    info = _show_json(f"medmnist:{path}")
    assert info["counts"]["val"] == {"normal": 2, "pneumonia": 2} and info["image_sizes"] == {"28x28": 22}

    rows = ["path,label"] + [f"{i}.png,{'x' if i % 2 else 'y'}" for i in range(10)]
    for i in range(10):
        write_image(tmp_path / "csv" / f"{i}.png")
    (tmp_path / "csv" / "m.csv").write_text("\n".join(rows))
    info = _show_json(f"csv:{tmp_path / 'csv' / 'm.csv'}")
    assert info["counts"]["total"] == {"x": 5, "y": 5}

    info = _show_json("digits", "--limit", "50")
    assert info["num_samples"] == 50 and not info["synthetic"]


def test_show_text_lists_duplicates_and_dedup(tmp_path):
    make_busi(tmp_path)
    out = _show(f"busi:{tmp_path}")
    assert "duplicates: 2 set(s) of identical images" in out
    assert "benign/benign (2).png [" in out and "malignant/malignant (5).png [" in out
    assert "warning: BUSI has no patient ids" in out
    out = _show(f"busi:{tmp_path}", "--dedup")
    assert "dropped (--dedup): 3" in out and "&dedup=1" in out.splitlines()[0]


def test_bad_files_exit_2_naming_the_file_or_are_listed_with_skip_bad(tmp_path, capsys):
    make_imagefolder(tmp_path, {"a": 3, "b": 3})
    (tmp_path / "a" / "zero.png").write_bytes(b"")
    with pytest.raises(SystemExit) as exit_info:
        main(["datasets", "show", f"imagefolder:{tmp_path}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a' / 'zero.png'}: empty file (0 bytes)" in err and "Traceback" not in err
    out = _show(f"imagefolder:{tmp_path}", "--skip-bad")
    assert "skipped (--skip-bad): 1" in out and f"{tmp_path / 'a' / 'zero.png'}: empty file (0 bytes)" in out
    assert "total  3  3  6" in out


@pytest.mark.parametrize("argv", [["datasets", "list"], ["datasets", "show", "synthetic:lesions?n=9&size=16"]])
def test_datasets_commands_do_not_import_torch(argv):
    code = (
        "import sys\nfrom medprobe.cli import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('HEAVY', [m for m in ('torch', 'transformers', 'timm', 'open_clip', 'sklearn', 'pydicom') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY []"
