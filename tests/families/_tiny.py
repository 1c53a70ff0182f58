"""Shared test material for the MLLM family adapters: cards, cached tiny models, images, hooks."""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache
from typing import Iterator

import numpy as np
import torch
from PIL import Image

from medprobe.adapter import LoadedModel, ModelAdapter
from medprobe.cards import ModelCard
from medprobe.models.zoo import get_adapter

#: test case -> tiny card (the settings the zoo cards use)
CARDS: dict[str, ModelCard] = {
    "qwen2_vl": ModelCard(
        id="tiny-qwen2-vl", kind="mllm", family="qwen2_vl", architecture="Qwen2VLForConditionalGeneration",
        hub_id="example/qwen2-vl", settings={"image_size": 56},
    ),
    "qwen2_5_vl": ModelCard(
        id="tiny-qwen2.5-vl", kind="mllm", family="qwen2_5_vl", architecture="Qwen2_5_VLForConditionalGeneration",
        hub_id="example/qwen2.5-vl", settings={"image_size": 56},
    ),
    "gemma3": ModelCard(
        id="tiny-gemma3", kind="mllm", family="gemma3", architecture="Gemma3ForConditionalGeneration",
        hub_id="example/gemma3",
    ),
    "llava-llama": ModelCard(
        id="tiny-llava-llama", kind="mllm", family="llava", architecture="LlavaForConditionalGeneration",
        hub_id="example/llava", settings={"vision_feature_layer": -2, "vision_feature_select_strategy": "default",
                                          "text_model_type": "llama"},
    ),
    "llava-mistral": ModelCard(
        id="tiny-llava-mistral", kind="mllm", family="llava", architecture="LlavaForConditionalGeneration",
        hub_id="example/llava-med-hf", settings={"text_model_type": "mistral"},
    ),
    "llava-qwen2": ModelCard(
        id="tiny-llava-qwen2", kind="mllm", family="llava", architecture="LlavaForConditionalGeneration",
        hub_id="example/huatuo-hf", settings={"text_model_type": "qwen2"},
    ),
}
CASES = tuple(CARDS)
QWEN_CASES = ("qwen2_vl", "qwen2_5_vl")
QUESTION = "Which of the following best describes this image? Options: benign, malignant, normal."


def adapter_for(case: str) -> ModelAdapter:
    """The adapter registered for the case's family (through the plugin registry)."""
    return get_adapter(CARDS[case].family)


@lru_cache(maxsize=None)
def tiny(case: str, seed: int = 0) -> LoadedModel:
    """Built once per (case, seed); tests must not modify the returned model."""
    return adapter_for(case).build_tiny(CARDS[case], seed=seed)


def images(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` random RGB images of different sizes and aspect ratios."""
    rng = np.random.default_rng(seed)
    sizes = [(40, 50), (64, 64), (33, 71), (90, 45)]
    return [
        Image.fromarray(rng.integers(0, 256, size=(*sizes[i % len(sizes)], 3), dtype=np.uint8))
        for i in range(n)
    ]


def unwrap(output):
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def hooked(model: torch.nn.Module, paths: list[str], pre: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Plain torch forward hooks (or pre-hooks: the first positional input) on ``paths``."""
    modules = dict(model.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for path in paths:
        if pre:
            def fn(module, args, kwargs, _p=path):
                seen[_p] = (args[0] if args else next(iter(kwargs.values()))).detach().clone()
            handles.append(modules[path].register_forward_pre_hook(fn, with_kwargs=True))
        else:
            def fn(module, args, output, _p=path):
                seen[_p] = unwrap(output).detach().clone()
            handles.append(modules[path].register_forward_hook(fn))
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()
