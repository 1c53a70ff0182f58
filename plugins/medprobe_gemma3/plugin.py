"""Registers the ``gemma3`` adapter (lazy; imports no torch)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "gemma3",
        "medprobe_gemma3.adapter:Gemma3Adapter",
        "Gemma 3 / MedGemma (Gemma3ForConditionalGeneration): SigLIP -> pooled projector -> Gemma 3 LLM",
    )
