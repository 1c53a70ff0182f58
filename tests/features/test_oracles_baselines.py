"""Oracle tests for baselines: captured features equal timm / open_clip ``forward_intermediates``
pooled the same way (global average pool of NCHW maps = mean of ViT patch tokens)."""

from __future__ import annotations

import pytest
import torch

from medprobe.features.capture import Capture
from medprobe.testing import synthetic_images
from medprobe.models.zoo import get_adapter
from medprobe.models.prepare import load_model


def _capture(loaded, layers):
    adapter = get_adapter(loaded.card.family)
    batch = adapter.preprocess(loaded, synthetic_images(2, size=64))
    with Capture(loaded.model, layers, ("image-mean",), model_name=loaded.card.id) as cap:
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    return batch.inputs["pixel_values"], feats


@pytest.mark.parametrize("ref", ["timm:resnet18", "timm:convnext_atto", "timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224"])
def test_timm_capture_equals_forward_intermediates(ref):
    loaded = load_model(ref, tiny=True)
    layers = [s for s in loaded.layer_map if s.stage in ("cnn", "vision")]
    x, feats = _capture(loaded, layers)
    with torch.no_grad():
        inter = loaded.model.forward_intermediates(x, intermediates_only=True)
    assert len(inter) == len(layers)
    for spec, t in zip(layers, inter):
        torch.testing.assert_close(feats[(spec.id, "image-mean")], t.float().mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)


def test_open_clip_tower_capture_equals_forward_intermediates():
    loaded = load_model("clip-vit-l-14-336", tiny=True)
    layers = loaded.layer_map.stage("vision")
    x, feats = _capture(loaded, layers)
    visual = getattr(loaded.model, "visual", loaded.model)
    with torch.no_grad():
        inter = visual.forward_intermediates(x, intermediates_only=True)["image_intermediates"]
    assert len(inter) == len(layers)
    for spec, t in zip(layers, inter):
        torch.testing.assert_close(feats[(spec.id, "image-mean")], t.float().mean(dim=(2, 3)), atol=1e-5, rtol=1e-5)
