"""Tiny original LLaVA-code checkpoints, written the way the authors' code saves them.

The weights come from the ``llava`` adapter's seeded tiny llava-hf model; this file renames them
to the original key layout by hand (independently of ``medprobe_llava.convert``), removes the
``<image>`` row from the vocabulary (the original code marks images with -200 and has no such
token), and writes an original-style ``config.json``, tokenizer and a HuatuoGPT-style bundled
``vit/`` tower config.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import CLIPVisionConfig

from medprobe.adapter import LoadedModel
from medprobe.cards import ModelCard
from medprobe.models.hf.tokenizer import build_word_tokenizer
from medprobe.models.zoo import get_adapter

#: original model_type -> (tiny llava-hf card text type, architectures entry)
ORIGINAL = {
    "llava_mistral": ("mistral", "LlavaMistralForCausalLM"),
    "llava_qwen2": ("qwen2", "LlavaQwen2ForCausalLM"),
    "llava_llama": ("llama", "LlavaLlamaForCausalLM"),
}
TOWER = "vit/clip_tiny"
TEXT = "<image>\nwhich of the following best describes this image ? benign"


def card(text_type: str) -> ModelCard:
    return ModelCard(
        id=f"tiny-llava-{text_type}", kind="mllm", family="llava", architecture="LlavaForConditionalGeneration",
        hub_id="example/llava", settings={"text_model_type": text_type},
    )


@lru_cache(maxsize=None)
def tiny_hf(text_type: str) -> LoadedModel:
    """The seeded tiny llava-hf model (built once; tests must not modify it)."""
    return get_adapter("llava").build_tiny(card(text_type), seed=0)


def original_name(key: str) -> str:
    """llava-hf in-memory name -> the name LLaVA's own code gives the same tensor."""
    for hf_prefix in ("model.vision_tower.vision_model.", "model.vision_tower."):
        if key.startswith(hf_prefix):
            return "model.vision_tower.vision_tower.vision_model." + key[len(hf_prefix):]
    if key.startswith("model.multi_modal_projector.linear_1."):
        return "model.mm_projector.0." + key.split("linear_1.", 1)[1]
    if key.startswith("model.multi_modal_projector.linear_2."):
        return "model.mm_projector.2." + key.split("linear_2.", 1)[1]
    if key.startswith("model.language_model."):
        return "model." + key[len("model.language_model."):]
    assert key == "lm_head.weight", key
    return key


def write_original(
    root: Path,
    model_type: str = "llava_mistral",
    *,
    config_update: dict[str, Any] | None = None,
    edit: Callable[[dict[str, torch.Tensor]], None] | None = None,
    tower_config: bool = True,
    shards: int = 2,
) -> Path:
    """Write a tiny original-layout checkpoint into ``root``; returns ``root``.

    ``edit`` may change the original-named tensors before they are written; ``config_update``
    the config fields; ``tower_config=False`` leaves out the bundled ``vit/`` directory.
    """
    text_type, architecture = ORIGINAL[model_type]
    hf = tiny_hf(text_type)
    image_id = hf.config.image_token_index
    tensors: dict[str, torch.Tensor] = {}
    for key, value in hf.model.state_dict().items():
        value = value.detach().clone()
        if key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
            value = torch.cat([value[:image_id], value[image_id + 1:]])  # no <image> row in the original
        tensors[original_name(key)] = value
    # non-persistent buffers old checkpoints sometimes carry
    tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(6)
    tensors["model.vision_tower.vision_tower.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    if edit is not None:
        edit(tensors)
    root.mkdir(parents=True, exist_ok=True)
    names = sorted(tensors)
    if shards == 1:
        save_file(tensors, str(root / "model.safetensors"))
    else:
        parts = np.array_split(np.arange(len(names)), shards)
        weight_map = {}
        for i, idx in enumerate(parts, start=1):
            file = f"model-{i:05d}-of-{shards:05d}.safetensors"
            save_file({names[j]: tensors[names[j]].contiguous() for j in idx}, str(root / file))
            weight_map.update({names[j]: file for j in idx})
        (root / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    text = hf.config.text_config.to_dict()
    for k in ("architectures", "model_type", "transformers_version", "_name_or_path", "dtype", "rope_parameters"):
        text.pop(k, None)
    text.update(
        vocab_size=int(tensors["model.embed_tokens.weight"].shape[0]),
        rope_theta=hf.config.text_config.rope_parameters["rope_theta"],
        rope_scaling=None,
        torch_dtype="float32",
        transformers_version="4.36.2",
    )
    config = {
        **text,
        "architectures": [architecture],
        "model_type": model_type,
        "mm_vision_tower": f"./{TOWER}",
        "mm_hidden_size": hf.config.vision_config.hidden_size,
        "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch",
        "image_aspect_ratio": "square",
        "mm_use_im_start_end": False,
        "mm_use_im_patch_token": False,
        "mm_patch_merge_type": "flat",
        "tokenizer_model_max_length": 2048,
        "tokenizer_padding_side": "right",
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "use_mm_proj": True,
    }
    config.update(config_update or {})
    (root / "config.json").write_text(json.dumps(config, indent=2))

    tokenizer = build_word_tokenizer(add_bos=text_type != "qwen2")  # the tiny tokenizer without <image>
    tokenizer.save_pretrained(root)
    if tower_config:
        vision = CLIPVisionConfig(**{
            k: v for k, v in hf.config.vision_config.to_dict().items()
            if k not in ("model_type", "transformers_version", "architectures", "dtype")
        })
        vision.save_pretrained(root / TOWER)
    return root


def images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (64, 64), (33, 71)]
    return [Image.fromarray(rng.integers(0, 256, size=(*sizes[i % 3], 3), dtype=np.uint8)) for i in range(n)]
