"""The analysis pipeline over run directories: probe a run, build a report, compare models, demo.

Every step reads and writes run directories only, so runs made in different environments (family
plugins pinning different transformers versions) compare side by side::

    from medprobe.tasks import pipeline
    results = pipeline.probe_run("runs/lingshu-7b__lesions__3f2a", probe="linear")   # {"linear": ProbeResults}
    report = pipeline.report_runs(["runs/lingshu-7b__…", "runs/resnet50__…"], out="report/")
    report = pipeline.compare(["lingshu-7b", "resnet50"], "synthetic:lesions", out="cmp/", tiny=True)  # LoadOptions fields

Probe results are saved inside the run: ``RUN/probes/<ProbeSettings.dir_name>/``, e.g.
``RUN/probes/linear-cv5-seeds0-1-2/`` (``results.json``, ``outcomes.safetensors`` and, under the
split protocol, ``weights.safetensors``), and reused when present for the same protocol, k,
seeds and recipe (:meth:`medprobe.analysis.protocol.ProbeSettings.matches`).

``P_final`` (the accuracy of the MLLM's own answers) comes from ``medprobe classify`` runs
(:mod:`medprobe.tasks.classify`): :func:`report_runs` accepts classify run directories among the runs
and pairs each with the extract run of the same model card, weights, LoRA adapter and dataset
fingerprint (:func:`pair_classify`); that model's ``p_final`` / ``p_final_n`` are the classify run's test-split
accuracy and test-sample count (unparsed answers count as wrong). An MLLM without a classify run
keeps ``p_final = None`` (its ``semantic_mapping`` diagnosis is then not assessed). :func:`compare`
(and so :func:`demo`) runs classify for every MLLM (``classify_mode="score"`` by default).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..registry import MedprobeError
from ..features.store import Run, ensure_writable

PROBES = ("linear", "mlp")
#: the demo: medical MLLMs of three families beside two baselines, all tiny / random, offline


def demo_models() -> list[str]:
    """The models of ``medprobe demo``: the cards the zoo marks with ``demo = N``, in that order."""
    from ..models.zoo import list_cards

    marked = sorted((c for c in list_cards() if c.demo is not None), key=lambda c: (c.demo, c.id))
    if not marked:
        raise MedprobeError("no card is marked for the demo (`demo = N` in a card); is the zoo plugin installed?")
    return [c.id for c in marked]
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


def probe_dir(run: Run, probe: str, settings: Any = None) -> Path:
    """``RUN/probes/<dir>`` of ``settings`` (a :class:`~medprobe.analysis.protocol.ProbeSettings`;
    an int is a base seed of the default settings; ``None``: the defaults)."""
    from ..analysis.protocol import ProbeSettings

    if not isinstance(settings, ProbeSettings):
        settings, _ = ProbeSettings.split_options({"seed": settings})
    return run.path / "probes" / settings.dir_name(probe)


def run_groups(run: Run) -> list[str]:
    """Group id per sample for the folds and the control task: the dataset's ``groups`` (patient
    / duplicate-cluster ids) when the manifest has them, else the sample ids (one group each)."""
    from ..datasets.groups import run_groups as recorded_groups

    groups = recorded_groups(run.manifest)  # checks the length against the sample ids
    return [str(g) for g in groups] if groups else list(run.sample_ids)


def probe_run(
    run: Run | str | Path,
    probe: str | Sequence[str] = "linear",
    *,
    settings: Any = None,
    force: bool = False,
    **options: Any,
) -> dict[str, Any]:
    """Probe every captured (layer, readout) of ``run`` with each named probe, all layers batched.

    ``settings``: a :class:`~medprobe.analysis.protocol.ProbeSettings` (default: cv, k 5, seeds
    0 1 2, 100 permutations); ``options`` override its fields by name (``seed=S``: base seed) or
    are probe hyper-parameters. Returns probe name -> :class:`medprobe.analysis.results.ProbeResults`;
    results already saved for the same protocol, k, seeds and recipe are loaded instead of
    retrained unless ``force``.
    """
    from ..analysis.probes import probe_layers
    from ..analysis.protocol import ProbeSettings
    from ..analysis.results import ProbeError, ProbeResults

    settings, hyper = ProbeSettings.split_options(options, settings)
    run = _open(run)
    out: dict[str, Any] = {}
    for name in parse_probes(probe):
        directory = probe_dir(run, name, settings)
        if not force and (directory / "results.json").is_file():
            try:
                saved = ProbeResults.load(directory, weights=False)
                if settings.matches(saved.protocol):
                    out[name] = saved
                    continue
            except ProbeError:
                pass  # unreadable: retrain and overwrite
        probes = run.path / "probes"
        ensure_writable(probes if probes.is_dir() else run.path, f"the {name} probe results",
                        f"copy the run to a writable folder (cp -r {run.path} DEST) and probe the copy")
        features = {f"{lid}/{ro}": x for lid, ro, x in run.iter_features()}
        # leakage groups (patient, else exact / near-duplicate cluster, else sample id) recorded at
        # extraction: folds and control-task labels keep each group together; identical for every
        # model probed on these samples
        groups = hyper.pop("groups", None) or run_groups(run)
        try:
            results = probe_layers(features, run.labels, run.splits, probe=name, settings=settings,
                                   n_classes=len(run.classes), groups=groups, class_names=run.classes, **hyper)
        except ProbeError as exc:
            raise ProbeError(f"{run.path}: {exc}") from None
        results.settings["input"] = run.integrity()  # verified, or unverified and why
        # what the groups stand for, saved with the results and printed by `medprobe probe`
        results.protocol["leakage"] = run.manifest.get("leakage")
        results.save(directory)
        out[name] = results
    return out


def model_input(
    run: Run | str | Path,
    probes: Sequence[str] = ("linear",),
    *,
    seed: int = 0,
    kind: str | None = None,
    classify: Any = None,
) -> Any:
    """The report input (:class:`medprobe.analysis.report.ModelInput`) of one run, probing if needed.

    ``classify``: the paired :class:`medprobe.tasks.classify.ClassifyRun` of an MLLM run; it sets
    ``p_final`` (test accuracy of the answers) and ``p_final_n``, ``p_final_method`` (its mode) and
    ``p_final_correct`` (every sample's answer correctness, for the paired ``semantic_mapping``
    test), and is summarised in the manifest under ``"classify"``.
    """
    from ..analysis.report import ModelInput

    run = _open(run)
    card = run.manifest["model"]["card"]
    results = probe_run(run, list(probes), seed=seed)
    manifest = {k: v for k, v in run.manifest.items() if k not in ("features", "shards")}
    reasons = list(run.manifest.get("synthetic_reasons", []))
    p_final = p_final_n = p_final_correct = p_final_method = None
    if classify is not None:
        from ..analysis.report import answers_correctness

        p_final = classify.p_final
        p_final_n = classify.p_final_n if p_final is not None else None
        p_final_method = classify.mode
        p_final_correct = answers_correctness(classify.answers(), run.sample_ids, source=f"classify run {classify.path}")
        manifest["classify"] = classify_summary(classify, run)
        reasons.extend(r for r in classify.record.get("synthetic_reasons", []) if r not in reasons)
    from ..analysis.twins import row_id

    return ModelInput.from_probe_results(
        model=row_id(card["id"], run.manifest.get("condition")),
        kind=kind or card["kind"],
        layers=run.layers,
        results=results,
        title=card.get("title") or card["id"],
        category=card.get("category"),
        synthetic=bool(run.manifest.get("synthetic")) or bool(reasons),
        synthetic_reasons=reasons,
        p_final=p_final,
        p_final_n=p_final_n,
        p_final_correct=p_final_correct,
        p_final_method=p_final_method,
        manifest=manifest,
    )


def classify_summary(classify: Any, run: Run | None = None) -> dict[str, Any]:
    """What a report keeps about the classify run behind ``p_final``."""
    record = classify.record
    test = record["accuracy"]["test"]
    out = {
        "path": str(classify.path),
        "run_key": classify.key,
        "mode": classify.mode,
        "question": record.get("question"),
        "p_final": classify.p_final,
        "p_final_n": classify.p_final_n,
        "unparsed": record.get("unparsed"),
        "methods": test.get("methods"),
        "accuracy": {split: v.get("accuracy") for split, v in record["accuracy"].items()},
    }
    if run is not None:
        out["same_prompt"] = record.get("question") == run.manifest.get("prompt")
        out["same_samples"] = record["dataset"]["sample_ids"] == run.manifest["dataset"]["sample_ids"]
    return out


def split_runs(runs: Sequence[Any]) -> tuple[list[Run], list[Any]]:
    """Feature-store runs and classify runs (:class:`medprobe.tasks.classify.ClassifyRun`) among
    ``runs`` (objects or directories), each list in the given order."""
    from .classify import ClassifyRun, is_classify_run

    features: list[Run] = []
    answers: list[Any] = []
    for r in runs:
        if isinstance(r, ClassifyRun):
            answers.append(r)
        elif isinstance(r, Run):
            features.append(r)
        elif is_classify_run(r):
            answers.append(ClassifyRun.open(r))
        else:
            features.append(Run.open(r))
    return features, answers


def pair_classify(run: Run, candidates: Sequence[Any]) -> Any:
    """The classify run among ``candidates`` of the same model card, weights, LoRA adapter (none
    on both sides, or the same adapter file) and dataset fingerprint as ``run`` (``None`` when
    there is none). Several matches are ranked by: same question as the run's prompt, same
    samples, generate mode (answers as the paper scores them); a tie at the top raises
    :class:`MedprobeError` naming the runs."""
    card = run.manifest["model"]["card"]["id"]
    weights = run.manifest["model"]["weights"]
    lora = _lora_id(run.manifest["model"].get("adapter_lora"))
    fingerprint = run.manifest["dataset"]["fingerprint"]
    matches = [
        c for c in candidates
        if c.model_id == card and c.weights == weights and c.fingerprint == fingerprint
        and _lora_id(c.adapter_lora) == lora
    ]
    if len(matches) <= 1:
        return matches[0] if matches else None

    def rank(c: Any) -> tuple[bool, bool, bool]:
        return (
            c.record.get("question") == run.manifest.get("prompt"),
            c.record["dataset"]["sample_ids"] == run.manifest["dataset"]["sample_ids"],
            c.mode == "generate",
        )

    best = max(rank(c) for c in matches)
    top = [c for c in matches if rank(c) == best]
    if len(top) > 1:
        raise MedprobeError(
            f"several classify runs match model '{card}' ({weights}) on the same data: "
            + ", ".join(str(c.path) for c in top) + "; pass only one of them"
        )
    return top[0]


def _lora_id(identity: Mapping[str, Any] | None) -> tuple[Any, Any] | None:
    """What makes two LoRA adapter identities the same adapter: its weights file and merging."""
    return None if not identity else (identity.get("sha256"), bool(identity.get("merged")))


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
    baseline row) and, with ``out``, write report.json / .csv / .md / .html there.

    ``runs`` may include classify run directories (``medprobe classify``); each is paired with the
    extract run of its model (:func:`pair_classify`) to set that model's ``p_final``. A classify
    run that pairs with no extract run raises :class:`MedprobeError`.

    ``runs`` may also include ``medprobe train`` and ``medprobe zeroshot`` run directories
    (:func:`_trained_rows`): each trained run is an entry of the report's ``trained`` list (and,
    made with ``--probe-layers``, a baseline row ``<card>+<recipe>`` with its layer probes); a
    zero-shot run sets ``p_final`` of the baseline row of its model (:func:`_attach_zeroshot`)."""
    from ..analysis.exporters import write_report
    from ..analysis.report import build_report

    names = parse_probes(probes)
    if out is not None:  # before any probe is trained
        ensure_writable(out, "the report", "choose a writable --out")
    runs, trained_inputs, trained, zeroshots = _trained_rows(runs, names, seed=seed)
    feature_runs, classify_runs = split_runs(runs)
    if not feature_runs and not trained_inputs:
        raise MedprobeError(
            "a report needs at least one run with layer probes: an extract run or a train run made with --probe-layers "
            "(classify, zeroshot and other train runs are added to them)"
        )
    paired = {}
    for r in feature_runs:
        if r.manifest["model"]["card"].get("kind") == "mllm":
            match = pair_classify(r, classify_runs)
            if match is not None:
                paired[id(r)] = match
    used = {id(c) for c in paired.values()}
    unpaired = [c for c in classify_runs if id(c) not in used]
    if unpaired:
        c = unpaired[0]
        raise MedprobeError(
            f"classify run {c.path} (model '{c.model_id}', weights {c.weights}"
            + (f", adapter {c.adapter_lora.get('path')}" if c.adapter_lora else "")
            + ") pairs with no extract run of the same model, weights, adapter and dataset among the runs; "
            "add that extract run or leave the classify run out"
        )
    inputs = [model_input(r, names, seed=seed, classify=paired.get(id(r))) for r in feature_runs]
    if baseline is not None:
        inputs.append(model_input(baseline, names, seed=seed, kind="baseline"))
    inputs += trained_inputs
    _attach_zeroshot(inputs, zeroshots)
    datasets = sorted({m.manifest["dataset"]["spec"] for m in inputs} | {t["dataset"]["spec"] for t in trained})
    if len({m.manifest["dataset"]["fingerprint"] for m in inputs} | {t["dataset"]["fingerprint"] for t in trained}) > 1:
        raise MedprobeError(
            "runs use different datasets or splits and cannot share one report: " + ", ".join(datasets)
        )
    report = build_report(
        inputs,
        title=title,
        extra={"command": " ".join(shlex.quote(a) for a in sys.argv), "datasets": datasets,
               "baseline": str(baseline) if baseline is not None else None,
               "classify_runs": {c.model_id: str(c.path) for c in paired.values()},
               "trained_runs": {t["id"]: t["path"] for t in trained},
               "zeroshot_runs": {z.model_id: str(z.path) for z in zeroshots}},
        trained=trained,
    )
    if out is not None:
        write_report(report, out, formats)
    return report


