"""medprobe: find where medical multimodal LLMs lose classification signal.

The Python API mirrors the CLI, one function per command (``docs/api.md``)::

    import medprobe as mp
    mp.list_models(kind="mllm")
    model = mp.load("lingshu-7b", tiny=True)
    run = mp.extract(model, mp.dataset("synthetic:lesions"), out="runs/")
    report = mp.report([run])                # a Report: .fhs(), .diagnosis(), .plot_layers(), .to_frame()

``import medprobe`` is light: it imports no torch. Every public name is loaded on first use.

Names that are also submodules (``extract``, ``classify``, ``train``, ``zeroshot``) always mean the API
function here, even after the submodule is imported: reach the module itself with
``from medprobe.extract import ...`` or ``importlib.import_module("medprobe.extract")``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
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
    "extract": "medprobe.extract:extract",
    "list_runs": "medprobe.api:list_runs",
    "open_run": "medprobe.api:open_run",
    "run_info": "medprobe.api:run_info",
    "verify_run": "medprobe.api:verify_run",
    "remove_run": "medprobe.api:remove_run",
    # analysis
    "probe": "medprobe.pipeline:probe_run",
    "report": "medprobe.api:report",
    "load_report": "medprobe.api:load_report",
    "compare": "medprobe.api:compare",
    "demo": "medprobe.api:demo",
    # result types
    "Report": "medprobe.reporting:Report",
    "ModelResult": "medprobe.reporting:ModelResult",
    "LayerRow": "medprobe.reporting:LayerRow",
    "FHSProfile": "medprobe.analysis.fhs:FHSProfile",
    "ModuleFHS": "medprobe.analysis.fhs:ModuleFHS",
    "Verdict": "medprobe.analysis.diagnosis:Verdict",
    "ProbeResults": "medprobe.analysis.results:ProbeResults",
    "LayerProbeResult": "medprobe.analysis.results:LayerProbeResult",
    "ModelCard": "medprobe.cards:ModelCard",
    "LayerMap": "medprobe.layermap:LayerMap",
    "LoadedModel": "medprobe.adapter:LoadedModel",
    "Dataset": "medprobe.datasets.base:Dataset",
    "Run": "medprobe.store:Run",
    "RunInfo": "medprobe.api:RunInfo",
    "PluginList": "medprobe.api:PluginList",
    "DatasetLoader": "medprobe.api:DatasetLoader",
    "MedprobeError": "medprobe.registry:MedprobeError",
}

#: API functions of optional modules (listed in __all__ only when the module is installed):
#: the same functions the CLI commands of the same name call
_OPTIONAL: dict[str, str] = {
    "classify": "medprobe.classify:classify",
    "train": "medprobe.train:train",
    "zeroshot": "medprobe.zeroshot:zeroshot",
    "finetune": "medprobe.lora:finetune",
    "convert_llava_original": "medprobe.convert:convert_llava_original",
    "llava_hf_to_original": "medprobe.convert:llava_hf_to_original",
    "load_experiment": "medprobe.grid:load_experiment",
    "run_grid": "medprobe.grid:run_grid",
    "grid_status": "medprobe.grid:grid_status",
    "grid_report": "medprobe.grid:grid_report",
}
_API.update(
    {name: target for name, target in _OPTIONAL.items() if importlib.util.find_spec(target.partition(":")[0]) is not None}
)

#: older names, still resolved (not in __all__)
_COMPAT: dict[str, str] = {
    "load_model": "medprobe.zoo:load_model",
    "resolve_layers": "medprobe.zoo:resolve_layers",
}

__all__ = ["__version__", "hookimpl", *_API]


def __getattr__(name: str) -> Any:
    target = _API.get(name) or _COMPAT.get(name)
    if target is None:
        if name in _OPTIONAL:
            raise AttributeError(f"medprobe.{name} needs module {_OPTIONAL[name].partition(':')[0]}, "
                                 "which this installation lacks")
        raise AttributeError(f"module 'medprobe' has no attribute {name!r}")
    module_name, _, attr = target.partition(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value  # cached: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps API functions whose names are also submodules (``extract`` ...) from being replaced
    by the submodule when it is imported (the import system sets ``medprobe.<child>``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _API and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
