"""medprobe: find where medical multimodal LLMs lose classification signal.

The Python API mirrors the CLI, one function per command (``docs/api.md``)::

    import medprobe as mp
    mp.list_models(kind="mllm")
    model = mp.load("lingshu-7b", tiny=True)
    run = mp.extract(model, mp.dataset("synthetic:lesions"), out="runs/")
    report = mp.report([run])                # a Report: .fhs(), .diagnosis(), .plot_layers(), .to_frame()

``import medprobe`` is light: it imports no torch. Every public name is loaded on first use.

The package is layered (CONTRIBUTING.md, "Architecture"): contracts and interfaces here,
the extraction engine in :mod:`medprobe.features`, models in :mod:`medprobe.models`, tasks in
:mod:`medprobe.tasks`, analysis in :mod:`medprobe.analysis`.
"""

from __future__ import annotations

import importlib
from importlib import metadata as _metadata
from typing import Any

from .hookspecs import hookimpl

try:
    __version__ = _metadata.version("medprobe")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

#: public name -> "module:attr" (imported on first access)
_API: dict[str, str] = {
    # plugins, models
    "list_plugins": "medprobe.api:list_plugins",
    "list_models": "medprobe.api:list_models",
    "get_card": "medprobe.api:get_card",
    "layer_map": "medprobe.api:layer_map",
    "full_size": "medprobe.api:full_size",
    "load": "medprobe.api:load",
    # datasets
    "list_datasets": "medprobe.api:list_datasets",
    "dataset": "medprobe.api:dataset",
    # features
    "extract": "medprobe.features.extract:extract",
    "list_runs": "medprobe.api:list_runs",
    "open_run": "medprobe.api:open_run",
    "run_info": "medprobe.api:run_info",
    "verify_run": "medprobe.api:verify_run",
    "remove_run": "medprobe.api:remove_run",
    # analysis
    "probe": "medprobe.tasks.pipeline:probe_run",
    "report": "medprobe.api:report",
    "load_report": "medprobe.api:load_report",
    "compare": "medprobe.api:compare",
    "demo": "medprobe.api:demo",
    # result types
    "Report": "medprobe.analysis.reporting:Report",
    "ModelResult": "medprobe.analysis.reporting:ModelResult",
    "LayerRow": "medprobe.analysis.reporting:LayerRow",
    "FHSProfile": "medprobe.analysis.fhs:FHSProfile",
    "ModuleFHS": "medprobe.analysis.fhs:ModuleFHS",
    "Verdict": "medprobe.analysis.diagnosis:Verdict",
    "ProbeResults": "medprobe.analysis.results:ProbeResults",
    "LayerProbeResult": "medprobe.analysis.results:LayerProbeResult",
    "ModelCard": "medprobe.cards:ModelCard",
    "LayerMap": "medprobe.layermap:LayerMap",
    "LoadedModel": "medprobe.adapter:LoadedModel",
    "Dataset": "medprobe.datasets.base:Dataset",
    "Run": "medprobe.features.store:Run",
    "RunInfo": "medprobe.api:RunInfo",
    "PluginList": "medprobe.api:PluginList",
    "DatasetLoader": "medprobe.api:DatasetLoader",
    "MedprobeError": "medprobe.registry:MedprobeError",
}

#: task API functions: the same functions the CLI commands of the same name call
_API.update({
    "classify": "medprobe.tasks.classify:classify",
    "train": "medprobe.tasks.train:train",
    "zeroshot": "medprobe.tasks.zeroshot:zeroshot",
    "finetune": "medprobe.tasks.finetune:finetune",
    "load_experiment": "medprobe.grid:load_experiment",
    "run_grid": "medprobe.grid:run_grid",
    "grid_status": "medprobe.grid:grid_status",
    "grid_report": "medprobe.grid:grid_report",
})

__all__ = ["__version__", "hookimpl", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'medprobe' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value  # cached: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
