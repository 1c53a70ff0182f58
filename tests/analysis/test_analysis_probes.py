"""Batched probes under the held-out ``split`` protocol (one seed): agreement with the per-layer
references, controls, determinism, memory contract, save/load, and errors. The ``cv`` protocol
(the default) is tested in ``test_protocol_*.py``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest

from conftest import make_split, planted_features
from medprobe.analysis.probes import probe_layers
from medprobe.analysis.reference import reference_linear, reference_mlp
from medprobe.analysis.results import ProbeError, ProbeResults
from medprobe.registry import NotFoundError


def split_probe(*args, **kwargs):
    """``probe_layers`` under the split protocol with one seed (the protocol these tests pin)."""
    kwargs.setdefault("protocol", "split")
    kwargs["seeds"] = (kwargs.pop("seed", 0),)
    return probe_layers(*args, **kwargs)


def test_linear_matches_sklearn_reference(separable):
    feats, y, sp = separable
    res = split_probe(feats, y, sp, probe="linear", controls=False)
    ref = reference_linear(feats, y, sp)
    for key in feats:
        assert res[key].accuracy > 0.9
        assert abs(res[key].accuracy - ref[key]["accuracy"]) <= 0.02, key
        step = abs(np.log10(res[key].hyper["C"]) - np.log10(ref[key]["hyper"]["C"]))
        assert step <= 0.25 + 1e-9, f"{key}: C {res[key].hyper['C']} vs sklearn {ref[key]['hyper']['C']}"
        assert res[key].hyper["converged"]
    assert [r.width for r in res.layers.values()] == [16, 24, 16, 32]
    assert res.settings["chunks"] == 1  # both widths trained in one chunk


def test_linear_binary_uses_sklearns_c_convention():
    """K = 2: the two-column softmax with a doubled penalty is scikit-learn's binary model."""
    rng = np.random.default_rng(8)
    n = 300
    y = rng.integers(0, 2, n)
    sp = make_split(n, rng)
    feats = planted_features(y, [0.25, 0.35, 0.5], [20, 20, 20], rng)
    res = split_probe(feats, y, sp, probe="linear", controls=False)
    ref = reference_linear(feats, y, sp)
    for key in feats:
        assert abs(res[key].accuracy - ref[key]["accuracy"]) <= 0.02, key
        assert res[key].hyper["C"] == pytest.approx(ref[key]["hyper"]["C"]), key
        assert res[key].hyper["val_log_loss"] == pytest.approx(ref[key]["hyper"]["val_log_loss"], rel=1e-3)


def test_mlp_equals_per_layer_adamw_loop_without_dropout():
    """Same initial draws and sample order: without dropout the batched heads (real, control and
    permutations of every layer, trained together) reproduce independent per-layer training."""
    rng = np.random.default_rng(12)
    n = 240
    y = rng.integers(0, 3, size=n)
    feats, sp = planted_features(y, [0.5, 0.8, 0.6], [16, 24, 16], rng), make_split(n, rng)
    kw = {"hidden": 16, "dropout": 0.0, "epochs": 4}
    pairs = np.arange(n) // 2  # groups that straddle the splits: the control task is trained
    res = split_probe(feats, y, sp, probe="mlp", n_permutations=2, groups=pairs, **kw)
    ref = reference_mlp(feats, y, sp, controls=True, n_permutations=2, groups=pairs, **kw)
    for key in feats:
        assert res[key].accuracy == pytest.approx(ref[key]["accuracy"])
        assert res[key].hyper["epoch"] == ref[key]["hyper"]["epoch"]
        assert res[key].hyper["val_loss"] == pytest.approx(ref[key]["hyper"]["val_loss"], rel=1e-4)
        assert res[key].control_accuracy == pytest.approx(ref[key]["control_accuracy"])
        assert res[key].permutation_null["mean"] == pytest.approx(np.mean(ref[key]["null"]))


