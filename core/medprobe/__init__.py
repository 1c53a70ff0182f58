"""medprobe: find where medical multimodal LLMs lose classification signal.

``import medprobe`` is light: it imports no torch. Heavy parts load when first used.
"""

from __future__ import annotations

from importlib import metadata as _metadata

from .hookspecs import hookimpl

try:
    __version__ = _metadata.version("medprobe")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl", "list_models", "get_card", "load_model", "resolve_layers"]


def __getattr__(name: str):
    if name in ("list_models", "get_card", "load_model", "resolve_layers"):
        from . import zoo

        return {"list_models": zoo.list_cards}.get(name) or getattr(zoo, name)
    raise AttributeError(f"module 'medprobe' has no attribute {name!r}")
