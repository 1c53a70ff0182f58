"""Full-size models without weights: a card's published ``config.json`` built on the meta device.

A card names, in ``published_config`` (``"package:path.json"``), package data holding the
checkpoint's published ``config.json`` and processor settings together with the public page each
was read from (schema :data:`SCHEMA`)::

    {"schema": "medprobe.published_config/1",
     "checkpoint": "Qwen/Qwen2-VL-2B-Instruct",         # whose config.json this is
     "stands_for": "...",                               # optional: the architecture a derivative's file stands for
     "config_source": {"url": "...", "note": "..."},     # where it was read, verbatim
     "config": {... config.json ...},
     "processor_source": {"url": "...", "note": "..."} | null,
     "processor": {... preprocessor_config.json ...} | null}

When ``checkpoint`` differs from the card's ``hub_id`` the card is resolved on a *fallback*
(its base model's config); :attr:`PublishedConfig.own` says which.

:func:`build_meta` lets the card's family adapter (capability ``meta_capable``, see
:class:`medprobe.adapter.ModelAdapter`) turn the config into its config class and build the model
with every parameter on the meta device -- no weights, no memory, no download -- and resolves the
card's layer map on that module tree: real ids, module paths and widths, the block that feeds
the connector, the blocks the MLLM never uses. The parameter count is exact (shapes are real).
This module knows no model family; :func:`medprobe.grid.resources.extraction_estimate` turns a
meta model into the feature-store size and the GPU memory of one extraction batch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

from ..adapter import ImageTokens, ModelAdapter
from ..cards import ModelCard
from ..layermap import LayerMap
from ..registry import MedprobeError

SCHEMA = "medprobe.published_config/1"
_REQUIRED = ("schema", "checkpoint", "config_source", "config", "processor_source", "processor")


class MetaError(MedprobeError):
    """A card cannot be built on the meta device; the message names the card / file and the way out."""


@dataclass(frozen=True)
class PublishedConfig:
    """A checkpoint's published ``config.json`` and processor settings, read from package data."""

    card_id: str
    location: str
    checkpoint: str
    config: Mapping[str, Any]
    config_source: Mapping[str, Any]
    processor: Mapping[str, Any] | None = None
    processor_source: Mapping[str, Any] | None = None
    hub_id: str | None = None
    #: the checkpoint whose architecture the file stands for when ``checkpoint`` is a derivative
    #: that republished it (a fine-tune or conversion of the same architecture); else ``checkpoint``
    stands_for: str | None = None

    @property
    def own(self) -> bool:
        """The config is the card's own checkpoint's (not a base model's fallback)."""
        return bool(self.hub_id) and self.checkpoint.lower() == str(self.hub_id).lower()

    @property
    def architecture_of(self) -> str:
        """The checkpoint whose architecture the config describes."""
        return self.stands_for or self.checkpoint

    def describe(self) -> str:
        if self.own:
            whose = "the checkpoint's own config.json"
        elif self.stands_for:
            whose = f"the {self.stands_for} architecture as published in {self.checkpoint}'s config.json"
        else:
            whose = f"the config.json of {self.checkpoint}"
        return f"{whose}, read from {self.config_source.get('url', '?')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "location": self.location, "checkpoint": self.checkpoint, "stands_for": self.stands_for, "own": self.own,
            "config_source": dict(self.config_source),
            "processor_source": dict(self.processor_source) if self.processor_source else None,
        }


