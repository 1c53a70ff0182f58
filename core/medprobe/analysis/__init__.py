"""Analysis: layer-wise probes, Feature Health Score, failure-mode diagnosis and the report.

Importing this package is light (no torch, no numpy): names are loaded on first use.

=====================  ==========================================================================
module                 concept
=====================  ==========================================================================
``metrics``            accuracy, balanced accuracy, macro-F1, AUROC, chance, bootstrap / Wilson CI
``controls``           permutation null and Hewitt–Liang control task, p-value, selectivity
``results``            ``LayerProbeResult`` / ``ProbeResults`` (save / load, outcomes, safetensors weights)
``protocol``           ``ProbeSettings``, cv / split protocol: stratified grouped folds, inner split, plans
``probes``             ``probe_layers``: chunked, batched-over-layers probing driver
``lbfgs``              batched L-BFGS (one history per problem)
``linear`` / ``mlp``   the two built-in probes (torch)
``reference``          per-layer reference implementations (scikit-learn / per-layer AdamW loop)
``fhs``                the paper's Feature Health Score and the FHS_V -> FHS_C -> FHS_L -> P_final profile
``inference``          paired statistics on per-sample outcomes (bootstrap over samples and seeds, max-t, McNemar, Holm)
``diagnosis``          the failure modes decided by paired tests, minimum effect sizes and evidence
``simulation``         simulated per-sample outcomes with known truth (calibration of the diagnosis)
``report``             report inputs (``ModelInput``), ``build_report``, ``load_report``
``figures``            matplotlib (Agg) figures as PNG bytes
``exporters``          ``report.json`` / ``report.csv`` / ``report.md`` / ``report.html`` writers
=====================  ==========================================================================

See ``docs/analysis.md`` and ``docs/report-schema.md``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "probe_layers": "probes",
    "get_probe": "probes",
    "ProbeResults": "results",
    "ProbeSettings": "protocol",
    "LayerProbeResult": "results",
    "ProbeError": "results",
    "module_fhs": "fhs",
    "fhs_profile": "fhs",
    "SCORE_VERSION": "fhs",
    "diagnose": "diagnosis",
    "Thresholds": "diagnosis",
    "ModelInput": "report",
    "LayerInput": "report",
    "build_report": "report",
    "load_report": "report",
    "write_report": "exporters",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'medprobe.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
