"""The report: built from model inputs, written in four formats, re-loadable, banner rules."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest

from conftest import make_split, planted_features
from medprobe.analysis.exporters import write_report
from medprobe.analysis.probes import probe_layers
from medprobe.analysis.report import (
    REPORT_SCHEMA,
    REPORT_SCHEMA_VERSION,
    SYNTHETIC_BANNER,
    ModelInput,
    ReportError,
    answers_correctness,
    build_report,
    load_report,
)
from medprobe.analysis.results import LayerProbeResult


def result(key, acc, probe="linear", half=0.03):
    return LayerProbeResult(
        key=key, probe=probe, metrics={"accuracy": acc, "balanced_accuracy": acc, "macro_f1": acc, "auroc": None},
        ci95=(acc - half, acc + half), chance=0.4, seed=0, n_train=300, n_val=100, n_test=100, width=8,
        hyper={"C": 0.1}, permutation_p=0.02, control_accuracy=0.4, selectivity=acc - 0.4,
    )  # fmt: skip


N = 100


def nested(acc, n=N, seeds=3):
    """(S, N) 0/1 with exactly round(acc * n) correct samples, the first ones: layers are nested,
    so a lower layer is wrong wherever a higher one is (a perfectly paired structure)."""
    row = [1 if i < round(acc * n) else 0 for i in range(n)]
    return [row] * seeds


def mllm_entry(model="tiny-mllm", synthetic=True, p_final=0.6, outcomes=True):
    layers = []
    curve = [("vision.00", "vision", 0.0, 0.60), ("vision.01", "vision", 0.2, 0.80), ("connector", "connector", 0.4, 0.70),
             ("llm.00", "llm", 0.6, 0.72), ("llm.01", "llm", 0.8, 0.68), ("llm.02", "llm", 1.0, 0.62)]  # fmt: skip
    for lid, stage, depth, acc in curve:
        layers.append({"id": lid, "stage": stage, "depth": depth, "used": True, "feeds_connector": lid == "vision.01",
                       "readout": "image-mean", "result": result(f"{lid}/image-mean", acc).to_dict(),
                       "outcomes": {"linear": nested(acc)} if outcomes else {}})  # fmt: skip
    layers.append(
        {
            "id": "llm.02",
            "stage": "llm",
            "depth": 1.0,
            "readout": "last-token",
            "result": result("llm.02/last-token", 0.75),
            "outcomes": {"linear": nested(0.75)} if outcomes else {},
        }
    )
    extra = {}
    if outcomes:
        extra = {"sample_index": {"linear": list(range(N))}, "p_final_method": "score"}
        if p_final is not None:
            extra["p_final_correct"] = nested(p_final, seeds=1)[0]
    return {"model": model, "title": "Tiny MLLM", "kind": "mllm", "category": "medical", "synthetic": synthetic,
            "synthetic_reasons": ["tiny random model", "synthetic dataset"] if synthetic else [],
            "layers": layers, "p_final": p_final, "p_final_n": 100, "manifest": {"run_key": "abc"}, **extra}  # fmt: skip


def baseline_entry(synthetic=False):
    layers = [{"id": f"stage.{i}", "stage": "cnn", "depth": i / 3, "readout": "image-mean",
               "result": result(f"stage.{i}/image-mean", a), "outcomes": {"linear": nested(a)}}
              for i, a in enumerate([0.6, 0.7, 0.85, 0.9])]  # fmt: skip
    return {"model": "resnet18", "title": "ResNet-18", "kind": "baseline", "category": "cnn", "synthetic": synthetic,
            "layers": layers, "manifest": {"run_key": "def"}, "sample_index": {"linear": list(range(N))}}  # fmt: skip


def test_report_contents_fhs_diagnosis_and_baseline():
    rep = build_report([mllm_entry(), baseline_entry()], created="2026-01-01T00:00:00+00:00")
    assert rep["schema"] == REPORT_SCHEMA and rep["schema_version"] == REPORT_SCHEMA_VERSION
    assert rep["synthetic"] and rep["banner"] == SYNTHETIC_BANNER and rep["synthetic_models"] == ["tiny-mllm"]
    assert rep["probes"] == ["linear"] and rep["primary_probe"] == "linear"
    mllm, base = rep["models"]
    assert len(mllm["layers"]) == 7 and mllm["layers"][0]["module"] == "vision"
    row = mllm["layers"][0]
    for field in (
        "accuracy",
        "ci95",
        "chance",
        "permutation_p",
        "selectivity",
        "balanced_accuracy",
        "macro_f1",
        "auroc",
        "depth",
    ):
        assert field in row
    assert mllm["fhs"]["linear"]["connector"]["score"] == pytest.approx(0.70)
    assert mllm["fhs"]["linear"]["profile"].startswith("FHS_V ")
    verdicts = {v["mode"]: v["verdict"] for v in mllm["diagnosis"]["linear"]}
    assert verdicts == {
        "visual_representation": "present",  # 0.80 vs ResNet 0.90
        "connector_fidelity": "present",  # 0.80 -> 0.70
        "llm_entry": "absent",  # 0.70 -> 0.72
        "llm_comprehension": "present",  # 0.72 -> 0.62
        "semantic_mapping": "present",  # P_final 0.60 vs last token 0.75
    }
    for v in mllm["diagnosis"]["linear"]:
        assert set(v) >= {"effect", "ci95", "p_value", "statistic", "multiplicity", "rule", "n"} and v["n"] == N
    conn = next(v for v in mllm["diagnosis"]["linear"] if v["mode"] == "connector_fidelity")
    assert conn["effect"] == pytest.approx(0.10) and conn["p_value"] == pytest.approx(1 / 2001)
    sem = next(v for v in mllm["diagnosis"]["linear"] if v["mode"] == "semantic_mapping")
    assert sem["evidence"]["p_final_method"] == "score" and mllm["p_final_method"] == "score"
    for module in ("vision", "connector", "llm"):
        lo, hi = mllm["fhs"]["linear"][module]["ci95"]
        assert lo <= mllm["fhs"]["linear"][module]["score"] <= hi
    assert mllm["fhs"]["linear"]["p_final_ci95"][0] < 0.6 < mllm["fhs"]["linear"]["p_final_ci95"][1]
    assert mllm["paired_outcomes"]["linear"] == {"n": N, "n_seeds": 3, "seed_variance": True, "p_final_paired": True}
    assert rep["diagnosis_settings"]["alpha"] == 0.05 and rep["diagnosis_settings"]["n_boot"] == 2000
    assert rep["diagnosis_settings"]["baseline"]["linear"]["model"] == "resnet18"
    assert base["diagnosis"] == {} and base["fhs"]["linear"]["connector"]["n_layers"] == 0
    assert mllm["p_final_ci95"][0] < 0.6 < mllm["p_final_ci95"][1]


def test_four_files_written_and_json_round_trips(tmp_path):
    rep = build_report([mllm_entry(), baseline_entry()])
    paths = write_report(rep, tmp_path)
    assert {p.name for p in paths.values()} == {"report.json", "report.csv", "report.md", "report.html"}
    assert load_report(tmp_path) == rep == json.loads(paths["json"].read_text())
    rows = list(csv.DictReader(paths["csv"].open()))
    assert len(rows) == 7 + 4  # model x layer x readout (x probe)
    assert {r["readout"] for r in rows if r["model"] == "tiny-mllm"} == {"image-mean", "last-token"}
    assert rows[0]["synthetic"] == "True" and float(rows[0]["accuracy"]) == pytest.approx(0.6)
    html = paths["html"].read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}">', html)) == 3  # overview, per-model panels, FHS
    assert 'id="synthetic-banner"' in html and SYNTHETIC_BANNER in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    md = paths["md"].read_text()
    assert md.splitlines()[2].startswith("> **⚠ " + SYNTHETIC_BANNER)
    assert "| Tiny MLLM | **present**" in md


def test_no_banner_without_synthetic_inputs(tmp_path):
    rep = build_report([mllm_entry(synthetic=False), baseline_entry()])
    assert rep["synthetic"] is False and rep["banner"] is None
    paths = write_report(rep, tmp_path, formats=("html", "md"))
    assert "synthetic-banner" not in paths["html"].read_text()
    assert SYNTHETIC_BANNER not in paths["md"].read_text()
    # a synthetic baseline alone flags the whole report
    assert build_report([mllm_entry(synthetic=False), baseline_entry(synthetic=True)])["synthetic"] is True


def test_without_baseline_or_p_final_the_report_says_so():
    rep = build_report([mllm_entry(p_final=None)])
    m = rep["models"][0]
    verdicts = {v["mode"]: v for v in m["diagnosis"]["linear"]}
    assert verdicts["visual_representation"]["verdict"] == "not_assessed"
    assert verdicts["semantic_mapping"]["verdict"] == "not_assessed"
    assert "no baseline" in rep["diagnosis_settings"]["baseline_note"]
    assert m["fhs"]["linear"]["profile"].endswith("P_final n/a (no generated answers)")


def test_report_from_real_probe_results_with_two_probes(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    y = rng.integers(0, 2, n)
    sp = make_split(n, rng)
    specs = [{"id": "vision.00", "stage": "vision", "depth": 0.0}, {"id": "connector", "stage": "connector", "depth": 0.5},
             {"id": "llm.00", "stage": "llm", "depth": 1.0}]  # fmt: skip
    raw = planted_features(y, [0.3, 0.5, 0.4, 0.6], [8, 8, 8, 8], rng)
    feats = dict(
        zip(["vision.00/image-mean", "connector/image-mean", "llm.00/image-mean", "llm.00/last-token"], raw.values())
    )
    lin = probe_layers(feats, y, sp, probe="linear", n_permutations=3)
    mlp = probe_layers(feats, y, sp, probe="mlp", n_permutations=1, hidden=8, epochs=2)
    m = ModelInput.from_probe_results(model="m", kind="mllm", layers=specs, results=[lin, mlp], synthetic=True,
                                      synthetic_reasons=["synthetic dataset"], p_final=0.5, p_final_n=40)  # fmt: skip
    assert [(x.id, x.readout) for x in m.layers] == [(k.split("/")[0], k.split("/")[1]) for k in feats]
    rep = build_report([m], primary_probe="mlp")
    assert rep["probes"] == ["linear", "mlp"] and rep["primary_probe"] == "mlp"
    entry = rep["models"][0]
    assert set(entry["fhs"]) == set(entry["diagnosis"]) == {"linear", "mlp"}
    # the probe's per-sample outcomes (format medprobe.probe/2) reach the paired verdicts and FHS intervals
    n_scored = len(lin.sample_index)
    assert entry["paired_outcomes"]["linear"]["n"] == n_scored
    conn = next(v for v in entry["diagnosis"]["linear"] if v["mode"] == "connector_fidelity")
    assert conn["verdict"] in ("present", "absent") and conn["n"] == n_scored and conn["p_value"] is not None
    assert entry["fhs"]["linear"]["vision"]["ci95"] is not None
    assert len(entry["layers"]) == 8
    write_report(rep, tmp_path)
    assert load_report(tmp_path / "report.json") == rep
    assert ModelInput.from_dict(m.to_dict()).to_dict() == m.to_dict()


def test_bad_inputs_and_files(tmp_path):
    with pytest.raises(ReportError, match="appear more than once"):
        build_report([mllm_entry(), mllm_entry()])
    with pytest.raises(ReportError, match="kind 'llm'"):
        build_report([{**mllm_entry(), "kind": "llm"}])
    with pytest.raises(ReportError, match="layer 'x'.*stage 'encoder'"):
        build_report(
            [{**mllm_entry(), "layers": [{"id": "x", "stage": "encoder", "result": result("x/image-mean", 0.5)}]}]
        )
    (tmp_path / "report.json").write_text(json.dumps({"schema": REPORT_SCHEMA, "schema_version": 99}))
    with pytest.raises(ReportError, match="upgrade medprobe"):
        load_report(tmp_path)
    bad = mllm_entry()
    bad["sample_index"] = {"linear": list(range(N - 1))}
    with pytest.raises(ReportError, match="cover 100 samples, sample_index has 99"):
        build_report([bad])
    with pytest.raises(ReportError, match="p_final_method 'guess'"):
        build_report([{**mllm_entry(), "p_final_method": "guess"}])


def test_version_1_reports_are_still_read(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps({"schema": REPORT_SCHEMA, "schema_version": 1, "models": []}))
    assert load_report(tmp_path)["schema_version"] == 1


def test_without_outcomes_verdicts_are_not_assessed_with_the_reason():
    rep = build_report([mllm_entry(outcomes=False), baseline_entry()])
    m = rep["models"][0]
    assert m["paired_outcomes"] == {"linear": None}
    for v in m["diagnosis"]["linear"]:
        assert v["verdict"] == "not_assessed" and v["p_value"] is None
    conn = next(v for v in m["diagnosis"]["linear"] if v["mode"] == "connector_fidelity")
    assert "no per-sample outcomes" in conn["summary"] and conn["evidence"]["marginal_only"]
    assert m["fhs"]["linear"]["vision"]["ci95"] is None


def test_baseline_on_other_samples_is_not_paired_and_answers_align_by_id():
    base = baseline_entry()
    base["sample_index"] = {"linear": list(range(1, N + 1))}
    rep = build_report([mllm_entry(), base])
    vis = rep["models"][0]["diagnosis"]["linear"][0]
    assert vis["verdict"] == "not_assessed" and "not paired" in vis["summary"]
    answers = [{"id": "b", "correct": False}, {"id": "a", "correct": True}, {"id": "c", "correct": True}]
    assert answers_correctness(answers, ["a", "b", "c"]).tolist() == [True, False, True]
    with pytest.raises(ReportError, match="first: 'd'"):
        answers_correctness(answers, ["a", "d"])


def test_markdown_and_html_show_intervals_and_verdict_statistics(tmp_path):
    rep = build_report([mllm_entry(), baseline_entry()])
    paths = write_report(rep, tmp_path, formats=("md", "html"))
    md = paths["md"].read_text()
    assert "## FHS with 95% intervals — `linear` probe" in md and "## Verdict statistics — `linear` probe" in md
    fhs_c = rep["models"][0]["fhs"]["linear"]["connector"]
    assert f"0.700 [{fhs_c['ci95'][0]:.3f}, {fhs_c['ci95'][1]:.3f}]" in md
    assert "| Tiny MLLM | connector_fidelity | present | +0.100 |" in md
    assert "answer scoring (log-likelihood)" in md and "| 100 × 3 |" in md
    html = paths["html"].read_text()
    assert "Verdict statistics" in html and "paired 95% CI" in html and "LLM entry" in html
    old = build_report([mllm_entry(outcomes=False)])
    md_old = write_report(old, tmp_path / "old", formats=("md",))["md"].read_text()
    assert "no CI: no per-sample outcomes" in md_old and "none (not assessed)" in md_old


def test_registered_metric_is_computed_through_the_registry_on_a_report():
    """``register_metrics`` feeds Report.metric: the built-in ``fhs`` metric of a model entry."""
    from medprobe.analysis.fhs import fhs_metric
    from medprobe.analysis.reporting import Report
    from medprobe.registry import NotFoundError

    data = build_report([mllm_entry(), baseline_entry()], created="2026-01-01T00:00:00+00:00")
    report = Report.from_dict(data)
    model_id = report.model_ids[0]
    entry = next(m for m in data["models"] if m["id"] == model_id)
    value = report.metric("fhs", model_id, probe="linear")
    assert value == fhs_metric(entry, probe="linear") and value["score_version"] == "fhs-1"
    with pytest.raises(NotFoundError, match="fhs"):
        report.metric("fsh", model_id)
