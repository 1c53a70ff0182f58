"""Registers the ``qwen2_vl`` and ``qwen2_5_vl`` adapters (lazy; imports no torch)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "qwen2_vl",
        "medprobe_qwen_vl.adapter:Qwen2VLAdapter",
        "Qwen2-VL (Qwen2VLForConditionalGeneration): packed ViT blocks -> merger -> LLM",
    )
    register(
        "qwen2_5_vl",
        "medprobe_qwen_vl.adapter:Qwen25VLAdapter",
        "Qwen2.5-VL (Qwen2_5_VLForConditionalGeneration): packed window-attention ViT -> merger -> LLM",
    )
