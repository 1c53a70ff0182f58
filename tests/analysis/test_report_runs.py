"""A report row is a run: conditions, unique row ids, the CSV / Markdown / HTML columns that show
them, the per-model panels, and the optional fields other parts of medprobe add."""

from __future__ import annotations

import copy
import csv
import sys
from pathlib import Path

import pytest

from medprobe.analysis import figures
from medprobe.analysis.exporters import (
    CSV_COLUMNS,
    decided_by,
    package_versions,
    render_html,
    render_markdown,
    report_warnings,
    write_report,
)
from medprobe.analysis.report import ReportError, build_report, condition_of
from medprobe.analysis.reporting import Report, ReportLookupError

sys.path.insert(0, str(Path(__file__).parent))
from test_analysis_report import baseline_entry, mllm_entry  # noqa: E402


def test_condition_of_each_kind_of_weights():
    def cond(weights, **model):
        return condition_of({"model": {"weights": weights, **model}})

    assert cond("tiny-random(seed=0)")["weights"] == "tiny-random" and cond("tiny-random(seed=0)")["label"] == "tiny random"
    assert cond("random-init")["label"] == "random weights"
    hub = cond("hub:org/name@abc123", revision="abc123")
    assert hub == {"weights": "pretrained", "source": "hub:org/name@abc123", "revision": "abc123", "lora": None,
                   "label": "pretrained"}  # fmt: skip
    lora = cond("local:/ckpt", adapter_lora={"path": "/out/sft-a/", "sha256": "1a2b3c4d5e6f", "merged": True})
    assert lora["lora"] == {"path": "/out/sft-a/", "name": "sft-a", "sha256": "1a2b3c4d5e6f", "merged": True}
    assert lora["label"] == "pretrained + LoRA sft-a (1a2b3c4d), merged"
    # a run that records its condition block (random-weights twins): kept, with the label added
    twin = condition_of({"model": {"weights": "random-init(seed=3):hub:o/m@main"},
                         "condition": {"weights": "random", "source": "hub:o/m@main", "seed": 3, "lora": None}})  # fmt: skip
    assert (twin["weights"], twin["source"], twin["seed"], twin["label"]) == ("random", "hub:o/m@main", 3,
                                                                              "random weights (seed 3)")  # fmt: skip
    trained = cond("hub:timm/resnet18@main+trained(finetune):/runs/t/backbone.safetensors")
    assert trained["weights"] == "trained" and trained["label"] == "pretrained + trained (finetune)"


def _run(key, weights, **extra):
    e = mllm_entry()
    e["manifest"] = {"run_key": key, "model": {"weights": weights}}
    e["condition"] = condition_of(e["manifest"])
    e["run_key"] = key
    e.update(extra)
    return e


def test_two_runs_of_one_card_share_a_report_with_their_condition_in_the_ids():
    rep = build_report([_run("k1", "hub:o/m@main"), _run("k2", "random-init"), baseline_entry()])
    ids = [m["id"] for m in rep["models"]]
    assert ids == ["tiny-mllm [pretrained]", "tiny-mllm [random weights]", "resnet18"]
    assert [m["card"] for m in rep["models"]] == ["tiny-mllm", "tiny-mllm", "resnet18"]
    assert rep["models"][1]["title"] == "Tiny MLLM [random weights]"
    assert [m["run_key"] for m in rep["models"]] == ["k1", "k2", "def"]
    # same condition label, different weights source (two checkpoints): the source tells them apart
    two = build_report([_run("k1", "local:/ckpt/step-100"), _run("k2", "local:/ckpt/step-200")])
    assert [m["id"] for m in two["models"]] == ["tiny-mllm [pretrained, local:/ckpt/step-100]",
                                                "tiny-mllm [pretrained, local:/ckpt/step-200]"]  # fmt: skip
    # one card, same condition, no source: the run key
    keys = build_report([_run("aaaa1111x", ""), _run("bbbb2222y", "")])
    assert [m["id"] for m in keys["models"]] == ["tiny-mllm [pretrained, aaaa1111]", "tiny-mllm [pretrained, bbbb2222]"]
    # a card appearing once keeps its id: older reports and lookups by card id are unchanged
    assert [m["id"] for m in build_report([_run("k1", "random-init")])["models"]] == ["tiny-mllm"]
    with pytest.raises(ReportError, match="appear more than once.*pass each run once"):
        build_report([_run("k1", "random-init"), _run("k1", "random-init")])


