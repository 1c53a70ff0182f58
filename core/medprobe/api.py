"""The Python API: one function per CLI command, same options, same defaults, typed results.

::

    import medprobe as mp
    mp.list_models(kind="mllm")                              # medprobe models list --kind mllm
    model = mp.load("lingshu-7b", tiny=True)                 # a LoadedModel (torch module + layer map)
    ds = mp.dataset("synthetic:lesions")                     # medprobe datasets show synthetic:lesions
    run = mp.extract(model, ds, out="runs/", layers="vision.*,connector,llm.*")   # medprobe extract
    res = mp.probe(run, probe="linear")                      # medprobe probe RUN -> ProbeResults
    both = mp.probe(run, probe="linear,mlp")                 # several probes -> {name: ProbeResults}
    report = mp.report([run, ...])                           # medprobe report RUN... (a Report)
    report.fhs("lingshu-7b"); report.diagnosis("lingshu-7b"); report.plot_layers()

The CLI commands (:mod:`medprobe.commands`) parse options, call these functions and print; no
pipeline logic lives only in the CLI. Functions that are already the single implementation
elsewhere are exported from there unchanged (``mp.extract`` is :func:`medprobe.features.extract.extract`,
``mp.probe`` is :func:`probe` over :func:`medprobe.tasks.pipeline.probe_run`, returning the single
result when one probe is named); see ``docs/api.md`` for the full table.

Importing this module imports no torch: listing cards, reading runs and reports stays light;
loading a model or extracting features imports torch when called.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .registry import MedprobeError
from .analysis.reporting import DEFAULT_FORMATS, Report

if TYPE_CHECKING:  # pragma: no cover
    from .adapter import LoadedModel
    from .cards import ModelCard
    from .datasets import Dataset
    from .layermap import LayerMap
    from .models.meta import MetaModel
    from .plugins import PluginError, PluginInfo
    from .features.store import Run

#: the default root of run directories (``medprobe cache``): $MEDPROBE_CACHE_DIR, else ./runs
CACHE_ENV = "MEDPROBE_CACHE_DIR"


def default_cache_root() -> Path:
    """``$MEDPROBE_CACHE_DIR`` when set, else ``runs`` (relative to the working directory)."""
    return Path(os.environ.get(CACHE_ENV, "runs"))


# -- plugins ---------------------------------------------------------------------------------


@dataclass
class PluginList:
    """Installed plugins (``medprobe plugins``): one :class:`~medprobe.plugins.PluginInfo` per
    plugin (name, distribution, version, hooks, load error) and every recorded load error."""

    plugins: list["PluginInfo"]
    errors: list["PluginError"]

    def to_dict(self) -> dict[str, Any]:
        return {"plugins": [p.to_dict() for p in self.plugins], "errors": [e.to_dict() for e in self.errors]}


def list_plugins(errors_only: bool = False) -> PluginList:
    """The plugins found through the ``medprobe`` entry points (``medprobe plugins``);
    ``errors_only`` keeps the plugins that failed to load."""
    from .plugins import get_plugins

    state = get_plugins()
    return PluginList(plugins=[p for p in state.plugins if p.error or not errors_only], errors=list(state.errors))


# -- models ----------------------------------------------------------------------------------


def list_models(kind: str | None = None, family: str | None = None, pattern: str | None = None) -> list["ModelCard"]:
    """Registered model cards (``medprobe models list [PATTERN] --kind --family``), sorted by
    kind, family and id. ``kind``: ``mllm`` or ``baseline``; ``family``: adapter family,
    wildcards allowed (``"qwen*"``); ``pattern``: wildcard on id, title, alias or hub id."""
    if kind is not None and kind not in ("mllm", "baseline"):
        raise MedprobeError(f"kind must be 'mllm' or 'baseline', got {kind!r}")
    from .models.zoo import list_cards

    return list_cards(kind=kind, family=family, pattern=pattern)


def get_card(ref: str) -> "ModelCard":
    """The card of ``ref``: a card id, an alias or ``family:NAME`` (``medprobe models show``).
    Unknown names raise :class:`~medprobe.registry.NotFoundError` listing close matches."""
    from .models.zoo import get_card as _get_card

    return _get_card(ref)


def layer_map(ref: str, *, tiny: bool = False, select: str | Sequence[str] | None = None, **load_options: Any) -> "LayerMap":
    """The resolved layer map of ``ref`` (``medprobe models layers``).

    Remote-code families are validated against their recorded module listing; with ``tiny`` the
    map is resolved on a tiny random model of the card's class (offline); otherwise the model is
    loaded (``load_options`` as :func:`load`; this downloads weights the first time).
    ``select``: layer patterns (``"vision.*,connector"``) -- the returned map keeps only those
    layers, in model order.
    """
    from .models.zoo import get_adapter, resolve_layers

    card = get_card(ref)
    if tiny or get_adapter(card.family).needs_remote_code:
        lmap = resolve_layers(ref, tiny=True)[1]
    else:
        lmap = load(ref, **load_options).layer_map
    if select is not None:
        lmap = replace(lmap, layers=tuple(lmap.select(select)))
    return lmap


def full_size(ref: str) -> "MetaModel":
    """The card's full-size model built from its published ``config.json`` on the meta device
    (``medprobe models layers REF`` without ``--tiny``): ``.layer_map``, ``.parameters``,
    ``.stage_parameters``, ``.image_tokens``, ``.published`` (where the config was read). No
    weights, no download; :func:`medprobe.grid.resources.extraction_estimate` gives the store size
    and GPU memory of an extraction (``--n`` / ``--dataset``)."""
    from .models.meta import build_meta
    from .models.zoo import get_adapter

    card = get_card(ref)
    return build_meta(card, get_adapter(card.family))


def load(
    ref: str,
    *,
    tiny: bool = False,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    **load_options: Any,
) -> "LoadedModel":
    """Load a model ready for capture (a :class:`~medprobe.adapter.LoadedModel`: the torch
    module in eval mode, its processor and layer map).

    Args:
        ref: card id / alias, ``family:NAME`` (``timm:resnet50.a1_in1k``).
        tiny: the card's seeded tiny random model of the same class, built offline (pipeline
            checks only: everything made from it is flagged synthetic).
        device: ``auto`` (first GPU, else CPU), ``cpu`` or ``cuda:N``.
        dtype: ``auto`` (bf16 on a bf16-capable GPU, else fp32), ``bf16``, ``fp16`` or ``fp32``.
        seed: seed of the tiny random weights.
        load_options: the adapter's loading options, as the ``extract`` command's: ``source``
            (hub id or local directory), ``revision``, ``weights`` (local file, baselines),
            ``random_init``, ``trust_remote_code`` (never implied), ``device_map`` ...
    """
    from .models.prepare import prepare_model

    loaded, _device, _dtype = prepare_model(ref, tiny=tiny, device=device, dtype=dtype, seed=seed, **load_options)
    return loaded


# -- datasets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetLoader:
    """A registered dataset loader scheme (``medprobe datasets list``)."""

    scheme: str
    description: str
    plugin: str
    factory: str

    def to_dict(self) -> dict[str, str]:
        return {"scheme": self.scheme, "factory": self.factory, "description": self.description, "plugin": self.plugin}


def list_datasets() -> list[DatasetLoader]:
    """The dataset loader schemes (``SPEC = SCHEME:LOCATION?option=value``)."""
    from .datasets import list_loaders

    return [DatasetLoader(scheme=d["scheme"], description=d["description"], plugin=d["plugin"], factory=d["factory"])
            for d in list_loaders()]  # fmt: skip


def dataset(spec: str, **options: Any) -> "Dataset":
    """Open and prepare the dataset ``spec`` (``medprobe datasets show SPEC``), e.g.
    ``synthetic:lesions``, ``busi:/data/Dataset_BUSI_with_GT``, ``imagefolder:PATH``.

    ``options``: ``seed`` (split seed, default 0), ``dedup``, ``skip_bad``, ``limit``
    (stratified subset of N samples), ``fractions`` (train, val, test) and loader options; see
    :func:`medprobe.datasets.open_dataset`. ``ds.info()`` is what ``datasets show --json`` prints.
    """
    from .datasets import open_dataset

    return open_dataset(spec, **options)


# -- runs (the feature store) ----------------------------------------------------------------


@dataclass
class RunInfo:
    """What ``medprobe cache info`` shows about a run directory (``bytes``: its size on disk)."""

    run: str
    run_key: str
    status: str
    model: str
    weights: str
    dataset: str
    classes: list[str]
    samples: int
    rows_done: int | None
    layers: list[str]
    readouts: list[str]
    dtype: str
    device: str
    batch_size: int
    versions: dict[str, Any]
    git: str | None
    synthetic: bool
    synthetic_reasons: list[str] = field(default_factory=list)
    bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def open_run(path: str | Path) -> "Run":
    """Open a run directory written by :func:`extract` (:class:`~medprobe.features.store.Run`)."""
    from .features.store import Run

    return Run.open(path)


def _run(run: "Run | str | Path") -> "Run":
    from .features.store import Run

    return run if isinstance(run, Run) else Run.open(run)


def probe(run: "Run | str | Path", probe: str | Sequence[str] = "linear", **options: Any) -> Any:
    """Probe every captured (layer, readout) of ``run`` (``medprobe probe RUN``).

    ``probe`` names one probe (``"linear"``, ``"mlp"``, ``["mlp"]``): returns its
    :class:`~medprobe.analysis.results.ProbeResults`. Several (``"linear,mlp"``, ``"all"``, a list
    of two or more): returns probe name -> ProbeResults, in the order named. ``options`` are those
    of :func:`medprobe.pipeline.probe_run` (``seed=0``, ``controls=True``, ``force=False``, probe
    hyper-parameters); results already saved for the same probe and seed are loaded, not retrained.
    """
    from .tasks.pipeline import parse_probes, probe_run

    names = [probe] if isinstance(probe, str) else list(probe)
    several = len(names) != 1 or "," in names[0] or names[0].strip() == "all"
    results = probe_run(run, probe, **options)
    if several:
        return results
    (name,) = parse_probes(names)
    return results[name]


def list_runs(root: str | Path | None = None, problems: list | None = None) -> list["Run"]:
    """Every run directory directly below ``root`` (default :func:`default_cache_root`),
    sorted by name (``medprobe cache ls``); runs that cannot be opened are appended to
    ``problems`` as ``(dir, reason)`` when it is given."""
    from .features.store import list_runs as _list_runs

    return _list_runs(root if root is not None else default_cache_root(), problems)


def run_info(run: "Run | str | Path") -> RunInfo:
    """The manifest summary of ``run`` (``medprobe cache info``)."""
    r = _run(run)
    m = r.manifest
    return RunInfo(
        run=str(r.path),
        run_key=m["run_key"],
        status=m["status"],
        model=r.model_id,
        weights=m["model"]["weights"],
        dataset=m["dataset"]["spec"],
        classes=list(m["dataset"]["classes"]),
        samples=len(r.sample_ids),
        rows_done=m.get("rows_done"),
        layers=[layer["id"] for layer in m["layers"]],
        readouts=list(m["readouts"]),
        dtype=m["dtype"],
        device=m["device"],
        batch_size=m["batch_size"],
        versions=dict(m.get("versions") or {}),
        git=m.get("git"),
        synthetic=bool(m.get("synthetic", False)),
        synthetic_reasons=list(m.get("synthetic_reasons", [])),
        bytes=sum(f.stat().st_size for f in r.path.rglob("*") if f.is_file()),
    )


def verify_run(run: "Run | str | Path") -> list[str]:
    """Check ``run``'s manifest (schema, checksum) and every file it lists (size, sha256, shape);
    the problems found (empty: intact). A folder that is not a run raises."""
    from .features.store import ManifestError

    try:
        return _run(run).verify()
    except ManifestError as exc:
        return [str(exc)]


def remove_run(run: "Run | str | Path") -> Path:
    """Delete a run directory (only a folder that holds a medprobe manifest); returns its path."""
    from .features.store import ManifestError, Run, write_error

    path = run.path if isinstance(run, Run) else Path(run)
    try:
        _run(run)  # refuses folders that are not runs
    except ManifestError:
        pass  # a damaged run (its manifest fails the schema or checksum) can still be removed
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise write_error(exc, Path(exc.filename or path), "removing the run") from None
    return path


# -- reports ---------------------------------------------------------------------------------


def report(
    runs: "Run | str | Path | Sequence[Run | str | Path]",
    out: str | Path | None = None,
    *,
    baseline: "Run | str | Path | None" = None,
    probe: str | Sequence[str] = "linear",
    seed: int = 0,
    title: str = "medprobe report",
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> Report:
    """The side-by-side report of ``runs`` (``medprobe report RUN... --out OUT``).

    Each run is probed first when its results for ``probe`` and ``seed`` are not saved yet.
    ``baseline``: a run shown as the baseline row; ``probe``: ``linear``, ``mlp``, ``all`` or a
    comma list; ``out``: a folder to write ``report.json`` / ``.csv`` / ``.md`` / ``.html``
    (``formats``) into -- nothing is written without it. Runs on different datasets or splits
    cannot share a report (:class:`~medprobe.registry.MedprobeError`).
    """
    from .tasks.pipeline import report_runs
    from .features.store import Run

    items = [runs] if isinstance(runs, (str, Path, Run)) else list(runs)
    data = report_runs(items, out, baseline=baseline, probes=probe, seed=seed, formats=formats, title=title)
    return Report.from_dict(data, path=Path(out) / "report.json" if out is not None and "json" in formats else None)


def load_report(path: str | Path) -> Report:
    """Read a ``report.json`` (or the folder holding one) written by any medprobe command."""
    return Report.load(path)


def _split_models(models: str | Sequence[str]) -> list[str]:
    return [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]


def compare(
    models: str | Sequence[str],
    dataset: str,
    out: str | Path,
    *,
    tiny: bool = False,
    probe: str | Sequence[str] = "linear",
    layers: str | None = None,
    readouts: str | Sequence[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    classify: str | None = "generate",
    progress: bool | None = None,
    store: str | Path | None = None,
    **load_options: Any,
) -> Report:
    """Extract, probe, classify, score and report several models on one dataset (``medprobe compare``).

    ``models``: references (a list or a comma-separated string, as ``--models``); runs are kept
    under ``out/runs`` and the report files written into ``out``. ``readouts`` default to
    ``image-mean,last-token``; ``layers`` to all layers; ``tiny`` uses tiny random models (a
    pipeline check, flagged synthetic). ``classify``: how MLLMs answer for ``P_final``
    (``"generate"``, the default of ``medprobe classify`` too; ``"score"``; or ``None`` to skip).
    ``store``: keep the runs under this store root (default ``out/runs``; the CLI passes
    ``--store`` or ``$MEDPROBE_CACHE_DIR``). ``load_options`` go to every model's loader.
    """
    from .models.prepare import options_of
    from .tasks.pipeline import compare as _compare

    load = options_of(None, {"tiny": tiny, "device": device, "dtype": dtype, "seed": seed, **load_options})
    data = _compare(_split_models(models), dataset, out, load=load, probes=probe, layers=layers, readouts=readouts,
                    batch_size=batch_size, limit=limit, progress=progress, classify_mode=classify, store=store)
    return Report.from_dict(data, path=Path(out) / "report.json")


def demo(
    out: str | Path = "demo-out",
    *,
    probe: str | Sequence[str] = "linear",
    dataset: str | None = None,
    progress: bool | None = None,
    store: str | Path | None = None,
) -> Report:
    """The offline demo (``medprobe demo``): tiny random models of three MLLM families and two
    baselines (the cards the zoo marks ``demo = N``: :func:`medprobe.tasks.pipeline.demo_models`) on the embedded synthetic dataset
    (default :data:`medprobe.tasks.pipeline.DEMO_DATASET`; pass a smaller ``synthetic:lesions?n=...``
    for a quicker run). Every number is synthetic: it checks the pipeline, not a medical finding.
    ``store``: keep the runs under this store root (default ``out/runs``).
    """
    from .tasks.pipeline import demo as _demo

    data = _demo(out, probes=probe, dataset=dataset, progress=progress, store=store)
    return Report.from_dict(data, path=Path(out) / "report.json")
