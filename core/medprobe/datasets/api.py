"""Opening datasets by spec, through the plugin registry.

``open_dataset("busi:/data/Dataset_BUSI_with_GT", seed=0)`` looks the scheme up in
``medprobe.plugins.get_plugins().datasets`` (filled by every plugin's ``register_datasets``
hook, the built-in loaders included), calls the loader with the location and its options, and
prepares the result (:mod:`.prepare`): split, checks, skips, duplicates.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..registry import resolve_factory
from .base import Dataset
from .errors import DatasetSpecError
from .prepare import prepare
from .spec import coerce, coerce_options, format_spec, loader_parameters, parse_spec
from .splits import DEFAULT_FRACTIONS, check_fractions

class _Unset:
    """Marks an option the caller did not give (the spec's query or the default applies)."""

    def __repr__(self) -> str:
        return "<default>"


_UNSET: Any = _Unset()


def list_loaders() -> list[dict[str, str]]:
    """Registered loader schemes: ``[{"scheme", "factory", "description", "plugin"}]``."""
    from ..plugins import get_plugins

    out = []
    for entry in get_plugins().datasets:
        factory = entry.value if isinstance(entry.value, str) else f"{getattr(entry.value, '__module__', '?')}:{getattr(entry.value, '__qualname__', '?')}"
        out.append({"scheme": entry.name, "factory": factory, "description": entry.description, "plugin": str(entry.origin)})
    return out


def get_loader(scheme: str) -> Any:
    """The loader callable registered for ``scheme`` (imports its module)."""
    from ..plugins import get_plugins

    entry = get_plugins().datasets.entry(scheme)
    try:
        return resolve_factory(entry.value)
    except (ImportError, AttributeError, ValueError) as exc:
        raise DatasetSpecError(
            f"dataset loader '{scheme}' from {entry.origin} cannot be imported ({entry.value}): {type(exc).__name__}: {exc}"
        ) from exc


def _common(name: str, given: Any, query: dict[str, str], default: Any, annotation: Any, spec: str) -> Any:
    """A common option from the keyword argument or the spec query (both given and different: error)."""
    from_query = _UNSET
    if name in query:
        from_query = coerce(query.pop(name), annotation, name, f"dataset spec '{spec}'")
    if given is _UNSET:
        return default if from_query is _UNSET else from_query
    given = coerce(given, annotation, name, f"dataset spec '{spec}'")
    if from_query is not _UNSET and from_query != given:
        raise DatasetSpecError(f"dataset spec '{spec}': option {name}={from_query!r} conflicts with {name}={given!r} given separately")
    return given


def open_dataset(
    spec: str,
    seed: int = _UNSET,
    dedup: bool = _UNSET,
    skip_bad: bool = _UNSET,
    limit: int | None = _UNSET,
    fractions: Sequence[float] = _UNSET,
    **options: Any,
) -> Dataset:
    """Open the dataset named by ``spec`` and prepare it.

    ``seed`` (default 0) seeds the split (and the generator of synthetic sets); ``dedup`` drops
    exact duplicates; ``skip_bad`` records and skips unusable samples instead of raising
    :class:`~medprobe.datasets.errors.BadSamplesError`; ``limit`` keeps a stratified subset of N
    samples; ``fractions`` (train, val, test; default 0.7, 0.15, 0.15) apply when there is no
    official split. Other keyword arguments are loader options, like the spec's query string.
    Each common option may also come from the query (``?seed=1&dedup=1``).
    """
    scheme, location, query = parse_spec(spec)
    seed = _common("seed", seed, query, 0, int, spec)
    dedup = _common("dedup", dedup, query, False, bool, spec)
    skip_bad = _common("skip_bad", skip_bad, query, False, bool, spec)
    limit = _common("limit", limit, query, None, int, spec)
    fractions = _common("fractions", fractions, query, DEFAULT_FRACTIONS, tuple[float, ...], spec)
    try:
        fractions = check_fractions(fractions)
    except ValueError as exc:
        raise DatasetSpecError(f"dataset spec '{spec}': {exc}") from None
    if limit is not None and limit < 1:
        raise DatasetSpecError(f"dataset spec '{spec}': limit must be a positive number of samples, got {limit}")
    factory = get_loader(scheme)
    where = f"dataset loader '{scheme}'"
    keywords, hints, _var_kw = loader_parameters(factory)
    for key, value in options.items():
        if key in query and coerce(query[key], hints.get(key, str), key, spec) != coerce(value, hints.get(key, str), key, spec):
            raise DatasetSpecError(f"dataset spec '{spec}': option {key}={query[key]!r} conflicts with {key}={value!r} given separately")
        query[key] = value
    takes_seed = "seed" in keywords
    if takes_seed:
        query["seed"] = seed
    kwargs, effective = coerce_options(factory, query, where)
    ds = factory(location, **kwargs)
    if not isinstance(ds, Dataset):
        raise DatasetSpecError(f"{where} returned {type(ds).__name__}, not a medprobe.datasets.Dataset")
    extra: dict[str, Any] = {} if takes_seed else {"seed": seed}
    if tuple(fractions) != DEFAULT_FRACTIONS:
        extra["fractions"] = fractions
    if dedup:
        extra["dedup"] = True
    if skip_bad:
        extra["skip_bad"] = True
    if limit is not None:
        extra["limit"] = limit
    normalised = format_spec(scheme, ds.location, {**effective, **extra})
    return prepare(ds, spec=normalised, seed=seed, dedup=dedup, skip_bad=skip_bad, limit=limit, fractions=fractions)