def test_mlp_matches_per_layer_loop_within_noise(strong):
    feats, y, sp = strong
    res = split_probe(feats, y, sp, probe="mlp", controls=False)  # the paper's recipe, hidden 256
    ref = reference_mlp(feats, y, sp)
    for key in feats:
        assert res[key].accuracy > 0.9
        assert abs(res[key].accuracy - ref[key]["accuracy"]) <= 0.02, key
        assert 1 <= res[key].hyper["epoch"] <= 20
    assert res.settings["hidden"] == 256 and res.settings["batch_size"] == 4 and res.settings["epochs"] == 20


def test_permutation_null_is_near_chance_on_random_labels():
    rng = np.random.default_rng(5)
    n = 300
    y = rng.integers(0, 3, n)
    sp = make_split(n, rng)
    feats = {f"layer.{i}/image-mean": rng.normal(size=(n, 20)).astype(np.float32) for i in range(4)}
    res = split_probe(feats, y, sp, probe="linear", n_permutations=19, seed=1)
    ps = [r.permutation_p for r in res.layers.values()]
    assert min(ps) > 0.05 and np.median(ps) > 0.2
    for r in res.layers.values():
        assert abs(r.permutation_null["mean"] - 1 / 3) < 0.08
        assert abs(r.accuracy - 1 / 3) < 0.15
        assert r.permutation_null["n"] == 19


def test_controls_on_real_signal(separable):
    feats, y, sp = separable
    # groups of two rows (e.g. two views of one patient): many pairs straddle train/val and test,
    # so the control task is informative and gets trained
    pairs = np.arange(y.size) // 2
    res = split_probe(feats, y, sp, probe="linear", n_permutations=9, groups=pairs)
    for r in res.layers.values():
        assert r.permutation_p == pytest.approx(1 / 10)  # the smallest reachable p with 9 permutations
        assert r.permutation_null["mean"] < 0.5
        # the two rows of a pair share no features beyond their classes: control close to chance
        assert abs(r.control_accuracy - r.control_chance) < 0.2
        assert r.selectivity == pytest.approx(r.accuracy - r.control_accuracy)
        assert r.selectivity > 0.4
        assert "control" in r.hyper and "C" in r.hyper["control"]
        assert r.control_note is None
    assert res.settings["n_permutations"] == 9 and res.settings["control_groups"] == "given"
    # one group per sample: no group recurs across the splits -> no selectivity, and the reason
    alone = split_probe(feats, y, sp, probe="linear", n_permutations=9)
    for r in alone.layers.values():
        assert r.selectivity is None and r.control_accuracy is None
        assert r.control_note.startswith("control task not informative")
        assert r.permutation_p == pytest.approx(1 / 10)
    assert alone.settings["control_groups"].startswith("one per sample")


