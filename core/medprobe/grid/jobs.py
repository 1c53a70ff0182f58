"""The job table: every (model, dataset, condition) of an experiment as one :class:`Job`.

A job's ``id`` is readable and stable (``lingshu-7b__busi__base``); its ``digest`` hashes
everything that changes its features (model reference and loading options, dataset spec,
condition, layers, readouts, dtype, seed, limit, prompt, tiny), so state recorded for an older
version of the job is recognised as stale. The run itself is keyed by the feature store's run key
(:func:`medprobe.features.plan.plan_extract`), computed before the run for tiny jobs and recorded in the
job's state file by the worker for real-weight jobs (a run key needs the loaded checkpoint).

``lora:`` conditions apply to MLLMs only: a baseline is listed once, under ``base``, and serves as
the reference row of every condition's report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from dataclasses import dataclass
from typing import Any, Sequence

from .experiment import Condition, DatasetEntry, Experiment, ExperimentError, ModelEntry, TrainEntry
from .resources import Resources

#: job spec keys that do not change the features (kept out of the digest)
_NOT_HASHED = ("id", "digest", "resources", "probes", "probe_options", "batch_size", "kind", "lora_recipe",
               "train_recipe")


@dataclass(frozen=True)
class Job:
    """One extraction (+ probes) of the grid. ``spec`` is the JSON-able description a worker runs."""

    id: str
    model: ModelEntry
    dataset: DatasetEntry
    condition: Condition
    kind: str
    resources: Resources
    spec: dict[str, Any]

    @property
    def digest(self) -> str:
        return self.spec["digest"]

    @property
    def tiny(self) -> bool:
        return bool(self.spec["tiny"])

    def matches(self, patterns: Sequence[str]) -> bool:
        """fnmatch on the job id, the model ref or name, the dataset name or the condition."""
        names = (self.id, self.model.ref, self.model.name, self.dataset.name, self.condition.name, self.condition.label)
        return any(fnmatch.fnmatchcase(n, p) for p in patterns for n in names)


def _digest(spec: dict[str, Any]) -> str:
    hashed = {k: v for k, v in spec.items() if k not in _NOT_HASHED}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()


def _card_kind(entry: ModelEntry) -> str:
    from ..registry import MedprobeError
    from ..models.zoo import get_card

    try:
        return get_card(entry.ref).kind
    except MedprobeError as exc:
        raise ExperimentError(f"{entry.where}.ref: {exc}") from None


def job_spec(exp: Experiment, model: ModelEntry, dataset: DatasetEntry, condition: Condition, kind: str,
             device_map: str | None = None, train: TrainEntry | None = None) -> dict[str, Any]:
    """Everything a worker needs to run one job, as plain JSON-able data."""
    tiny = exp.tiny if model.tiny is None else model.tiny
    load: dict[str, Any] = {}
    if not tiny:
        for key in ("source", "revision", "weights"):
            value = getattr(model, key)
            if value is not None:
                load[key] = value
        if model.trust_remote_code:
            load["trust_remote_code"] = True
        if model.random_init:
            load["random_init"] = True
        dmap = model.device_map or device_map or exp.device_map
        if dmap is not None and kind == "mllm" and train is None:
            load["device_map"] = dmap
        if model.max_memory is not None and train is None:
            from .resources import parse_max_memory

            load["max_memory"] = {str(k): v for k, v in parse_max_memory(model.max_memory).items()}
        load.update(model.load_options)
    adapter = condition.adapter if condition.kind == "lora" else model.adapter
    if adapter is not None and adapter != "train":
        try:
            adapter = adapter.format(model=model.name, dataset=dataset.name)
        except (KeyError, IndexError, ValueError) as exc:
            raise ExperimentError(f"{model.where}: adapter path {adapter!r} may only use the placeholders "
                                  f"{{model}} and {{dataset}} ({exc})") from None
    spec = {
        "id": f"{model.name}__{dataset.name}__{condition.label}",
        "model": model.ref,
        "model_name": model.name,
        "kind": kind,
        "dataset": dataset.spec,
        "dataset_name": dataset.name,
        "condition": condition.to_dict(),
        "adapter": adapter,
        "tiny": tiny,
        "seed": exp.seed,
        "batch_size": model.batch_size or exp.batch_size,
        "device": exp.device,
        "dtype": model.dtype or exp.dtype,
        "limit": model.limit or dataset.limit or exp.limit,
        "layers": model.layers or exp.layers,
        "readouts": list(model.readouts or exp.readouts or ()) or None,
        "prompt": model.prompt or dataset.prompt or exp.prompt,
        "load": load,
        "probes": list(exp.probes),
        "probe_options": dict(exp.probe_options),
        "resources": ((train.resources if train else None) or model.resources or exp.resources).to_dict(),
    }
    if train is not None:
        spec["train"] = {"recipe": train.recipe, "options": dict(train.options)}
    if condition.kind == "lora" and condition.adapter == "train":
        spec["lora_recipe"] = dict(exp.lora)
    spec["digest"] = _digest(spec)
    return spec


def expand_jobs(exp: Experiment, only: Sequence[str] | str | None = None, *, device_map: str | None = None) -> list[Job]:
    """The job table in a stable order (model, dataset, condition), filtered by ``only`` patterns
    (comma-separated fnmatch patterns on job id, model, dataset or condition)."""
    if isinstance(only, str):
        only = [p.strip() for p in only.split(",") if p.strip()]
    jobs: list[Job] = []
    for model in exp.models:
        kind = _card_kind(model)
        conditions = model.conditions or exp.conditions
        for cond in conditions:
            if cond.kind == "lora" and kind != "mllm":
                if model.conditions is not None:
                    raise ExperimentError(f"{model.where}.conditions: '{cond.name}' applies to MLLMs, and '{model.ref}' is a {kind}")
                continue
            if cond.kind == "lora" and model.adapter is not None:
                raise ExperimentError(f"{model.where}: adapter = ... and the condition '{cond.name}' both name a LoRA adapter")
            for ds in exp.datasets:
                spec = job_spec(exp, model, ds, cond, kind, device_map=device_map)
                jobs.append(Job(spec["id"], model, ds, cond, kind, model.resources or exp.resources, spec))
        if not any(j.model is model for j in jobs):
            raise ExperimentError(f"{model.where}: no condition applies to this {kind} (conditions: "
                                  f"{[c.name for c in conditions]}); add 'base'")
    for train in exp.trains:
        for model in _train_models(exp, train):
            kind = _card_kind(model)
            wants = "mllm" if train.recipe == "vision-tower" else "baseline"
            if kind != wants:
                raise ExperimentError(f"{train.where}: recipe '{train.recipe}' trains {wants} models, and "
                                      f"'{model.name}' ({model.ref}) is a {kind}")
            for ds in exp.datasets:
                spec = job_spec(exp, model, ds, train.condition, kind, train=train)
                res = train.resources or model.resources or exp.resources
                jobs.append(Job(spec["id"], model, ds, train.condition, kind, res, spec))
    ids = [j.id for j in jobs]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ExperimentError(f"{exp.path}: job ids {dups} appear more than once (two [[train]] tables with one recipe "
                              "for the same model?)")
    if only:
        jobs = [j for j in jobs if j.matches(only)]
        if not jobs:
            raise ExperimentError(f"{exp.path}: --only {','.join(only)} matches no job")
    return jobs


def _train_models(exp: Experiment, train: TrainEntry) -> list[ModelEntry]:
    """The grid models a ``[[train]]`` table names (a kind keyword or model names / refs)."""
    if isinstance(train.models, str):
        if train.models == "all":
            return list(exp.models)
        return [m for m in exp.models if _card_kind(m) == train.models]
    out = []
    for name in train.models:
        hits = [m for m in exp.models if name in (m.name, m.ref)]
        if not hits:
            raise ExperimentError(f"{train.where}.models: '{name}' is not a model of this grid "
                                  f"(names: {[m.name for m in exp.models]})")
        out.extend(h for h in hits if h not in out)
    return out
