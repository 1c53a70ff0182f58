"""Registers the ``open_clip`` adapter (lazy; imports no torch or open_clip)."""

from __future__ import annotations

from medprobe import hookimpl


@hookimpl
def register_adapters(register):
    register(
        "open_clip",
        "medprobe_open_clip.adapter:OpenClipAdapter",
        "open_clip image towers (VisionTransformer or timm trunk): blocks + image embedding",
    )
