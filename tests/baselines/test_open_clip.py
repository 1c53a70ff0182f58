"""open_clip adapter: tiny towers of the card's type (VisionTransformer and timm trunk), maps that
resolve on the real module tree, hook outputs equal to the tower's own intermediates, and the
embedding head equal to ``encode_image``."""

from __future__ import annotations

import pytest
import torch

from medprobe.adapter import AdapterError
from medprobe.cards import ModelCard
from medprobe.testing import check_layer_map, synthetic_images

open_clip = pytest.importorskip("open_clip")
from open_clip.timm_model import TimmModel  # noqa: E402
from open_clip.transformer import VisionTransformer  # noqa: E402

from medprobe_open_clip.adapter import OpenClipAdapter  # noqa: E402

ADAPTER = OpenClipAdapter()
VIT_L = ModelCard(id="test-clip-l-336", kind="baseline", family="open_clip", settings={"model_name": "ViT-L-14-336", "pretrained": "openai"})
BIOMEDCLIP = ModelCard(
    id="test-biomedclip", kind="baseline", family="open_clip",
    hub_id="microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    settings={"model_name": "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"},
)


@pytest.fixture(scope="module")
def vit_l():
    return ADAPTER.build_tiny(VIT_L)


@pytest.fixture(scope="module")
def biomedclip():
    return ADAPTER.build_tiny(BIOMEDCLIP)


def test_vit_tower_map_keeps_the_real_depth(vit_l):
    cfg = open_clip.get_model_config("ViT-L-14-336")["vision_cfg"]
    visual = vit_l.model.visual
    assert isinstance(visual, VisionTransformer) and visual.transformer.batch_first
    vision = vit_l.layer_map.stage("vision")
    assert [s.path for s in vision] == [f"visual.transformer.resblocks.{i}" for i in range(cfg["layers"])]
    assert {s.prefix_tokens for s in vision} == {1} and {s.layout for s in vision} == {"NLC"}
    assert vit_l.extra["image_size"] == (cfg["patch_size"] * 4,) * 2
    head = vit_l.layer_map["head"]
    assert (head.path, head.layout, head.width) == ("visual", "NC", open_clip.get_model_config("ViT-L-14-336")["embed_dim"])
    assert check_layer_map(vit_l.layer_map) == []
    # the 'openai' tag was trained with QuickGELU: the tiny tower uses the same activation
    assert type(visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"


def test_vit_tower_hooks_equal_intermediates_and_embedding(vit_l, hooks):
    batch = ADAPTER.preprocess(vit_l, synthetic_images(2, size=64))
    x = batch.inputs["pixel_values"]
    got = hooks.run(vit_l.model, [s.path for s in vit_l.layer_map], lambda: ADAPTER.forward(vit_l, batch))
    with torch.no_grad():
        inter = vit_l.model.visual.forward_intermediates(x, intermediates_only=True, output_fmt="NLC", output_extra_tokens=True)
        embedding = vit_l.model.encode_image(x)
    vision = vit_l.layer_map.stage("vision")
    assert len(inter["image_intermediates"]) == len(vision)
    for spec, patches, cls in zip(vision, inter["image_intermediates"], inter["image_intermediates_prefix"]):
        torch.testing.assert_close(got[spec.path][:, spec.prefix_tokens:], patches, rtol=0, atol=0)
        torch.testing.assert_close(got[spec.path][:, : spec.prefix_tokens], cls, rtol=0, atol=0)
    torch.testing.assert_close(got["visual"], embedding, rtol=0, atol=0)


def test_timm_trunk_tower(biomedclip, hooks):
    visual = biomedclip.model.visual
    assert isinstance(visual, TimmModel) and type(visual.trunk).__name__ == "VisionTransformer"
    vision = biomedclip.layer_map.stage("vision")
    assert [s.path for s in vision] == [f"visual.trunk.blocks.{i}" for i in range(len(visual.trunk.blocks))]
    assert len(vision) == 12 and {s.prefix_tokens for s in vision} == {1}
    assert biomedclip.layer_map["head"].width == 512
    assert "record" in biomedclip.extra["config_source"]
    batch = ADAPTER.preprocess(biomedclip, synthetic_images(2))
    x = batch.inputs["pixel_values"]
    got = hooks.run(biomedclip.model, [s.path for s in biomedclip.layer_map], lambda: ADAPTER.forward(biomedclip, batch))
    with torch.no_grad():
        inter = visual.trunk.forward_intermediates(x, intermediates_only=True)
        embedding = biomedclip.model.encode_image(x)
    for spec, ref in zip(vision, inter):
        torch.testing.assert_close(hooks.nchw(got[spec.path], spec.layout, spec.prefix_tokens, tuple(ref.shape[-2:])), ref, rtol=0, atol=0)
    torch.testing.assert_close(got["visual"], embedding, rtol=0, atol=0)


def test_build_tiny_is_deterministic_per_seed():
    a, b, c = (ADAPTER.build_tiny(VIT_L, seed=s) for s in (3, 3, 4))
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["visual.conv1.weight"], sc["visual.conv1.weight"])
    assert a.weights == "tiny-random(seed=3)"


def test_card_model_cfg_overrides_the_registry():
    cfg = open_clip.get_model_config("ViT-B-32")
    cfg["vision_cfg"]["layers"] = 3
    card = ModelCard(id="test-custom", kind="baseline", family="open_clip", settings={"model_name": "hf-hub:nobody/custom-clip", "model_cfg": cfg})
    loaded = ADAPTER.build_tiny(card)
    assert loaded.layer_map.ids == ["vision.00", "vision.01", "vision.02", "head"]
    assert loaded.extra["config_source"] == "card settings.model_cfg"


def test_unknown_hub_model_without_config_is_refused():
    card = ModelCard(id="test-unknown", kind="baseline", family="open_clip", settings={"model_name": "hf-hub:nobody/not-cached"})
    with pytest.raises(AdapterError, match="settings.model_cfg"):
        ADAPTER.build_tiny(card)


def test_offline_without_cached_weights_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AdapterError) as err:
        ADAPTER.load(VIT_L)
    assert "--weights" in str(err.value) and "--random-init" in str(err.value)


def test_adhoc_card():
    card = ADAPTER.card_for_name("ViT-B-32:openai")
    assert (card.family, card.setting("model_name"), card.setting("pretrained")) == ("open_clip", "ViT-B-32", "openai")
    hub = ADAPTER.card_for_name("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
    assert hub.setting("model_name").startswith("hf-hub:") and "pretrained" not in hub.settings