def _trained_rows(runs: Sequence[Any], probes: Sequence[str], *, seed: int = 0) -> tuple[list[Any], list[Any], list[dict[str, Any]], list[Any]]:
    """Take ``medprobe train`` and ``medprobe zeroshot`` runs out of ``runs``.

    Returns ``(other runs, layer-probe model inputs, trained entries, zero-shot runs)``: per train
    run its report entry (:meth:`medprobe.tasks.training.record.TrainRun.report_entry`) and, when it
    holds a ``--probe-layers`` run, that run's :class:`~medprobe.analysis.report.ModelInput` as a
    baseline row named ``<card>+<recipe>`` (so it never collides with the untrained model's row).
    """
    from .training.record import TrainRun, is_train_dir
    from .zeroshot import ZeroShotRun, is_zeroshot_dir

    rest: list[Any] = []
    layer_inputs: list[Any] = []
    trained: list[dict[str, Any]] = []
    zeroshots: list[Any] = []
    for r in runs:
        if isinstance(r, ZeroShotRun) or (isinstance(r, (str, Path)) and is_zeroshot_dir(r)):
            zeroshots.append(r if isinstance(r, ZeroShotRun) else ZeroShotRun.open(r))
            continue
        if not (isinstance(r, TrainRun) or (isinstance(r, (str, Path)) and is_train_dir(r))):
            rest.append(r)
            continue
        tr = r if isinstance(r, TrainRun) else TrainRun.open(r)
        layers_model = None
        if tr.layers_run_path is not None:
            mi = model_input(tr.layers_run_path, probes, seed=seed, kind="baseline")
            mi.model, mi.title = tr.run_id, f"{mi.title} (trained: {tr.recipe})"
            mi.manifest["trained_run"] = str(tr.path)
            layer_inputs.append(mi)
            layers_model = tr.run_id
        trained.append(tr.report_entry(layers_model=layers_model))
    return rest, layer_inputs, trained, zeroshots


