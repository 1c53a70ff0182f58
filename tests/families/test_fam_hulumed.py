"""Hulu-Med: recorded module listings, remote-code refusal, corrupted listings."""

from __future__ import annotations

import json

import pytest

from medprobe.adapter import AdapterError
from medprobe.cards import ModelCard
from medprobe.layermap import LayerMapError, resolve_layer_map
from medprobe_hulumed.adapter import REMOTE_CODE_REFUSAL, variant_of
from medprobe_hulumed.listing import available_variants, listing_file, load_listing

#: variant -> (LLM type, decoder layers, LLM width)  [sources: zoo/medprobe_zoo/cards/mllm_hulumed.toml]
SIZES = {"4b": ("qwen3", 36, 2560), "7b": ("qwen2", 28, 3584), "14b": ("qwen3", 40, 5120), "32b": ("qwen2", 64, 5120)}


def card(size: str, **settings) -> ModelCard:
    return ModelCard(
        id=f"hulu-med-{size}", kind="mllm", family="hulumed", loader="remote-code",
        hub_id=f"ZJU-AI4H/Hulu-Med-{size.upper()}", architecture="HulumedQwen3ForCausalLM", settings=settings,
    )


def adapter():
    from medprobe.models.zoo import get_adapter

    return get_adapter("hulumed")


def test_every_variant_has_a_listing():
    assert available_variants() == ["4b", "7b", "14b", "32b"]


@pytest.mark.parametrize("size", sorted(SIZES))
def test_recorded_listing_validates(size):
    llm, layers, width = SIZES[size]
    c = card(size, llm_model_type=llm)
    names, config, source = adapter().recorded_listing(c)
    lm = resolve_layer_map(c.id, adapter().layer_groups(c, config), names, config, resolved_against=source)
    vision, llm_specs = lm.stage("vision"), lm.stage("llm")
    assert len(vision) == 27 and len(llm_specs) == layers
    assert [s.path for s in vision] == [f"model.vision_encoder.encoder.layers.{i}" for i in range(27)]
    assert all(s.layout == "packed" and s.width == 1152 for s in vision)
    assert vision[-1].feeds_connector and all(s.used for s in vision)
    conn = lm["connector"]
    assert (conn.path, conn.layout, conn.width) == ("model.mm_projector", "packed", width)
    assert [s.path for s in llm_specs] == [f"model.layers.{i}" for i in range(layers)]
    assert all(s.layout == "NLC" and s.width == width for s in llm_specs)
    assert "UNVERIFIED" in source and "vision encoder depth 27" in source
    assert "AdvancingEther/Hulu-Med@829e163" in source and "ZJUI-AI4H/Hulu-Med@a0060ad" in source
    assert "vision_encoder_config.num_hidden_layers" in source  # listed among the unverified facts


def test_zoo_style_resolution_uses_the_listing():
    """What ``medprobe.models.zoo.resolve_layers`` does for families that need remote code."""
    a = adapter()
    assert a.needs_remote_code
    names, config, source = a.recorded_listing(card("7b"))
    lm = resolve_layer_map("hulu-med-7b", a.layer_groups(card("7b"), config), names, config, resolved_against=source)
    assert lm.resolved_against.startswith("recorded listing listing_7b.json")
    assert lm.ids[0] == "vision.00" and lm.ids[-1] == "llm.27"


def test_load_without_trust_remote_code_is_refused():
    with pytest.raises(AdapterError) as err:
        adapter().load(card("7b"), source="/nonexistent/checkpoint")
    assert REMOTE_CODE_REFUSAL in str(err.value) and "--trust-remote-code" in str(err.value)
    assert "hulu-med-7b" in str(err.value)


def test_build_tiny_explains_why_not():
    with pytest.raises(AdapterError, match="remote code"):
        adapter().build_tiny(card("4b"))
    with pytest.raises(AdapterError, match="no tiny random model"):
        adapter().save_tiny_checkpoint(card("4b"), "/tmp/unused")


def test_listing_with_a_missing_layer_names_the_path(tmp_path):
    listing = load_listing(listing_file("7b"))
    kept = [n for n in listing.modules if n != "model.layers.5" and not n.startswith("model.layers.5.")]
    with pytest.raises(LayerMapError) as err:
        resolve_layer_map("hulu-med-7b", adapter().layer_groups(card("7b"), listing.config), kept, listing.config)
    assert "model.layers" in str(err.value) and "not numbered" in str(err.value)

    last_gone = [n for n in listing.modules if not n.startswith("model.vision_encoder.encoder.layers.26")]
    with pytest.raises(LayerMapError, match=r"config says 27 layers .* 'model.vision_encoder.encoder.layers' holds 26"):
        resolve_layer_map("hulu-med-7b", adapter().layer_groups(card("7b"), listing.config), last_gone, listing.config)

    no_projector = [n for n in listing.modules if not n.startswith("model.mm_projector")]
    with pytest.raises(LayerMapError, match=r"model\.mm_projector"):
        resolve_layer_map("hulu-med-7b", adapter().layer_groups(card("7b"), listing.config), no_projector, listing.config)


def test_malformed_listing_file_is_named(tmp_path):
    data = json.loads(listing_file("4b").read_text())
    del data["config"]
    data["modules"].append(data["modules"][0])
    bad = tmp_path / "listing_bad.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match=r"listing_bad\.json: invalid Hulu-Med module listing: 'config' must be a dict"):
        load_listing(bad)
    data["config"] = {}
    bad.write_text(json.dumps(data))
    with pytest.raises(AdapterError, match="repeats 1 names"):
        load_listing(bad)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(AdapterError, match=r"broken\.json: cannot read"):
        load_listing(tmp_path / "broken.json")


def test_card_checks_variant_and_llm_type():
    assert variant_of(card("14b")) == "14b"
    unknown = ModelCard(id="hulu-x", kind="mllm", family="hulumed", hub_id="ZJU-AI4H/SigLip-NaViT")
    with pytest.raises(AdapterError, match=r"cannot tell the Hulu-Med size .* \['4b', '7b', '14b', '32b'\]"):
        adapter().recorded_listing(unknown)
    with pytest.raises(AdapterError, match="llm_model_type 'qwen3' differs"):
        adapter().recorded_listing(card("7b", llm_model_type="qwen3"))
