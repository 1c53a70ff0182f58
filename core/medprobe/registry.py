"""Named registries filled from plugin hooks, with origin tracking and a duplicate policy.

A :class:`Registry` maps a name (model id, adapter family, dataset scheme, ...) to an entry
that remembers which plugin and which distribution registered it. A name registered twice by
two plugins is a *conflict*: the name is kept out of lookups and every lookup raises
:class:`DuplicateRegistrationError` naming both distributions. Built-ins do **not** win: a
third-party plugin reusing a built-in id must pick another id (documented in CONTRIBUTING.md).

Lazy factories are ``"package.module:attr"`` strings resolved by :func:`resolve_factory` only
when used.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Generic, Iterator, TypeVar

T = TypeVar("T")


class MedprobeError(Exception):
    """Base class for errors medprobe reports to users (the CLI prints them without traceback)."""


class NotFoundError(MedprobeError, KeyError):
    """A name is not registered. The message lists close matches and plugin load errors."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def read_json_object(path: Any, what: str, error: type[MedprobeError] = MedprobeError) -> dict[str, Any]:
    """The JSON object in ``path``; ``error`` naming the file and ``what`` it should be (``"config.json"``,
    ``"open_clip config"`` ...) when it cannot be read, is not JSON, or is not an object. No pickle, no eval."""
    import json
    from pathlib import Path

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: cannot read {what}: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: {what} is not a JSON object")
    return data


class DuplicateRegistrationError(MedprobeError):
    """Two plugins registered the same name."""


@dataclass(frozen=True)
class Origin:
    """Where a registration came from: the plugin (entry-point name) and its distribution."""

    plugin: str
    distribution: str = "?"

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' (distribution '{self.distribution}')"


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    origin: Origin
    description: str = ""


@dataclass
class Registry(Generic[T]):
    """One kind of registered thing (``kind`` is used in messages: "model", "adapter", ...)."""

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)
    _conflicts: dict[str, list[Entry[T]]] = field(default_factory=dict)
    #: extra text appended to not-found errors (e.g. plugin load errors)
    hint: str = ""

    def add(self, name: str, value: T, origin: Origin, description: str = "") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r} from {origin}")
        entry = Entry(name, value, origin, description)
        if name in self._conflicts:
            self._conflicts[name].append(entry)
            return
        if name in self._entries:
            first = self._entries.pop(name)
            self._conflicts[name] = [first, entry]
            raise DuplicateRegistrationError(self._conflict_message(name))
        self._entries[name] = entry

    def _conflict_message(self, name: str) -> str:
        who = " and ".join(str(e.origin) for e in self._conflicts[name])
        return (
            f"duplicate {self.kind} '{name}' registered by {who}; uninstall one of the "
            f"distributions or block one plugin with MEDPROBE_BLOCK_PLUGINS"
        )

    def get(self, name: str) -> T:
        return self.entry(name).value

    def entry(self, name: str) -> Entry[T]:
        if name in self._conflicts:
            raise DuplicateRegistrationError(self._conflict_message(name))
        try:
            return self._entries[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=5, cutoff=0.5)
            msg = f"{self.kind} '{name}' not found"
            if close:
                msg += f"; did you mean: {', '.join(close)}?"
            if self.hint:
                msg += "\n" + self.hint
            raise NotFoundError(msg) from None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return sorted(self._entries)

    @property
    def conflicts(self) -> dict[str, list[Entry[T]]]:
        return dict(self._conflicts)


def resolve_factory(spec: Any) -> Any:
    """Import a lazy ``"package.module:attr"`` string; other objects are returned as they are."""
    if not isinstance(spec, str):
        return spec
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"lazy factory must look like 'package.module:attr', got {spec!r}")
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