def _attach_zeroshot(inputs: Sequence[Any], zeroshots: Sequence[Any]) -> None:
    """Set ``p_final`` (zero-shot test accuracy, ``p_final_source="zeroshot"``) on the baseline row
    of the same model card, weights and dataset fingerprint as each zero-shot run; a zero-shot run
    without such a row, or two for one row, raise :class:`MedprobeError`."""
    for zs in zeroshots:
        rec = zs.record
        matches = [
            m for m in inputs
            if m.kind == "baseline" and m.manifest.get("model", {}).get("card", {}).get("id") == zs.model_id
            and m.manifest.get("model", {}).get("weights") == rec["model"]["weights"]
            and m.manifest.get("dataset", {}).get("fingerprint") == rec["dataset"]["fingerprint"]
            and not m.manifest.get("trained_run")
        ]
        if not matches:
            raise MedprobeError(
                f"zeroshot run {zs.path} (model '{zs.model_id}', weights {rec['model']['weights']}) pairs with no "
                "extract run of the same model, weights and dataset among the runs; add that extract run or leave it out"
            )
        target = matches[0]
        if target.p_final_source == "zeroshot":
            raise MedprobeError(f"several zeroshot runs match model '{zs.model_id}'; pass only one of them")
        target.p_final, target.p_final_n, target.p_final_source = zs.p_final, zs.p_final_n, "zeroshot"
        target.manifest["zeroshot"] = {
            "path": str(zs.path),
            "templates": rec.get("templates"),
            "accuracy": {split: v.get("accuracy") for split, v in rec["metrics"].items()},
            "synthetic_reasons": rec.get("synthetic_reasons", []),
        }
        for reason in rec.get("synthetic_reasons", []):
            if reason not in target.synthetic_reasons:
                target.synthetic_reasons.append(reason)
                target.synthetic = True


