"""Plugin discovery and the registries it fills.

Plugins are modules named by entry points in the ``medprobe`` group (built-ins included: the
core has no private path for them). Discovery is isolated per plugin: a plugin that fails to
import, raises inside a hook, or implements a hook medprobe does not define (a misspelled
``register_modelz``: pluggy's ``check_pending`` after each registration) is recorded as a
:class:`PluginError` and skipped (unregistered: none of its hooks run), so the CLI keeps
working; ``medprobe plugins`` shows the error and "not found" messages name it.

Environment variables:

``MEDPROBE_STRICT_PLUGINS=1``
    re-raise the first plugin error instead of recording it (for plugin authors and CI).
``MEDPROBE_LOAD_PLUGINS=a,b``
    allow-list: load only these plugins (entry-point names or distribution names). Empty
    string loads none.
``MEDPROBE_BLOCK_PLUGINS=a,b``
    deny-list: never load these plugins.

Usage::

    from medprobe.plugins import get_plugins
    state = get_plugins()             # discovered once per process, cached
    card = state.models.get("lingshu-7b")
    state.errors                      # [PluginError(...), ...]
"""

from __future__ import annotations

import difflib
import importlib.metadata as importlib_metadata
import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .registry import DuplicateRegistrationError, Origin, Registry

GROUP = "medprobe"
HOOKS = (
    "register_models",
    "register_adapters",
    "register_datasets",
    "register_probes",
    "register_metrics",
    "register_exporters",
)


@dataclass(frozen=True)
class PluginError:
    """A plugin that failed to load, or a hook of it that raised."""

    plugin: str
    distribution: str
    stage: str  # "import", "hook check" (unknown hook names), a hook name, or "duplicate"
    error: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"plugin '{self.plugin}' ({self.distribution}) failed in {self.stage}: {self.error}"

    def to_dict(self) -> dict[str, str]:
        return {"plugin": self.plugin, "distribution": self.distribution, "stage": self.stage, "error": self.error}


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "error": self.error,
        }


@dataclass
class PluginState:
    """Everything discovery found: the pluggy manager, plugin infos, errors and registries."""

    pm: pluggy.PluginManager
    plugins: list[PluginInfo] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)
    models: Registry = field(default_factory=lambda: Registry("model"))
    adapters: Registry = field(default_factory=lambda: Registry("adapter"))
    datasets: Registry = field(default_factory=lambda: Registry("dataset loader"))
    probes: Registry = field(default_factory=lambda: Registry("probe"))
    metrics: Registry = field(default_factory=lambda: Registry("metric"))
    exporters: Registry = field(default_factory=lambda: Registry("exporter"))

    def registry_for(self, hook: str) -> Registry:
        return {
            "register_models": self.models,
            "register_adapters": self.adapters,
            "register_datasets": self.datasets,
            "register_probes": self.probes,
            "register_metrics": self.metrics,
            "register_exporters": self.exporters,
        }[hook]

    def error_hint(self) -> str:
        if not self.errors:
            return ""
        lines = ["Some plugins failed to load (see `medprobe plugins`):"]
        lines += [f"  - {e}" for e in self.errors]
        return "\n".join(lines)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _name_list(value: str | None) -> set[str] | None:
    if value is None:
        return None
    return {p.strip() for p in value.split(",") if p.strip()}


def strict_mode() -> bool:
    return _truthy(os.environ.get("MEDPROBE_STRICT_PLUGINS"))


def entry_points() -> list[importlib_metadata.EntryPoint]:
    """The installed ``medprobe`` entry points (tests monkeypatch this function)."""
    return list(importlib_metadata.entry_points(group=GROUP))


