"""Oracle tests: features captured by the hooks equal transformers' own ``output_hidden_states``
pooled the same way, for tiny LLaVA, Qwen2-VL, Qwen2.5-VL and Gemma 3 models.

``hidden_states[i + 1]`` is the output of LLM layer i, except the last entry, which is post-norm;
for the last layer the oracle reruns the model with the final norm replaced by ``Identity`` so
transformers itself returns the raw last-layer output.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medprobe.features.capture import Capture
from medprobe.testing import synthetic_images
from medprobe.models.zoo import get_adapter
from medprobe.models.prepare import load_model

MLLMS = ["llava-1.5-7b", "medvlm-r1-2b", "lingshu-7b", "medgemma-4b"]
QUESTION = "Which of the following best describes this image? Options: normal, lesion."


def _masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(h.dtype).unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)


def _language_model(model: nn.Module) -> nn.Module:
    return model.model.language_model


@pytest.mark.parametrize("ref", MLLMS)
def test_llm_layers_equal_output_hidden_states(ref):
    loaded = load_model(ref, tiny=True)
    adapter = get_adapter(loaded.card.family)
    batch = adapter.preprocess(loaded, synthetic_images(3, size=64), QUESTION)
    llm_layers = loaded.layer_map.stage("llm")
    with Capture(loaded.model, llm_layers, ("image-mean", "last-token", "text-mean"), model_name=ref) as cap:
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))

    with torch.no_grad():
        hs = loaded.model.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states
        lm = _language_model(loaded.model)
        norm = lm.norm
        lm.norm = nn.Identity()
        try:
            raw_last = loaded.model.model(**batch.inputs, output_hidden_states=True, use_cache=False).hidden_states[-1]
        finally:
            lm.norm = norm
    assert len(hs) == len(llm_layers) + 1
    for i, spec in enumerate(llm_layers):
        h = raw_last if i == len(llm_layers) - 1 else hs[i + 1]
        for readout, role in (("image-mean", "image"), ("last-token", "last"), ("text-mean", "text")):
            expect = _masked_mean(h.float(), batch.roles[role])
            torch.testing.assert_close(feats[(spec.id, readout)], expect, atol=1e-5, rtol=1e-5, msg=f"{ref} {spec.id} {readout}")
    # the post-norm entry is *not* what the last layer's hook sees (the oracle would catch a mix-up)
    assert not torch.allclose(hs[-1], raw_last)


@pytest.mark.parametrize("ref", MLLMS)
def test_image_roles_come_from_the_sequence(ref):
    loaded = load_model(ref, tiny=True)
    adapter = get_adapter(loaded.card.family)
    batch = adapter.preprocess(loaded, synthetic_images(2, size=64), QUESTION)
    ids = batch.inputs["input_ids"]
    cfg = loaded.model.config
    image_id = getattr(cfg, "image_token_id", None)
    if image_id is None:
        image_id = cfg.image_token_index
    assert torch.equal(batch.roles["image"].cpu(), (ids == image_id).cpu())
    assert (batch.roles["last"].sum(1) == 1).all()


@pytest.mark.parametrize("ref", MLLMS)
def test_vision_only_request_never_runs_the_llm(ref):
    loaded = load_model(ref, tiny=True)
    adapter = get_adapter(loaded.card.family)
    calls = []
    first_llm = loaded.model.get_submodule(loaded.layer_map.stage("llm")[0].path)
    handle = first_llm.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        batch = adapter.preprocess(loaded, synthetic_images(2, size=64), QUESTION)
        with Capture(loaded.model, loaded.layer_map.select("vision.*"), ("image-mean",)) as cap:
            feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    finally:
        handle.remove()
    assert not calls
    assert len(feats) == len(loaded.layer_map.stage("vision"))


def test_llava_vision_blocks_equal_vision_tower_hidden_states():
    loaded = load_model("llava-1.5-7b", tiny=True)
    adapter = get_adapter("llava")
    batch = adapter.preprocess(loaded, synthetic_images(2, size=64), QUESTION)
    vision = loaded.layer_map.stage("vision")
    with Capture(loaded.model, vision, ("image-mean", "cls")) as cap:
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    with torch.no_grad():
        hs = loaded.model.model.vision_tower(batch.inputs["pixel_values"], output_hidden_states=True).hidden_states
    for i, spec in enumerate(vision):
        torch.testing.assert_close(feats[(spec.id, "cls")], hs[i + 1][:, 0].float(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats[(spec.id, "image-mean")], hs[i + 1][:, 1:].float().mean(1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("ref", ["llava-1.5-7b", "lingshu-7b"])
def test_batch_size_does_not_change_mllm_features(ref):
    loaded = load_model(ref, tiny=True)
    adapter = get_adapter(loaded.card.family)
    images = synthetic_images(4, size=64)
    layers = list(loaded.layer_map)

    def capture(imgs):
        batch = adapter.preprocess(loaded, imgs, QUESTION)
        with Capture(loaded.model, layers, ("image-mean", "last-token")) as cap:
            return cap.run(batch, lambda: adapter.forward(loaded, batch))

    together = capture(images)
    alone = [capture([im]) for im in images]
    for key, value in together.items():
        torch.testing.assert_close(value, torch.cat([a[key] for a in alone]), atol=1e-5, rtol=1e-5)
