"""The model zoo as seen through the plugins: cards, adapters, layer maps, loading.

Listing and showing cards imports no torch; :func:`resolve_layers` does. Loading lives in
:mod:`medprobe.models.prepare`.

Model references accepted wherever a model is named (``--model``), tried in this order:

* a card id or alias (``lingshu-7b``);
* a hub id, matched case-insensitively to the card whose ``hub_id`` it is
  (``Qwen/Qwen2.5-VL-7B-Instruct``, ``lingshu-medical-mllm/Lingshu-7B``);
* a local checkpoint directory: every installed family is asked whether its ``config.json``
  (``architectures`` / ``model_type``) is theirs (:meth:`ModelAdapter.matches_checkpoint`); a
  zoo card of that family whose hub id the directory carries (``models--ORG--NAME`` cache
  layout, ``_name_or_path``, or a folder named like the repository) supplies the settings,
  else the family makes an ad-hoc card. Either way the card's ``settings.checkpoint_dir`` is
  the directory, so the weights are read from it;
* ``family:NAME`` for every family: ``timm:resnet50.a1_in1k``, ``open_clip:ViT-B-32:openai``,
  ``llava:ORG/NAME``, ``qwen2_5_vl:/path/to/dir``, ``gemma3:...``, ``hf_clip:...`` -- an ad-hoc
  card from the family adapter's ``card_for_name(name)`` when it declares ``names_ad_hoc_models``
  (a zoo card of the family whose hub id
  ``NAME`` is wins).

The core knows no family: name handling specific to one lives in its adapter.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from ..adapter import ModelAdapter
from ..cards import ModelCard, filter_cards
from ..layermap import LayerMap
from ..plugins import get_plugins
from ..registry import NotFoundError, resolve_factory

#: a hub repository id ``ORG/NAME``
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def list_cards(kind: str | None = None, family: str | None = None, pattern: str | None = None) -> list[ModelCard]:
    """Registered cards, filtered by kind (``mllm``/``baseline``), family and a wildcard pattern."""
    return filter_cards((e.value for e in get_plugins().models), kind=kind, family=family, pattern=pattern)


def _by_hub_id(hub_id: str, family: str | None = None) -> ModelCard | None:
    """The registered card whose ``hub_id`` is ``hub_id`` (case-insensitive), optionally of one family."""
    wanted = hub_id.strip().lower()
    found = [
        e.value for e in get_plugins().models
        if e.value.hub_id and e.value.hub_id.lower() == wanted and (family is None or e.value.family == family)
    ]
    if len(found) > 1:
        raise NotFoundError(f"'{hub_id}' is the hub id of cards {sorted(c.id for c in found)}; name one of them")
    return found[0] if found else None


def get_card(ref: str) -> ModelCard:
    """Find a card by id, alias, hub id, local checkpoint directory or ``family:NAME`` (see the
    module docstring). Raises :class:`NotFoundError` naming close matches and any plugin that
    failed to load."""
    state = get_plugins()
    if ref in state.models or ref in state.models.conflicts:
        return state.models.get(ref)
    for entry in state.models:
        if ref in entry.value.aliases:
            return entry.value
    card = _by_hub_id(ref)
    if card is not None:
        return card
    if Path(ref).expanduser().is_dir():
        return card_for_directory(ref)
    family, sep, name = ref.partition(":")
    if sep and family in state.adapters:
        adapter = get_adapter(family)
        registered = _by_hub_id(name, family) if _HUB_ID.fullmatch(name) else None
        if registered is not None:
            return registered
        if adapter.names_ad_hoc_models:
            return adapter.card_for_name(name)
        raise NotFoundError(f"{ref}: family '{family}' takes no free model names; use a card id (medprobe models list)")
    from .hf.loading import looks_like_path

    if looks_like_path(ref):
        raise NotFoundError(
            f"model '{ref}': the directory does not exist ({Path(ref).expanduser().absolute()}); pass an existing "
            "checkpoint directory, a card id (medprobe models list), a hub id or FAMILY:NAME"
        )
    if _HUB_ID.fullmatch(ref):
        raise NotFoundError(
            f"model '{ref}': no zoo card has hub id '{ref}' (medprobe models list shows them); name its family as "
            f"FAMILY:{ref} (families: {', '.join(sorted(state.adapters.names()))}) or pass its downloaded directory"
        )
    return state.models.get(ref)  # raises NotFoundError with suggestions and plugin errors


def _hub_ids_of_directory(path: Path, config: dict[str, Any]) -> list[str]:
    """Hub ids a checkpoint directory says it is: the cache layout ``models--ORG--NAME/snapshots/REV``
    and ``config.json`` ``_name_or_path``."""
    ids = []
    for part in path.parts:
        if part.startswith("models--") and part.count("--") >= 2:
            ids.append("/".join(part[len("models--"):].split("--", 1)))
    name_or_path = config.get("_name_or_path")
    if isinstance(name_or_path, str) and _HUB_ID.fullmatch(name_or_path):
        ids.append(name_or_path)
    return ids


def _zoo_card_of_directory(family: str, path: Path, config: dict[str, Any]) -> ModelCard | None:
    """The registered card of ``family`` a checkpoint directory is a copy of, if exactly one
    matches: by hub id (cache layout, ``_name_or_path``), else by the folder named like the
    repository (``.../Lingshu-7B``)."""
    for hub_id in _hub_ids_of_directory(path, config):
        card = _by_hub_id(hub_id, family)
        if card is not None:
            return card
    named = [
        e.value for e in get_plugins().models
        if e.value.family == family and e.value.hub_id and e.value.hub_id.rsplit("/", 1)[-1].lower() == path.name.lower()
    ]
    return named[0] if len(named) == 1 else None


def card_for_directory(directory: str | Path) -> ModelCard:
    """The card for a local checkpoint directory (``--model DIR``): the family whose adapter
    claims its ``config.json``, the matching zoo card's settings or an ad-hoc card, and
    ``settings.checkpoint_dir`` = the absolute directory. :class:`NotFoundError` naming the file
    when no family (or more than one) claims it."""
    path = Path(directory).expanduser().resolve()
    from .hf.loading import checkpoint_config

    config_file = path / "config.json"
    config = checkpoint_config(path)
    state = get_plugins()
    claimed, failed = [], []
    for family in sorted(state.adapters.names()):
        try:
            adapter = get_adapter(family)
        except NotFoundError as exc:
            failed.append(str(exc))
            continue
        if adapter.matches_checkpoint(config):
            claimed.append(family)
    if not claimed:
        broken = f"; adapters that failed to import: {failed}" if failed else ""
        raise NotFoundError(
            f"{config_file}: model_type '{config.get('model_type')}' / architectures {config.get('architectures')} is "
            f"loaded by no installed family ({sorted(state.adapters.names())}){broken}"
        )
    if len(claimed) > 1:
        raise NotFoundError(f"{config_file}: families {claimed} all claim this checkpoint; pass FAMILY:{path}")
    family = claimed[0]
    card = _zoo_card_of_directory(family, path, config)
    if card is None:
        return get_adapter(family).card_for_name(str(path))
    return dataclasses.replace(card, settings={**card.settings, "checkpoint_dir": str(path)})


_ADAPTERS: dict[str, ModelAdapter] = {}


def get_adapter(family: str) -> ModelAdapter:
    """Instantiate (once) the adapter registered for ``family``."""
    if family not in _ADAPTERS:
        state = get_plugins()
        factory = state.adapters.get(family)
        try:
            cls = resolve_factory(factory)
        except Exception as exc:
            origin = state.adapters.entry(family).origin
            raise NotFoundError(f"adapter '{family}' from {origin} failed to import ({factory}): {type(exc).__name__}: {exc}") from exc
        _ADAPTERS[family] = cls()
    return _ADAPTERS[family]


def resolve_layers(ref: str, tiny: bool = True) -> tuple[ModelCard, LayerMap]:
    """The card's layer map resolved on a real module tree.

    With ``tiny=True`` a tiny random model of the card's class is built offline. Families whose
    code is remote (not importable without ``trust_remote_code``) are validated against the module
    listing recorded from their published modeling code; the map says so in ``resolved_against``.
    """
    card = get_card(ref)
    adapter = get_adapter(card.family)
    if adapter.needs_remote_code:
        listing = adapter.recorded_listing(card)
        if listing is None:
            raise NotFoundError(f"family '{card.family}' needs remote code and records no module listing")
        names, config, source = listing
        from ..layermap import resolve_layer_map

        return card, resolve_layer_map(card.id, adapter.layer_groups(card, config), names, config, resolved_against=source)
    if not tiny:
        raise NotImplementedError("resolving on real weights: use medprobe.models.prepare.load_model(...).layer_map")
    loaded = adapter.build_tiny(card)
    return card, loaded.layer_map