def test_mlp_controls_run_in_the_same_pass():
    rng = np.random.default_rng(2)
    n = 160
    y = rng.integers(0, 2, n)
    sp = make_split(n, rng)
    feats = planted_features(y, [2.0, 0.0], [12, 12], rng)
    res = split_probe(feats, y, sp, probe="mlp", n_permutations=3, hidden=16, epochs=5, lr=1e-2,
                      groups=np.arange(n) // 2)
    strong, noise = res.layers.values()
    assert strong.accuracy > 0.9 > noise.accuracy
    assert strong.permutation_p == pytest.approx(1 / 4) and strong.selectivity > 0.2
    assert strong.permutation_null["n"] == 3 and strong.control_accuracy is not None
    assert "epoch" in strong.hyper["control"]


def test_deterministic_and_independent_of_chunking(separable):
    feats, y, sp = separable
    a = split_probe(feats, y, sp, probe="linear", n_permutations=4, seed=3)
    b = split_probe(feats, y, sp, probe="linear", n_permutations=4, seed=3)
    assert [r.to_dict() for r in a.layers.values()] == [r.to_dict() for r in b.layers.values()]
    c = split_probe(feats, y, sp, probe="linear", n_permutations=4, seed=3, max_chunk_bytes=1)
    assert c.settings["chunks"] == len(feats)  # one layer per chunk
    for key in feats:
        assert c[key].accuracy == pytest.approx(a[key].accuracy, abs=0.01)
        assert c[key].hyper["C"] == pytest.approx(a[key].hyper["C"])
    m1 = split_probe(feats, y, sp, probe="mlp", controls=False, hidden=8, epochs=2, seed=4)
    m2 = split_probe(feats, y, sp, probe="mlp", controls=False, hidden=8, epochs=2, seed=4)
    assert [r.to_dict() for r in m1.layers.values()] == [r.to_dict() for r in m2.layers.values()]


class CountingFeatures(Mapping):
    """A lazy mapping: every access 'reads' the layer and is counted."""

    def __init__(self, data):
        self.data, self.reads = data, {k: 0 for k in data}

    def __getitem__(self, key):
        self.reads[key] += 1
        return self.data[key].copy()

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


def test_each_layer_is_read_once_and_memmaps_work(separable, tmp_path):
    feats, y, sp = separable
    lazy = CountingFeatures(feats)
    res = split_probe(lazy, y, sp, probe="linear", controls=False, max_chunk_bytes=40_000)
    assert set(lazy.reads.values()) == {1}
    assert res.settings["chunks"] > 1
    mm = {}
    for i, (k, v) in enumerate(feats.items()):
        np.save(tmp_path / f"{i}.npy", v)
        mm[k] = np.load(tmp_path / f"{i}.npy", mmap_mode="r")
    res_mm = split_probe(mm, y, sp, probe="linear", controls=False)
    assert res_mm.accuracies() == pytest.approx(res.accuracies(), abs=0.01)


def test_save_load_roundtrip_and_weights_reproduce_predictions(separable, tmp_path):
    feats, y, sp = separable
    test = sp == "test"
    for probe, hyper in (("linear", {}), ("mlp", {"hidden": 16, "epochs": 3})):
        res = split_probe(feats, y, sp, probe=probe, n_permutations=2, **hyper)
        res.save(tmp_path / probe)
        assert (tmp_path / probe / "weights.safetensors").exists()
        back = ProbeResults.load(tmp_path / probe)
        assert back.to_dict() == res.to_dict()
        key = "layer.03/image-mean"
        w = back.weights[key]
        z = (feats[key][test] - w["mean"]) / w["scale"]
        if probe == "linear":
            logits = z @ w["W"] + w["b"]
        else:
            logits = np.maximum(z @ w["W1"] + w["b1"], 0) @ w["W2"] + w["b2"]
        assert np.mean(logits.argmax(1) == y[test]) == pytest.approx(res[key].accuracy)


def test_errors_name_the_problem(separable):
    feats, y, sp = separable
    with pytest.raises(ProbeError, match="'val' split is empty"):
        split_probe(feats, y, np.where(sp == "val", "train", sp))
    bad = dict(feats)
    bad["layer.01/image-mean"] = bad["layer.01/image-mean"].copy()
    bad["layer.01/image-mean"][3, 2] = np.nan
    with pytest.raises(ProbeError, match=r"features\['layer.01/image-mean'\] holds NaN"):
        split_probe(bad, y, sp, controls=False)
    with pytest.raises(ProbeError, match="outside 0..1"):
        split_probe(feats, y, sp, n_classes=2)
    with pytest.raises(ProbeError, match="has 10 rows"):
        split_probe({"x/image-mean": np.zeros((10, 3), np.float32)}, y, sp)
    with pytest.raises(NotFoundError, match="probe 'lineer' not found"):
        split_probe(feats, y, sp, probe="lineer")
    with pytest.raises(ProbeError, match="does not accept"):
        split_probe(feats, y, sp, probe="linear", hidden=3)
