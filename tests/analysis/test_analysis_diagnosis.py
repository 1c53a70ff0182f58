"""Failure-mode diagnosis (diagnosis-2) on simulated per-sample outcomes: each mode triggered and not,
with effect, paired CI, p-value, statistic and multiplicity; the rule fixes of issue 12."""

from __future__ import annotations

import numpy as np
import pytest

from medprobe.analysis.diagnosis import (
    ABSENT,
    DIAGNOSIS_VERSION,
    MODES,
    NO_OUTCOMES,
    NOT_ASSESSED,
    PRESENT,
    DiagnosisError,
    Thresholds,
    Verdict,
    best_baseline,
    diagnose,
)
from medprobe.analysis.simulation import TrueAccuracies, scenario, simulate_model

N_BOOT = 500


def model(truth: TrueAccuracies, n=780, rho=0.8, seed=0, **kw):
    return simulate_model(truth, n=n, rho=rho, rng=np.random.default_rng(seed), **kw)


def verdicts(m, **kw):
    m = dict(m)
    pts = m.pop("points")
    out = {v.mode: v for v in diagnose(pts, n_boot=N_BOOT, **{**m, **kw})}
    assert list(out) == list(MODES)
    return out


def small(**over):
    t = dict(vision=[0.8] * 6, connector=0.8, llm=[0.8] * 6, last_token=0.8, p_final=0.8, baseline=[0.8] * 2)
    t.update(over)
    return TrueAccuracies(**t)


def test_healthy_model_shows_no_failure_mode_and_every_verdict_carries_its_statistics():
    v = verdicts(model(small()))
    assert {m: x.verdict for m, x in v.items()} == {m: ABSENT for m in MODES}
    for x in v.values():
        assert x.summary and x.rule and x.evidence
        assert x.effect is not None and len(x.ci95) == 2 and 0 < x.p_value <= 1
        assert x.statistic and x.multiplicity and x.n == 780
        assert x.ci95[0] <= x.effect <= x.ci95[1] or x.mode in ("visual_representation", "llm_comprehension")
    assert DIAGNOSIS_VERSION == "diagnosis-2"


@pytest.mark.parametrize(
    "truth,mode",
    [
        (small(baseline=[0.9, 0.85]), "visual_representation"),
        (small(connector=0.7, llm=[0.7] * 6, last_token=0.7, p_final=0.7), "connector_fidelity"),
        (small(llm=[0.7] * 6, last_token=0.7, p_final=0.7), "llm_entry"),
        (small(llm=[0.8, 0.78, 0.76, 0.74, 0.72, 0.70], last_token=0.7, p_final=0.7), "llm_comprehension"),
        (small(p_final=0.7), "semantic_mapping"),
    ],
)
def test_each_planted_failure_is_present_and_only_it(truth, mode):
    v = verdicts(model(truth))
    assert v[mode].verdict == PRESENT, v[mode].summary
    assert v[mode].effect >= 0.05 and v[mode].p_value < 0.01 and v[mode].ci95[0] > 0
    others = {m for m, x in v.items() if x.verdict == PRESENT and m != mode}
    assert not others


def test_collapse_into_the_first_llm_layer_is_assessed():
    # the case: V 0.90, C 0.90, every LLM layer 0.50 -- diagnosis-1 called it all absent
    t = small(vision=[0.9] * 6, connector=0.9, llm=[0.5] * 6, last_token=0.5, p_final=0.5, baseline=[0.9])
    v = verdicts(model(t))
    assert v["llm_entry"].verdict == PRESENT and v["llm_entry"].effect == pytest.approx(0.4, abs=0.04)
    assert v["llm_comprehension"].verdict == ABSENT
    ev = v["llm_entry"].evidence
    assert ev["connector"]["layer"] == "connector" and ev["first_llm_layer"]["layer"] == "llm.00"
    assert len(ev["connector"]["seed_accuracies"]) == 3


def test_llm_comprehension_reports_both_sub_tests_with_holm():
    peak = small(llm=[0.75, 0.88, 0.86, 0.80, 0.77, 0.76], last_token=0.76, p_final=0.76)
    v = verdicts(model(peak, rho=0.8))["llm_comprehension"]
    assert v.verdict == PRESENT and v.evidence["decisive_sub_test"] == "falls_from_peak"
    assert v.evidence["peak"]["layer"] == "llm.01"
    assert v.evidence["falls_from_peak"] is True and v.evidence["ends_below_start"] is False
    subs = v.evidence["sub_tests"]
    assert set(subs) == {"ends_below_start", "falls_from_peak"}
    assert all(s["p_holm"] >= s["p_value"] for s in subs.values())
    assert "Holm over 2 sub-tests" in v.multiplicity and "max-t over 5" in v.multiplicity
    one = small(llm=[0.8])
    assert verdicts(model(one))["llm_comprehension"].verdict == NOT_ASSESSED


