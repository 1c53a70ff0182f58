"""The model zoo as seen through the plugins: cards, adapters, layer maps, loading.

Listing and showing cards imports no torch; :func:`resolve_layers` does. Loading lives in
:mod:`medprobe.models.prepare`.

Model references accepted wherever a model is named:

* a card id or alias (``lingshu-7b``);
* ``family:NAME`` for families that take free names, e.g. ``timm:resnet50.a1_in1k`` — an ad-hoc
  card is made when the family's adapter declares ``names_ad_hoc_models``.
"""

from __future__ import annotations

from ..adapter import ModelAdapter
from ..cards import ModelCard, filter_cards
from ..layermap import LayerMap
from ..plugins import get_plugins
from ..registry import NotFoundError, resolve_factory


def list_cards(kind: str | None = None, family: str | None = None, pattern: str | None = None) -> list[ModelCard]:
    """Registered cards, filtered by kind (``mllm``/``baseline``), family and a wildcard pattern."""
    return filter_cards((e.value for e in get_plugins().models), kind=kind, family=family, pattern=pattern)


def get_card(ref: str) -> ModelCard:
    """Find a card by id, alias, or ``family:NAME``. Raises :class:`NotFoundError` naming close
    matches and any plugin that failed to load."""
    state = get_plugins()
    if ref in state.models or ref in state.models.conflicts:
        return state.models.get(ref)
    for entry in state.models:
        if ref in entry.value.aliases:
            return entry.value
    family, sep, name = ref.partition(":")
    if sep and family in state.adapters:
        adapter = get_adapter(family)
        if adapter.names_ad_hoc_models:
            return adapter.card_for_name(name)
    return state.models.get(ref)  # raises NotFoundError with suggestions and plugin errors


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
