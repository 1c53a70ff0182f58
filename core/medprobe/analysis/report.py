"""The side-by-side report: inputs (:class:`ModelInput`), :func:`build_report` and :func:`load_report`.

A report is built from probe results only -- never from live models -- so runs made in
different environments compare side by side. One :class:`ModelInput` per model (MLLM or
baseline) lists its probed layers with, per layer and readout, the probe results by probe name.
:func:`build_report` turns them into the versioned ``report.json`` dict documented in
``docs/report-schema.md``: per model the per-layer rows, the FHS profile and the failure-mode
diagnosis for every probe, the synthetic flags and the run manifests. The writers live in
:mod:`.exporters`, the figures in :mod:`.figures`. No torch here.

The input per model, as a dict (``ModelInput.from_dict``)::

    {"model": "lingshu-7b", "title": "Lingshu-7B", "kind": "mllm", "category": "medical",
     "synthetic": True, "synthetic_reasons": ["tiny random model", "synthetic dataset"],
     "layers": [{"id": "vision.00", "stage": "vision", "depth": 0.0, "used": True,
                 "feeds_connector": False, "readout": "image-mean",
                 "result": <LayerProbeResult or its dict>}, ...],     # or "results": {probe: ...}
     "p_final": 0.52, "p_final_n": 200, "manifest": {...},
     # per-sample outcomes (results format medprobe.probe/2; what the paired verdicts read):
     "outcomes": {probe: {"<layer id>/<readout>": (S, N) 0/1}},   # or per layer "outcomes": {probe: (S, N)}
     "sample_index": {probe: [N positions in the run's samples]},
     "p_final_correct": [N_run 0/1: the answer of every sample of the run, in run order],
     "p_final_method": "generate" | "score" | "zeroshot"}

Per-sample outcomes come from :class:`ProbeResults` (``sample_index``, ``outcomes(key)``) when
the results have them; the answers' correctness from :func:`answers_correctness`. Every model
x probe with outcomes gets one :class:`medprobe.analysis.inference.PairedBootstrap` (B =
``n_boot`` draws, seeded), shared by its FHS intervals and its verdicts.
"""

from __future__ import annotations

import datetime as _dt
import json

import numpy as np
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..layermap import MODULE_OF_STAGE
from . import diagnosis as _diagnosis
from . import fhs as _fhs
from . import inference as _inference
from . import twins as _twins
from .metrics import wilson_ci
from .results import LayerProbeResult, ProbeError, ProbeResults, _clean

REPORT_SCHEMA = "medprobe.report"
#: 2: verdicts decided by paired tests (diagnosis-2) with effect / ci95 / p_value / statistic /
#: multiplicity / n, mode ``llm_entry``, FHS intervals, ``p_final_method``; version 1 is still read
REPORT_SCHEMA_VERSION = 2
READS_SCHEMA_VERSIONS = (1, 2)
REPORT_FILE = "report.json"
SYNTHETIC_BANNER = "SYNTHETIC — pipeline check only — not medical findings"
KINDS = ("mllm", "baseline")
READOUT_ORDER = {"image-mean": 0, "cls": 1, "last-token": 2, "text-mean": 3}


class ReportError(ProbeError):
    """Report inputs are inconsistent or a report file cannot be read; names the model / file."""


@dataclass
class LayerInput:
    """One probed (layer, readout) of a model with its results by probe name."""

    id: str
    stage: str
    depth: float
    readout: str = "image-mean"
    used: bool = True
    feeds_connector: bool = False
    width: int | None = None
    results: dict[str, LayerProbeResult] = field(default_factory=dict)

    @property
    def module(self) -> str:
        return MODULE_OF_STAGE[self.stage]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stage": self.stage,
            "module": self.module,
            "depth": self.depth,
            "readout": self.readout,
            "used": self.used,
            "feeds_connector": self.feeds_connector,
            "width": self.width,
            "results": {p: r.to_dict() for p, r in self.results.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], model: str = "?") -> "LayerInput":
        where = f"model '{model}', layer '{d.get('id', '?')}'"
        stage = d.get("stage")
        if stage not in MODULE_OF_STAGE:
            raise ReportError(f"{where}: stage {stage!r} must be one of {sorted(MODULE_OF_STAGE)}")
        raw: dict[str, Any] = dict(d.get("results") or {})
        if d.get("result") is not None:
            single = d["result"]
            name = single.probe if isinstance(single, LayerProbeResult) else single.get("probe", "linear")
            raw[name] = single
        results = {}
        for probe, r in raw.items():
            try:
                results[probe] = r if isinstance(r, LayerProbeResult) else LayerProbeResult.from_dict(r)
            except ProbeError as exc:
                raise ReportError(f"{where}: {exc}") from None
        depth = float(d.get("depth", 0.0))
        if not 0.0 <= depth <= 1.0:
            raise ReportError(f"{where}: depth {depth} must lie in [0, 1]")
        return cls(
            id=str(d["id"]),
            stage=stage,
            depth=depth,
            readout=str(d.get("readout", "image-mean")),
            used=bool(d.get("used", True)),
            feeds_connector=bool(d.get("feeds_connector", False)),
            width=d.get("width"),
            results=results,
        )


