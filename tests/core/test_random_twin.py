"""Random-weights twins (issue 12, item 4a): the same architecture and config with seeded random
weights, loaded through the ordinary load path, recorded as a condition, with its own run key,
and accepted by the report beside its model (``random_floor``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medprobe.adapter import AdapterError
from medprobe.features.extract import extract
from medprobe.models.condition import parse_weights, random_init_label, weights_condition
from medprobe.models.prepare import load_model
from medprobe.models.zoo import get_adapter, get_card

DATA = "synthetic:lesions?n=60&size=32"
#: one card of every stock MLLM family (their saved tiny checkpoints stand in for the hub weights)
MLLM_CARDS = ("llava-med-v1.5", "lingshu-7b", "medvlm-r1-2b", "medgemma-4b")


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _checkpoint(card_id: str, root) -> str:
    card = get_card(card_id)
    return str(get_adapter(card.family).save_tiny_checkpoint(card, root / card.family, seed=7))


def test_weights_labels_round_trip():
    assert parse_weights(random_init_label(3, "local:/ckpt")) == {"weights": "random", "source": "local:/ckpt", "seed": 3}
    assert parse_weights("random-init") == {"weights": "random", "source": None, "seed": None}
    assert parse_weights("tiny-random(seed=2)") == {"weights": "tiny-random", "source": None, "seed": 2}
    assert parse_weights("hub:org/x@main") == {"weights": "pretrained", "source": "hub:org/x@main", "seed": None}
    cond = weights_condition("local:/ckpt", {"path": "/a", "sha256": "x", "merged": False})
    assert cond["weights"] == "pretrained" and cond["lora"]["path"] == "/a"
    assert weights_condition("random-init(seed=1):hub:o/m@main", redrawn=["w"])["redrawn_zero_init"] == ["w"]


@pytest.mark.parametrize("card_id", MLLM_CARDS)
def test_mllm_twin_same_architecture_random_weights(card_id, tmp_path, offline):
    source = _checkpoint(card_id, tmp_path)
    trained = load_model(card_id, source=source)
    twin = load_model(card_id, source=source, random_init=True, seed=0)
    again = load_model(card_id, source=source, random_init=True, seed=0)
    other = load_model(card_id, source=source, random_init=True, seed=1)
    assert twin.weights == f"random-init(seed=0):local:{tmp_path.resolve() / get_card(card_id).family}"
    assert twin.is_random and not trained.is_random
    assert type(twin.model) is type(trained.model) and twin.layer_map.ids == trained.layer_map.ids
    assert twin.model.config.to_dict()["text_config"]["hidden_size"] == trained.model.config.to_dict()["text_config"]["hidden_size"]
    sd_t, sd_r, sd_a, sd_o = (m.model.state_dict() for m in (trained, twin, again, other))
    assert sd_t.keys() == sd_r.keys()
    weights = [k for k, v in sd_t.items() if v.dtype.is_floating_point and v.ndim >= 2]  # norms init to 1, biases to 0
    assert all(torch.equal(sd_r[k], sd_a[k]) for k in sd_r), "the same seed must give the same twin"
    assert sum(not torch.equal(sd_t[k], sd_r[k]) for k in weights) == len(weights), "the twin must not read the checkpoint"
    assert sum(not torch.equal(sd_r[k], sd_o[k]) for k in weights) > 0.5 * len(weights)
    # no weight matrix of the twin is left all-zero (Gemma 3's projection is zero-initialised by its class)
    assert all(bool(sd_r[k].any()) for k in weights)
    if card_id == "medgemma-4b":
        assert twin.extra["random_init_redrawn"] == ["model.multi_modal_projector.mm_input_projection_weight"]


@pytest.mark.slow  # two extractions, two cv probes (3 seeds, 100 permutations) and a report: ~40 s on the shared box
def test_twin_run_condition_key_and_report_floor(tmp_path, offline):
    from medprobe.tasks.pipeline import report_runs

    source = _checkpoint("llava-med-v1.5", tmp_path)
    runs = tmp_path / "runs"
    model = extract("llava-med-v1.5", DATA, runs, source=source, batch_size=30, progress=False, layers="vision.00,connector,llm.00")
    twin = extract("llava-med-v1.5", DATA, runs, source=source, random_init=True, batch_size=30, progress=False,
                   layers="vision.00,connector,llm.00")
    assert model.key != twin.key and model.path != twin.path
    assert twin.path.name.startswith("llava-med-v1.5+random-init__")
    assert model.manifest["condition"]["weights"] == "pretrained"
    assert twin.manifest["condition"] == {"weights": "random", "source": f"local:{(tmp_path / 'llava').resolve()}",
                                          "seed": 0, "lora": None}
    assert "random weights (--random-init)" in twin.manifest["synthetic_reasons"]
    assert not np.allclose(model.features("connector", "image-mean"), twin.features("connector", "image-mean"))

    report = report_runs([model, twin], tmp_path / "report", formats=("json", "md"))
    rows = {m["id"]: m for m in report["models"]}
    assert set(rows) == {"llava-med-v1.5", "llava-med-v1.5+random-init"}
    m, t = rows["llava-med-v1.5"], rows["llava-med-v1.5+random-init"]
    assert m["condition"]["weights"] == "pretrained" and t["condition"]["weights"] == "random"
    assert t["twin_of"] == "llava-med-v1.5" and t["random_floor"] is None
    floor = m["random_floor"]
    assert floor["model"] == "llava-med-v1.5+random-init" and floor["weights"] == twin.manifest["model"]["weights"]
    twin_acc = {(r["id"], r["readout"]): r["accuracy"] for r in t["layers"] if r["probe"] == "linear"}
    assert {(r["id"], r["readout"]): r["accuracy"] for r in floor["layers"]["linear"]} == twin_acc
    md = (tmp_path / "report" / "report.md").read_text()
    assert "## Random-weights floor: " in md and "llava-med-v1.5+random-init" in md
    assert json.loads((tmp_path / "report" / "report.json").read_text())["models"][0]["random_floor"] is not None


def test_timm_twin_condition(tmp_path):
    run = extract("resnet18", DATA, tmp_path, random_init=True, batch_size=30, progress=False, layers="stage.0")
    assert run.manifest["condition"]["weights"] == "random" and run.path.name.startswith("resnet18+random-init__")


def test_tiny_has_no_twin_and_device_map_is_refused(tmp_path, offline):
    with pytest.raises(AdapterError, match="random already"):
        load_model("lingshu-7b", tiny=True, random_init=True)
    source = _checkpoint("lingshu-7b", tmp_path)
    with pytest.raises(AdapterError, match="drop --device-map"):
        load_model("lingshu-7b", source=source, random_init=True, device_map="auto")
