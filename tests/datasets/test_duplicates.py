"""Leakage never passes silently: duplicate clusters reach the dataset, the run manifest, the
probe output, report.json and the report banner (issue 12, item 6).

The fixture is the issue's case: an imagefolder with 50 identical-image sets across splits, 23 of
the 66 test images having a copy in train.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from medprobe.cli import cli
from medprobe.datasets import Sample, ScanResult, open_dataset
from medprobe.datasets.groups import dataset_leakage, duplicate_clusters, run_groups, sample_groups, summary_line

from ds_make import noise, write_image

N_TRAIN, N_VAL, N_TEST = 90, 30, 66
TEST_COPIES, VAL_COPIES = 23, 27  # 50 identical-image sets across splits


def _issue_folder(root: Path) -> Path:
    """train/val/test x {a, b}; the first 23 test and 27 val images are copies of train images."""
    train = []
    for i in range(N_TRAIN):
        cls = "ab"[i % 2]
        arr = noise((24, 20), seed=10_000 + i)
        write_image(root / "train" / cls / f"t{i:03d}.png", arr)
        train.append((cls, arr))
    for split, n, copies, offset in (("test", N_TEST, TEST_COPIES, 0), ("val", N_VAL, VAL_COPIES, TEST_COPIES)):
        for i in range(n):
            if i < copies:
                cls, arr = train[offset + i]
            else:
                cls, arr = "ab"[i % 2], noise((24, 20), seed=20_000 + 1000 * len(split) + i)
            write_image(root / split / cls / f"{split[0]}{i:03d}.png", arr)
    return root


@pytest.fixture(scope="module")
def issue_folder(tmp_path_factory) -> Path:
    return _issue_folder(tmp_path_factory.mktemp("dups"))


def test_dataset_counts_the_issue_case(issue_folder):
    ds = open_dataset(f"imagefolder:{issue_folder}")
    leakage, groups = ds.leakage()
    assert leakage["exact_clusters"] == 50 and leakage["near_clusters"] == 0
    assert leakage["samples_in_clusters"] == 100 and leakage["cross_split_samples"] == 100
    assert leakage["cross_split_by_split"] == {"test": TEST_COPIES, "train": 50, "val": VAL_COPIES}
    assert leakage["threshold"] == ds.near_threshold and leakage["checked"]
    assert len(leakage["examples"]) == 5 and all(len(p) == 2 for p in leakage["examples"])
    # copies share one group label, every other image is its own group
    by_id = dict(zip((s.id for s in ds.samples), groups))
    assert by_id["train/a/t000.png"] == by_id["test/a/t000.png"] == "dup:test/a/t000.png"
    assert by_id["train/b/t023.png"] == by_id["val/b/v000.png"]
    assert len(set(groups)) == len(ds.samples) - 50
    assert any("identical images span more than one split" in w for w in ds.warnings)
    assert summary_line(leakage).startswith("LEAKAGE: 50 duplicate cluster(s) (50 exact, 0 near")


def test_near_duplicates_are_clustered_and_warned(tmp_path):
    rng = np.random.default_rng(0)
    base = (rng.random((64, 64)) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(base).resize((8, 8)).resize((64, 64), Image.Resampling.BICUBIC))
    write_image(tmp_path / "train" / "a" / "orig.png", smooth)
    (tmp_path / "test" / "a").mkdir(parents=True)
    Image.fromarray(smooth).resize((40, 40)).save(tmp_path / "test" / "a" / "small.png")
    buf = io.BytesIO()
    Image.fromarray(smooth).save(buf, "JPEG", quality=70)
    (tmp_path / "val" / "a").mkdir(parents=True)
    (tmp_path / "val" / "a" / "jpeg.jpg").write_bytes(buf.getvalue())
    for split in ("train", "val", "test"):
        for i in range(3):
            write_image(tmp_path / split / "b" / f"{i}.png", noise((64, 64), seed=500 + 10 * len(split) + i))
    ds = open_dataset(f"imagefolder:{tmp_path}")
    leakage, groups = ds.leakage()
    assert leakage["exact_clusters"] == 0 and leakage["near_clusters"] == 1
    assert leakage["samples_in_clusters"] == 3 and leakage["cross_split_samples"] == 3
    near = ds.info()["near_duplicates"]
    assert [c["ids"] for c in near] == [["test/a/small.png", "train/a/orig.png", "val/a/jpeg.jpg"]]
    assert any("near-duplicate" in w for w in ds.warnings)
    assert len(set(groups)) == len(ds.samples) - 2


def test_patient_ids_group_and_merge_with_duplicates():
    samples = [Sample("a", 0, "train", "p1"), Sample("b", 0, "test", "p1"), Sample("c", 1, "train", None),
               Sample("d", 1, "test", "p2"), Sample("e", 1, "val", None), Sample("f", 0, "val", None)]
    scans = {s.id: ScanResult(8, 8, "L", h) for s, h in zip(samples, ["h1", "h2", "h3", "h3", "h4", "h4"])}
    clusters = duplicate_clusters(samples, scans)
    assert [c.ids for c in clusters] == [("c", "d"), ("e", "f")]
    groups = sample_groups(samples, clusters)
    # patients always group; a copy of a patient's image joins that patient's group
    assert groups == ["patient:p1", "patient:p1", "patient:p2", "patient:p2", "dup:e", "dup:e"]


def test_synthetic_data_says_not_checked():
    ds = open_dataset("synthetic:lesions?n=12&size=32")
    leakage, groups = ds.leakage()
    assert leakage["checked"] is False
    assert summary_line(leakage) == "duplicates not checked (generated data: images are not decoded)"
    assert groups == [f"patient:{s.group}" for s in ds.samples]


@pytest.mark.slow  # one extraction + two probes + a report: ~15 s on the shared 2-core box
def test_leakage_reaches_manifest_probe_and_report(issue_folder, tmp_path):
    from medprobe.features.extract import extract
    from medprobe.tasks.pipeline import report_runs

    spec = f"imagefolder:{issue_folder}"
    run = extract("example-cnn", spec, tmp_path / "runs", tiny=True, batch_size=64, progress=False)
    leakage = run.manifest["leakage"]
    assert leakage["exact_clusters"] == 50 and leakage["cross_split_by_split"]["test"] == TEST_COPIES
    groups = run_groups(run.manifest)
    assert len(groups) == len(run.sample_ids) == N_TRAIN + N_VAL + N_TEST
    assert groups[run.sample_ids.index("test/a/t000.png")] == groups[run.sample_ids.index("train/a/t000.png")]
    assert run.manifest["condition"] == {"weights": "tiny-random", "source": None, "seed": 0, "lora": None}

    text = CliRunner().invoke(cli, ["probe", str(run.path), "--no-controls"])
    assert text.exit_code == 0, text.output
    assert "LEAKAGE: 50 duplicate cluster(s) (50 exact, 0 near" in text.output
    assert "(test 23, train 50, val 27)" in text.output
    js = CliRunner().invoke(cli, ["probe", str(run.path), "--no-controls", "--json"])
    assert json.loads(js.output)["linear"]["protocol"]["leakage"]["exact_clusters"] == 50

    report = report_runs([run], tmp_path / "report", formats=("json", "md"))
    entry = report["models"][0]
    assert entry["leakage"]["exact_clusters"] == 50 and entry["leakage"]["cross_split_samples"] == 100
    assert report["leakage_banner"].startswith("LEAKAGE: 50 duplicate cluster(s)")
    saved = json.loads((tmp_path / "report" / "report.json").read_text())
    assert saved["leakage_banner"] == report["leakage_banner"]
    assert saved["models"][0]["leakage"]["examples"]
    assert report["leakage_banner"] in (tmp_path / "report" / "report.md").read_text()


@pytest.mark.slow
def test_leakage_banner_in_html():
    from medprobe.analysis.exporters import render_html
    from medprobe.analysis.report import build_report

    layers = [{"id": "stage.0", "stage": "cnn", "depth": 0.0, "readout": "image-mean",
               "result": {"probe": "linear", "key": "stage.0/image-mean", "metrics": {"accuracy": 0.9}, "ci95": [0.8, 0.95],
                          "chance": 0.5, "n_train": 10, "n_val": 5, "n_test": 5, "width": 4, "seed": 0, "hyper": {}}}]
    leakage = {"checked": True, "exact_clusters": 2, "near_clusters": 0, "samples_in_clusters": 4,
               "cross_split_samples": 4, "cross_split_by_split": {"test": 2, "train": 2}, "threshold": 6,
               "examples": [["test/x.png", "train/y.png"]]}
    report = build_report([{"model": "m", "kind": "baseline", "layers": layers, "manifest": {"leakage": leakage}}])
    assert report["models"][0]["leakage"] == leakage
    html = render_html(report)
    assert 'id="leakage-banner"' in html and "test/x.png ~ train/y.png" in html


def test_old_manifest_without_groups_falls_back():
    assert run_groups({"dataset": {"sample_ids": ["a", "b"]}}) is None
    with pytest.raises(Exception, match="groups has 1 entries for 2 samples"):
        run_groups({"dataset": {"sample_ids": ["a", "b"], "groups": ["x"]}})


def test_dataset_leakage_restricts_to_a_subset(issue_folder):
    ds = open_dataset(f"imagefolder:{issue_folder}")
    subset = [s for s in ds.samples if s.split != "val"]
    leakage, groups = dataset_leakage(ds, subset)
    assert leakage["exact_clusters"] == TEST_COPIES and leakage["cross_split_by_split"] == {"test": 23, "train": 23}
    assert len(groups) == len(subset)