@dataclass
class ModelInput:
    """Everything the report needs about one model (see the module docstring)."""

    model: str
    kind: str
    title: str = ""
    category: str | None = None
    synthetic: bool = False
    synthetic_reasons: list[str] = field(default_factory=list)
    layers: list[LayerInput] = field(default_factory=list)
    p_final: float | None = None
    p_final_n: int | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    #: where ``p_final`` comes from: ``None`` (an MLLM's own answers) or ``"zeroshot"`` (a
    #: contrastive baseline's zero-shot accuracy, ``medprobe zeroshot``)
    p_final_source: str | None = None
    #: how P_final was obtained: ``generate`` / ``score`` (the classify run's mode) / ``zeroshot``
    p_final_method: str | None = None
    #: (N_run,) bool: correctness of the answer of every sample of the run, in run order
    p_final_correct: Any = None
    #: probe -> {feature key -> correct (S, N) bool}; probe -> (N,) int64 positions of those samples
    outcomes: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    sample_index: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ReportError(f"model '{self.model}': kind {self.kind!r} must be one of {KINDS}")
        if self.p_final is not None and not 0.0 <= float(self.p_final) <= 1.0:
            raise ReportError(f"model '{self.model}': p_final {self.p_final} must lie in [0, 1]")
        if self.synthetic_reasons and not self.synthetic:
            self.synthetic = True
        self.title = self.title or self.model
        if self.p_final_method is None and self.p_final_source == "zeroshot":
            self.p_final_method = "zeroshot"
        if self.p_final_method is not None and self.p_final_method not in _diagnosis.P_FINAL_METHODS:
            raise ReportError(
                f"model '{self.model}': p_final_method {self.p_final_method!r} must be one of {_diagnosis.P_FINAL_METHODS}"
            )
        self.outcomes = {
            p: {k: _inference.as_outcomes(v, f"{self.model}: {p} {k}") for k, v in oc.items()}
            for p, oc in self.outcomes.items()
        }
        self.sample_index = {p: np.asarray(v, dtype=np.int64) for p, v in self.sample_index.items()}
        for p, oc in self.outcomes.items():
            idx = self.sample_index.get(p)
            if idx is None:
                raise ReportError(f"model '{self.model}': probe '{p}' has outcomes but no sample_index")
            bad = [k for k, v in oc.items() if v.shape[1] != idx.shape[0]]
            if bad:
                raise ReportError(
                    f"model '{self.model}': probe '{p}' outcomes of {bad[0]} cover {oc[bad[0]].shape[1]} samples, "
                    f"sample_index has {idx.shape[0]}: the results directory is inconsistent, re-run the probe"
                )
        if self.p_final_correct is not None:
            self.p_final_correct = np.asarray(self.p_final_correct).astype(bool)

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "model": self.model,
                "title": self.title,
                "kind": self.kind,
                "category": self.category,
                "synthetic": self.synthetic,
                "synthetic_reasons": list(self.synthetic_reasons),
                "layers": [layer.to_dict() for layer in self.layers],
                "p_final": self.p_final,
                "p_final_n": self.p_final_n,
                "p_final_source": self.p_final_source,
                "p_final_method": self.p_final_method,
                "manifest": self.manifest,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelInput":
        model = str(d.get("model") or d.get("id") or "")
        if not model:
            raise ReportError("a model entry has no 'model' id")
        outcomes: dict[str, dict[str, Any]] = {p: dict(oc) for p, oc in (d.get("outcomes") or {}).items()}
        for x in d.get("layers", []):
            for p, arr in (x.get("outcomes") or {}).items():
                outcomes.setdefault(p, {})[f"{x['id']}/{x.get('readout', 'image-mean')}"] = arr
        return cls(
            model=model,
            kind=str(d.get("kind", "")),
            title=str(d.get("title") or model),
            category=d.get("category"),
            synthetic=bool(d.get("synthetic", False)),
            synthetic_reasons=list(d.get("synthetic_reasons") or []),
            layers=[LayerInput.from_dict(x, model) for x in d.get("layers", [])],
            p_final=d.get("p_final"),
            p_final_n=d.get("p_final_n"),
            manifest=dict(d.get("manifest") or {}),
            p_final_source=d.get("p_final_source"),
            p_final_method=d.get("p_final_method"),
            p_final_correct=d.get("p_final_correct"),
            outcomes=outcomes,
            sample_index=dict(d.get("sample_index") or {}),
        )

    @classmethod
    def from_probe_results(
        cls,
        *,
        model: str,
        kind: str,
        layers: Iterable[Any],
        results: Mapping[str, ProbeResults] | Iterable[ProbeResults],
        **meta: Any,
    ) -> "ModelInput":
        """Join layer specs (``LayerSpec`` objects or their dicts, e.g. a run manifest's
        ``layers``) with probe results keyed ``"<layer id>/<readout>"``. ``results``: probe name ->
        :class:`ProbeResults` (or an iterable of them). ``meta``: the other :class:`ModelInput`
        fields (title, category, synthetic, synthetic_reasons, p_final, p_final_n, manifest)."""
        if not isinstance(results, Mapping):
            results = {r.probe: r for r in results}
        specs = {}
        for spec in layers:
            d = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
            specs[d["id"]] = d
        entries: dict[tuple[str, str], LayerInput] = {}
        for probe, res in results.items():
            for key, layer_result in res.layers.items():
                layer_id, _, readout = key.partition("/")
                if layer_id not in specs:
                    raise ReportError(
                        f"model '{model}': probe '{probe}' has a result for '{key}' but no layer '{layer_id}'"
                    )
                d = specs[layer_id]
                entry = entries.get((layer_id, readout or "image-mean"))
                if entry is None:
                    entry = entries[(layer_id, readout or "image-mean")] = LayerInput(
                        id=layer_id,
                        stage=d["stage"],
                        depth=float(d.get("depth", 0.0)),
                        readout=readout or "image-mean",
                        used=bool(d.get("used", True)),
                        feeds_connector=bool(d.get("feeds_connector", False)),
                        width=d.get("width") or layer_result.width,
                    )
                entry.results[probe] = layer_result
        order = {lid: i for i, lid in enumerate(specs)}
        ordered = sorted(entries.values(), key=lambda e: (order[e.id], READOUT_ORDER.get(e.readout, 9)))
        outcomes: dict[str, dict[str, Any]] = {}
        sample_index: dict[str, Any] = {}
        for probe, res in results.items():
            try:
                idx = res.sample_index
            except ProbeError:  # results written before medprobe.probe/2: verdicts not assessed, with the reason
                continue
            sample_index[probe] = idx
            outcomes[probe] = {key: res.outcomes(key)[0] for key in res.layers}
        return cls(model=model, kind=kind, layers=ordered, outcomes=outcomes, sample_index=sample_index, **meta)


