"""Layer-map expansion and validation against module-name listings (no torch needed)."""

from __future__ import annotations

import pytest

from medprobe.layermap import LayerGroup, LayerMap, LayerMapError, resolve_layer_map

CONFIG = {"vision_config": {"num_hidden_layers": 3, "hidden_size": 32}, "text_config": {"num_hidden_layers": 2, "hidden_size": 64}}

# a 5.x-style LLaVA tree (flattened vision tower)
NAMES_5X = (
    ["model", "model.vision_tower", "model.vision_tower.encoder", "model.vision_tower.encoder.layers"]
    + [f"model.vision_tower.encoder.layers.{i}" for i in range(3)]
    + [f"model.vision_tower.encoder.layers.{i}.mlp" for i in range(3)]
    + ["model.multi_modal_projector", "model.language_model", "model.language_model.layers"]
    + [f"model.language_model.layers.{i}" for i in range(2)]
)
NAMES_4X = [n.replace("model.vision_tower.encoder", "model.vision_tower.vision_model.encoder") for n in NAMES_5X]

GROUPS = [
    LayerGroup("vision", "vision.{i:02d}", ("model.vision_tower.encoder.layers", "model.vision_tower.vision_model.encoder.layers"),
               count="vision_config.num_hidden_layers", width="vision_config.hidden_size", prefix_tokens=1, feeds_connector=-2),
    LayerGroup("connector", "connector", ("model.multi_modal_projector",), repeated=False, width="text_config.hidden_size"),
    LayerGroup("llm", "llm.{i:02d}", ("model.language_model.layers",), count="text_config.num_hidden_layers", width="text_config.hidden_size"),
]


@pytest.mark.parametrize("names", [NAMES_5X, NAMES_4X], ids=["transformers-5.6+", "transformers-4.52-5.5"])
def test_resolves_across_versions(names):
    lmap = resolve_layer_map("m", GROUPS, names, CONFIG)
    assert lmap.ids == ["vision.00", "vision.01", "vision.02", "connector", "llm.00", "llm.01"]
    assert [round(s.depth, 3) for s in lmap] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    v = lmap["vision.01"]
    assert v.feeds_connector and v.used and v.width == 32 and v.prefix_tokens == 1
    assert not lmap["vision.02"].used  # computed but never passed to the connector
    assert lmap["connector"].width == 64 and lmap["connector"].module == "connector"
    assert lmap["llm.01"].path == "model.language_model.layers.1"


def test_select_patterns_and_round_trip():
    lmap = resolve_layer_map("m", GROUPS, NAMES_5X, CONFIG)
    assert [s.id for s in lmap.select("vision.*,connector")] == ["vision.00", "vision.01", "vision.02", "connector"]
    assert [s.id for s in lmap.select("llm")] == ["llm.00", "llm.01"]
    assert len(lmap.select(None)) == 6
    with pytest.raises(LayerMapError, match="matches none"):
        lmap.select("nope.*")
    assert LayerMap.from_dict(lmap.to_dict()) == lmap


def test_unresolved_paths_list_nearest_names():
    bad = [n.replace("language_model", "lang_model") for n in NAMES_5X]
    with pytest.raises(LayerMapError) as info:
        resolve_layer_map("m", GROUPS, bad, CONFIG)
    text = str(info.value)
    assert "model.language_model.layers" in text and "model.lang_model" in text


def test_count_mismatch_with_config():
    cfg = {**CONFIG, "text_config": {"num_hidden_layers": 5, "hidden_size": 64}}
    with pytest.raises(LayerMapError, match="config says 5 layers"):
        resolve_layer_map("m", GROUPS, NAMES_5X, cfg)


def test_duplicate_ids_and_order_are_reported():
    dup = [GROUPS[2], LayerGroup("llm", "llm.{i:02d}", ("model.language_model.layers",))]
    with pytest.raises(LayerMapError, match="duplicate layer ids"):
        resolve_layer_map("m", dup, NAMES_5X, CONFIG)
    with pytest.raises(LayerMapError, match="out of pipeline order"):
        resolve_layer_map("m", [GROUPS[2], GROUPS[0]], NAMES_5X, CONFIG)


def test_gaps_in_numbering_are_reported():
    names = [n for n in NAMES_5X if n != "model.language_model.layers.0"]
    with pytest.raises(LayerMapError, match="not numbered"):
        resolve_layer_map("m", GROUPS, names, CONFIG)