def read_published(card: ModelCard) -> PublishedConfig:
    """The published config data a card names. Raises :class:`MetaError` naming the card and the
    file for a card without one, a missing file or a malformed one."""
    ref = card.published_config
    if not ref:
        raise MetaError(
            f"card '{card.id}' records no published config.json, so its full-size map cannot be built offline; "
            f"use `medprobe models layers {card.id} --tiny` (a tiny random model of the same class) or load the checkpoint"
        )
    package, _, path = ref.partition(":")
    try:
        text = resources.files(package).joinpath(path).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise MetaError(f"card '{card.id}': published_config {ref!r} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MetaError(f"{ref}: not valid JSON: {exc}") from None
    missing = [k for k in _REQUIRED if k not in data] if isinstance(data, dict) else list(_REQUIRED)
    if missing:
        raise MetaError(f"{ref}: missing keys {missing} (schema {SCHEMA})")
    if data["schema"] != SCHEMA:
        raise MetaError(f"{ref}: schema {data['schema']!r} is not {SCHEMA!r}")
    if not isinstance(data["config"], dict) or not data["config"].get("model_type"):
        raise MetaError(f"{ref}: 'config' must be a config.json object with a model_type")
    if not isinstance(data["config_source"], dict) or not data["config_source"].get("url"):
        raise MetaError(f"{ref}: 'config_source' must name the public url the config was read from")
    if data["processor"] is not None and not (isinstance(data["processor_source"], dict) and data["processor_source"].get("url")):
        raise MetaError(f"{ref}: processor settings need a 'processor_source' with the url they were read from")
    return PublishedConfig(
        card_id=card.id, location=ref, checkpoint=str(data["checkpoint"]), config=data["config"],
        config_source=data["config_source"], processor=data["processor"], processor_source=data["processor_source"],
        hub_id=card.hub_id, stands_for=data.get("stands_for"),
    )


@dataclass
class MetaModel:
    """A card's full-size model on the meta device.

    ``parameters``: exact parameter count (shared tensors once); ``stage_parameters``: the part
    inside the modules of each stage's layers (``vision`` / ``connector`` / ``llm``), the rest
    (embeddings, norms, heads) under ``other``; ``image_tokens``: per image, at the probing size.
    """

    card: ModelCard
    published: PublishedConfig
    config: Any
    model: Any
    layer_map: LayerMap
    parameters: int
    stage_parameters: dict[str, int]
    image_tokens: ImageTokens
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.card.id,
            "architecture": type(self.model).__name__,
            "published_config": self.published.to_dict(),
            "parameters": self.parameters,
            "stage_parameters": dict(self.stage_parameters),
            "image_tokens": self.image_tokens.to_dict(),
            "layers": len(self.layer_map),
            "resolved_against": self.layer_map.resolved_against,
            "notes": list(self.notes),
        }


def build_meta(card: ModelCard, adapter: ModelAdapter) -> MetaModel:
    """Build ``card``'s model from its published config on the meta device and resolve its map."""
    if not getattr(adapter, "meta_capable", False):
        raise MetaError(
            f"family '{card.family}' cannot build its models on the meta device"
            + (" (its model code is remote: the layer map comes from the recorded module listing)"
               if adapter.needs_remote_code else "")
            + f"; use `medprobe models layers {card.id} --tiny`"
        )
    published = read_published(card)
    where = published.location
    try:
        config = adapter.meta_config(card, published.config)
    except MedprobeError:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise MetaError(f"{where}: the config does not make the config class of family '{card.family}': {exc}") from None
    model = adapter.meta_model(card, config)
    off_meta = [n for n, p in model.named_parameters() if p.device.type != "meta"]
    if off_meta:
        raise MetaError(f"card '{card.id}': {len(off_meta)} parameters were materialised off the meta device ({off_meta[0]})")
    layer_map = adapter.layer_map(
        card, model, config, resolved_against=f"meta-device {type(model).__name__} from {published.describe()}"
    )
    total = sum(p.numel() for p in model.parameters())
    stages = _stage_parameters(model, layer_map)
    stages["other"] = total - sum(stages.values())
    tokens = adapter.image_tokens(card, config, published.processor)
    notes = [] if published.own else [
        f"no config.json of {card.hub_id} was found: the map is built from the {published.architecture_of} architecture "
        f"(config.json of {published.checkpoint}; see the card's sources)"
    ]
    return MetaModel(card, published, config, model, layer_map, total, stages, tokens, notes)


def instantiate_on_meta(cls: type, config: Any) -> Any:
    """``cls(config)`` with every parameter and buffer created on the meta device, in eval mode
    (what a family adapter's :meth:`~medprobe.adapter.ModelAdapter.meta_model` calls)."""
    import torch

    with torch.device("meta"):
        model = cls(config)
    return model.eval()


def config_from_dict(cls: type, config: Mapping[str, Any], where: str) -> Any:
    """``cls.from_dict(config)`` (what ``from_pretrained`` does with a ``config.json``); errors name ``where``."""
    try:
        return cls.from_dict(dict(config))
    except (TypeError, ValueError, KeyError) as exc:
        raise MetaError(f"{where}: cannot read it as {cls.__name__}: {exc}") from None


def _stage_parameters(model: Any, layer_map: LayerMap) -> dict[str, int]:
    seen: set[int] = set()
    out: dict[str, int] = {}
    for spec in layer_map:
        module = model.get_submodule(spec.path)
        n = 0
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        out[spec.stage] = out.get(spec.stage, 0) + n
    return out


def widest_linear(module: Any) -> int:
    """The largest ``out_features`` of a linear layer inside ``module`` (0 if none): the widest
    transient activation of a transformer block (its MLP intermediate)."""
    import torch

    widths = [m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return max(widths, default=0)