def answers_correctness(answers: Iterable[Mapping[str, Any]], sample_ids: Sequence[str], *, source: str = "answers") -> np.ndarray:
    """(N_run,) bool: the ``correct`` flag of the answer to every sample of a run, in the run's
    sample order (``sample_ids``), from answer rows with ``id`` and ``correct`` (a classify run's
    ``answers.jsonl``). A sample without an answer is a :class:`ReportError` naming it."""
    by_id = {str(a["id"]): bool(a.get("correct")) for a in answers}
    missing = [i for i in sample_ids if str(i) not in by_id]
    if missing:
        raise ReportError(
            f"{source}: no answer for {len(missing)} of the run's {len(sample_ids)} samples (first: '{missing[0]}'); "
            "run classify on the same dataset as the extract run"
        )
    return np.array([by_id[str(i)] for i in sample_ids], dtype=bool)


def _aligned_p_final(m: ModelInput, probe: str) -> np.ndarray | None:
    """The answers' correctness on the probe's scored samples (N,), or ``None``."""
    if m.p_final_correct is None or probe not in m.sample_index:
        return None
    idx = m.sample_index[probe]
    if idx.size and (idx.min() < 0 or idx.max() >= m.p_final_correct.shape[0]):
        raise ReportError(
            f"model '{m.model}': probe '{probe}' sample_index reaches {int(idx.max())}, but the answers cover "
            f"{m.p_final_correct.shape[0]} samples: the classify run is not on this run's dataset"
        )
    return m.p_final_correct[idx]