def test_thresholds_are_minimum_effect_sizes():
    # a 1.5-point connector drop, very significant at N = 20000 and rho 0.95, stays absent
    t = small(connector=0.785, llm=[0.785] * 6, last_token=0.785, p_final=0.785)
    v = verdicts(model(t, n=20000, rho=0.95, seed_sd=0.0))["connector_fidelity"]
    assert v.p_value < 0.01 and v.effect < 0.02 and v.verdict == ABSENT
    th = Thresholds(connector_drop=0.10)
    big = model(small(connector=0.72, llm=[0.72] * 6, last_token=0.72, p_final=0.72))
    assert verdicts(big, thresholds=th)["connector_fidelity"].verdict == ABSENT
    assert verdicts(big)["connector_fidelity"].verdict == PRESENT
    assert Thresholds.from_dict(th.to_dict()) == th
    assert "0.1" in th.rules()["connector_fidelity"] and "p < 0.05" in th.rules()["connector_fidelity"]


def test_semantic_mapping_only_below_the_probe_and_only_above_chance():
    higher = verdicts(model(small(last_token=0.7, p_final=0.85)))["semantic_mapping"]
    assert higher.verdict == ABSENT and higher.evidence["direction"] == "higher" and higher.effect < 0
    assert "not a mapping loss" in higher.summary
    at_chance = verdicts(model(small(last_token=0.5, p_final=0.3)))["semantic_mapping"]
    assert at_chance.verdict == NOT_ASSESSED and "not above chance" in at_chance.summary
    m = model(small(p_final=0.7))
    gen = verdicts(m, p_final_method="generate")["semantic_mapping"]
    assert gen.evidence["p_final_method"] == "generate" and "(generate)" in gen.summary
    assert "score" in verdicts(m)["semantic_mapping"].evidence["p_final_method_description"]
    no_answers = verdicts({**m, "p_final_correct": None}, p_final=0.7)["semantic_mapping"]
    assert no_answers.verdict == NOT_ASSESSED and "per-sample answers" in no_answers.summary
    missing = verdicts({**m, "p_final_correct": None})["semantic_mapping"]
    assert missing.verdict == NOT_ASSESSED and "P_final" in missing.summary
    with pytest.raises(DiagnosisError, match="p_final_method"):
        verdicts(m, p_final_method="guess")
    with pytest.raises(DiagnosisError, match="sample_index"):
        verdicts({**m, "p_final_correct": np.ones(10, bool)})


def test_without_outcomes_nothing_is_decided():
    m = model(small(connector=0.6, llm=[0.6] * 6, last_token=0.6, p_final=0.6))
    v = verdicts({**m, "outcomes": None, "p_final_correct": None}, p_final=0.6)
    for mode in ("connector_fidelity", "llm_entry", "llm_comprehension"):
        assert v[mode].verdict == NOT_ASSESSED and v[mode].summary == NO_OUTCOMES
        assert v[mode].evidence["marginal_only"].startswith("descriptive") and v[mode].p_value is None
    assert v["semantic_mapping"].verdict == NOT_ASSESSED
    nob = verdicts({**m, "baseline": None})["visual_representation"]
    assert nob.verdict == NOT_ASSESSED and "no baseline" in nob.summary


def test_connector_compares_the_feeding_layer():
    t = small(vision=[0.7, 0.78, 0.78, 0.78, 0.78, 0.9], connector=0.78, llm=[0.78] * 6, last_token=0.78,
              p_final=0.78, baseline=[0.9])  # fmt: skip
    m = model(t)
    for p in m["points"]:  # LLaVA-style: block 4 feeds the connector, block 5 is never passed on
        if p["stage"] == "vision":
            p["feeds_connector"] = p["id"] == "vision.04"
            p["used"] = p["id"] != "vision.05"
    v = verdicts(m)["connector_fidelity"]
    assert v.verdict == ABSENT and v.evidence["feeding_layer"]["layer"] == "vision.04"
    assert v.evidence["feeding_layer_rule"] == "feeds_connector"


def test_visual_needs_paired_baseline_outcomes():
    m = model(small(baseline=[0.9]))
    b = m["baseline"]
    b.outcomes = None
    v = verdicts(m)["visual_representation"]
    assert v.verdict == NOT_ASSESSED and "no per-sample outcomes" in v.summary
    b.outcomes = {"stage.0/image-mean": np.ones((1, 50), bool)}
    assert "not paired" in verdicts(m)["visual_representation"].summary


def test_verdicts_round_trip_and_read_diagnosis_1():
    v = verdicts(model(small()))["connector_fidelity"]
    assert Verdict.from_dict(v.to_dict()) == v
    old = Verdict.from_dict({"mode": "connector_fidelity", "verdict": "present", "summary": "s", "evidence": {}})
    assert old.effect is None and old.p_value is None


def test_best_baseline_picks_the_best_layer_over_models():
    def pt(i, a):
        return {"id": f"stage.{i}", "stage": "cnn", "depth": i, "accuracy": a, "ci95": [a, a]}

    oc = {"b": {"stage.1/image-mean": np.ones((1, 4), bool)}}
    ref = best_baseline({"a": [pt(0, 0.7)], "b": [pt(0, 0.6), pt(1, 0.9)]}, oc)
    assert (ref.model, ref.layer, ref.accuracy) == ("b", "stage.1", 0.9) and ref.to_dict()["paired"] is True
    assert best_baseline({}) is None
