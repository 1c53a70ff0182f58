"""Registers the ``llava`` adapter (lazy; imports no torch)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "llava",
        "medprobe_llava.adapter:LlavaAdapter",
        "LLaVA (LlavaForConditionalGeneration; Llama/Mistral/Qwen2 text): CLIP -> MLP projector -> LLM",
    )
