"""Feature Health Score: golden values computed by hand, edge rules, and the per-model profile."""

from __future__ import annotations

import math

import pytest

from medprobe.analysis.fhs import SCORE_VERSION, FHSProfile, fhs_profile, module_fhs


def test_monotone_curve():
    # P = 0.5, 0.6, 0.8: start = min = 0.5, end = 0.8
    # GF = ln(0.8 / sqrt(0.5 * 0.5)) = ln(1.6) = 0.4700036292
    # TV = 0.1 + 0.2 = 0.3; VP = exp(-0.2 * 0.3 / 0.8) = exp(-0.075) = 0.9277434863
    # FHS = 0.8 * 1.4700036292 * 0.9277434863 = 1.0910290335
    r = module_fhs([0.5, 0.6, 0.8])
    assert r.growth == pytest.approx(0.4700036292)
    assert r.total_variation == pytest.approx(0.3)
    assert r.volatility_penalty == pytest.approx(0.9277434863)
    assert r.score == pytest.approx(1.0910290335)


def test_dip_and_recover_rewards_recovery_through_p_min():
    # P = 0.8, 0.5, 0.9: GF = ln(0.9 / sqrt(0.8 * 0.5)) = ln(0.9 / 0.6324555320) = 0.3527848503
    # TV = 0.3 + 0.4 = 0.7; VP = exp(-0.2 * 0.7 / 0.9) = exp(-0.1555555556) = 0.8559395234
    # FHS = 0.9 * 1.3527848503 * 0.8559395234 = 1.0421118180
    r = module_fhs([0.8, 0.5, 0.9])
    assert (r.p_start, r.p_min, r.p_end) == (0.8, 0.5, 0.9)
    assert r.growth == pytest.approx(0.3527848503)
    assert r.volatility_penalty == pytest.approx(0.8559395234)
    assert r.score == pytest.approx(1.0421118180)


def test_declining_curve_has_negative_growth():
    # P = 0.9, 0.8, 0.6: min = end = 0.6; GF = ln(0.6 / sqrt(0.9 * 0.6)) = ln(0.8164965809) = -0.2027325541
    # VP = exp(-0.2 * 0.3 / 0.6) = exp(-0.1) = 0.9048374180; FHS = 0.6 * 0.7972674459 * 0.9048374180 = 0.4328384504
    r = module_fhs([0.9, 0.8, 0.6])
    assert r.growth == pytest.approx(-0.2027325541)
    assert r.score == pytest.approx(0.4328384504)
    assert r.score < 0.6  # below its own end accuracy


def test_single_layer_module_is_its_accuracy():
    r = module_fhs([0.7], module="connector", layers=["connector"])
    assert (r.score, r.growth, r.volatility_penalty, r.n_layers) == (0.7, 0.0, 1.0, 1)
    assert "single layer" in r.note


def test_lambda_is_a_parameter():
    # lambda = 0.5 on the monotone curve: VP = exp(-0.5 * 0.3 / 0.8) = exp(-0.1875) = 0.8290291182
    # FHS = 0.8 * 1.4700036292 * 0.8290291182 = 0.9749406500
    assert module_fhs([0.5, 0.6, 0.8], lam=0.5).score == pytest.approx(0.9749406500)
    # lambda = 0 removes the volatility penalty: 0.9 * 1.3527848503 = 1.2175063653
    assert module_fhs([0.8, 0.5, 0.9], lam=0.0).score == pytest.approx(1.2175063653)
    assert module_fhs([0.6, 0.6]).score == pytest.approx(0.6)  # flat: GF = 0, VP = 1


def test_zero_accuracies_follow_the_documented_rules():
    assert module_fhs([0.5, 0.0]).score == 0.0  # P_end = 0: the limit
    undefined = module_fhs([0.0, 0.5])
    assert undefined.score is None and "undefined" in undefined.note
    assert module_fhs([]).score is None
    with pytest.raises(ValueError, match="vision"):
        module_fhs([0.5, 1.2], module="vision")


def _pt(id, stage, depth, acc, readout="image-mean", used=True):
    return {"id": id, "stage": stage, "depth": depth, "readout": readout, "accuracy": acc, "used": used}


def test_profile_uses_image_mean_used_layers_in_depth_order():
    points = [
        _pt("llm.01", "llm", 0.9, 0.6),
        _pt("vision.00", "vision", 0.0, 0.5),
        _pt("vision.01", "vision", 0.2, 0.6),
        _pt("vision.02", "vision", 0.4, 0.8),
        _pt("vision.03", "vision", 0.5, 0.95, used=False),  # after the feeding layer: excluded
        _pt("vision.02", "vision", 0.4, 0.99, readout="cls"),  # cls: reported, not scored
        _pt("connector", "connector", 0.6, 0.7),
        _pt("llm.00", "llm", 0.8, 0.9),
        _pt("llm.01", "llm", 0.9, 0.99, readout="last-token"),  # semantic mapping only
    ]
    prof = fhs_profile(points, p_final=0.55, p_final_n=100)
    assert prof.vision.layers == ["vision.00", "vision.01", "vision.02"]
    assert prof.vision.score == pytest.approx(1.0910290335)
    assert prof.connector.score == pytest.approx(0.7)
    # LLM 0.9 -> 0.6: GF = ln(0.6 / sqrt(0.9 * 0.6)) = -0.2027325541, VP = exp(-0.2 * 0.3 / 0.6)
    assert prof.llm.score == pytest.approx(0.6 * (1 - 0.2027325541) * math.exp(-0.1))
    assert prof.text() == "FHS_V 1.091 -> FHS_C 0.700 -> FHS_L 0.433 -> P_final 0.550"
    d = prof.to_dict()
    assert d["score_version"] == SCORE_VERSION and d["lambda"] == 0.2
    assert FHSProfile.from_dict(d).to_dict() == d