def test_typed_report_lookups_by_row_id_or_unique_card():
    rep = Report.from_dict(build_report([_run("k1", "hub:o/m@main"), _run("k2", "random-init"), baseline_entry()]))
    assert rep.model("resnet18").card == "resnet18"
    assert rep.model("tiny-mllm [random weights]").condition == "random weights"
    assert rep.fhs("tiny-mllm [pretrained]").p_final == pytest.approx(0.6)
    with pytest.raises(ReportLookupError, match="card 'tiny-mllm' has 2 runs.*'tiny-mllm \\[pretrained\\]'"):
        rep.model("tiny-mllm")


def test_csv_has_dataset_run_condition_and_p_final_columns(tmp_path):
    a = _run("k1", "hub:o/m@main", dataset={"spec": "busi:/data/BUSI", "classes": ["benign", "malignant"],
                                              "splits": {"train": 300, "val": 100, "test": 100}, "n": 500, "skipped": 2})  # fmt: skip
    rep = build_report([a, _run("k2", "random-init"), baseline_entry()])
    rows = list(csv.DictReader(write_report(rep, tmp_path, ("csv",))["csv"].open()))
    assert list(rows[0]) == list(CSV_COLUMNS)
    first = rows[0]
    assert (first["card"], first["condition"], first["dataset"], first["run_key"]) == (
        "tiny-mllm", "pretrained", "busi:/data/BUSI", "k1")
    assert float(first["p_final"]) == pytest.approx(0.6) and first["p_final_n"] == "100"
    lo, hi = float(first["p_final_ci95_lo"]), float(first["p_final_ci95_hi"])
    assert lo < 0.6 < hi
    random_rows = [r for r in rows if r["condition"] == "random weights"]
    assert random_rows and all(r["model"] == "tiny-mllm [random weights]" for r in random_rows)
    assert all(r["p_final"] == "" for r in rows if r["kind"] == "baseline")


