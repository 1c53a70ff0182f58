"""P_final in reports: classify runs pair with the extract run of the same model, weights and data;
compare runs classify for MLLMs."""

from __future__ import annotations

import copy
import json

import pytest
from click.testing import CliRunner

from medprobe.tasks import pipeline
from medprobe.tasks.classify import ClassifyRun, classify
from medprobe.cli import cli
from medprobe.features.extract import extract
from medprobe.registry import MedprobeError

from ._common import tiny_model

DATA = "synthetic:lesions?n=40&size=32"
MODEL = "lingshu-7b"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An extract run and a score-mode classify run laid out as compare() lays them out, probed
    without controls (fast); compare and report reuse all three."""
    root = tmp_path_factory.mktemp("cmp")
    loaded = tiny_model(MODEL)
    feats = extract(loaded, DATA, root / "runs", batch_size=8, progress=False)
    answers = classify(loaded, DATA, root / "classify", mode="score", tiny=True, batch_size=8, progress=False)
    pipeline.probe_run(feats, "linear", controls=False)
    return root, feats, answers


def _entry(report, model_id):
    return next(m for m in report["models"] if m["id"] == model_id)


def _verdict(entry, mode):
    return next(d for d in entry["diagnosis"]["linear"] if d["mode"] == mode)


def test_report_pairs_the_classify_run(runs, tmp_path):
    _, feats, answers = runs
    report = pipeline.report_runs([feats.path, answers.path], tmp_path)
    m = _entry(report, MODEL)
    assert answers.p_final is not None and answers.p_final_n > 0
    assert m["p_final"] == pytest.approx(answers.p_final) and m["p_final_n"] == answers.p_final_n
    assert m["p_final_ci95"] is not None
    assert m["fhs"]["linear"]["p_final"] == pytest.approx(answers.p_final)
    assert "P_final" in m["fhs"]["linear"]["profile"] and "n/a" not in m["fhs"]["linear"]["profile"]
    semantic = _verdict(m, "semantic_mapping")
    assert semantic["verdict"] != "not_assessed", semantic
    assert m["manifest"]["classify"]["path"] == str(answers.path)
    assert m["manifest"]["classify"]["same_prompt"] and m["manifest"]["classify"]["same_samples"]
    assert report["synthetic"] and report["banner"].startswith("SYNTHETIC")
    assert report["extra"]["classify_runs"] == {MODEL: str(answers.path)}
    saved = json.loads((tmp_path / "report.json").read_text())
    assert _entry(saved, MODEL)["p_final"] == pytest.approx(answers.p_final)


def test_without_a_classify_run_p_final_stays_empty(runs):
    _, feats, _ = runs
    m = _entry(pipeline.report_runs([feats]), MODEL)
    assert m["p_final"] is None and m["p_final_n"] is None
    assert _verdict(m, "semantic_mapping")["verdict"] == "not_assessed"


def test_unpaired_and_ambiguous_classify_runs_are_refused(runs, tmp_path):
    _, feats, answers = runs
    other = classify(tiny_model("medvlm-r1-2b"), DATA, tmp_path, mode="score", tiny=True, limit=6, progress=False)
    with pytest.raises(MedprobeError, match="pairs with no extract run"):
        pipeline.report_runs([feats, answers, other])
    with pytest.raises(MedprobeError, match="at least one run with layer probes"):
        pipeline.report_runs([answers])
    # a second run of the same model on the same data: generate mode wins, an exact tie is refused
    gen = ClassifyRun(answers.path, dict(copy.deepcopy(answers.record), mode="generate", run_key="g" * 64))
    assert pipeline.pair_classify(feats, [answers, gen]) is gen
    twin = ClassifyRun(tmp_path / "twin", copy.deepcopy(answers.record))
    with pytest.raises(MedprobeError, match="several classify runs match"):
        pipeline.pair_classify(feats, [answers, twin])
    elsewhere = ClassifyRun(tmp_path / "w", copy.deepcopy(answers.record))
    elsewhere.record["model"]["weights"] = "tiny-random(seed=1)"
    assert pipeline.pair_classify(feats, [elsewhere]) is None


def test_compare_runs_classify_for_mllms(runs):
    root, feats, answers = runs
    stamp = (answers.path / "classify.json").stat().st_mtime_ns
    report = pipeline.compare([MODEL], DATA, root, tiny=True, batch_size=8, progress=False)
    m = _entry(report, MODEL)
    assert [p.name for p in (root / "classify").iterdir()] == [answers.path.name]  # score mode, reused
    assert (answers.path / "classify.json").stat().st_mtime_ns == stamp
    assert m["p_final"] == pytest.approx(answers.p_final)
    assert m["manifest"]["classify"]["mode"] == "score"
    assert _entry(pipeline.compare([MODEL], DATA, root, tiny=True, batch_size=8, progress=False,
                                   classify_mode=None), MODEL)["p_final"] is None
    with pytest.raises(MedprobeError, match="unknown classify mode"):
        pipeline.compare([MODEL], DATA, root, tiny=True, classify_mode="vote")


def test_report_cli_accepts_classify_runs(runs, tmp_path):
    _, feats, answers = runs
    out = CliRunner().invoke(cli, ["report", str(feats.path), str(answers.path), "--out", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert "P_final" in out.output and "SYNTHETIC" in out.output
    report = json.loads((tmp_path / "report.json").read_text())
    assert _entry(report, MODEL)["p_final"] == pytest.approx(answers.p_final)


def test_lora_adapter_is_part_of_the_key_and_the_pairing(runs, tmp_path):
    """The paper's before/after condition: answers with a LoRA adapter are another run, and pair
    only with features extracted with the same adapter."""
    from medprobe.tasks.finetune import LoraSettings, finetune

    _, feats, answers = runs
    finetune(MODEL, DATA, tmp_path / "lora", tiny=True, device="cpu",
             settings=LoraSettings(max_steps=2, batch_size=4, lr=5e-2, dropout=0.0))
    after = classify(MODEL, DATA, tmp_path / "c", mode="score", tiny=True, limit=8, adapter=tmp_path / "lora",
                     progress=False)
    before = classify(MODEL, DATA, tmp_path / "c", mode="score", tiny=True, limit=8, progress=False)
    assert after.key != before.key and after.adapter_lora["path"] == str(tmp_path / "lora")
    assert before.adapter_lora is None
    scores = [[r["scores"] for r in run.answers()] for run in (before, after)]
    assert scores[0] != scores[1]  # the adapter changed the model's answers
    adapted = extract(MODEL, DATA, tmp_path / "e", tiny=True, limit=8, layers="llm.03", readouts="last-token",
                      adapter=tmp_path / "lora", progress=False)
    assert pipeline.pair_classify(adapted, [before, after]) is after
    assert pipeline.pair_classify(feats, [after]) is None
    with pytest.raises(MedprobeError, match="adapter .*lora.* pairs with no extract run"):
        pipeline.report_runs([feats, answers, after])
