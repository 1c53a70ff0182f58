"""Registers the ``hf_clip`` adapter (lazy; imports no torch or transformers)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "hf_clip",
        "medprobe_hf_clip.adapter:HFClipAdapter",
        "transformers CLIPModel / SiglipModel vision towers: encoder layers + pooled head",
    )