def _dist_of(ep: importlib_metadata.EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "?", "?"
    try:
        return dist.metadata["Name"] or "?", dist.version or "?"
    except Exception:  # pragma: no cover - defensive, broken metadata
        return "?", "?"


def _is_selected(name: str, dist: str, allow: set[str] | None, block: set[str]) -> bool:
    if name in block or dist in block:
        return False
    if allow is None:
        return True
    return name in allow or dist in allow


def discover(
    eps: Iterable[importlib_metadata.EntryPoint] | None = None,
    extra_plugins: Iterable[tuple[str, Any]] = (),
) -> PluginState:
    """Load plugins from entry points (plus ``extra_plugins`` given as ``(name, module)``).

    Never raises for a broken plugin unless ``MEDPROBE_STRICT_PLUGINS=1``.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    state = PluginState(pm=pm)
    strict = strict_mode()
    allow = _name_list(os.environ.get("MEDPROBE_LOAD_PLUGINS"))
    block = _name_list(os.environ.get("MEDPROBE_BLOCK_PLUGINS")) or set()

    loaded: list[tuple[PluginInfo, Any]] = []
    for ep in sorted(entry_points() if eps is None else eps, key=lambda e: e.name):
        dist, version = _dist_of(ep)
        if not _is_selected(ep.name, dist, allow, block):
            continue
        info = PluginInfo(name=ep.name, distribution=dist, version=version, module=ep.value)
        state.plugins.append(info)
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:
            if strict:
                raise
            info.error = f"{type(exc).__name__}: {exc}"
            state.errors.append(PluginError(ep.name, dist, "import", info.error, traceback.format_exc()))
            continue
        if _rejected_for_unknown_hooks(state, info, module, strict):
            continue
        loaded.append((info, module))
    for name, module in extra_plugins:
        info = PluginInfo(name=name, distribution="(in-process)", version="", module=getattr(module, "__name__", repr(module)))
        state.plugins.append(info)
        pm.register(module, name=name)
        if _rejected_for_unknown_hooks(state, info, module, strict):
            continue
        loaded.append((info, module))

    for info, _module in loaded:
        info.hooks = sorted(
            impl_hook
            for impl_hook in (h.name for h in pm.get_hookcallers(pm.get_plugin(info.name)) or [])
        )

    for hook in HOOKS:
        _call_register_hook(state, hook, loaded, strict)
    hint = state.error_hint()
    for hook in HOOKS:
        state.registry_for(hook).hint = hint
    return state


def _rejected_for_unknown_hooks(state: PluginState, info: PluginInfo, module: Any, strict: bool) -> bool:
    """Run pluggy's ``check_pending`` after registering ``module``; a plugin implementing a hook
    medprobe does not define is unregistered and recorded (every earlier plugin passed the
    same check, so a failure is this plugin's). Returns True when rejected."""
    pm = state.pm
    try:
        pm.check_pending()
    except pluggy.PluginValidationError:
        known = sorted(n for n in vars(pm.hook) if not n.startswith("_") and getattr(pm.hook, n).has_spec())
        unknown = sorted(
            n
            for n in vars(pm.hook)
            if not n.startswith("_")
            and not getattr(pm.hook, n).has_spec()
            and any(i.plugin is module and not i.optionalhook for i in getattr(pm.hook, n).get_hookimpls())
        )
        pm.unregister(module)
        if strict:
            raise
        parts = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            parts.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        message = (
            f"unknown hook(s) {', '.join(parts)}: not a medprobe hook, so the plugin is rejected "
            f"(none of its hooks run); rename it to one of {', '.join(known)}"
        )
        info.error = message
        state.errors.append(PluginError(info.name, info.distribution, "hook check", message))
        return True
    return False


def _call_register_hook(state: PluginState, hook: str, loaded: list[tuple[PluginInfo, Any]], strict: bool) -> None:
    """Call ``hook`` on each plugin separately so one failure never hides the others."""
    registry = state.registry_for(hook)
    caller = getattr(state.pm.hook, hook)
    for impl in caller.get_hookimpls():
        info = next((i for i, _m in loaded if i.name == impl.plugin_name), None)
        origin = Origin(impl.plugin_name, info.distribution if info else "?")

        def register(name_or_obj: Any, factory: Any = None, description: str = "", _origin: Origin = origin) -> None:
            if hook == "register_models":
                card = name_or_obj
                try:
                    registry.add(card.id, card, _origin, card.title or "")
                except DuplicateRegistrationError as exc:
                    state.errors.append(PluginError(_origin.plugin, _origin.distribution, "duplicate", str(exc)))
                    if strict:
                        raise
                return
            if factory is None:
                raise TypeError(f"{hook}: register(name, factory, description='') needs a factory")
            try:
                registry.add(name_or_obj, factory, _origin, description)
            except DuplicateRegistrationError as exc:
                state.errors.append(PluginError(_origin.plugin, _origin.distribution, "duplicate", str(exc)))
                if strict:
                    raise

        try:
            impl.function(register=register)
        except Exception as exc:
            if strict:
                raise
            message = f"{type(exc).__name__}: {exc}"
            state.errors.append(PluginError(origin.plugin, origin.distribution, hook, message, traceback.format_exc()))
            if info is not None and info.error is None:
                info.error = f"{hook}: {message}"


_STATE: PluginState | None = None


def get_plugins(refresh: bool = False) -> PluginState:
    """The process-wide plugin state, discovered on first use."""
    global _STATE
    if _STATE is None or refresh:
        _STATE = discover()
    return _STATE


def set_plugins(state: PluginState | None) -> None:
    """Replace the process-wide state (tests; ``None`` forces rediscovery)."""
    global _STATE
    _STATE = state


def register_commands(cli: Any) -> list[PluginError]:
    """Let plugins add Click commands; failures are recorded, not raised (unless strict)."""
    state = get_plugins()
    errors: list[PluginError] = []
    for impl in state.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:
            if strict_mode():
                raise
            err = PluginError(impl.plugin_name, "?", "register_commands", f"{type(exc).__name__}: {exc}")
            state.errors.append(err)
            errors.append(err)
    return errors