def _baseline_for(
    ref: _diagnosis.BaselineRef | None, ref_input: ModelInput | None, probe: str, m: ModelInput
) -> _diagnosis.BaselineRef | None:
    """The reference baseline with its outcomes re-ordered onto ``m``'s samples, or without
    outcomes (and the reason) when the two were not scored on the same samples."""
    if ref is None:
        return None
    out = _diagnosis.BaselineRef(ref.model, ref.layer, ref.readout, ref.accuracy, ref.ci95)
    if ref_input is None or probe not in ref_input.outcomes or probe not in m.sample_index:
        return out
    mine, theirs = m.sample_index[probe], ref_input.sample_index[probe]
    if set(mine.tolist()) != set(theirs.tolist()):
        out.unpaired_reason = (
            f"baseline '{ref.model}' was scored on other samples than this model ({theirs.size} vs {mine.size}): not paired"
        )
        return out
    pos = {int(s): i for i, s in enumerate(theirs.tolist())}
    order = np.array([pos[int(s)] for s in mine.tolist()], dtype=np.int64)
    out.outcomes = {k: v[:, order] for k, v in ref_input.outcomes[probe].items()}
    return out


def _row(layer: LayerInput, probe: str, r: LayerProbeResult) -> dict[str, Any]:
    """One report row: model layer x readout x probe."""
    return {
        "id": layer.id,
        "stage": layer.stage,
        "module": layer.module,
        "depth": layer.depth,
        "used": layer.used,
        "feeds_connector": layer.feeds_connector,
        "readout": layer.readout,
        "width": layer.width if layer.width is not None else r.width,
        "probe": probe,
        "accuracy": r.metrics.get("accuracy"),
        "ci95": list(r.ci95),
        "chance": r.chance,
        "permutation_p": r.permutation_p,
        "control_accuracy": r.control_accuracy,
        "selectivity": r.selectivity,
        "balanced_accuracy": r.metrics.get("balanced_accuracy"),
        "macro_f1": r.metrics.get("macro_f1"),
        "auroc": r.metrics.get("auroc"),
        "permutation_null": r.permutation_null,
        "hyper": r.hyper,
        "seed": r.seed,
        "n_train": r.n_train,
        "n_val": r.n_val,
        "n_test": r.n_test,
        "n": r.n,
        "seed_accuracies": list(r.seed_accuracies),
        "seed_sd": r.seed_sd,
        "warnings": list(r.warnings),
        "control_note": r.control_note,
        "holdout": r.holdout,
    }


def _medprobe_version() -> str:
    try:
        from .. import __version__

        return __version__
    except Exception:  # pragma: no cover
        return "?"


