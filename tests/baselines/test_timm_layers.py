"""timm layer maps derived from the model: structure, and hook outputs equal to timm's own
``forward_intermediates`` for a representative set of CNNs, MLP-mixers, ViTs and hybrids."""

from __future__ import annotations

import pytest
import torch

from medprobe.cards import ModelCard
from medprobe.testing import check_layer_map, synthetic_images

timm = pytest.importorskip("timm")
from medprobe_timm.adapter import TimmAdapter  # noqa: E402
from medprobe_timm.layers import TAPS  # noqa: E402

ADAPTER = TimmAdapter()

# (architecture, kind the map must report)
MODELS = [
    ("resnet18", "hierarchical"),
    ("resnet50", "hierarchical"),
    ("convnext_atto", "hierarchical"),
    ("densenet121", "hierarchical"),
    ("efficientnet_b0", "hierarchical"),
    ("vit_tiny_patch16_224", "isotropic"),
    ("deit_small_patch16_224", "isotropic"),
    ("mixer_b16_224", "isotropic"),
    ("resmlp_12_224", "isotropic"),
    ("convit_tiny", "isotropic"),
    ("levit_128", "hierarchical"),
    ("mobilevit_xs", "hierarchical"),
    ("coatnet_nano_rw_224", "hierarchical"),
    ("maxvit_nano_rw_256", "hierarchical"),
    ("efficientformer_l1", "hierarchical"),
    ("swin_tiny_patch4_window7_224", "hierarchical"),
    ("vit_small_r26_s32_224", "hybrid"),
]


def card(arch: str) -> ModelCard:
    return ModelCard(id=f"test-{arch}", kind="baseline", family="timm", architecture=arch)


@pytest.fixture(scope="module")
def tiny_models():
    cache: dict[str, object] = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = ADAPTER.build_tiny(card(arch), seed=0)
        return cache[arch]

    return get


@pytest.mark.parametrize("arch,kind", MODELS)
def test_map_is_derived_from_feature_info(arch, kind, tiny_models):
    loaded = tiny_models(arch)
    lmap, model = loaded.layer_map, loaded.model
    assert check_layer_map(lmap) == []
    assert lmap.layers[0].depth == 0.0 and lmap.layers[-1].depth == 1.0
    assert any(kind in note for note in lmap.notes)
    info = model.feature_info
    cnn, vision = lmap.stage("cnn"), lmap.stage("vision")
    assert [s.index for s in cnn] == list(range(len(cnn)))
    assert [s.index for s in vision] == list(range(len(vision)))
    if kind == "hierarchical":
        assert not vision
        assert [s.id for s in cnn] == [f"stage.{i}" for i in range(len(info))]
        assert [s.width for s in cnn] == [f["num_chs"] for f in info]
        tapped = any("channels-last" in n for n in lmap.notes)
        expected = [f"{TAPS}.{f['module'].replace('.', '_')}" if tapped else f["module"] for f in info]
        assert [s.path for s in cnn] == expected
    else:
        assert [s.path for s in vision] == [f"blocks.{i}" for i in range(len(model.blocks))]
        assert [s.id for s in vision] == [f"vision.{i:02d}" for i in range(len(model.blocks))]
        assert all(s.layout == "NLC" and s.width == info[0]["num_chs"] for s in vision)
        declared = getattr(model, "num_prefix_tokens", 0) or 0
        assert vision[-1].prefix_tokens == declared
        assert bool(cnn) == (kind == "hybrid")


@pytest.mark.parametrize("arch,kind", MODELS)
def test_hooks_equal_forward_intermediates(arch, kind, tiny_models, hooks):
    loaded = tiny_models(arch)
    model, lmap = loaded.model, loaded.layer_map
    batch = ADAPTER.preprocess(loaded, synthetic_images(2, size=80))
    x = batch.inputs["pixel_values"]
    assert tuple(x.shape) == (2, 3, *loaded.extra["image_size"])
    got = hooks.run(model, [s.path for s in lmap], lambda: ADAPTER.forward(loaded, batch))

    with torch.no_grad():
        inter = model.forward_intermediates(x, intermediates_only=True)
        backbone = []
        if kind == "hybrid":
            backbone = model.patch_embed.backbone.forward_intermediates(x, intermediates_only=True)
        pre_logits = model.forward_head(model.forward_features(x), pre_logits=True)
    features = [s for s in lmap if s.stage in ("cnn", "vision")]
    reference = list(backbone) + list(inter)
    assert len(features) == len(reference)
    for spec, ref in zip(features, reference):
        mine = hooks.nchw(got[spec.path], spec.layout, spec.prefix_tokens, tuple(ref.shape[-2:]))
        torch.testing.assert_close(mine, ref, rtol=0, atol=0, msg=f"{arch} {spec.id} ({spec.path})")
    if "head" in lmap.ids:
        head = lmap["head"]
        assert got[head.path].shape == (2, head.width)
        torch.testing.assert_close(got[head.path], pre_logits, rtol=0, atol=0)


def test_token_prefix_follows_the_model():
    """ConViT inserts its CLS token after the local (GPSA) blocks: the prefix changes mid-stack."""
    loaded = ADAPTER.build_tiny(card("convit_tiny"))
    prefixes = [s.prefix_tokens for s in loaded.layer_map.stage("vision")]
    local = loaded.model.local_up_to_layer
    assert prefixes == [0] * local + [1] * (len(prefixes) - local)
    distilled = ADAPTER.build_tiny(card("deit_tiny_distilled_patch16_224"))
    assert {s.prefix_tokens for s in distilled.layer_map.stage("vision")} == {2}


def test_channels_last_stages_get_a_weightless_tap():
    with torch.random.fork_rng(devices=[]):
        plain = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0, img_size=64)
    loaded = ADAPTER.build_tiny(card("swin_tiny_patch4_window7_224"))
    assert list(loaded.model.state_dict()) == list(plain.state_dict())
    assert all(s.path.startswith(f"{TAPS}.") and s.layout == "NCHW" for s in loaded.layer_map.stage("cnn"))
    assert any("channels-last" in n for n in loaded.layer_map.notes)


def test_tiny_input_size_falls_back_when_the_architecture_needs_its_own():
    small = ADAPTER.build_tiny(card("vit_tiny_patch16_224"))
    assert small.extra["image_size"] == (64, 64) and small.config["input_size"] == (3, 64, 64)
    fixed = ADAPTER.build_tiny(card("efficientformer_l1"))  # attention biases sized for 224 px
    assert fixed.extra["image_size"] == (224, 224)
    assert fixed.extra["size_fallback"] and "64x64" in fixed.extra["size_fallback"][0]
    assert fixed.layer_map["stage.3"].layout == "NLC"


def test_pooling_without_a_module_gives_no_head():
    loaded = ADAPTER.build_tiny(card("levit_128"))
    assert "head" not in loaded.layer_map.ids
    assert any("no head layer" in n for n in loaded.layer_map.notes)
