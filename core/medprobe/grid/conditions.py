"""Conditions of a grid job: ``base`` (weights as published) or ``lora:...`` (a LoRA adapter on top).

``lora:<dir>`` extracts with an existing peft adapter directory (the path may hold ``{model}``
and ``{dataset}``); ``lora:train`` first fine-tunes one per (model, dataset) with the
experiment's ``[lora]`` recipe (:class:`medprobe.tasks.finetune.LoraSettings` fields: ``rank``, ``alpha``,
``dropout``, ``targets``, ``scope``, ``epochs``, ``lr``, ``weight_decay``, ``batch_size``,
``max_steps``, ``seed``) into ``GRID/adapters/<model>__<dataset>/`` and reuses it once trained.
The adapter is applied with :func:`medprobe.models.lora.apply_lora`, so its identity is part of the
run key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from ..registry import MedprobeError


class ConditionError(MedprobeError):
    """A condition cannot be prepared (missing adapter, bad recipe); names the job or the key."""


def lora_settings(recipe: Mapping[str, Any], seed: int, where: str = "[lora]") -> Any:
    """The :class:`medprobe.tasks.finetune.LoraSettings` of a ``[lora]`` table (validated; ``seed`` defaults
    to the experiment's)."""
    from ..models.lora import LoraError
    from ..tasks.finetune import LoraSettings

    known = {f.name for f in dataclasses.fields(LoraSettings)}
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise ConditionError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    values = dict(recipe)
    values.setdefault("seed", seed)
    if "targets" in values:
        targets = values["targets"]
        values["targets"] = tuple(targets.split(",") if isinstance(targets, str) else targets)
    try:
        settings = LoraSettings(**values)
        settings.check()
    except (LoraError, TypeError) as exc:
        raise ConditionError(f"{where}: {exc}") from None
    return settings


def adapter_dir(out: Path, spec: Mapping[str, Any]) -> Path:
    """Where ``lora:train`` puts the adapter of one (model, dataset)."""
    return Path(out) / "adapters" / f"{spec['model_name']}__{spec['dataset_name']}"


def trained(directory: Path) -> bool:
    """True when ``directory`` holds a finished fine-tuning (adapter weights and its record)."""
    from ..models.lora import ADAPTER_WEIGHTS, RECORD

    return (directory / ADAPTER_WEIGHTS).is_file() and (directory / RECORD).is_file()


def adapter_path(spec: Mapping[str, Any], out: Path) -> Path | None:
    """The adapter directory a job extracts with (``None`` for ``base``), whether it exists yet or not."""
    adapter = spec.get("adapter")
    if adapter is None:
        return None
    return adapter_dir(out, spec) if adapter == "train" else Path(adapter)


def prepare_adapter(spec: Mapping[str, Any], out: Path, *, device: str, dtype: str) -> Path | None:
    """The job's adapter directory, fine-tuned now for ``lora:train`` unless already trained."""
    path = adapter_path(spec, out)
    if path is None:
        return None
    if spec["adapter"] != "train":
        if not path.is_dir():
            raise ConditionError(f"job {spec['id']}: LoRA adapter directory {path} does not exist")
        return path
    if trained(path):
        print(f"reusing the trained adapter {path}", flush=True)
        return path
    from ..tasks.finetune import finetune

    settings = lora_settings(spec.get("lora_recipe") or {}, spec["seed"])
    load = dict(spec.get("load") or {})
    print(f"fine-tuning a LoRA adapter into {path} ({settings.to_dict()})", flush=True)
    finetune(spec["model"], spec["dataset"], path, settings=settings, tiny=spec["tiny"], device=device, dtype=dtype,
             prompt=spec.get("prompt"), overwrite=True, progress=False, **load)
    return path


def apply(loaded: Any, path: Path | None) -> Any:
    """``loaded`` with the adapter at ``path`` applied (unchanged for ``None``)."""
    if path is None:
        return loaded
    from ..models.lora import apply_lora

    return apply_lora(loaded, path)
