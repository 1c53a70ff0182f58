"""timm adapter: seeded tiny builds, local weight files (safetensors and torch checkpoints),
key errors by name, the offline refusal, ad-hoc ``timm:NAME`` cards and the feature forward."""

from __future__ import annotations

import argparse

import pytest
import torch

from medprobe.adapter import AdapterError
from medprobe.cards import ModelCard
from medprobe.testing import synthetic_images

timm = pytest.importorskip("timm")
from safetensors.torch import save_file  # noqa: E402

from medprobe_timm.adapter import TimmAdapter  # noqa: E402

ADAPTER = TimmAdapter()
RESNET = ModelCard(id="test-resnet18", kind="baseline", family="timm", architecture="resnet18", settings={"timm_name": "resnet18.a1_in1k"})


def features(loaded, images):
    batch = ADAPTER.preprocess(loaded, images)
    with torch.no_grad():
        return loaded.model.forward_head(loaded.model.forward_features(batch.inputs["pixel_values"]), pre_logits=True)


def test_build_tiny_is_deterministic_per_seed():
    a, b, c = (ADAPTER.build_tiny(RESNET, seed=s) for s in (0, 0, 1))
    sa, sb, sc = (m.model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    assert a.weights == "tiny-random(seed=0)" and a.is_random
    assert a.layer_map.to_dict() == b.layer_map.to_dict()


@pytest.fixture(scope="module")
def source_model():
    """A resnet18 *with* a 10-class classifier: files written from it carry classifier keys the
    adapter's classifier-free model must tolerate (and only those)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    return model


def test_safetensors_and_torch_checkpoint_load_identically(source_model, tmp_path):
    state = {k: v.contiguous() for k, v in source_model.state_dict().items()}
    st = tmp_path / "weights.safetensors"
    save_file(state, str(st))
    pth = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": state, "epoch": 3}, pth)
    folder = tmp_path / "folder"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))

    images = synthetic_images(2, size=72)
    loads = [ADAPTER.load(RESNET, weights=str(p), image_size=64) for p in (st, pth, folder)]
    outs = [features(m, images) for m in loads]
    x = ADAPTER.preprocess(loads[0], images).inputs["pixel_values"]
    with torch.no_grad():
        expected = source_model.forward_head(source_model.forward_features(x), pre_logits=True)
    for loaded, out in zip(loads, outs):
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
        assert loaded.weights.startswith("local:") and not loaded.is_random
        assert sorted(loaded.extra["load_report"]["dropped_classifier_keys"]) == ["fc.bias", "fc.weight"]
        assert loaded.extra["image_size"] == (64, 64)
    assert loads[2].weights == f"local:{(folder / 'model.safetensors').resolve()}"


def test_vit_weights_at_another_resolution_go_through_the_arch_filter(tmp_path):
    """A 224-px ViT checkpoint loaded at 64 px: timm's own checkpoint_filter_fn resamples the
    position embedding; everything else loads unchanged."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    vit = ModelCard(id="test-vit", kind="baseline", family="timm", architecture="vit_tiny_patch16_224")
    loaded = ADAPTER.load(vit, weights=str(path), image_size=64)
    assert loaded.extra["load_report"]["converted_by_filter"] is True
    assert tuple(loaded.model.pos_embed.shape) == (1, 1 + 4 * 4, 192)
    state = loaded.model.state_dict()
    assert torch.equal(state["blocks.11.mlp.fc2.weight"], source.state_dict()["blocks.11.mlp.fc2.weight"])


def test_unknown_architecture_is_named():
    with pytest.raises(AdapterError, match="resnet18"):
        ADAPTER.build_tiny(ModelCard(id="test-bad", kind="baseline", family="timm", architecture="resnet18x"))


def test_mismatched_weights_name_the_bad_keys(source_model, tmp_path):
    state = dict(source_model.state_dict())
    state["layer1.0.conv1.weight_renamed"] = state.pop("layer1.0.conv1.weight")
    del state["bn1.running_var"]
    state["layer4.1.bn2.bias"] = torch.zeros(7)
    bad = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(bad))
    with pytest.raises(AdapterError) as err:
        ADAPTER.load(RESNET, weights=str(bad))
    msg = str(err.value)
    for key in ("layer1.0.conv1.weight_renamed", "layer1.0.conv1.weight", "bn1.running_var", "layer4.1.bn2.bias", str(bad), "resnet18"):
        assert key in msg, (key, msg)


def test_pickled_objects_are_refused(source_model, tmp_path):
    path = tmp_path / "with_objects.pth"
    torch.save({"state_dict": source_model.state_dict(), "args": argparse.Namespace(lr=0.1)}, path)
    with pytest.raises(AdapterError, match="weights_only=True"):
        ADAPTER.load(RESNET, weights=str(path))


def test_offline_without_weights_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(AdapterError) as err:
        ADAPTER.load(RESNET)
    assert "--weights" in str(err.value) and "--random-init" in str(err.value)
    assert "resnet18.a1_in1k" in str(err.value)


def test_random_init_is_explicit_and_labelled(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vit = ModelCard(id="test-vit", kind="baseline", family="timm", architecture="vit_tiny_patch16_224")
    loaded = ADAPTER.load(vit, random_init=True, image_size=64)
    assert loaded.weights == "random-init" and loaded.is_random
    assert loaded.extra["image_size"] == (64, 64)
    assert [s.prefix_tokens for s in loaded.layer_map.stage("vision")] == [1] * 12


def test_forward_runs_the_feature_path_only():
    loaded = ADAPTER.build_tiny(RESNET)
    batch = ADAPTER.preprocess(loaded, synthetic_images(3))
    assert batch.size == 3 and tuple(batch.inputs["pixel_values"].shape) == (3, 3, 64, 64)
    fired = []
    handle = loaded.model.get_submodule(loaded.layer_map["head"].path).register_forward_hook(lambda m, i, o: fired.append(o.shape))
    try:
        assert ADAPTER.forward(loaded, batch) is None
    finally:
        handle.remove()
    assert fired == [torch.Size([3, loaded.layer_map["head"].width])]


def test_adhoc_card_from_a_timm_name():
    from medprobe.registry import NotFoundError
    from medprobe.models.zoo import get_card
    from medprobe.models.prepare import load_model

    card = get_card("timm:resnet18")
    assert (card.family, card.kind, card.architecture, card.setting("timm_name")) == ("timm", "baseline", "resnet18", "resnet18")
    tagged = get_card("timm:resnet50.a1_in1k")
    assert tagged.hub_id == "timm/resnet50.a1_in1k" and tagged.setting("image_size") == 224
    loaded = load_model("timm:resnet18", tiny=True)
    assert loaded.layer_map.ids == [f"stage.{i}" for i in range(5)] + ["head"]
    with pytest.raises(NotFoundError, match="resnet18"):
        get_card("timm:resnet18x")
    with pytest.raises(NotFoundError, match="tags"):
        get_card("timm:resnet18.no_such_tag")
