"""Dataset spec strings: ``scheme[:location][?key=value&key=value]``.

Examples: ``synthetic:lesions?n=120&size=64``, ``digits``, ``imagefolder:/data/busi``,
``csv:/data/manifest.csv?label_col=diagnosis``. The scheme names a loader registered through
the ``register_datasets`` hook; the location is loader-specific (a path for file loaders);
query options are loader options plus the common ones in :data:`COMMON_OPTIONS`.

Query values are strings; :func:`coerce_options` converts them with the loader function's
annotations (``int``, ``float``, ``bool``, ``str``, ``tuple[str, ...]`` as comma lists).
The spec of an opened dataset (:attr:`Dataset.spec`) lists every effective option, so opening
it again gives the same dataset (same fingerprint).
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl, quote

from .errors import DatasetSpecError

#: options every spec accepts (handled by ``open_dataset``, not by the loader)
COMMON_OPTIONS = ("seed", "dedup", "skip_bad", "limit", "fractions")

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9_.+-]*$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_spec(spec: str) -> tuple[str, str, dict[str, str]]:
    """Split ``spec`` into ``(scheme, location, query options)``.

    A spec without ``:`` is a bare scheme (``digits``). Only the first ``?`` starts the query,
    so locations must not contain ``?``.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DatasetSpecError(f"dataset spec must be a non-empty string like 'imagefolder:/data/busi', got {spec!r}")
    body, _, query = spec.strip().partition("?")
    scheme, sep, location = body.partition(":")
    if not _SCHEME.match(scheme):
        raise DatasetSpecError(
            f"dataset spec {spec!r} does not start with a loader scheme (e.g. 'imagefolder:{spec}'); "
            "`medprobe datasets list` shows the schemes"
        )
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise DatasetSpecError(f"dataset spec {spec!r}: cannot parse the options after '?' (expected key=value&key=value)") from None
    options: dict[str, str] = {}
    for key, value in pairs:
        if key in options:
            raise DatasetSpecError(f"dataset spec {spec!r}: option '{key}' given twice")
        options[key] = value
    return scheme, location if sep else "", options


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (list, tuple)):
        return ",".join(_format_value(v) for v in value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_spec(scheme: str, location: str, options: Mapping[str, Any]) -> str:
    """The normalised spec string (options in the given order, ``None`` values left out)."""
    head = f"{scheme}:{location}" if location else scheme
    parts = [f"{k}={quote(_format_value(v), safe='/,.:-_')}" for k, v in options.items() if v is not None]
    return head + ("?" + "&".join(parts) if parts else "")


def coerce(value: Any, annotation: Any, name: str, where: str) -> Any:
    """Convert a query-string value to ``annotation``; values of the right type pass through."""
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Union or type(annotation).__name__ == "UnionType":
        if value is None:
            return None
        return coerce(value, args[0], name, where) if args else value
    if not isinstance(value, str):
        if origin in (tuple, list) and isinstance(value, (list, tuple)):
            return tuple(value)
        return value
    try:
        if annotation is bool:
            low = value.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError("expected 1/0, true/false, yes/no")
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)
        if origin in (tuple, list):
            inner = args[0] if args else str
            items = [v.strip() for v in value.split(",") if v.strip()]
            return tuple(coerce(v, inner, name, where) for v in items)
    except ValueError as exc:
        raise DatasetSpecError(f"{where}: option '{name}={value}' is not valid ({exc})") from None
    return value


def loader_parameters(factory: Callable[..., Any]) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """The keyword parameters of a loader (after ``location``), their resolved annotations, and
    whether it takes ``**options``."""
    sig = inspect.signature(factory)
    try:
        hints = typing.get_type_hints(factory)
    except Exception:
        hints = {}
    params = list(sig.parameters.values())
    keywords: dict[str, inspect.Parameter] = {}
    var_kw = False
    for p in params[1:]:
        if p.kind == p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            keywords[p.name] = p
    return keywords, hints, var_kw


def coerce_options(
    factory: Callable[..., Any], options: Mapping[str, Any], where: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check ``options`` against the loader's signature and convert them.

    Returns ``(call kwargs, effective options)``: the effective options list every keyword
    parameter of the loader with its given or default value (used for the normalised spec).
    """
    keywords, hints, var_kw = loader_parameters(factory)
    unknown = [k for k in options if k not in keywords]
    if unknown and not var_kw:
        accepted = ", ".join(dict.fromkeys([*keywords, *COMMON_OPTIONS]))
        raise DatasetSpecError(f"{where}: unknown option(s) {', '.join(unknown)}; accepted: {accepted}")
    kwargs: dict[str, Any] = {}
    effective: dict[str, Any] = {}
    for name, param in keywords.items():
        if name in options:
            kwargs[name] = coerce(options[name], hints.get(name, str), name, where)
            effective[name] = kwargs[name]
        elif param.default is not inspect.Parameter.empty:
            effective[name] = param.default
    for name in unknown:
        kwargs[name] = options[name]
        effective[name] = options[name]
    return kwargs, effective
