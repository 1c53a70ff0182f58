"""Registers the ``timm`` adapter (lazy; imports no torch or timm)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "timm",
        "medprobe_timm.adapter:TimmAdapter",
        "timm image models (CNN, ViT, MLP-Mixer, hybrid): feature_info stages / blocks + pooled pre-logits head",
    )