def test_profile_says_when_p_final_is_missing_and_baselines_have_vision_only():
    mllm = fhs_profile([_pt("vision.00", "vision", 0.0, 0.5), _pt("llm.00", "llm", 1.0, 0.5)])
    assert mllm.text().endswith("P_final n/a (no generated answers)")
    cnn = fhs_profile([_pt("stage.0", "cnn", 0.0, 0.5), _pt("stage.1", "cnn", 0.5, 0.6), _pt("head", "head", 1.0, 0.8)])
    assert cnn.vision.layers == ["stage.0", "stage.1"]  # head is not part of a module
    assert cnn.text() == f"FHS_V {module_fhs([0.5, 0.6]).score:.3f}"
    assert cnn.connector.n_layers == 0 and cnn.connector.score is None


# -- uncertainty -------------------------------------------------------------------------------

import numpy as np  # noqa: E402

from medprobe.analysis.fhs import fhs_draws  # noqa: E402
from medprobe.analysis.inference import PairedBootstrap  # noqa: E402
from medprobe.analysis.simulation import TrueAccuracies, simulate_model  # noqa: E402


def test_vectorised_fhs_equals_module_fhs_including_edge_rules():
    rng = np.random.default_rng(0)
    curves = rng.uniform(0.05, 1.0, size=(200, 7))
    curves[0] = [0.5, 0.6, 0.8, 0.8, 0.8, 0.8, 0.8]
    curves[1, -1] = 0.0  # P_end = 0 -> 0
    curves[2, 3] = 0.0  # P_min = 0 < P_end -> undefined
    got = fhs_draws(curves)
    for row, g in zip(curves, got):
        want = module_fhs(list(row)).score
        assert (math.isnan(g) and want is None) or g == pytest.approx(want, rel=1e-12)
    assert fhs_draws(curves[:, :1]) == pytest.approx(curves[:, 0])


def _sim(n, seed, vision=(0.6, 0.7, 0.75, 0.8, 0.8, 0.8)):
    t = TrueAccuracies(list(vision), 0.78, [0.78, 0.76, 0.74, 0.72], 0.72, 0.7)
    return t, simulate_model(t, n=n, rho=0.8, rng=np.random.default_rng(seed))


def test_profile_gets_bootstrap_intervals_and_p_final_interval():
    _, m = _sim(400, 1)
    oc = dict(m["outcomes"], P_final=m["p_final_correct"])
    boot = PairedBootstrap(oc, n_boot=500, seed=0)
    pts = [dict(p, accuracy=boot.point(f"{p['id']}/{p['readout']}")) for p in m["points"]]
    prof = fhs_profile(pts, p_final=boot.point("P_final"), bootstrap=boot, p_final_key="P_final")
    for mod in prof.modules().values():
        assert mod.ci95[0] < mod.score < mod.ci95[1] and mod.ci_undefined_fraction == 0.0
    assert prof.connector.ci95[1] - prof.connector.ci95[0] < 0.12
    assert prof.p_final_ci95[0] < prof.p_final < prof.p_final_ci95[1]
    d = prof.to_dict()
    assert d["vision"]["ci95"] == prof.vision.ci95 and "basic" in d["ci_method"]
    assert FHSProfile.from_dict(d).to_dict() == d
    plain = fhs_profile(pts)
    assert plain.vision.ci95 is None and plain.ci_method is None


def test_fhs_interval_covers_the_true_score():
    # known truth: FHS of the true curve; the basic bootstrap interval should cover it about 95% of
    # the time (80 replicates: Monte-Carlo SE about 2.4 points at 95%)
    truth, _ = _sim(10, 0)
    true = module_fhs(truth.vision).score
    hits = 0
    reps = 80
    for r in range(reps):
        _, m = _sim(300, 100 + r)
        keys = [k for k in m["outcomes"] if k.startswith("vision.")]
        boot = PairedBootstrap({k: m["outcomes"][k] for k in keys}, n_boot=300, seed=r)
        pts = [dict(p, accuracy=boot.point(f"{p['id']}/{p['readout']}")) for p in m["points"] if p["stage"] == "vision"]
        lo, hi = fhs_profile(pts, bootstrap=boot).vision.ci95
        hits += lo <= true <= hi
    assert hits / reps >= 0.85, hits