def test_markdown_layer_tables_have_an_n_column_and_the_condition():
    rep = build_report([_run("k1", "hub:o/m@main"), _run("k2", "random-init")])
    md = render_markdown(rep)
    header = next(line for line in md.splitlines() if line.startswith("| layer |"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    assert cells[:6] == ["layer", "readout", "stage", "depth", "n", "accuracy"]
    row = next(line for line in md.splitlines() if line.startswith("| vision.00 |"))
    assert [c.strip() for c in row.strip("|").split("|")][4] == "100"  # n_test of the row
    assert "## Layers: Tiny MLLM [random weights] (mllm) — `linear` probe" in md
    assert "| tiny-mllm [random weights] | tiny-mllm | random weights | mllm |" in md  # the runs table


def test_html_shows_conditions_classes_splits_p_final_ci_command_versions():
    a = _run("k1", "hub:o/m@main", dataset={"spec": "busi:/data/BUSI", "classes": ["benign", "malignant"],
                                              "splits": {"train": 300, "val": 100, "test": 100}, "n": 500, "skipped": 0})  # fmt: skip
    a["manifest"]["versions"] = {"torch": "2.5.1", "transformers": "4.46.0"}
    rep = build_report([a, _run("k2", "random-init"), baseline_entry()], extra={"command": "medprobe report a b c"})
    page = render_html(rep)
    p_final = rep["models"][0]
    ci = p_final["p_final_ci95"]
    for text in ("benign, malignant", "train 300, val 100, test 100", "random weights",
                 f"0.600 [{ci[0]:.2f}, {ci[1]:.2f}] (n=100",
                 "<code>medprobe report a b c</code>", "<td>torch</td><td>2.5.1</td>", "decided by:"):  # fmt: skip
        assert text in page, text
    assert page.count("<img alt=") == 3
    assert package_versions(rep)["medprobe (report)"] == rep["medprobe_version"]


def test_decided_by_names_the_rule_condition_and_the_numbers():
    rep = build_report([mllm_entry(p_final=0.3), baseline_entry()])
    verdicts = {v["mode"]: v for v in rep["models"][0]["diagnosis"]["linear"]}
    th = rep["diagnosis_settings"]["thresholds"]
    # diagnosis-2: the effect against its minimum and the paired test against alpha
    conn = verdicts["connector_fidelity"]
    lo, hi = conn["ci95"]
    assert decided_by(conn, th["alpha"]) == (
        f"effect {conn['effect']:+.3f} [{lo:.2f}, {hi:.2f}] ≥ minimum {th['connector_drop']:.3f} and "
        f"p = {conn['p_value']:.1e} < {th['alpha']:g}"
    )
    entry = verdicts["llm_entry"]
    assert entry["verdict"] == "absent"
    assert f"< minimum {th['entry_drop']:.3f}" in decided_by(entry) and f"≥ {th['alpha']:g}" in decided_by(entry)
    llm = decided_by(verdicts["llm_comprehension"])
    assert f"minimum {th['llm_drop']:.3f}" in llm and "(Holm" in llm
    page = render_html(rep)
    assert "decided by: effect" in page and "decided by: effect" in render_markdown(rep)
    # diagnosis-1 verdicts (schema 1 reports) are explained from their evidence
    v1 = {"mode": "connector_fidelity", "verdict": "present", "summary": "",
          "evidence": {"feeding_layer": {"accuracy": 0.8, "ci95": [0.77, 0.83]}, "connector": {"accuracy": 0.7},
                       "drop": 0.1, "threshold": 0.02}}  # fmt: skip
    assert decided_by(v1) == "drop +0.100 ≥ 0.020 and connector 0.700 < feeding layer's CI low 0.770"
    v1_sem = {"mode": "semantic_mapping", "verdict": "absent", "summary": "",
              "evidence": {"final_token_probe": {"ci95": [0.72, 0.78]}, "difference": -0.01, "p_final": 0.74,
                           "threshold": 0.02}}  # fmt: skip
    assert decided_by(v1_sem) == "|P_final − probe| 0.010 < 0.020 and P_final inside the probe's CI [0.720, 0.780]"
    assert decided_by({"mode": "semantic_mapping", "verdict": "not_assessed", "evidence": {}}) == ""


def test_optional_fields_are_rendered_when_present():
    rep = build_report([mllm_entry(), baseline_entry()])
    assert report_warnings(rep) == []
    rich = copy.deepcopy(rep)
    m = rich["models"][0]
    m["layers"][0]["seed_sd"] = 0.012
    m["layers"][0]["warnings"] = ["test split has 3 samples of class 'malignant'"]
    m["leakage"] = {"warnings": ["4 test images duplicate train images (same pixels)"]}
    m["p_final_method"] = "generate + parse"
    m["fhs"]["linear"]["vision"]["ci95"] = [0.9, 1.05]
    warnings = report_warnings(rich)
    assert "Tiny MLLM: 4 test images duplicate train images (same pixels)" in warnings
    assert any("vision.00/image-mean (linear): test split has 3 samples" in w for w in warnings)
    page = render_html(rich)
    assert 'id="warnings"' in page and "0.600 ± 0.012 ⚠" in page
    assert "0.980 [0.90, 1.05]" in page and "generate + parse" in page
    md = render_markdown(rich)
    assert "## Warnings" in md and "- ⚠ Tiny MLLM: 4 test images duplicate" in md
    figures.fhs_profiles_png(rich, "linear")  # draws the interval
    # a run's duplicate / leakage record (manifest.leakage) becomes one warning line
    rich["models"][1]["leakage"] = {"checked": True, "exact_clusters": 2, "near_clusters": 0, "threshold": 6,
                                    "samples_in_clusters": 4, "cross_split_samples": 2,
                                    "cross_split_by_split": {"test": 1, "train": 1}}  # fmt: skip
    assert any(w.startswith("ResNet-18: LEAKAGE: 2 duplicate cluster(s)") for w in report_warnings(rich))


def test_per_model_panels_show_real_layer_ids_and_p_final_markers_do_not_hide_each_other():
    rep = build_report([_run("k1", "hub:o/m@main"), _run("k2", "random-init"), _run("k3", "tiny-random(seed=0)"),
                        baseline_entry()])  # fmt: skip
    fig = figures.layer_panels_figure(rep, "linear")
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["Tiny MLLM [pretrained]", "Tiny MLLM [random weights]",
                                               "Tiny MLLM [tiny random]", "ResNet-18 (baseline)"]  # fmt: skip
    labels = [t.get_text() for t in axes[0].get_xticklabels()]
    assert labels == ["vision.00", "vision.01", "connector", "llm.00", "llm.01", "llm.02"]
    assert [t.get_text() for t in axes[3].get_xticklabels()] == ["stage.0", "stage.1", "stage.2", "stage.3"]
    # three equal P_final values: three distinct x positions for their stars
    xs = figures._p_final_offsets(rep["models"])
    assert len(set(xs.values())) == 3
    overview = figures.layer_curves_figure(rep, "linear")
    legend = [t.get_text() for t in overview.axes[0].get_legend().get_texts()]
    assert "baseline ResNet-18 (curve)" in legend  # baseline curves have a legend entry
    assert any(t.startswith("Tiny MLLM [random weights] P_final") for t in legend)
