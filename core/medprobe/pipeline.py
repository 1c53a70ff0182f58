"""The analysis pipeline over run directories: probe a run, build a report, compare models, demo.

Every step reads and writes run directories only, so runs made in different environments (family
plugins pinning different transformers versions) compare side by side::

    from medprobe import pipeline
    results = pipeline.probe_run("runs/lingshu-7b__lesions__3f2a", probe="linear")   # {"linear": ProbeResults}
    report = pipeline.report_runs(["runs/lingshu-7b__…", "runs/resnet50__…"], out="report/")
    report = pipeline.compare(["lingshu-7b", "resnet50"], "synthetic:lesions", out="cmp/", tiny=True)

Probe results are saved inside the run: ``RUN/probes/<probe>-seed<S>/`` (``results.json`` and
``weights.safetensors``), and reused when present.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from .registry import MedprobeError
from .store import Run

PROBES = ("linear", "mlp")
#: the demo: medical MLLMs of three families beside two baselines, all tiny / random, offline
DEMO_MODELS = ("lingshu-7b", "medgemma-4b", "llava-med-v1.5", "resnet50", "vit-small-patch16-224")
DEMO_DATASET = "synthetic:lesions?n=240&size=96"


def parse_probes(probe: str | Sequence[str]) -> list[str]:
    """``"linear"`` / ``"mlp"`` / ``"all"`` / ``"linear,mlp"`` -> probe names (plugins may add more)."""
    names = [p.strip() for p in (probe.split(",") if isinstance(probe, str) else probe) if p.strip()]
    out: list[str] = []
    for name in names:
        out.extend(PROBES if name == "all" else [name])
    if not out:
        raise MedprobeError("no probe named; use linear, mlp or all")
    return list(dict.fromkeys(out))


def _open(run: Run | str | Path) -> Run:
    return run if isinstance(run, Run) else Run.open(run)


def probe_dir(run: Run, probe: str, seed: int) -> Path:
    return run.path / "probes" / f"{probe}-seed{seed}"


def probe_run(
    run: Run | str | Path,
    probe: str | Sequence[str] = "linear",
    *,
    seed: int = 0,
    controls: bool = True,
    force: bool = False,
    **hyper: Any,
) -> dict[str, Any]:
    """Probe every captured (layer, readout) of ``run`` with each named probe, all layers batched.

    Returns probe name -> :class:`medprobe.analysis.results.ProbeResults`; results already saved
    for the same probe and seed are loaded instead of retrained unless ``force``.
    """
    from .analysis.probes import probe_layers
    from .analysis.results import ProbeError, ProbeResults

    run = _open(run)
    out: dict[str, Any] = {}
    for name in parse_probes(probe):
        directory = probe_dir(run, name, seed)
        if not force and (directory / "results.json").is_file():
            try:
                out[name] = ProbeResults.load(directory, weights=False)
                continue
            except ProbeError:
                pass  # unreadable: retrain and overwrite
        features = {f"{lid}/{ro}": x for lid, ro, x in run.iter_features()}
        results = probe_layers(features, run.labels, run.splits, probe=name, seed=seed, controls=controls,
                               n_classes=len(run.classes), **hyper)
        results.save(directory)
        out[name] = results
    return out


def model_input(run: Run | str | Path, probes: Sequence[str] = ("linear",), *, seed: int = 0, kind: str | None = None) -> Any:
    """The report input (:class:`medprobe.analysis.report.ModelInput`) of one run, probing if needed."""
    from .analysis.report import ModelInput

    run = _open(run)
    card = run.manifest["model"]["card"]
    results = probe_run(run, list(probes), seed=seed)
    return ModelInput.from_probe_results(
        model=card["id"],
        kind=kind or card["kind"],
        layers=run.layers,
        results=results,
        title=card.get("title") or card["id"],
        category=card.get("category"),
        synthetic=bool(run.manifest.get("synthetic")),
        synthetic_reasons=list(run.manifest.get("synthetic_reasons", [])),
        p_final=None,
        p_final_n=None,
        manifest={k: v for k, v in run.manifest.items() if k not in ("features", "shards")},
    )


def report_runs(
    runs: Sequence[Run | str | Path],
    out: str | Path | None = None,
    *,
    baseline: Run | str | Path | None = None,
    probes: str | Sequence[str] = "linear",
    seed: int = 0,
    formats: Sequence[str] = ("json", "csv", "md", "html"),
    title: str = "medprobe report",
) -> dict[str, Any]:
    """Build the side-by-side report of ``runs`` (plus an explicit ``baseline`` run, treated as a
    baseline row) and, with ``out``, write report.json / .csv / .md / .html there."""
    from .analysis.exporters import write_report
    from .analysis.report import build_report

    names = parse_probes(probes)
    inputs = [model_input(r, names, seed=seed) for r in runs]
    if baseline is not None:
        inputs.append(model_input(baseline, names, seed=seed, kind="baseline"))
    datasets = sorted({m.manifest["dataset"]["spec"] for m in inputs})
    if len({m.manifest["dataset"]["fingerprint"] for m in inputs}) > 1:
        raise MedprobeError(
            "runs use different datasets or splits and cannot share one report: " + ", ".join(datasets)
        )
    report = build_report(
        inputs,
        title=title,
        extra={"command": " ".join(shlex.quote(a) for a in sys.argv), "datasets": datasets,
               "baseline": str(baseline) if baseline is not None else None},
    )
    if out is not None:
        write_report(report, out, formats)
    return report


def compare(
    models: Sequence[str],
    dataset: str,
    out: str | Path,
    *,
    tiny: bool = False,
    probes: str | Sequence[str] = "linear",
    layers: str | None = None,
    readouts: str | Sequence[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
    progress: bool | None = None,
    load_options: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Extract every model on ``dataset`` (runs under ``out/runs``), probe, score and report into
    ``out``. Returns the report dict."""
    from .extract import extract

    if not models:
        raise MedprobeError("compare needs at least one model")
    out = Path(out)
    runs = []
    for ref in models:
        runs.append(
            extract(ref, dataset, out / "runs", layers=layers, readouts=readouts, batch_size=batch_size, device=device,
                    dtype=dtype, limit=limit, tiny=tiny, seed=seed, progress=progress, **dict(load_options or {}))
        )
    return report_runs(runs, out, probes=probes, seed=seed, title=f"medprobe comparison on {dataset}")


def demo(out: str | Path, *, probes: str | Sequence[str] = "linear", progress: bool | None = None) -> dict[str, Any]:
    """The offline demo: tiny random models of three MLLM families and two baselines on the
    embedded synthetic dataset. Every output is marked synthetic: it checks the pipeline only."""
    return compare(list(DEMO_MODELS), DEMO_DATASET, out, tiny=True, probes=probes, batch_size=16, progress=progress)
