"""``medprobe train``: each recipe end to end on tiny models; the record, the checkpoint and the report."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from medprobe.cli import cli
from medprobe.datasets import open_dataset
from medprobe.tasks.pipeline import probe_run, report_runs
from medprobe.registry import MedprobeError
from medprobe.features.store import Run
from medprobe.tasks.train import train
from medprobe.tasks.training.record import TRAIN_FORMAT, TrainError
from medprobe.models.zoo import get_adapter
from medprobe.models.prepare import load_model

from .conftest import DATA

METRICS = {"n", "accuracy", "balanced_accuracy", "macro_f1", "auroc", "ci95", "chance", "confusion"}


def _check_record(run, recipe: str) -> None:
    rec = json.loads((run.path / "train.json").read_text())
    assert rec["format"] == TRAIN_FORMAT and rec["recipe"] == recipe
    ds = open_dataset(DATA)
    assert rec["dataset"]["fingerprint"] == ds.fingerprint() and rec["dataset"]["spec"] == ds.spec
    assert rec["dataset"]["counts"] == {s: len(ds.by_split(s)) for s in ("train", "val", "test")}
    assert rec["synthetic"] and any("tiny random" in r for r in rec["synthetic_reasons"])
    assert rec["seed"] == 0 and rec["hyper"]["label_smoothing"] == 0.1
    assert set(rec["class_weights"]) == set(ds.classes)
    train_counts = np.bincount([s.label for s in ds.by_split("train")], minlength=3)
    expected = train_counts.sum() / (3 * train_counts)
    assert np.allclose([rec["class_weights"][c] for c in ds.classes], expected)
    for split in ("train", "val", "test"):
        m = rec["metrics"][split]
        assert set(m) == METRICS, split
        assert m["n"] == rec["dataset"]["counts"][split]
        conf = np.array(m["confusion"])
        assert conf.sum() == m["n"] and np.isclose(np.trace(conf) / m["n"], m["accuracy"])
        assert m["ci95"][0] <= m["accuracy"] <= m["ci95"][1]
    assert 1 <= rec["best_epoch"] <= rec["epochs_run"] <= rec["hyper"]["epochs"]
    log = run.log()
    assert [e["epoch"] for e in log] == list(range(1, rec["epochs_run"] + 1))
    assert sum(e["best"] for e in log) >= 1 and log[rec["best_epoch"] - 1]["best"]
    # the training loss falls
    assert log[-1]["train_loss"] < log[0]["train_loss"], [e["train_loss"] for e in log]


def test_finetune_record_and_falling_loss(finetune_run):
    _check_record(finetune_run, "finetune")
    rec = finetune_run.record
    assert not rec["frozen_backbone"] and rec["hyper"]["augment"]
    assert rec["preprocessing"]["train_augmentation"]["hflip"] == 0.5
    assert rec["model"]["trainable_parameters"] > 1_000_000  # the whole ResNet-18 trains
    assert finetune_run.file("backbone").is_file() and finetune_run.file("head").is_file()


def test_finetune_checkpoint_reproduces_the_test_score(finetune_run):
    """The saved best-epoch backbone loads through the timm adapter's ``--weights`` path, and with the
    saved head it gives exactly the recorded test accuracy."""
    rec = finetune_run.record
    loaded = load_model("resnet18", weights=str(finetune_run.file("backbone")), image_size=64)
    assert loaded.weights.startswith("local:")
    adapter = get_adapter("timm")
    head = load_file(str(finetune_run.file("head")))
    ds = open_dataset(DATA)
    test = ds.by_split("test")
    with torch.no_grad():
        x = adapter.encode_images(loaded, adapter.preprocess(loaded, [ds.load_image(s) for s in test]))
        logits = ((x - head["mean"]) / head["scale"]) @ head["weight"].T + head["bias"]
    acc = float((logits.argmax(1).numpy() == np.array([s.label for s in test])).mean())
    assert acc == pytest.approx(rec["metrics"]["test"]["accuracy"])


def test_finetune_probe_layers_run_is_the_trained_model(finetune_run):
    layers = Run.open(finetune_run.layers_run_path)
    assert layers.complete
    assert layers.manifest["model"]["weights"] == finetune_run.record["model"]["trained_weights"]
    assert "+trained(finetune)" in layers.manifest["model"]["weights"]
    assert layers.manifest["synthetic"]
    assert {lid for lid, _ in layers.feature_keys} >= {"stage.0", "head"}


def test_linear_recipe_freezes_the_backbone(linear_run):
    _check_record(linear_run, "linear")
    rec = linear_run.record
    assert rec["frozen_backbone"] and not rec["hyper"]["augment"]
    assert rec["checkpoint"]["backbone"] is None and rec["model"]["trainable_parameters"] == 0
    assert rec["model"]["trained_weights"] == rec["model"]["weights"] == "tiny-random(seed=0)"
    head = load_file(str(linear_run.file("head")))
    assert head["weight"].shape == (3, rec["model"]["feature_dim"]) == (3, 384)
    assert not torch.allclose(head["scale"], torch.ones_like(head["scale"]))  # standardised on train features


def test_vision_tower_trains_the_tower_up_to_the_feeding_layer(tower_run):
    _check_record(tower_run, "vision-tower")
    rec = tower_run.record
    loaded = load_model("medgemma-4b", tiny=True)
    feeding = [s for s in loaded.layer_map.stage("vision") if s.feeds_connector]
    assert rec["model"]["feature_layer"] == feeding[0].id
    state = load_file(str(tower_run.file("backbone")))
    assert state and all(k.startswith("model.vision_tower.") for k in state)
    assert any(".encoder.layers.0." in k for k in state) and any("embeddings" in k for k in state)
    own = dict(loaded.model.named_parameters())
    assert any(not torch.equal(v, own[k]) for k, v in state.items())  # the tower changed
    layers = Run.open(tower_run.layers_run_path)
    assert {lid for lid, _ in layers.feature_keys} == {s.id for s in loaded.layer_map.stage("vision")}


def test_vision_tower_of_llava_skips_the_unused_last_block(tmp_path):
    """LLaVA feeds its connector from block -2: the last block gets no gradient and is not saved."""
    run = train("llava-med-v1.5", DATA, tmp_path / "run", recipe="vision-tower", tiny=True, epochs=1, progress=False)
    loaded = load_model("llava-med-v1.5", tiny=True)
    vision = loaded.layer_map.stage("vision")
    fed = next(s for s in vision if s.feeds_connector)
    assert run.record["model"]["feature_layer"] == fed.id and fed.index == len(vision) - 2
    state = load_file(str(run.file("backbone")))
    assert not any(k.startswith(vision[-1].path + ".") for k in state)
    assert any(k.startswith(fed.path + ".") for k in state)


def test_report_shows_trained_runs(finetune_run, linear_run, tower_run, tmp_path):
    for run in (finetune_run, tower_run):  # probe once without the (slow) controls; the report reuses the results
        probe_run(run.layers_run_path, "linear", controls=False)
    out = tmp_path / "report"
    res = CliRunner().invoke(cli, ["report", str(finetune_run.path), str(linear_run.path), str(tower_run.path),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "report.json").read_text())
    trained = {t["id"]: t for t in report["trained"]}
    assert set(trained) == {"resnet18+finetune", "vit-small-patch16-224+linear", "medgemma-4b+vision-tower"}
    ft = trained["resnet18+finetune"]
    assert ft["test_accuracy"] == finetune_run.metrics["test"]["accuracy"]
    assert ft["test_ci95"] == finetune_run.metrics["test"]["ci95"] and ft["layers_model"] == "resnet18+finetune"
    assert trained["vit-small-patch16-224+linear"]["layers_model"] is None
    rows = {m["id"]: m for m in report["models"]}
    assert set(rows) == {"resnet18+finetune", "medgemma-4b+vision-tower"}
    assert all(m["kind"] == "baseline" and m["layers"] for m in rows.values())
    assert report["synthetic"] and "resnet18+finetune" in report["synthetic_models"]
    md = (out / "report.md").read_text()
    assert "## Trained classifiers" in md and "ResNet" in md
    assert 'id="trained"' in (out / "report.html").read_text()


def test_report_needs_a_run_with_layer_probes(linear_run):
    with pytest.raises(MedprobeError, match="layer probes"):
        report_runs([linear_run.path])


@pytest.mark.parametrize(
    ("model", "recipe", "extra", "message"),
    [
        ("resnet18", "vision-tower", {}, "takes an MLLM card"),
        ("lingshu-7b", "finetune", {}, "--recipe vision-tower"),
        ("resnet18", "linear", {"probe_layers": True}, "frozen backbone"),
        ("resnet18", "finetune", {"layer": "stage.1"}, "vision-tower recipe only"),
        ("resnet18", "finetune", {"epochs": 0}, "epochs must be at least 1"),
        ("resnet18", "finetune", {"image_size": 32}, "--tiny"),
        ("resnet18", "sgd", {}, "unknown recipe"),
    ],
)
def test_bad_requests_are_refused(model, recipe, extra, message, tmp_path):
    with pytest.raises(TrainError, match=message):
        train(model, DATA, tmp_path / "run", recipe=recipe, tiny=True, progress=False, **extra)


def test_existing_run_is_not_overwritten(linear_run):
    with pytest.raises(TrainError, match="already holds a trained run"):
        train("vit-small-patch16-224", DATA, linear_run.path, recipe="linear", tiny=True, progress=False)


def test_probe_layer_patterns_are_checked_before_training_and_an_old_run_is_kept(finetune_run, tmp_path):
    from medprobe.layermap import LayerPatternError, LayerSelectionError

    with pytest.raises(LayerPatternError, match="pattern 'stgae.1' matches no layer id of any model .*'stage.1'"):
        train("resnet18", DATA, tmp_path / "new", recipe="finetune", tiny=True, probe_layers=True,
              probe_layer_patterns="stgae.1", progress=False)
    assert not (tmp_path / "new").exists()  # refused before the dataset, the model or the folder
    before = {p.relative_to(finetune_run.path): p.read_bytes() for p in finetune_run.path.rglob("*") if p.is_file()}
    # well formed, but resnet18 has no layer 'stage.9': refused once the model is loaded, before the
    # old run is cleared or an epoch is trained
    with pytest.raises(LayerSelectionError, match="pattern 'stage.9' matches none of the layers of 'resnet18'"):
        train("resnet18", DATA, finetune_run.path, recipe="finetune", tiny=True, probe_layers=True,
              probe_layer_patterns="stage.9", overwrite=True, progress=False)
    after = {p.relative_to(finetune_run.path): p.read_bytes() for p in finetune_run.path.rglob("*") if p.is_file()}
    assert after == before
