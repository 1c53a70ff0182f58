"""preprocess: token roles, image-token counts, Qwen packing and M-RoPE inputs, prompts."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from medprobe.adapter import AdapterError
from medprobe.models.hf.roles import token_roles

from ._tiny import CARDS, CASES, QUESTION, QWEN_CASES, adapter_for, hooked, images, tiny


def implied_image_tokens(case: str, loaded) -> int:
    """Image tokens per image as the config (and the card's fixed resolution) imply."""
    cfg = loaded.config
    if case.startswith("qwen"):
        unit = cfg.vision_config.patch_size * cfg.vision_config.spatial_merge_size
        return (loaded.extra["image_size"] // unit) ** 2
    if case == "gemma3":
        return cfg.mm_tokens_per_image
    vc = cfg.vision_config
    patches = (vc.image_size // vc.patch_size) ** 2
    return patches if cfg.vision_feature_select_strategy == "default" else patches + 1


@pytest.mark.parametrize("case", CASES)
def test_roles_count_image_tokens_and_one_last_per_row(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(4), QUESTION)
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"].bool()
    roles = batch.roles
    assert batch.size == 4 and set(roles) == {"image", "text", "last"}
    for name, m in roles.items():
        assert m.dtype == torch.bool and m.shape == ids.shape, name
    n_img = implied_image_tokens(case, loaded)
    assert roles["image"].sum(dim=1).tolist() == [n_img] * 4
    assert torch.equal(roles["image"], (ids == loaded.extra["image_token_id"]) & mask)
    assert torch.equal(roles["text"], mask & ~roles["image"])
    assert roles["last"].sum(dim=1).tolist() == [1] * 4
    last_pos = roles["last"].float().argmax(dim=1)
    assert all(bool(mask[b, last_pos[b]]) and not bool(mask[b, last_pos[b] + 1:].any()) for b in range(4))
    assert not bool((roles["last"] & roles["image"]).any())


def test_token_roles_handle_left_and_right_padding():
    ids = torch.tensor([[0, 0, 5, 9, 9, 7], [5, 9, 9, 7, 8, 0]])
    right = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    roles = token_roles(ids, right, image_token_id=9)
    assert roles["last"].nonzero().tolist() == [[0, 5], [1, 4]]
    assert roles["image"].sum(dim=1).tolist() == [2, 2]
    assert roles["text"].sum(dim=1).tolist() == [2, 3]
    assert not bool((roles["text"] & ~right.bool()).any())
    no_mask = token_roles(ids, None, image_token_id=9)
    assert no_mask["last"][:, -1].all() and no_mask["text"].sum().item() == 8
    with pytest.raises(ValueError, match=r"rows \[1\] have no attended token"):
        token_roles(ids, torch.tensor([[1] * 6, [0] * 6]), image_token_id=9)


@pytest.mark.parametrize("case", QWEN_CASES)
def test_qwen_packed_counts_equal_packed_hook_sizes(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(3), QUESTION)
    first, merger = loaded.layer_map["vision.00"].path, loaded.layer_map["connector"].path
    with hooked(loaded.model, [first, merger]) as seen:
        adapter.forward(loaded, batch)
    grid = batch.inputs["image_grid_thw"]
    assert batch.packed["vision"] == grid.prod(dim=1).tolist()
    assert sum(batch.packed["vision"]) == seen[first].shape[0]
    assert sum(batch.packed["connector"]) == seen[merger].shape[0]
    assert batch.packed["connector"] == [n // 4 for n in batch.packed["vision"]]
    assert batch.packed["connector"] == batch.roles["image"].sum(dim=1).tolist()


@pytest.mark.parametrize("case", QWEN_CASES)
def test_qwen_mm_token_type_ids_are_passed_or_built(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(2), QUESTION)
    ids = batch.inputs["input_ids"]
    assert torch.equal(batch.inputs["mm_token_type_ids"], (ids == loaded.config.image_token_id).long())
    rebuilt = adapter.complete_inputs(loaded, {"input_ids": ids.clone()})
    assert torch.equal(rebuilt["mm_token_type_ids"], batch.inputs["mm_token_type_ids"])
    # every image is resized to the fixed probing resolution, whatever its aspect ratio
    side = loaded.extra["image_size"] // 14
    assert batch.inputs["image_grid_thw"].tolist() == [[1, side, side]] * 2


def test_gemma_token_type_ids_mark_image_tokens():
    adapter, loaded = adapter_for("gemma3"), tiny("gemma3")
    batch = adapter.preprocess(loaded, images(2), QUESTION)
    assert torch.equal(batch.inputs["token_type_ids"].bool(), batch.roles["image"])
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(batch.inputs["input_ids"][0])
    boi = tokens.index("<start_of_image>")
    assert tokens[boi + 1: boi + 5] == ["<image_soft_token>"] * 4 and tokens[boi + 5] == "<end_of_image>"


@pytest.mark.parametrize("case", ["qwen2_5_vl", "gemma3", "llava-llama"])
def test_chat_template_places_image_then_question(case):
    adapter, loaded = adapter_for(case), tiny(case)
    batch = adapter.preprocess(loaded, images(1), QUESTION)
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(batch.inputs["input_ids"][0])
    first_image = batch.roles["image"][0].nonzero()[0].item()
    question_at = tokens.index("which")
    assert first_image < question_at
    assert "<unk>" not in tokens  # every word of the question is in the tiny vocabulary
    default = adapter.preprocess(loaded, images(1), None)  # no question: a neutral default one
    assert default.roles["image"].sum().item() == batch.roles["image"].sum().item()


def test_card_prompt_template_is_used_and_checked():
    adapter, loaded = adapter_for("llava-llama"), tiny("llava-llama")
    card = dataclasses.replace(CARDS["llava-llama"], prompt_template="USER: {image}\n{question} ASSISTANT:")
    templated = dataclasses.replace(loaded, card=card)
    batch = adapter.preprocess(templated, images(2), "what is this?")
    tokens = loaded.processor.tokenizer.convert_ids_to_tokens(batch.inputs["input_ids"][0])
    assert tokens[:3] == ["<s>", "user", ":"] and tokens[-2:] == ["assistant", ":"]  # the tokenizer adds <s>
    assert tokens[3:19] == ["<image>"] * 16 and tokens[19:22] == ["what", "is", "this"]
    no_image = dataclasses.replace(loaded, card=dataclasses.replace(card, prompt_template="{question}"))
    with pytest.raises(AdapterError, match="prompt_template has no image placeholder"):
        adapter.preprocess(no_image, images(1), QUESTION)


def test_preprocess_rejects_empty_and_non_images():
    adapter, loaded = adapter_for("gemma3"), tiny("gemma3")
    with pytest.raises(AdapterError, match="at least one image"):
        adapter.preprocess(loaded, [], QUESTION)
    with pytest.raises(AdapterError, match="expected a PIL image"):
        adapter.preprocess(loaded, [torch.zeros(3, 8, 8)], QUESTION)


@pytest.mark.parametrize("template", [None, "<bos><start_of_turn>user\n<start_of_image>{question}<end_of_turn>\n<start_of_turn>model\n"])
def test_gemma_prompt_starts_with_exactly_one_bos(template):
    """The chat template and the zoo card both spell <bos> out; the tokenizer must not add another."""
    adapter, loaded = adapter_for("gemma3"), tiny("gemma3")
    card = dataclasses.replace(CARDS["gemma3"], prompt_template=template)
    batch = adapter.preprocess(dataclasses.replace(loaded, card=card), images(2), QUESTION)
    bos = loaded.processor.tokenizer.bos_token_id
    ids = batch.inputs["input_ids"]
    assert ids[:, 0].tolist() == [bos, bos] and (ids == bos).sum(dim=1).tolist() == [1, 1]
    assert batch.roles["image"].sum(dim=1).tolist() == [loaded.config.mm_tokens_per_image] * 2
