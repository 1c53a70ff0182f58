"""hf_clip adapter: tiny CLIPModel / SiglipModel, maps resolved on the real module tree, block
hooks equal to ``output_hidden_states`` (hidden_states[i + 1] == block i), the pooled head equal
to ``pooler_output``, and a real ``from_pretrained`` round trip from a local folder."""

from __future__ import annotations

import pytest
import torch

from medprobe.adapter import AdapterError
from medprobe.cards import ModelCard
from medprobe.testing import check_layer_map, synthetic_images

transformers = pytest.importorskip("transformers")
from medprobe_hf_clip.adapter import HFClipAdapter  # noqa: E402

ADAPTER = HFClipAdapter()


def card(model_class: str, **settings) -> ModelCard:
    return ModelCard(
        id=f"test-{model_class.lower()}", kind="baseline", family="hf_clip", architecture=model_class,
        hub_id="medprobe-tests/not-on-the-hub", settings={"model_class": model_class, **settings},
    )


@pytest.mark.parametrize("model_class,prefix", [("CLIPModel", 1), ("SiglipModel", 0)])
def test_blocks_and_head_equal_the_models_own_outputs(model_class, prefix, hooks):
    loaded = ADAPTER.build_tiny(card(model_class))
    assert type(loaded.model).__name__ == model_class
    lmap, vcfg = loaded.layer_map, loaded.model.config.vision_config
    assert check_layer_map(lmap) == []
    vision = lmap.stage("vision")
    assert len(vision) == vcfg.num_hidden_layers
    assert all(s.path.endswith(f"encoder.layers.{s.index}") for s in vision)
    assert {s.prefix_tokens for s in vision} == {prefix} and {s.width for s in vision} == {vcfg.hidden_size}

    batch = ADAPTER.preprocess(loaded, synthetic_images(2))
    assert tuple(batch.inputs["pixel_values"].shape) == (2, 3, *loaded.extra["image_size"])
    got = hooks.run(loaded.model, [s.path for s in lmap], lambda: ADAPTER.forward(loaded, batch))
    with torch.no_grad():
        out = loaded.model.vision_model(pixel_values=batch.inputs["pixel_values"], output_hidden_states=True)
    assert len(out.hidden_states) == len(vision) + 1
    grid = (loaded.extra["image_size"][0] // vcfg.patch_size) ** 2
    for spec in vision:
        assert got[spec.path].shape == (2, grid + prefix, vcfg.hidden_size)
        torch.testing.assert_close(got[spec.path], out.hidden_states[spec.index + 1], rtol=0, atol=0)
    head = lmap["head"]
    assert head.layout == "NC" and got[head.path].shape == (2, head.width)
    torch.testing.assert_close(got[head.path], out.pooler_output, rtol=0, atol=0)


def test_vision_config_from_the_card_sets_depth_and_patch():
    loaded = ADAPTER.build_tiny(card("SiglipModel", vision_config={"num_hidden_layers": 3, "patch_size": 14}))
    assert loaded.layer_map.ids == ["vision.00", "vision.01", "vision.02", "head"]
    assert loaded.extra["image_size"] == (56, 56)
    assert "card settings.vision_config" in loaded.layer_map.notes[0]


def test_siglip_without_head_maps_no_head():
    loaded = ADAPTER.build_tiny(card("SiglipModel", vision_config={"num_hidden_layers": 2, "vision_use_head": False}))
    assert loaded.layer_map.ids == ["vision.00", "vision.01"]


def test_build_tiny_is_deterministic_per_seed():
    a, b, c = (ADAPTER.build_tiny(card("CLIPModel"), seed=s) for s in (0, 0, 5))
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())


def test_load_from_a_local_checkpoint_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = ADAPTER.build_tiny(card("CLIPModel"), seed=2)
    tiny.model.save_pretrained(tmp_path)
    tiny.processor.save_pretrained(tmp_path)
    loaded = ADAPTER.load(card("CLIPModel"), weights=str(tmp_path), dtype="fp32")
    assert loaded.weights == f"local:{tmp_path.resolve()}" and not loaded.is_random
    assert loaded.extra["image_size"] == tiny.extra["image_size"]
    assert loaded.layer_map.to_dict()["layers"] == tiny.layer_map.to_dict()["layers"]
    images = synthetic_images(2)
    a, b = ADAPTER.preprocess(tiny, images), ADAPTER.preprocess(loaded, images)
    torch.testing.assert_close(a.inputs["pixel_values"], b.inputs["pixel_values"], rtol=0, atol=0)
    with torch.no_grad():
        ya = tiny.model.vision_model(pixel_values=a.inputs["pixel_values"]).pooler_output
        yb = loaded.model.vision_model(pixel_values=b.inputs["pixel_values"]).pooler_output
    torch.testing.assert_close(ya, yb, rtol=0, atol=0)


def test_offline_hub_checkpoint_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AdapterError) as err:
        ADAPTER.load(card("SiglipModel"))
    assert "medprobe-tests/not-on-the-hub" in str(err.value) and "--random-init" in str(err.value)


def test_unknown_model_class_is_refused():
    with pytest.raises(AdapterError, match="CLIPModel"):
        ADAPTER.build_tiny(card("BlipModel"))
