"""Layer-map expansion and validation against module-name listings (no torch needed)."""

from __future__ import annotations

import pytest

from medprobe.layermap import (
    CANONICAL_IDS,
    MAX_LAYERS_PER_STAGE,
    STAGES,
    LayerGroup,
    LayerMap,
    LayerMapError,
    LayerPatternError,
    LayerSelectionError,
    check_patterns,
    is_canonical,
    resolve_layer_map,
)

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


# -- canonical ids and the pre-load pattern check ---------------------------------------------


def test_non_canonical_ids_are_refused_by_the_resolver():
    odd = [GROUPS[0], GROUPS[1], LayerGroup("llm", "llm.{i}", ("model.language_model.layers",))]
    with pytest.raises(LayerMapError, match=r"not of their stage's canonical form: llm\.0 \(llm: llm\.\{i:02d\}\), llm\.1"):
        resolve_layer_map("m", odd, NAMES_5X, CONFIG)
    wrong_stage = [LayerGroup("vision", "llm.{i:02d}", ("model.vision_tower.encoder.layers",))]
    with pytest.raises(LayerMapError, match="canonical form: llm.00 \\(vision"):
        resolve_layer_map("m", wrong_stage, NAMES_5X, CONFIG)


def test_is_canonical_golden():
    assert is_canonical("llm", "llm.07") and is_canonical("llm", "llm.127") and is_canonical("cnn", "stage.10")
    assert not is_canonical("llm", "llm.7") and not is_canonical("cnn", "stage.01") and not is_canonical("vision", "llm.00")
    assert is_canonical("connector", "connector") and not is_canonical("connector", "connector.0")
    assert not is_canonical("nope", "nope")


@pytest.mark.parametrize("pattern, suggestion", [
    ("vison.*", "'vision.*'"), ("lm.*", "'llm.*'"), ("stgae.*", "'stage.*'"), ("llm.5", "'llm.05'"),
    ("vision.3", "'vision.03'"), ("stage.03", "'stage.3'"), ("LLM", "'llm'"), ("conector", "'connector'"),
])  # fmt: skip
def test_misspelt_patterns_are_refused_with_the_close_name(pattern, suggestion):
    with pytest.raises(LayerPatternError) as info:
        check_patterns(f"vision.*,{pattern}", model="lingshu-7b")
    msg = str(info.value)
    assert msg.startswith(f"--layers: pattern '{pattern}' matches no layer id of any model (checked before loading 'lingshu-7b').")
    assert f"Did you mean {suggestion}" in msg and "\n" not in msg
    assert "'medprobe models layers lingshu-7b --tiny'" in msg
    assert isinstance(info.value, LayerSelectionError)  # callers that catch selection errors still do


def test_the_check_refuses_no_pattern_a_model_could_accept():
    """Soundness: every canonical id, every stage / module name and the usual wildcards pass."""
    ids = [t.format(i=i) for t in CANONICAL_IDS.values() for i in range(MAX_LAYERS_PER_STAGE if "{i" in t else 1)]
    check_patterns(ids)
    check_patterns([*STAGES, "vision", "connector", "llm", "head", "*", "vision.*", "llm.1?", "llm.[0-3]?", "stage.*",
                    "[!v]*", "*.0?", "llm.27"])  # fmt: skip
    check_patterns(None)



def test_the_conformance_kit_flags_a_map_built_with_other_ids():
    from medprobe.layermap import LayerSpec
    from medprobe.testing import check_layer_map

    lmap = LayerMap("m", (LayerSpec("block.0", "a", "vision", 0, 0.0), LayerSpec("llm.00", "b", "llm", 0, 1.0)))
    assert check_layer_map(lmap) == ["m: layer ids not of their stage's canonical form (layermap.CANONICAL_IDS): ['block.0']"]