def build_report(
    models: Sequence[ModelInput | Mapping[str, Any]],
    *,
    title: str = "medprobe report",
    primary_probe: str | None = None,
    lam: float = _fhs.DEFAULT_LAMBDA,
    thresholds: _diagnosis.Thresholds | None = None,
    created: str | None = None,
    extra: Mapping[str, Any] | None = None,
    trained: Sequence[Mapping[str, Any]] = (),
    n_boot: int = _inference.DEFAULT_N_BOOT,
    bootstrap_seed: int = 0,
) -> dict[str, Any]:
    """The ``report.json`` dict (schema ``medprobe.report`` version 2, see docs/report-schema.md).

    ``n_boot`` / ``bootstrap_seed``: the paired bootstrap behind FHS intervals and verdicts.

    ``primary_probe`` (default ``linear`` if present, else the first probe found) is the probe the
    summaries lead with; every probe gets its own rows, FHS and diagnosis. ``extra`` is stored
    under ``"extra"`` (e.g. the command line that made the report). ``trained``: trained
    classifiers (``medprobe train`` runs, as :meth:`medprobe.tasks.training.record.TrainRun.report_entry`
    gives them), stored under ``"trained"``, one entry each.
    """
    inputs = [m if isinstance(m, ModelInput) else ModelInput.from_dict(m) for m in models]
    if not inputs:
        raise ReportError("a report needs at least one model")
    ids = [m.model for m in inputs]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ReportError(f"model ids appear more than once: {dups}")
    probes = list(dict.fromkeys(p for m in inputs for layer in m.layers for p in layer.results))
    if not probes:
        raise ReportError("no model has probe results")
    primary = primary_probe or ("linear" if "linear" in probes else probes[0])
    if primary not in probes:
        raise ReportError(f"primary probe '{primary}' has no results; probes found: {probes}")
    th = thresholds or _diagnosis.Thresholds()

    rows_of: dict[str, list[dict[str, Any]]] = {}
    for m in inputs:
        layers = sorted(m.layers, key=lambda x: (x.depth, READOUT_ORDER.get(x.readout, 9)))
        rows_of[m.model] = [_row(layer, p, layer.results[p]) for p in probes for layer in layers if p in layer.results]

    baselines: dict[str, _diagnosis.BaselineRef | None] = {}
    for p in probes:
        baselines[p] = _diagnosis.best_baseline(
            {m.model: [r for r in rows_of[m.model] if r["probe"] == p] for m in inputs if m.kind == "baseline"}
        )

    by_id = {m.model: m for m in inputs}
    entries = []
    for m in inputs:
        rows = rows_of[m.model]
        p_final_ci = None
        if m.p_final is not None and m.p_final_n:
            p_final_ci = list(wilson_ci(round(m.p_final * m.p_final_n), m.p_final_n))
        fhs = {}
        diag: dict[str, list[dict[str, Any]]] = {}
        paired: dict[str, Any] = {}
        for p in probes:
            prow = [r for r in rows if r["probe"] == p]
            if not prow:
                continue
            oc = m.outcomes.get(p)
            pf = _aligned_p_final(m, p) if m.kind == "mllm" else None
            boot = None
            if oc:
                boot = _inference.PairedBootstrap(
                    {**oc, **({_diagnosis.P_FINAL_KEY: pf} if pf is not None else {})}, n_boot=n_boot, seed=bootstrap_seed
                )
                paired[p] = {
                    "n": boot.n,
                    "n_seeds": max(v.shape[0] for v in oc.values()),
                    "seed_variance": all(v.shape[0] >= 2 for v in oc.values()),
                    "p_final_paired": pf is not None,
                }
            else:
                paired[p] = None
            fhs[p] = _fhs.fhs_profile(
                prow,
                p_final=m.p_final if m.kind == "mllm" else None,
                p_final_n=m.p_final_n,
                lam=lam,
                bootstrap=boot,
                p_final_key=_diagnosis.P_FINAL_KEY if pf is not None else None,
            ).to_dict()
            if m.kind == "mllm":
                ref = baselines[p]
                verdicts = _diagnosis.diagnose(
                    prow,
                    outcomes=oc or None,
                    p_final=m.p_final,
                    p_final_ci=p_final_ci,
                    p_final_correct=pf,
                    p_final_method=m.p_final_method,
                    baseline=_baseline_for(ref, by_id.get(ref.model) if ref else None, p, m),
                    thresholds=th,
                    n_boot=n_boot,
                    seed=bootstrap_seed,
                )
                diag[p] = [v.to_dict() for v in verdicts]
        entries.append(
            {
                "id": m.model,
                "title": m.title or m.model,
                "kind": m.kind,
                "category": m.category,
                "synthetic": m.synthetic,
                "synthetic_reasons": list(m.synthetic_reasons),
                "p_final": m.p_final,
                "p_final_n": m.p_final_n,
                "p_final_ci95": p_final_ci,
                "p_final_source": m.p_final_source,
                "p_final_method": m.p_final_method,
                "paired_outcomes": paired,
                "layers": rows,
                "fhs": fhs,
                "diagnosis": diag,
                "manifest": m.manifest,
            }
        )
    _twins.decorate_entries(entries)  # condition, leakage, twin_of, random_floor (from the manifests)
    trained_entries = _trained_entries(trained)
    synthetic = any(m.synthetic for m in inputs) or any(t["synthetic"] for t in trained_entries)
    reasons = sorted(
        {r for m in inputs for r in m.synthetic_reasons} | {r for t in trained_entries for r in t["synthetic_reasons"]}
    )
    if synthetic and not reasons:
        reasons = ["flagged synthetic by the run"]
    report = {
        "schema": REPORT_SCHEMA,
        "schema_version": REPORT_SCHEMA_VERSION,
        "title": title,
        "created": created or _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "medprobe_version": _medprobe_version(),
        "synthetic": synthetic,
        "synthetic_reasons": reasons,
        "synthetic_models": list(
            dict.fromkeys(
                [m.model for m in inputs if m.synthetic] + [t["id"] for t in trained_entries if t["synthetic"]]
            )
        ),
        "banner": SYNTHETIC_BANNER if synthetic else None,
        "leakage_banner": _twins.leakage_banner(entries),
        "probes": probes,
        "primary_probe": primary,
        "fhs_settings": {
            "score_version": _fhs.SCORE_VERSION,
            "lambda": lam,
            "readout": _fhs.FHS_READOUT,
            "rules": list(_fhs.RULES),
        },
        "diagnosis_settings": {
            "version": _diagnosis.DIAGNOSIS_VERSION,
            "thresholds": th.to_dict(),
            "alpha": th.alpha,
            "n_boot": n_boot,
            "bootstrap_seed": bootstrap_seed,
            "decision": "present = effect >= its minimum (thresholds) and the paired test's p < alpha after the "
            "stated multiplicity rule; no per-sample outcomes -> not_assessed",
            "rules": th.rules(),
            "baseline": {p: (b.to_dict() if b else None) for p, b in baselines.items()},
            "baseline_note": (
                "visual_representation compares with the best baseline layer in this report"
                if any(baselines.values())
                else "no baseline in this report: visual_representation is not assessed"
            ),
        },
        "models": entries,
        "trained": trained_entries,
        "extra": dict(extra or {}),
    }
    return _clean(report)


