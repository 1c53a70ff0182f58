"""Real runs: two runs of one card (two tiny checkpoints) share a report, each row labelled by
its condition, with the dataset block the page and the CSV show."""

from __future__ import annotations

import csv

import pytest

import medprobe as mp

from .conftest import DATA, torch_threads


@pytest.mark.slow
def test_two_runs_of_one_card_share_a_report(api_runs, tmp_path):
    with torch_threads(1):
        other = mp.extract("example-cnn", DATA, tmp_path / "runs", tiny=True, batch_size=8, progress=False, seed=1)
        assert other.manifest["model"]["weights"] != api_runs.cnn.manifest["model"]["weights"]
        report = mp.report([api_runs.cnn, other], out=tmp_path / "rep")
    first, second = report.models
    assert first.card == second.card == "example-cnn" and first.id != second.id
    # the runs record their condition block: tiny random weights of seed 0 and of seed 1
    assert (first.condition, second.condition) == ("tiny random (seed 0)", "tiny random (seed 1)")
    assert (first.id, second.id) == ("example-cnn [tiny random (seed 0)]", "example-cnn [tiny random (seed 1)]")
    assert (first.run_key, second.run_key) == (api_runs.cnn.key, other.key)
    ds = first.raw["dataset"]
    assert ds["spec"] == api_runs.cnn.manifest["dataset"]["spec"] and ds["n"] == len(api_runs.cnn.sample_ids)
    assert sum(ds["splits"].values()) == ds["n"] and set(ds["splits"]) <= {"train", "val", "test"}
    assert ds["classes"] == api_runs.cnn.classes and ds["skipped"] == 0
    rows = list(csv.DictReader((tmp_path / "rep" / "report.csv").open()))
    assert {r["run_key"] for r in rows} == {api_runs.cnn.key, other.key}
    assert {r["dataset"] for r in rows} == {ds["spec"]} and {r["condition"] for r in rows} == {"tiny random (seed 0)", "tiny random (seed 1)"}
    page = (tmp_path / "rep" / "report.html").read_text()
    assert ", ".join(ds["classes"]) in page and first.id in page and second.id in page
