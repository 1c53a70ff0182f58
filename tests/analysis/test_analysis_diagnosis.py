"""Failure-mode diagnosis on constructed curves: each mode triggered and not, with its evidence."""

from __future__ import annotations

import pytest

from medprobe.analysis.diagnosis import (
    ABSENT,
    MODES,
    NOT_ASSESSED,
    PRESENT,
    BaselineRef,
    Thresholds,
    best_baseline,
    diagnose,
)


def pt(id, stage, depth, acc, half=0.02, readout="image-mean", **kw):
    return {
        "id": id,
        "stage": stage,
        "depth": depth,
        "readout": readout,
        "accuracy": acc,
        "ci95": [acc - half, acc + half],
        **kw,
    }


def mllm(vision=(0.70, 0.80, 0.85), feed=None, connector=0.84, llm=(0.83, 0.84, 0.82), last_token=0.80):
    pts = [pt(f"vision.{i:02d}", "vision", 0.05 * i, a, feeds_connector=(feed == i)) for i, a in enumerate(vision)]
    pts.append(pt("connector", "connector", 0.4, connector))
    pts += [pt(f"llm.{i:02d}", "llm", 0.5 + 0.1 * i, a) for i, a in enumerate(llm)]
    if last_token is not None:
        pts.append(pt(f"llm.{len(llm) - 1:02d}", "llm", 0.5 + 0.1 * (len(llm) - 1), last_token, readout="last-token"))
    return pts


BASE = BaselineRef("resnet50", "stage.3", "image-mean", 0.86, (0.84, 0.88))


def verdicts(points, **kw):
    out = {v.mode: v for v in diagnose(points, **kw)}
    assert list(out) == list(MODES)
    return out


def test_healthy_model_shows_no_failure_mode():
    v = verdicts(mllm(), p_final=0.81, baseline=BASE)
    assert {m: x.verdict for m, x in v.items()} == {m: ABSENT for m in MODES}
    for x in v.values():
        assert x.evidence and x.rule and x.summary


def test_visual_representation_needs_gap_and_ci():
    weak = mllm(vision=(0.60, 0.70, 0.75), connector=0.75, llm=(0.75, 0.75, 0.75), last_token=0.75)
    v = verdicts(weak, p_final=0.75, baseline=BASE)["visual_representation"]
    assert v.verdict == PRESENT
    assert v.evidence["gap"] == pytest.approx(0.11)
    assert v.evidence["vision_best"]["layer"] == "vision.02"
    assert v.evidence["baseline_best"]["model"] == "resnet50"
    # a 2-point gap is below the 3-point threshold
    close = BaselineRef("resnet50", "stage.3", "image-mean", 0.87, (0.85, 0.89))
    assert verdicts(mllm(), p_final=0.8, baseline=close)["visual_representation"].verdict == ABSENT
    # a wide CI that reaches the baseline keeps it absent even with a big gap
    wide = mllm(vision=(0.70, 0.75, 0.80))
    wide[2]["ci95"] = [0.70, 0.95]
    assert verdicts(wide, p_final=0.8, baseline=BASE)["visual_representation"].verdict == ABSENT
    nob = verdicts(weak, p_final=0.75, baseline=None)["visual_representation"]
    assert nob.verdict == NOT_ASSESSED and "no baseline" in nob.summary


def test_connector_fidelity_compares_the_feeding_layer():
    v = verdicts(mllm(connector=0.78), p_final=0.8, baseline=BASE)["connector_fidelity"]
    assert v.verdict == PRESENT
    assert v.evidence["drop"] == pytest.approx(0.07)
    assert v.evidence["feeding_layer"]["layer"] == "vision.02"
    # LLaVA-style: block 1 feeds the connector; block 2 is unused and better, the connector matches block 1
    llava = mllm(vision=(0.70, 0.78, 0.90), feed=1, connector=0.78)
    v = verdicts(llava, p_final=0.8, baseline=BASE)["connector_fidelity"]
    assert v.verdict == ABSENT
    assert v.evidence["feeding_layer"]["layer"] == "vision.01" and v.evidence["feeding_layer_rule"] == "feeds_connector"
    # a 1.5-point drop is below the threshold even though it leaves a tight CI
    tight = mllm(connector=0.835)
    for p in tight:
        p["ci95"] = [p["accuracy"] - 0.005, p["accuracy"] + 0.005]
    assert verdicts(tight, p_final=0.8)["connector_fidelity"].verdict == ABSENT


def test_llm_comprehension_end_below_start_or_fall_from_peak():
    below = verdicts(mllm(llm=(0.84, 0.80, 0.74)), p_final=0.74, baseline=BASE)["llm_comprehension"]
    assert below.verdict == PRESENT and below.evidence["ends_below_start"] is True
    assert below.evidence["start_to_end"] == pytest.approx(-0.10)
    peak = verdicts(mllm(llm=(0.70, 0.90, 0.78)), p_final=0.78, baseline=BASE)["llm_comprehension"]
    assert peak.verdict == PRESENT
    assert peak.evidence["falls_from_peak"] is True and peak.evidence["ends_below_start"] is False
    assert peak.evidence["peak"]["layer"] == "llm.01"
    rising = verdicts(mllm(llm=(0.70, 0.80, 0.86)), p_final=0.86, baseline=BASE)["llm_comprehension"]
    assert rising.verdict == ABSENT
    one = verdicts(mllm(llm=(0.8,)), p_final=0.8, baseline=BASE)["llm_comprehension"]
    assert one.verdict == NOT_ASSESSED


def test_semantic_mapping_both_directions_and_missing_p_final():
    lower = verdicts(mllm(last_token=0.80), p_final=0.60, p_final_ci=(0.55, 0.65), baseline=BASE)["semantic_mapping"]
    assert lower.verdict == PRESENT
    assert lower.evidence["direction"] == "lower" and lower.evidence["difference"] == pytest.approx(-0.2)
    assert lower.evidence["p_final_ci95"] == [0.55, 0.65]
    higher = verdicts(mllm(last_token=0.70), p_final=0.80, baseline=BASE)["semantic_mapping"]
    assert higher.verdict == PRESENT and higher.evidence["direction"] == "higher"
    inside = verdicts(mllm(last_token=0.80), p_final=0.81, baseline=BASE)["semantic_mapping"]
    assert inside.verdict == ABSENT
    missing = verdicts(mllm(), p_final=None, baseline=BASE)["semantic_mapping"]
    assert missing.verdict == NOT_ASSESSED and "P_final" in missing.summary
    no_token = verdicts(mllm(last_token=None), p_final=0.8, baseline=BASE)["semantic_mapping"]
    assert no_token.verdict == NOT_ASSESSED


def test_thresholds_are_parameters_and_documented():
    th = Thresholds(connector_drop=0.10)
    assert verdicts(mllm(connector=0.78), p_final=0.8, thresholds=th)["connector_fidelity"].verdict == ABSENT
    assert Thresholds.from_dict(th.to_dict()) == th
    assert "0.1" in th.rules()["connector_fidelity"]


def test_best_baseline_picks_the_best_layer_over_models():
    ref = best_baseline(
        {"a": [pt("stage.0", "cnn", 0, 0.7)], "b": [pt("stage.0", "cnn", 0, 0.6), pt("stage.1", "cnn", 1, 0.9)]}
    )
    assert (ref.model, ref.layer, ref.accuracy) == ("b", "stage.1", 0.9)
    assert best_baseline({}) is None
