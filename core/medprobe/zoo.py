"""The model zoo as seen through the plugins: cards, adapters, layer maps, loading.

Listing and showing cards imports no torch; :func:`resolve_layers` and :func:`load_model` do.

Model references accepted wherever a model is named:

* a card id or alias (``lingshu-7b``);
* ``family:NAME`` for families that take free names, e.g. ``timm:resnet50.a1_in1k`` — an ad-hoc
  card is made when the family's adapter defines ``card_for_name(name)``.
"""

from __future__ import annotations

from typing import Any

from .adapter import LoadedModel, ModelAdapter
from .cards import ModelCard, filter_cards
from .layermap import LayerMap
from .plugins import get_plugins
from .registry import NotFoundError, resolve_factory


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
        make = getattr(adapter, "card_for_name", None)
        if make is not None:
            return make(name)
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
        from .layermap import resolve_layer_map

        return card, resolve_layer_map(card.id, adapter.layer_groups(card, config), names, config, resolved_against=source)
    if not tiny:
        raise NotImplementedError("resolving on real weights: use load_model(...).layer_map")
    loaded = adapter.build_tiny(card)
    return card, loaded.layer_map


def load_model(ref: str, *, tiny: bool = False, seed: int = 0, **options: Any) -> LoadedModel:
    """Load a model by reference: ``tiny=True`` builds the seeded tiny random model, otherwise the
    adapter loads real weights (``source=``, ``revision=``, ``device=``, ``dtype=`` ...)."""
    card = get_card(ref)
    adapter = get_adapter(card.family)
    if tiny:
        if options.get("random_init"):
            from .adapter import AdapterError

            raise AdapterError(
                f"model '{ref}': --tiny models are random already, so they have no random-weights twin; "
                "save a checkpoint and load it with --source DIR (its twin: --source DIR --random-init)"
            )
        return adapter.build_tiny(card, seed=seed)
    if options.get("random_init"):
        options.setdefault("seed", seed)  # the twin's random draw follows --seed
    return adapter.load(card, **options)


def prepare_model(
    model: "str | LoadedModel",
    *,
    tiny: bool = False,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    adapter: str | None = None,
    merge_adapter: bool = False,
    **load_options: Any,
) -> tuple[LoadedModel, str, str]:
    """Resolve device and dtype, load (or take) the model, move tiny models there, apply a LoRA
    adapter. The one place extract / classify / zero-shot get their model from.

    Returns ``(loaded, device, dtype)`` with resolved names (``"cuda:0"``, ``"bfloat16"``).
    """
    from .runtime import resolve_device, resolve_dtype, torch_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, tiny=tiny, seed=seed, device=dev, dtype=dt, **load_options)
    if tiny or loaded.weights.startswith("tiny-random"):
        loaded.model.to(device=dev, dtype=torch_dtype(dt))
        loaded.device, loaded.dtype = dev, dt
    if adapter is not None:
        from .lora import apply_adapter

        loaded = apply_adapter(loaded, adapter, merge=merge_adapter)
    return loaded, dev, dt
