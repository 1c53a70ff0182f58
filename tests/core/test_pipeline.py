"""probe / report / compare / demo over run directories (CLI and functions)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from medprobe.tasks import pipeline
from medprobe.cli import cli
from medprobe.features.extract import extract
from medprobe.registry import MedprobeError

DATA = "synthetic:lesions?n=60&size=32"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    cnn = extract("example-cnn", DATA, root, tiny=True, batch_size=8, progress=False)
    mllm = extract("lingshu-7b", DATA, root, tiny=True, batch_size=8, progress=False)
    return cnn, mllm


def test_probe_saves_and_reuses_results(runs):
    cnn, _ = runs
    out = CliRunner().invoke(cli, ["probe", str(cnn.path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)["linear"]
    saved = cnn.path / "probes" / "linear-cv5-seeds0-1-2"  # the default protocol: cv, k 5, seeds 0 1 2
    assert (saved / "results.json").is_file() and (saved / "outcomes.safetensors").is_file()
    stamp = (saved / "results.json").stat().st_mtime_ns
    again = pipeline.probe_run(cnn, "linear")
    assert (saved / "results.json").stat().st_mtime_ns == stamp  # reused, not retrained
    assert set(again["linear"].layers) == {"stage.0/image-mean", "stage.1/image-mean", "stage.2/image-mean", "head/image-mean"}
    assert data["probe"] == "linear"


def test_report_from_runs_writes_four_files(runs, tmp_path):
    cnn, mllm = runs
    out = CliRunner().invoke(cli, ["report", str(mllm.path), str(cnn.path), "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "SYNTHETIC" in out.output and "FHS_V" in out.output
    for name in ("report.json", "report.csv", "report.md", "report.html"):
        assert (tmp_path / name).stat().st_size > 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["synthetic"] and report["banner"]
    ids = {m["id"]: m for m in report["models"]}
    assert ids["lingshu-7b"]["kind"] == "mllm" and ids["example-cnn"]["kind"] == "baseline"
    modes = {d["mode"] for d in ids["lingshu-7b"]["diagnosis"]["linear"]}
    assert modes == {"visual_representation", "connector_fidelity", "llm_entry", "llm_comprehension", "semantic_mapping"}
    assert ids["lingshu-7b"]["manifest"]["run_key"] == mllm.key
    html = (tmp_path / "report.html").read_text()
    assert "data:image/png;base64," in html and "SYNTHETIC" in html


def test_report_refuses_runs_on_different_data(runs, tmp_path):
    cnn, _ = runs
    other = extract("example-cnn", "synthetic:lesions?n=60&size=32&seed=1", tmp_path / "r", tiny=True, progress=False)
    with pytest.raises(MedprobeError, match="different datasets"):
        pipeline.report_runs([cnn, other])


def test_baseline_option_adds_a_baseline_row(runs, tmp_path):
    cnn, mllm = runs
    report = pipeline.report_runs([mllm], tmp_path, baseline=cnn.path)
    assert [m["kind"] for m in report["models"]] == ["mllm", "baseline"]
    assert report["diagnosis_settings"]["baseline"]["linear"]["model"] == "example-cnn"


def test_compare_cli(tmp_path):
    out = CliRunner().invoke(
        cli, ["compare", "--models", "medgemma-4b,example-cnn", "--dataset", DATA, "--out", str(tmp_path), "--tiny"]
    )
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert [m["id"] for m in report["models"]] == ["medgemma-4b", "example-cnn"]
    assert len(list((tmp_path / "runs").iterdir())) == 2


@pytest.mark.slow
def test_demo_produces_the_four_report_files(tmp_path):
    out = CliRunner().invoke(cli, ["demo", "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["synthetic"]
    kinds = [m["kind"] for m in report["models"]]
    assert kinds.count("mllm") == 3 and kinds.count("baseline") == 2
    for name in ("report.csv", "report.md", "report.html"):
        assert (tmp_path / name).is_file()
