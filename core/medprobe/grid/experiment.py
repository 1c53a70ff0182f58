"""The experiment file: a study declared once in TOML (read with :mod:`tomllib`).

::

    [experiment]
    name = "tiny-study"
    out = "grid-out"                  # grid folder (relative to this file): runs/, jobs/, logs
    tiny = true                       # tiny random models (offline pipeline check)
    seed = 0
    batch_size = 16
    device = "auto"                   # auto | cpu | cuda:N
    dtype = "auto"                    # auto | bf16 | fp16 | fp32
    limit = 200                       # optional deterministic subset per dataset
    layers = "vision.*,connector,llm.*"   # optional; default every layer
    readouts = ["image-mean", "last-token"]
    probes = ["linear"]               # probes run by each job and used by `grid report`
    conditions = ["base"]             # "base", "lora:train", "lora:<adapter dir, may use {model} {dataset}>"

    [resources]                       # default request of every job
    gpus = 1
    memory = "64GB"
    time = "04:00:00"

    [[model]]
    ref = "lingshu-7b"                # card id / alias / family:NAME; or refs = [...] for a group
    source = "/ckpt/Lingshu-7B"       # optional local checkpoint dir or hub id
    resources = { gpus = 2, memory = "160GB" }
    device_map = "auto"               # spread over the job's GPUs
    max_memory = { 0 = "70GiB", 1 = "70GiB" }

    [[dataset]]
    spec = "busi:/data/Dataset_BUSI_with_GT"
    name = "busi"                     # optional label (default: the spec's scheme)

    [probe]                           # options of every probe run (medprobe.tasks.pipeline.probe_run):
    controls = true                   # permutation null + control tasks (about 3x the probing time)
    n_boot = 1000                     # bootstrap resamples of the accuracy CIs; other keys: hyper-parameters
                                      # every listed probe accepts (checked at parse time)

    [lora]                            # recipe for "lora:train" conditions (medprobe.models.lora)
    [[train]]                         # classifiers trained with `medprobe train`, one job per model x dataset
    recipe = "vision-tower"           # finetune | linear (baselines) | vision-tower (MLLMs)
    models = "mllm"                   # "mllm" | "baseline" | "all" | a list of the grid's model names / refs
    epochs = 10                       # other keys: lr, head_lr, batch_size, patience, weight_decay, freeze, ...

    [executor.slurm]                  # executor options: partition, account, setup, ... (checked at parse time)

Every error names the file and the key (``paper-study.toml: [[model]] #3.resources.gpus: expected an integer >= 0, got -2``).
Relative paths (``out``, a ``source`` or ``adapter`` starting with ``./`` or ``../``, dataset
locations starting with ``./`` or ``../``) are taken relative to the experiment file's folder.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..layermap import check_patterns
from ..registry import MedprobeError
from .resources import ResourceError, Resources

DTYPES = ("auto", "bf16", "fp16", "fp32")
EXECUTORS = ("local", "ray", "slurm")

_TOP = ("experiment", "resources", "model", "dataset", "probe", "lora", "train", "executor")
_EXPERIMENT = ("name", "out", "tiny", "seed", "batch_size", "device", "dtype", "limit", "layers", "readouts", "probes",
               "conditions", "prompt", "device_map")
_MODEL = ("ref", "refs", "name", "source", "revision", "weights", "adapter", "trust_remote_code", "random_init",
          "device_map", "max_memory", "load_options", "layers", "readouts", "batch_size", "dtype", "tiny", "limit",
          "conditions", "resources", "prompt")
_DATASET = ("spec", "name", "limit", "prompt")
#: ``medprobe train`` settings a ``[[train]]`` table may set (the rest comes from the grid)
TRAIN_OPTIONS = ("epochs", "lr", "head_lr", "batch_size", "image_size", "patience", "weight_decay", "freeze", "layer",
                 "probe_layers", "probe_layer_patterns")
_TRAIN = ("recipe", "models", "resources", *TRAIN_OPTIONS)
#: ``models`` keywords of a ``[[train]]`` table
MODEL_KINDS = ("mllm", "baseline", "all")


class ExperimentError(MedprobeError):
    """The experiment file is malformed; the message names the file and the key."""


@dataclass(frozen=True)
class Condition:
    """``base`` (weights as published) or ``lora:<adapter>`` (``train`` or an adapter directory,
    which may hold ``{model}`` and ``{dataset}`` placeholders)."""

    name: str
    kind: str
    adapter: str | None = None

    @property
    def label(self) -> str:
        """File-name-safe label used in job ids (``base``, ``lora-train``, ``lora-<dir name>``)."""
        if self.kind == "base":
            return "base"
        if self.kind == "train":
            return "train-" + slug(self.name.partition(":")[2])
        if self.adapter == "train":
            return "lora-train"
        name = Path(self.adapter or "").name.replace("{", "").replace("}", "")
        return "lora-" + slug(name or "adapter")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "adapter": self.adapter}


@dataclass(frozen=True)
class ModelEntry:
    """One model of the grid (``[[model]]`` with ``refs`` expands into one entry per ref)."""

    ref: str
    name: str
    where: str
    source: str | None = None
    revision: str | None = None
    weights: str | None = None
    adapter: str | None = None
    trust_remote_code: bool = False
    random_init: bool = False
    device_map: str | None = None
    max_memory: Mapping[str, Any] | None = None
    load_options: Mapping[str, Any] = field(default_factory=dict)
    layers: str | None = None
    readouts: tuple[str, ...] | None = None
    batch_size: int | None = None
    dtype: str | None = None
    tiny: bool | None = None
    limit: int | None = None
    conditions: tuple[Condition, ...] | None = None
    resources: Resources | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class DatasetEntry:
    spec: str
    name: str
    where: str
    limit: int | None = None
    prompt: str | None = None


@dataclass(frozen=True)
class TrainEntry:
    """One ``[[train]]`` table: a ``medprobe train`` recipe for a set of the grid's models."""

    recipe: str
    models: str | tuple[str, ...]
    where: str
    options: Mapping[str, Any] = field(default_factory=dict)
    resources: Resources | None = None

    @property
    def condition(self) -> Condition:
        return Condition(f"train:{self.recipe}", "train", None)


