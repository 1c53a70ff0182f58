"""Paired statistics: golden values against scipy and hand-computed cases, bootstrap against a naive oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm
from scipy.stats import t as t_dist

from medprobe.analysis import inference as I
from medprobe.registry import MedprobeError


@pytest.mark.parametrize("n01,n10", [(0, 0), (0, 5), (3, 9), (12, 12), (40, 61), (7, 0)])
def test_mcnemar_exact_equals_scipy_binomtest(n01, n10):
    n_same = 20
    a = np.array([False] * n01 + [True] * n10 + [True] * n_same)
    b = np.array([True] * n01 + [False] * n10 + [True] * n_same)
    r = I.mcnemar_exact(a, b)
    assert (r.n01, r.n10) == (n01, n10)
    want = 1.0 if n01 + n10 == 0 else binomtest(n01, n01 + n10, 0.5).pvalue
    assert r.p_value == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_mcnemar_hand_computed():
    # 0 vs 5 discordant: p = 2 * (1/2)^5 = 0.0625; 1 vs 4: 2 * (1 + 5) / 32 = 0.375
    a = np.array([1, 1, 1, 1, 1, 0, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 0], bool)
    assert I.mcnemar_exact(a, b).p_value == pytest.approx(0.0625)
    # a right & b wrong on 5 samples, a wrong & b right on 1: p = 2 * (1 + 6) / 64
    a2 = np.array([1, 1, 1, 1, 1, 0, 0], bool)
    b2 = np.array([0, 0, 0, 0, 0, 1, 0], bool)
    r = I.mcnemar_exact(a2, b2)
    assert (r.n10, r.n01) == (5, 1) and r.p_value == pytest.approx(2 * 7 / 64)
    with pytest.raises(MedprobeError):
        I.mcnemar_exact(a, b[:3])


def test_holm_hand_computed_and_properties():
    # sorted 0.01, 0.03, 0.04 -> 3*0.01, max(0.03, 2*0.03), max(0.06, 1*0.04) = 0.03, 0.06, 0.06
    assert I.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert I.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert I.holm([0.2]) == [0.2]
    assert I.holm([]) == []
    rng = np.random.default_rng(1)
    p = rng.random(12)
    adj = np.array(I.holm(p))
    assert np.all(adj >= p) and np.all(adj <= 1)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= 0)


def _naive_draws(c, n_boot, seed, key):
    """Oracle: explicit index resampling, the same random streams as PairedBootstrap."""
    import hashlib

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c.shape[1], size=(n_boot, c.shape[1]))
    per_seed = np.stack([c[:, idx[b]].mean(axis=1) for b in range(n_boot)])  # (B, S)
    s = c.shape[0]
    if s == 1:
        return per_seed[:, 0]
    digest = hashlib.sha256(key.encode()).digest()
    srng = np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])
    m = srng.multinomial(s, np.full(s, 1.0 / s), size=n_boot)
    full = per_seed.mean(axis=1)
    res = (m * per_seed).sum(axis=1) / s
    scale = math.sqrt(s / (s - 1)) * t_dist.ppf(0.95, s - 1) / norm.ppf(0.95)
    return full + scale * (res - full)


def test_bootstrap_draws_equal_explicit_resampling():
    rng = np.random.default_rng(3)
    c = {"a": rng.random((3, 50)) < 0.7, "b": rng.random((1, 50)) < 0.6}
    boot = I.PairedBootstrap(c, n_boot=200, seed=5)
    for k in c:
        np.testing.assert_allclose(boot.draws(k), _naive_draws(c[k], 200, 5, k), atol=1e-12)
    assert boot.point("a") == pytest.approx(c["a"].mean())
    assert not boot.seed_variance  # "b" has one seed


def test_bootstrap_variance_matches_theory_one_seed():
    # one seed: the bootstrap SD of an accuracy is sqrt(p (1 - p) / N) of the empirical p
    rng = np.random.default_rng(0)
    c = rng.random(400) < 0.8
    boot = I.PairedBootstrap({"a": c}, n_boot=4000, seed=1)
    p = c.mean()
    assert boot.draws("a").std() == pytest.approx(math.sqrt(p * (1 - p) / 400), rel=0.05)


def test_seed_part_of_the_variance_is_unbiased():
    # seeds all-right / all-wrong / all-right: resampling samples changes nothing, only the seed
    # part varies; its variance is s^2 / S = var([1, 0, 1], ddof=1) / 3 = 1/9, times the
    # t-calibration (t_2(0.95) / z(0.95))^2 = (2.919986 / 1.644854)^2 = 3.151398
    c = np.stack([np.ones(10, bool), np.zeros(10, bool), np.ones(10, bool)])
    boot = I.PairedBootstrap({"a": c}, n_boot=20000, seed=2)
    d = boot.draws("a")
    assert I.seed_scale(3) ** 2 == pytest.approx(1.5 * 3.151398, rel=1e-5)
    assert I.seed_scale(1) == 0.0
    assert d.mean() == pytest.approx(2 / 3, abs=0.02)
    assert d.var() == pytest.approx(3.151398 / 9, rel=0.03)


def test_paired_difference_hand_cases():
    n = 100
    same = np.ones(n, bool)
    boot = I.PairedBootstrap({"a": same, "b": same}, n_boot=500, seed=0)
    r = I.paired_difference(boot, "a", "b")
    assert r.effect == 0 and r.p_value == 1.0 and r.ci95 == (0.0, 0.0)
    # a always right, b wrong on 30 samples: every draw has d > 0 -> smallest p 1 / (B + 1)
    b = np.ones(n, bool)
    b[:30] = False
    boot = I.PairedBootstrap({"a": same, "b": b}, n_boot=500, seed=0)
    r = I.paired_difference(boot, "a", "b")
    assert r.effect == pytest.approx(0.3) and r.p_value == pytest.approx(1 / 501)
    assert r.ci95[0] > 0.15 and r.ci95[1] < 0.45
    assert r.detail["mcnemar_p_per_seed"] == [pytest.approx(binomtest(0, 30, 0.5).pvalue)]


def test_paired_bootstrap_p_approximates_the_normal_mcnemar():
    # large N, one seed: one-sided bootstrap p ~ Phi(-(n10 - n01) / sqrt(n10 + n01))
    rng = np.random.default_rng(7)
    n = 5000
    a = rng.random(n) < 0.8
    b = a.copy()
    flip = rng.random(n) < 0.06
    b[flip] = ~b[flip]
    boot = I.PairedBootstrap({"a": a, "b": b}, n_boot=2000, seed=3)
    r = I.paired_difference(boot, "a", "b")
    m = I.mcnemar_exact(a, b)
    z = (m.n10 - m.n01) / math.sqrt(m.n10 + m.n01)
    assert r.p_value == pytest.approx(norm.sf(z), abs=0.02)


def test_peak_then_fall_finds_a_fall_and_pays_for_selection():
    rng = np.random.default_rng(11)
    n = 800
    g = rng.standard_normal(n)

    def layer(acc):
        u = np.sqrt(0.8) * g + np.sqrt(0.2) * rng.standard_normal((3, n))
        return u < norm.ppf(acc)

    # flat: all layers 0.8 -> the max over 20 layers is not significant
    flat = {f"l{i:02d}": layer(0.8) for i in range(21)}
    boot = I.PairedBootstrap(flat, n_boot=1000, seed=0)
    r = I.peak_then_fall(boot, list(flat)[:-1], "l20")
    assert r.effect > 0  # the observed max is above the end by selection alone
    assert r.p_value > 0.05
    assert "max-t over 20" in r.multiplicity and r.detail["peak"] in flat
    # a real fall: peak 0.85 at layer 5, end 0.72
    fall = dict(flat)
    fall["l05"] = layer(0.85)
    fall["l20"] = layer(0.72)
    boot = I.PairedBootstrap(fall, n_boot=1000, seed=0)
    r = I.peak_then_fall(boot, list(fall)[:-1], "l20")
    assert r.p_value < 0.01 and r.detail["peak"] == "l05" and r.effect == pytest.approx(0.13, abs=0.03)
    assert r.ci95[0] > 0.05


def test_best_exceeds_all_is_an_intersection_union_test():
    rng = np.random.default_rng(4)
    n = 600
    ref = {"r0": rng.random(n) < 0.9, "r1": rng.random(n) < 0.7}
    lay = {"v0": rng.random(n) < 0.7, "v1": rng.random(n) < 0.75}
    boot = I.PairedBootstrap({**ref, **lay}, n_boot=1000, seed=0)
    r = I.best_exceeds_all(boot, list(ref), list(lay))
    per = [I.paired_difference(boot, "r0", v).p_value for v in lay]
    assert r.p_value >= max(per) - 0.01 and r.p_value < 0.01
    assert r.detail["reference_best"] == "r0" and r.detail["layer_best"] == "v1"
    # a layer as good as the reference makes the whole claim fail
    lay["v2"] = ref["r0"].copy()
    boot = I.PairedBootstrap({**ref, **lay}, n_boot=1000, seed=0)
    assert I.best_exceeds_all(boot, list(ref), list(lay)).p_value > 0.4


def test_bad_outcomes_are_named():
    with pytest.raises(MedprobeError, match="same samples"):
        I.PairedBootstrap({"a": np.ones(5, bool), "b": np.ones(6, bool)})
    with pytest.raises(MedprobeError, match="'x'"):
        I.as_outcomes(np.array([0, 2, 1]), "x")
    boot = I.PairedBootstrap({"a": np.ones(5, bool)}, n_boot=100)
    with pytest.raises(MedprobeError, match="no per-sample outcomes for 'zz'"):
        boot.draws("zz")
