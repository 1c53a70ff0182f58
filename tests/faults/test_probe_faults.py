"""Fault cases of probing and reporting over runs: a train split with one class, hostile text in a
run (docs/reliability.md, "Store, extraction and probing"; corpus rows in the test names).

Tiny random example CNN on synthetic / generated images: pipeline checks, not findings.
"""

from __future__ import annotations

from medprobe.tasks.pipeline import probe_dir
import json

import numpy as np
import pytest
from PIL import Image

from _store_util import BATCH, DATA, MODEL, copy_run, edit_manifest, medprobe, tree_checksums
from medprobe.features.extract import extract


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return extract(MODEL, DATA, tmp_path_factory.mktemp("base"), tiny=True, batch_size=BATCH, progress=False).path


def test_70_probe_with_one_class_in_train_names_the_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    for split, classes in (("train", ["a"]), ("val", ["a", "b"]), ("test", ["a", "b"])):
        for c in classes:
            (data / split / c).mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(data / split / c / f"{i}.png")
    run = extract(MODEL, f"imagefolder:{data}", tmp_path / "runs", tiny=True, batch_size=4, progress=False)
    before = tree_checksums(run.path)
    # the held-out split protocol fits on 'train' alone (cross-fitting pools the splits, so there it is no fault)
    rc, _, err = medprobe(capsys, "probe", run.path, "--protocol", "split")
    assert rc == 2 and err == f"Error: {run.path}: the 'train' split holds a single class; a probe cannot be fitted\n"
    assert not any((run.path / "probes").glob("*/results.json")) if (run.path / "probes").exists() else True
    assert tree_checksums(run.path) == before


@pytest.mark.slow  # probes with controls and draws the report figures
def test_74_report_contains_and_escapes_hostile_run_text(base, tmp_path, capsys):
    """A well-formed run (checksums recomputed, as a shared run could be) whose ids climb out of
    folders and whose card and classes carry markup: the report stays in --out and escapes it."""
    run_dir = copy_run(base, tmp_path / "runs")
    payload = "<script>alert(1)</script>"

    def hostile(m):
        m["dataset"]["sample_ids"][0] = "../../../escaped" + payload
        m["dataset"]["classes"][0] = payload
        m["model"]["card"]["title"] = payload

    edit_manifest(run_dir, hostile, reseal=True)
    rc, _, err = medprobe(capsys, "report", run_dir, "--out", tmp_path / "rep")
    assert rc == 0, err
    html = (tmp_path / "rep" / "report.html").read_text()
    assert payload not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert json.loads((tmp_path / "rep" / "report.json").read_text())["models"][0]["title"] == payload  # data kept as data
    written = {p.relative_to(tmp_path).parts[0] for p in tmp_path.rglob("*")}
    assert written == {"runs", "rep"} and not list(tmp_path.parent.rglob("escaped*"))