def compare(
    models: Sequence[str],
    dataset: str,
    out: str | Path,
    *,
    load: Any = None,
    probes: str | Sequence[str] = "linear",
    layers: str | None = None,
    readouts: str | Sequence[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    progress: bool | None = None,
    classify_mode: str | None = "score",
    **load_fields: Any,
) -> dict[str, Any]:
    """Extract every model on ``dataset`` (runs under ``out/runs``, each loaded as ``load`` -- a
    :class:`~medprobe.models.prepare.LoadOptions` -- says), ask every MLLM the
    classification question (classify runs under ``out/classify``, for ``P_final``), probe, score
    and report into ``out``. Returns the report dict.

    ``classify_mode``: ``"score"`` (default: answer log-likelihoods, fast), ``"generate"``
    (greedy answers, parsed), or ``None`` (no classify runs; ``P_final`` stays empty). Families
    without score support (remote-code Hulu-Med) are asked in generate mode.
    """
    from .classify import MODES, classify, supports_score
    from ..features.extract import extract
    from ..models.prepare import options_of
    from ..models.zoo import get_card

    if not models:
        raise MedprobeError("compare needs at least one model")
    if classify_mode is not None and classify_mode not in MODES:
        raise MedprobeError(f"unknown classify mode {classify_mode!r}; choose one of {list(MODES)} or None")
    out = Path(out)
    load = options_of(load, load_fields)
    runs: list[Any] = []
    for ref in models:
        runs.append(
            extract(ref, dataset, out / "runs", layers=layers, readouts=readouts, batch_size=batch_size, limit=limit,
                    progress=progress, load=load)
        )
        card = get_card(ref)
        if classify_mode is not None and card.kind == "mllm":
            mode = classify_mode if classify_mode != "score" or supports_score(card) else "generate"
            runs.append(
                classify(ref, dataset, out / "classify", mode=mode, batch_size=batch_size, limit=limit, progress=progress,
                         load=load)
            )
    return report_runs(runs, out, probes=probes, seed=load.seed, title=f"medprobe comparison on {dataset}")


def demo(
    out: str | Path,
    *,
    probes: str | Sequence[str] = "linear",
    dataset: str | None = None,
    progress: bool | None = None,
    classify_mode: str | None = "score",
) -> dict[str, Any]:
    """The offline demo: tiny random models of three MLLM families and two baselines on the
    embedded synthetic dataset (``dataset``: another synthetic spec, e.g. a smaller one), with
    ``P_final`` from classify runs of the MLLMs. Every output is marked synthetic: it checks the
    pipeline only."""
    from ..models.prepare import LoadOptions

    return compare(demo_models(), dataset or DEMO_DATASET, out, load=LoadOptions(tiny=True), probes=probes,
                   batch_size=16, progress=progress, classify_mode=classify_mode)
