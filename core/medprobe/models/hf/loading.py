"""``from_pretrained`` arguments shared by the MLLM adapters.

One place decides, for every Hugging Face load medprobe does:

* where the weights come from (``source`` or the card's hub id) and the honest ``weights`` label
  (``hub:<id>@<revision or main>`` or ``local:<absolute dir>``);
* the revision (argument, else the card's pinned ``revision``);
* the torch dtype (``auto`` / ``bf16`` / ``fp16`` / ``fp32`` via :mod:`medprobe.runtime`);
* ``local_files_only`` (true when ``HF_HUB_OFFLINE`` is set truthy, so an offline run never
  tries the network);
* ``trust_remote_code`` (only ever true when the user asked for it).

:func:`read_config_dict` reads a checkpoint's raw ``config.json`` without instantiating a config
class, so adapters can check ``model_type`` before ``from_pretrained`` loads anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...adapter import AdapterError
from ...cards import ModelCard
from ...runtime import resolve_dtype, torch_dtype

_TRUTHY = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a truthy value."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUTHY


@dataclass(frozen=True)
class PretrainedSource:
    """Where and how one checkpoint is loaded.

    ``location`` is what ``from_pretrained`` receives (hub id or local directory), ``kwargs`` the
    keyword arguments shared by the model and the processor loads, ``dtype_name`` the resolved
    torch dtype name (``"bfloat16"`` ...), ``weights`` the label stored in ``LoadedModel.weights``.
    """

    location: str
    is_local: bool
    revision: str | None
    dtype_name: str
    weights: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def model_kwargs(self, device_map: str | None = None, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for the model's ``from_pretrained`` (adds ``dtype`` and ``device_map``)."""
        out = dict(self.kwargs, dtype=torch_dtype(self.dtype_name), **extra)
        if device_map is not None:
            out["device_map"] = device_map
        return out

    def processor_kwargs(self, **extra: Any) -> dict[str, Any]:
        """Keyword arguments for ``AutoProcessor.from_pretrained``."""
        return dict(self.kwargs, **extra)


def pretrained_source(
    card: ModelCard,
    source: str | None,
    *,
    revision: str | None,
    dtype: str,
    device: str,
    trust_remote_code: bool = False,
) -> PretrainedSource:
    """Resolve ``source`` (default: the card's hub id) into a :class:`PretrainedSource`.

    Raises :class:`AdapterError` when the card has no hub id and no source was given.
    """
    location = source or card.hub_id
    if not location:
        raise AdapterError(f"card '{card.id}' has no hub_id; pass a local checkpoint directory as the source")
    is_local = Path(location).expanduser().is_dir()
    if is_local:
        location = str(Path(location).expanduser().resolve())
        rev = None
        weights = f"local:{location}"
    else:
        rev = revision or card.revision
        weights = f"hub:{location}@{rev or 'main'}"
    kwargs: dict[str, Any] = {"local_files_only": hub_offline()}
    if rev is not None:
        kwargs["revision"] = rev
    if trust_remote_code:
        kwargs["trust_remote_code"] = True
    return PretrainedSource(
        location=location,
        is_local=is_local,
        revision=rev,
        dtype_name=resolve_dtype(dtype, device),
        weights=weights,
        kwargs=kwargs,
    )


def read_config_dict(src: PretrainedSource) -> dict[str, Any]:
    """The raw ``config.json`` of ``src`` as a dict (local file, or the hub file through the
    Hugging Face cache). Errors name the file or repository."""
    if src.is_local:
        path = Path(src.location) / "config.json"
        if not path.is_file():
            raise AdapterError(f"{path}: no config.json in the checkpoint directory")
    else:
        from transformers.utils import cached_file

        try:
            resolved = cached_file(
                src.location,
                "config.json",
                revision=src.revision,
                local_files_only=src.kwargs.get("local_files_only", False),
            )
        except Exception as exc:
            raise AdapterError(f"cannot read config.json of '{src.location}' ({src.weights}): {exc}") from exc
        if resolved is None:
            raise AdapterError(f"'{src.location}' ({src.weights}) has no config.json")
        path = Path(resolved)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise AdapterError(f"{path}: cannot parse config.json: {exc}") from exc
    if not isinstance(data, dict):
        raise AdapterError(f"{path}: config.json is not a JSON object")
    return data


def model_device(model: Any) -> str:
    """The device of the model's first parameter (``"cpu"``, ``"cuda:0"`` ...)."""
    for p in model.parameters():
        return str(p.device)
    return "cpu"