def _trained_entries(trained: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Check the trained-classifier entries (``id``, ``recipe``, ``metrics`` with a ``test`` split)."""
    out = []
    for t in trained:
        where = f"trained run '{t.get('id', '?')}'"
        missing = [k for k in ("id", "recipe", "metrics") if k not in t]
        if missing:
            raise ReportError(f"{where}: missing fields {missing}")
        if "test" not in t["metrics"]:
            raise ReportError(f"{where}: no test metrics")
        entry = dict(t)
        entry["synthetic_reasons"] = list(entry.get("synthetic_reasons") or [])
        entry["synthetic"] = bool(entry.get("synthetic")) or bool(entry["synthetic_reasons"])
        out.append(entry)
    ids = [t["id"] for t in out]
    dups = sorted({i for i in ids if ids.count(i) > 1})
    if dups:
        raise ReportError(f"trained run ids appear more than once: {dups}")
    return out


def load_report(path: str | Path) -> dict[str, Any]:
    """Read ``report.json`` (or a directory holding one) and check its schema and version."""
    path = Path(path)
    if path.is_dir():
        path = path / REPORT_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReportError(f"no report at {path}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON: {exc}") from None
    if data.get("schema") != REPORT_SCHEMA:
        raise ReportError(f"{path}: schema {data.get('schema')!r} is not {REPORT_SCHEMA!r}")
    version = data.get("schema_version")
    if version not in READS_SCHEMA_VERSIONS:
        raise ReportError(
            f"{path}: schema_version {version!r}; this medprobe reads versions {list(READS_SCHEMA_VERSIONS)} "
            "(upgrade medprobe for a newer report)"
        )
    return data


def model_entry(report: Mapping[str, Any], model_id: str) -> dict[str, Any]:
    """The entry of ``model_id`` in a report dict (``KeyError`` listing the ids)."""
    for m in report["models"]:
        if m["id"] == model_id:
            return m
    raise KeyError(f"model '{model_id}' not in the report; models: {[m['id'] for m in report['models']]}")
