"""Registers the ``hulumed`` adapter (lazy; imports no torch)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "hulumed",
        "medprobe_hulumed.adapter:HuluMedAdapter",
        "Hulu-Med (remote code, needs --trust-remote-code): SigLIP-NaViT -> MLP projector -> Qwen2.5/Qwen3 LLM",
    )