@dataclass(frozen=True)
class Experiment:
    """A parsed, validated experiment file. ``out`` is absolute."""

    path: Path
    name: str
    out: Path
    models: tuple[ModelEntry, ...]
    datasets: tuple[DatasetEntry, ...]
    conditions: tuple[Condition, ...] = (Condition("base", "base"),)
    tiny: bool = False
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"
    dtype: str = "auto"
    limit: int | None = None
    layers: str | None = None
    readouts: tuple[str, ...] | None = None
    probes: tuple[str, ...] = ("linear",)
    prompt: str | None = None
    device_map: str | None = None
    resources: Resources = Resources()
    probe_options: Mapping[str, Any] = field(default_factory=dict)
    lora: Mapping[str, Any] = field(default_factory=dict)
    trains: tuple[TrainEntry, ...] = ()
    executors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def runs_dir(self) -> Path:
        return self.out / "runs"

    @property
    def jobs_dir(self) -> Path:
        return self.out / "jobs"


def slug(text: str) -> str:
    """A file-name-safe label: letters, digits, ``.``, ``-``, ``_``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


# -- validation helpers --------------------------------------------------------------------------
def _check_keys(table: Any, known: tuple[str, ...], where: str) -> Mapping[str, Any]:
    if not isinstance(table, Mapping):
        raise ExperimentError(f"{where}: expected a table")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ExperimentError(f"{where}: unknown key(s) {unknown}; known: {list(known)}")
    return table


def _typed(table: Mapping[str, Any], key: str, types: type | tuple[type, ...], where: str, default: Any = None) -> Any:
    if key not in table:
        return default
    value = table[key]
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ExperimentError(f"{where}.{key}: expected {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ExperimentError(f"{where}.{key}: expected {_type_names(types)}, got {value!r}")
    return value


def _type_names(types: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "true or false", list: "a list", dict: "a table"}
    ts = types if isinstance(types, tuple) else (types,)
    return " or ".join(names.get(t, t.__name__) for t in ts)


def _positive(table: Mapping[str, Any], key: str, where: str, minimum: int = 1) -> int | None:
    value = _typed(table, key, int, where)
    if value is not None and value < minimum:
        raise ExperimentError(f"{where}.{key}: must be at least {minimum}, got {value}")
    return value


def _str_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    if key not in table:
        return None
    value = table[key]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ExperimentError(f"{where}.{key}: expected a non-empty list of strings, got {value!r}")
    return tuple(value)


def _readouts(table: Mapping[str, Any], where: str) -> tuple[str, ...] | None:
    names = _str_list(table, "readouts", where)
    if names is not None:
        from ..features.readouts import parse_readouts

        try:
            parse_readouts(names)
        except MedprobeError as exc:
            raise ExperimentError(f"{where}.readouts: {exc}") from None
    return names


def _layers(table: Mapping[str, Any], where: str) -> str | None:
    if "layers" not in table:
        return None
    value = table["layers"]
    if isinstance(value, list) and all(isinstance(v, str) for v in value) and value:
        value = ",".join(value)
    elif not (isinstance(value, str) and value.strip()):
        raise ExperimentError(f"{where}.layers: expected patterns like 'vision.*,connector,llm.*', got {value!r}")
    try:
        check_patterns(value)
    except MedprobeError as exc:
        raise ExperimentError(f"{where}.layers: {exc}") from None
    return value


def _dtype(table: Mapping[str, Any], where: str) -> str | None:
    value = _typed(table, "dtype", str, where)
    if value is not None and value not in DTYPES:
        raise ExperimentError(f"{where}.dtype: {value!r} is not one of {list(DTYPES)}")
    return value


def _local_path(value: str, base: Path) -> str:
    """Relative ``./x`` / ``../x`` paths are resolved against the experiment's folder; ``~`` is
    expanded; anything else (a hub id, an absolute path) is kept."""
    if value.startswith(("./", "../")):
        return str((base / value).resolve())
    if value.startswith("~"):
        return str(Path(value).expanduser())
    return value


def _dataset_spec(spec: str, base: Path) -> str:
    scheme, sep, rest = spec.partition(":")
    if sep and rest.startswith(("./", "../", "~")):
        location, q, query = rest.partition("?")
        return f"{scheme}:{_local_path(location, base)}{q}{query}"
    return spec


def parse_condition(value: Any, where: str, base: Path) -> Condition:
    if not isinstance(value, str) or not value.strip():
        raise ExperimentError(f"{where}: a condition must be 'base', 'lora:train' or 'lora:<adapter dir>', got {value!r}")
    value = value.strip()
    if value == "base":
        return Condition("base", "base")
    kind, sep, arg = value.partition(":")
    if kind == "lora" and sep and arg.strip():
        arg = arg.strip()
        adapter = arg if arg == "train" else _local_path(arg, base)
        return Condition(value, "lora", adapter)
    raise ExperimentError(f"{where}: unknown condition {value!r}; use 'base', 'lora:train' or 'lora:<adapter dir>'")


def _conditions(table: Mapping[str, Any], where: str, base: Path) -> tuple[Condition, ...] | None:
    if "conditions" not in table:
        return None
    raw = table["conditions"]
    if not isinstance(raw, list) or not raw:
        raise ExperimentError(f"{where}.conditions: expected a non-empty list like ['base', 'lora:train'], got {raw!r}")
    conds = tuple(parse_condition(v, f"{where}.conditions[{i}]", base) for i, v in enumerate(raw))
    labels = [c.label for c in conds]
    dups = sorted({x for x in labels if labels.count(x) > 1})
    if dups:
        raise ExperimentError(f"{where}.conditions: conditions {dups} appear more than once (or share an adapter folder name)")
    return conds


def _resources(default: Resources, table: Mapping[str, Any], key: str, where: str) -> Resources | None:
    if key not in table:
        return None
    try:
        return default.updated(table[key], f"{where}.{key}")
    except ResourceError as exc:
        raise ExperimentError(str(exc)) from None


def _model_entries(raw: Any, index: int, where_file: str, base: Path, default_res: Resources) -> list[ModelEntry]:
    where = f"{where_file}: [[model]] #{index + 1}"
    table = _check_keys(raw, _MODEL, where)
    if ("ref" in table) == ("refs" in table):
        raise ExperimentError(f"{where}: give exactly one of ref = \"card-id\" or refs = [\"card-id\", ...]")
    refs = [_typed(table, "ref", str, where)] if "ref" in table else list(_str_list(table, "refs", where) or ())
    if not all(refs):
        raise ExperimentError(f"{where}.ref: must be a non-empty string")
    if len(refs) > 1 and "name" in table:
        raise ExperimentError(f"{where}.name: a name labels one model; use it with ref, not refs")
    max_memory = _typed(table, "max_memory", dict, where)
    if max_memory is not None:
        from .resources import parse_max_memory

        try:
            parse_max_memory(max_memory, f"{where}.max_memory")
        except ResourceError as exc:
            raise ExperimentError(str(exc)) from None
    common = dict(
        source=_typed(table, "source", str, where),
        revision=_typed(table, "revision", str, where),
        weights=_typed(table, "weights", str, where),
        adapter=_typed(table, "adapter", str, where),
        trust_remote_code=_typed(table, "trust_remote_code", bool, where, False),
        random_init=_typed(table, "random_init", bool, where, False),
        device_map=_typed(table, "device_map", str, where),
        max_memory=max_memory,
        load_options=dict(_typed(table, "load_options", dict, where, {})),
        layers=_layers(table, where),
        readouts=_readouts(table, where),
        batch_size=_positive(table, "batch_size", where),
        dtype=_dtype(table, where),
        tiny=_typed(table, "tiny", bool, where),
        limit=_positive(table, "limit", where),
        conditions=_conditions(table, where, base),
        resources=_resources(default_res, table, "resources", where),
        prompt=_typed(table, "prompt", str, where),
    )
    for key in ("source", "weights", "adapter"):
        if common[key] is not None:
            common[key] = _local_path(common[key], base)
    out = []
    for ref in refs:
        name = _typed(table, "name", str, where) or slug(ref)
        out.append(ModelEntry(ref=ref, name=slug(name), where=f"{where} ({ref})", **common))
    return out


def _dataset_entry(raw: Any, index: int, where_file: str, base: Path) -> DatasetEntry:
    where = f"{where_file}: [[dataset]] #{index + 1}"
    table = _check_keys(raw, _DATASET, where)
    spec = _typed(table, "spec", str, where)
    if not spec:
        raise ExperimentError(f"{where}: 'spec' is required (e.g. spec = \"busi:/data/Dataset_BUSI_with_GT\")")
    from ..datasets.spec import parse_spec

    try:
        scheme, _, _ = parse_spec(spec)
    except MedprobeError as exc:
        raise ExperimentError(f"{where}.spec: {exc}") from None
    name = _typed(table, "name", str, where) or scheme
    return DatasetEntry(spec=_dataset_spec(spec, base), name=slug(name), where=f"{where} ({name})",
                        limit=_positive(table, "limit", where), prompt=_typed(table, "prompt", str, where))


def _train_entry(raw: Any, index: int, where_file: str, default_res: Resources) -> TrainEntry:
    from ..tasks.train import RECIPES

    where = f"{where_file}: [[train]] #{index + 1}"
    table = _check_keys(raw, _TRAIN, where)
    recipe = _typed(table, "recipe", str, where)
    if recipe not in RECIPES:
        raise ExperimentError(f"{where}.recipe: {recipe!r} is not one of {list(RECIPES)}")
    models = table.get("models")
    if isinstance(models, str):
        if models not in MODEL_KINDS:
            raise ExperimentError(f"{where}.models: {models!r} must be one of {list(MODEL_KINDS)} or a list of model names")
    else:
        models = _str_list(table, "models", where)
        if models is None:
            raise ExperimentError(f"{where}: 'models' is required (\"mllm\", \"baseline\", \"all\" or a list of model names)")
    options = {k: table[k] for k in TRAIN_OPTIONS if k in table}
    for key in ("epochs", "batch_size", "image_size", "patience"):
        _positive(options, key, where)
    for key in ("freeze", "probe_layers"):
        _typed(options, key, bool, where)
    for key in ("lr", "head_lr", "weight_decay"):
        value = _typed(options, key, (int, float), where)
        if value is not None and value < 0:
            raise ExperimentError(f"{where}.{key}: must not be negative, got {value}")
    return TrainEntry(recipe=recipe, models=models, where=f"{where} ({recipe})", options=options,
                      resources=_resources(default_res, table, "resources", where))


def probe_run_options() -> tuple[str, ...]:
    """Keys of ``[probe]`` read by the probing protocol itself, for any probe: the fields of
    :class:`medprobe.analysis.protocol.ProbeSettings` (declared there once)."""
    import dataclasses

    from ..analysis.protocol import ProbeSettings

    return tuple(f.name for f in dataclasses.fields(ProbeSettings))


def _probe_keys(options: Mapping[str, Any], probes: list[str], where: str) -> None:
    """Every ``[probe]`` key must be a probe-run option or a hyper-parameter of *every* probe the
    grid runs (the same table goes to each), so a typo fails here, not after extraction."""
    import inspect

    from ..analysis.probes import BUILTIN_PROBES
    from ..registry import resolve_factory

    run_options = probe_run_options()
    extra = [k for k in options if k not in run_options]
    if not extra:
        return
    for name in probes:
        spec = BUILTIN_PROBES.get(name)
        if spec is None:
            from ..plugins import get_plugins

            try:
                spec = get_plugins().probes.get(name)
            except MedprobeError as exc:
                raise ExperimentError(f"{where}: probe '{name}': {exc}") from None
        try:
            params = inspect.signature(resolve_factory(spec)).parameters
        except (ImportError, AttributeError, ValueError, TypeError) as exc:
            raise ExperimentError(f"{where}: probe '{name}' cannot be imported ({exc})") from None
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        hyper = [p for p in params if p != "self"]
        unknown = [k for k in extra if k not in hyper]
        if unknown:
            raise ExperimentError(
                f"{where}: unknown key(s) {unknown} for probe '{name}'; known: {list(run_options)} "
                f"and the '{name}' hyper-parameters {hyper}"
            )


def _executor_keys(name: str, table: Mapping[str, Any], where: str) -> None:
    """``[executor.<name>]`` keys checked against the executor's options (without importing
    Ray or submitit)."""
    import importlib

    from .executors import EXECUTORS

    module = importlib.import_module(EXECUTORS[name].partition(":")[0])
    known = tuple(getattr(module, "OPTIONS", ()))
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ExperimentError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")


def load_experiment(path: str | Path, *, out: str | Path | None = None) -> Experiment:
    """Read and validate an experiment file. ``out`` overrides ``[experiment].out``."""
    path = Path(path)
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExperimentError(f"{where}: cannot read the experiment file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ExperimentError(f"{where}: not valid TOML: {exc}") from None
    _check_keys(data, _TOP, where)
    base = path.resolve().parent
    exp = _check_keys(data.get("experiment", {}), _EXPERIMENT, f"{where}: [experiment]")
    w = f"{where}: [experiment]"
    try:
        resources = Resources().updated(data.get("resources", {}), f"{where}: [resources]")
    except ResourceError as exc:
        raise ExperimentError(str(exc)) from None

    models_raw = data.get("model")
    if not isinstance(models_raw, list) or not models_raw:
        raise ExperimentError(f"{where}: no models; add at least one [[model]] table with ref = \"card-id\"")
    models = [m for i, raw in enumerate(models_raw) for m in _model_entries(raw, i, where, base, resources)]
    names = [m.name for m in models]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ExperimentError(f"{where}: model names {dups} appear more than once; give each [[model]] a distinct name = \"...\"")

    datasets_raw = data.get("dataset")
    if not isinstance(datasets_raw, list) or not datasets_raw:
        raise ExperimentError(f"{where}: no datasets; add at least one [[dataset]] table with spec = \"...\"")
    datasets = [_dataset_entry(raw, i, where, base) for i, raw in enumerate(datasets_raw)]
    dnames = [d.name for d in datasets]
    dups = sorted({n for n in dnames if dnames.count(n) > 1})
    if dups:
        raise ExperimentError(f"{where}: dataset names {dups} appear more than once; give each [[dataset]] a distinct name = \"...\"")

    executors = data.get("executor", {})
    _check_keys(executors, EXECUTORS, f"{where}: [executor]")
    for key, table in executors.items():
        if not isinstance(table, Mapping):
            raise ExperimentError(f"{where}: [executor.{key}]: expected a table")
    trains_raw = data.get("train", [])
    if not isinstance(trains_raw, list):
        raise ExperimentError(f"{where}: [train] must be an array of tables: write [[train]]")
    trains = tuple(_train_entry(raw, i, where, resources) for i, raw in enumerate(trains_raw))
    for key in ("probe", "lora"):
        if key in data and not isinstance(data[key], Mapping):
            raise ExperimentError(f"{where}: [{key}]: expected a table")
    probe_options = dict(data.get("probe", {}))
    _typed(probe_options, "controls", bool, f"{where}: [probe]")
    for key in ("n_boot", "n_permutations"):
        _positive(probe_options, key, f"{where}: [probe]")
    for key in ("seed", "force", "probe"):
        if key in probe_options:
            raise ExperimentError(f"{where}: [probe].{key}: set by the grid ([experiment].seed / probes), not here")
    for name, table in executors.items():
        _executor_keys(name, table, f"{where}: [executor.{name}]")

    conditions = _conditions(exp, w, base) or (Condition("base", "base"),)
    uses_training = any(c.adapter == "train" for m in models for c in (m.conditions or conditions))
    if uses_training or "lora" in data:
        from .conditions import ConditionError, lora_settings

        try:
            lora_settings(data.get("lora", {}), 0, where=f"{where}: [lora]")
        except ConditionError as exc:
            raise ExperimentError(str(exc)) from None
    out_value = out if out is not None else _typed(exp, "out", str, w, "grid-out")
    out_path = Path(out_value).expanduser()
    if not out_path.is_absolute():
        out_path = (base / out_path) if out is None else Path.cwd() / out_path
    probes = _str_list(exp, "probes", w) or ("linear",)
    from ..tasks.pipeline import parse_probes

    try:
        probe_names = parse_probes(list(probes))
    except MedprobeError as exc:
        raise ExperimentError(f"{w}.probes: {exc}") from None
    _probe_keys(probe_options, probe_names, f"{where}: [probe]")

    experiment = Experiment(
        path=path.resolve(),
        name=_typed(exp, "name", str, w) or path.stem,
        out=out_path.resolve(),
        models=tuple(models),
        datasets=tuple(datasets),
        conditions=conditions,
        tiny=_typed(exp, "tiny", bool, w, False),
        seed=_typed(exp, "seed", int, w, 0),
        batch_size=_positive(exp, "batch_size", w) or 8,
        device=_typed(exp, "device", str, w, "auto"),
        dtype=_dtype(exp, w) or "auto",
        limit=_positive(exp, "limit", w),
        layers=_layers(exp, w),
        readouts=_readouts(exp, w),
        probes=tuple(probe_names),
        prompt=_typed(exp, "prompt", str, w),
        device_map=_typed(exp, "device_map", str, w),
        resources=resources,
        probe_options=probe_options,
        lora=dict(data.get("lora", {})),
        trains=trains,
        executors={k: dict(v) for k, v in executors.items()},
    )
    return experiment
