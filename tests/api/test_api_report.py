"""Report: typed views over report.json, round trip, lookups, frames, figures, notebook display."""

from __future__ import annotations

import json
import sys

import pytest
from matplotlib.figure import Figure

import medprobe as mp
from medprobe.analysis.diagnosis import MODES, Verdict
from medprobe.analysis.exporters import CSV_COLUMNS
from medprobe.analysis.fhs import FHSProfile
from medprobe.registry import MedprobeError
from medprobe.analysis.reporting import LayerRow, ModelResult, ReportLookupError


def test_report_wraps_the_dict_the_cli_serialises(api_report):
    written = json.loads(api_report.path.read_text())
    assert api_report.to_dict() == written
    assert api_report.model_ids == ["lingshu-7b", "example-cnn"]
    assert api_report.synthetic and "SYNTHETIC" in api_report.banner
    assert api_report.probes == ["linear"] and api_report.primary_probe == "linear"
    for name in ("report.csv", "report.md", "report.html"):
        assert (api_report.path.parent / name).stat().st_size > 0


def test_round_trip_through_dict_json_and_files(api_report, tmp_path):
    data = api_report.to_dict()
    again = mp.Report.from_dict(json.loads(json.dumps(data, allow_nan=False)))
    assert again.to_dict() == data and again.models == api_report.models
    written = again.save(tmp_path, formats=("json",))
    assert set(written) == {"json"} and again.path == tmp_path / "report.json"
    for source in (tmp_path, tmp_path / "report.json"):
        loaded = mp.Report.load(source)
        assert loaded.to_dict() == data and loaded.path == tmp_path / "report.json"
    data["models"][0]["id"] = "edited"  # to_dict hands out a copy
    assert api_report.models[0].id == "lingshu-7b"


def test_from_dict_rejects_other_schemas(api_report):
    data = api_report.to_dict()
    with pytest.raises(MedprobeError, match="schema 'other'"):
        mp.Report.from_dict({**data, "schema": "other"})
    with pytest.raises(MedprobeError, match="schema_version 99"):
        mp.Report.from_dict({**data, "schema_version": 99})


def test_typed_models_and_rows(api_report):
    mllm = api_report.model("lingshu-7b")
    assert isinstance(mllm, ModelResult) and mllm.kind == "mllm" and mllm.synthetic
    raw_rows = api_report.to_dict()["models"][0]["layers"]
    assert len(mllm.layers) == len(raw_rows)
    for row, raw in zip(mllm.layers, raw_rows):
        assert isinstance(row, LayerRow)
        assert 0.0 <= row.accuracy <= 1.0 and 0.0 <= row.depth <= 1.0
        assert row.ci95[0] <= row.accuracy <= row.ci95[1]
        d = row.to_dict()
        assert {k: raw[k] for k in d} == d
    stages = {r.stage for r in mllm.rows(readout="image-mean")}
    assert {"vision", "connector", "llm"} <= stages
    assert all(r.readout == "last-token" for r in mllm.rows("linear", "last-token"))
    assert mllm.to_dict() == api_report.to_dict()["models"][0]


def test_fhs_is_a_typed_profile(api_report):
    prof = api_report.fhs("lingshu-7b")
    raw = api_report.to_dict()["models"][0]["fhs"]["linear"]
    assert isinstance(prof, FHSProfile)
    assert prof.text() == raw["profile"] and prof.to_dict() == raw
    assert prof.vision.n_layers > 0 and prof.llm.n_layers > 0
    assert api_report.fhs("lingshu-7b", "linear") == prof
    base = api_report.fhs("example-cnn")
    assert base.vision.n_layers > 0 and base.llm.n_layers == 0


def test_diagnosis_is_a_list_of_verdicts(api_report):
    verdicts = api_report.diagnosis("lingshu-7b")
    assert [v.mode for v in verdicts] == list(MODES)
    assert all(isinstance(v, Verdict) and v.verdict in ("present", "absent", "not_assessed") for v in verdicts)
    assert [v.to_dict() for v in verdicts] == api_report.to_dict()["models"][0]["diagnosis"]["linear"]
    with pytest.raises(ReportLookupError, match="'example-cnn' is a baseline"):
        api_report.diagnosis("example-cnn")


def test_lookup_errors_name_what_exists(api_report):
    with pytest.raises(ReportLookupError, match="models: lingshu-7b, example-cnn"):
        api_report.fhs("resnet50")
    with pytest.raises(ReportLookupError, match="probes: linear"):
        api_report.fhs("lingshu-7b", probe="mlp")


def test_to_frame_is_tidy(api_report):
    df = api_report.to_frame()
    assert list(df.columns) == list(CSV_COLUMNS)
    n_rows = sum(len(m.layers) for m in api_report.models)
    assert len(df) == n_rows
    assert not df.duplicated(["model", "layer", "readout", "probe"]).any()
    first = api_report.models[0].layers[0]
    row = df.iloc[0]
    assert (row["model"], row["layer"], row["readout"], row["accuracy"]) == ("lingshu-7b", first.id, first.readout, first.accuracy)


def test_fhs_and_diagnosis_frames(api_report):
    fhs = api_report.fhs_frame()
    assert list(fhs["model"]) == ["lingshu-7b", "example-cnn"]
    assert fhs.loc[0, "profile"] == api_report.fhs("lingshu-7b").text()
    assert fhs.loc[1, "FHS_L"] is None or fhs.loc[1, "FHS_L"] != fhs.loc[1, "FHS_L"]  # None or NaN: no LLM
    diag = api_report.diagnosis_frame()
    assert list(diag["mode"]) == list(MODES) and set(diag["model"]) == {"lingshu-7b"}


def test_frames_without_pandas_name_the_extra(api_report, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # what an environment without pandas looks like
    with pytest.raises(MedprobeError, match=r"medprobe\[pandas\]"):
        api_report.to_frame()


def test_plots_return_figures_shared_with_the_png_writer(api_report):
    from medprobe.analysis import figures

    fig = api_report.plot_layers()
    assert isinstance(fig, Figure) and len(fig.axes) == 2  # curves + stage ribbon
    assert "SYNTHETIC" in fig.axes[0].get_title()
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert any("Lingshu" in label or "lingshu" in label for label in labels)
    fhs = api_report.plot_fhs()
    assert isinstance(fhs, Figure) and [t.get_text() for t in fhs.axes[0].get_xticklabels()] == ["FHS_V", "FHS_C", "FHS_L", "P_final"]
    assert figures.layer_curves_png(api_report.to_dict(), "linear").startswith(b"\x89PNG")


def test_notebook_display(api_report):
    html = api_report._repr_html_()
    assert "SYNTHETIC" in html and "<table>" in html
    assert all(m.title in html for m in api_report.models)
    assert "SYNTHETIC" in repr(api_report) and "lingshu-7b" in repr(api_report)
