"""Which model, how: :class:`LoadOptions`, and the one way to load and prepare a model.

Every command (``extract``, ``classify``, ``zeroshot``, ``train``, ``finetune``, ``compare``), the
Python API and experiment grids describe the model they want with one :class:`LoadOptions` value
and get it from :func:`prepare_model`::

    from medprobe.models.prepare import LoadOptions, prepare_model
    opts = LoadOptions(tiny=True, seed=0, device="cpu")
    loaded, device, dtype = prepare_model("lingshu-7b", opts)   # a LoadedModel holding its adapter,
    device, dtype                                                 # and the resolved names: "cpu", "float32"

The click options that fill it are declared once, in :mod:`medprobe.commands.options`; grid files
validate their ``[[model]]`` tables against :meth:`LoadOptions.field_names`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..adapter import LoadedModel
from ..registry import MedprobeError

#: options the family adapter's ``load`` receives (the rest are handled here)
ADAPTER_OPTIONS = ("source", "revision", "weights", "random_init", "trust_remote_code", "device_map", "max_memory",
                   "image_size")


#: older keyword names of the API -> LoadOptions fields
OLD_NAMES = {"adapter": "lora", "merge_adapter": "merge_lora"}


@dataclass(frozen=True)
class LoadOptions:
    """Which weights, from where, on which device and dtype.

    ``tiny``: the card's seeded tiny random model of the same class (offline pipeline checks; everything
    made from it is flagged synthetic). ``seed``: seed of the tiny random weights. ``source``: hub id or
    local checkpoint directory overriding the card's hub id; ``revision``: hub branch / tag / commit;
    ``weights``: a local weights file or directory (baselines); ``random_init``: the architecture with
    random weights on purpose (a control); ``trust_remote_code``: never implied. ``lora``: a peft LoRA
    adapter directory applied after loading (``merge_lora`` folds it into the weights); its identity is
    part of every run key. ``device``: ``auto`` | ``cpu`` | ``cuda:N``; ``dtype``: ``auto`` | ``bf16`` |
    ``fp16`` | ``fp32``; ``device_map`` / ``max_memory``: accelerate placement of a large model;
    ``image_size``: input side for adapters that take one (timm, open_clip, Qwen-VL); ``extra``:
    family-specific ``load`` options passed through as they are (e.g. ``attn_implementation``; the
    family adapter refuses keys it does not know).
    """

    tiny: bool = False
    seed: int = 0
    source: str | None = None
    revision: str | None = None
    weights: str | None = None
    random_init: bool = False
    trust_remote_code: bool = False
    lora: str | None = None
    merge_lora: bool = False
    device: str = "auto"
    dtype: str = "auto"
    device_map: str | None = None
    max_memory: Mapping[Any, str] | None = None
    image_size: int | None = None
    extra: Mapping[str, Any] | None = None

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "load options") -> "LoadOptions":
        """Validated construction from a mapping (grid files, JSON): unknown keys and wrong types are
        one error naming ``where`` and the key."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise MedprobeError(f"{where}: unknown load option(s) {', '.join(unknown)}; known: {', '.join(names)}")
        kinds = {"bool": bool, "int": int, "str": str}
        values = {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in values.items()}
        for key, value in values.items():
            if value is None:
                continue
            want = str(names[key].type).split(" |")[0]
            if want in kinds and not (isinstance(value, kinds[want]) and not (want == "int" and isinstance(value, bool))):
                raise MedprobeError(f"{where}: '{key}' must be {want}, got {type(value).__name__} {value!r}")
            if key in ("max_memory", "extra") and not isinstance(value, Mapping):
                raise MedprobeError(f"{where}: '{key}' must be a table, got {value!r}")
        return cls(**dict(values))

    def replace(self, **changes: Any) -> "LoadOptions":
        return dataclasses.replace(self, **changes)

    def adapter_kwargs(self) -> dict[str, Any]:
        """The options a family adapter's ``load`` takes, only those set (so adapters that do not know
        an option never see it)."""
        out: dict[str, Any] = {}
        for name in ADAPTER_OPTIONS:
            value = getattr(self, name)
            if value is None or value is False:
                continue
            if name == "max_memory":
                value = {int(k) if str(k).isdigit() else k: v for k, v in dict(value).items()}
            out[name] = value
        if self.random_init:
            out["seed"] = self.seed  # seeds the random weights
        for key, value in dict(self.extra or {}).items():
            out.setdefault(key, value)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, only the fields that differ from the defaults."""
        default = LoadOptions()
        return {f.name: (dict(v) if isinstance(v, Mapping) else v) for f in dataclasses.fields(self)
                if (v := getattr(self, f.name)) != getattr(default, f.name)}


def options_of(options: LoadOptions | None = None, fields: Mapping[str, Any] | None = None) -> LoadOptions:
    """``options`` with ``fields`` (LoadOptions field names, or their older names in :data:`OLD_NAMES`)
    applied: the keyword convenience of :func:`load_model` / :func:`prepare_model` / the API
    (``load_model("resnet18", tiny=True)``)."""
    base = options if options is not None else LoadOptions()
    if not fields:
        return base
    fields = dict(fields)
    for old, new in OLD_NAMES.items():  # the API's older keyword names
        if old in fields:
            fields[new] = fields.pop(old)
    checked = LoadOptions.from_mapping(fields, where="model options")
    return base.replace(**{k: getattr(checked, k) for k in fields})


def load_model(ref: str, options: LoadOptions | None = None, **fields: Any) -> LoadedModel:
    """Load a model by reference, without moving it: ``tiny`` builds the seeded tiny random model,
    otherwise the family adapter loads real weights with ``device`` / ``dtype`` as given (pass resolved
    names, or let :func:`prepare_model` resolve them)."""
    from .zoo import get_adapter, get_card

    opts = options_of(options, fields)
    card = get_card(ref)
    adapter = get_adapter(card.family)
    if opts.tiny:
        if opts.random_init:
            from ..adapter import AdapterError

            raise AdapterError(
                f"model '{ref}': --tiny models are random already, so they have no random-weights twin; "
                "save a checkpoint and load it with --source DIR (its twin: --source DIR --random-init)"
            )
        loaded = adapter.build_tiny(card, seed=opts.seed)
    else:
        from ..runtime import resolve_device

        device = resolve_device(opts.device) if opts.device == "auto" else opts.device
        loaded = adapter.load(card, device=device, dtype=opts.dtype, **opts.adapter_kwargs())
    if loaded.adapter is None:
        loaded.adapter = adapter
    return loaded


def prepare_model(model: "str | LoadedModel", options: LoadOptions | None = None, **fields: Any) -> tuple[LoadedModel, str, str]:
    """The one place every task gets its model from: resolve device and dtype, load (or take) the
    model, move a tiny model there, apply the LoRA adapter.

    Returns ``(loaded, device, dtype)``: ``loaded.adapter`` is set; ``device`` / ``dtype`` are the
    resolved names (``"cuda:0"``, ``"bfloat16"``) that run keys and manifests record."""
    from ..runtime import resolve_device, resolve_dtype, torch_dtype
    from .zoo import get_adapter

    opts = options_of(options, fields)
    dev = resolve_device(opts.device)
    dt = resolve_dtype(opts.dtype, dev)
    if isinstance(model, LoadedModel):
        loaded = model
        if loaded.adapter is None:
            loaded.adapter = get_adapter(loaded.card.family)
    else:
        loaded = load_model(model, opts.replace(device=dev, dtype=dt))
    if opts.tiny or loaded.weights.startswith("tiny-random"):
        loaded.model.to(device=dev, dtype=torch_dtype(dt))
        loaded.device, loaded.dtype = dev, dt
    if opts.lora is not None:
        from .lora import apply_lora

        loaded = apply_lora(loaded, opts.lora, merge=opts.merge_lora)
    return loaded, dev, dt


__all__ = ["LoadOptions", "options_of", "load_model", "prepare_model", "ADAPTER_OPTIONS"]
