"""Report writers: ``report.json``, ``report.csv``, ``report.md`` and ``report.html``.

Each writer has the exporter signature of the ``register_exporters`` hook,
``writer(report: dict, out_dir: Path) -> Path``, and writes one file atomically (temporary file
then rename). :func:`write_report` writes several formats; formats other than the built-ins are
looked up in the plugin registry.

Every format leads with the synthetic banner when any input is synthetic (tiny or random
weights, synthetic data): in the HTML as a red box at the top, in Markdown as a quote block, in
the CSV as a ``synthetic`` column per row and in the JSON as ``synthetic`` / ``banner``.
The HTML is self-contained: CSS inline, figures embedded as base64 PNG, no scripts, no network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .report import REPORT_FILE, SYNTHETIC_BANNER

CSV_COLUMNS = (
    "model", "title", "kind", "synthetic", "card", "condition", "dataset", "run_key", "probe", "layer", "readout",
    "stage", "module", "depth", "used", "feeds_connector", "width", "accuracy", "ci95_lo", "ci95_hi", "chance",
    "permutation_p", "control_accuracy", "selectivity", "balanced_accuracy", "macro_f1", "auroc", "seed", "seed_sd",
    "n_train", "n_val", "n_test", "hyper", "p_final", "p_final_ci95_lo", "p_final_ci95_hi", "p_final_n",
)  # fmt: skip
MODE_TITLES = {
    "visual_representation": "visual representation",
    "connector_fidelity": "connector fidelity",
    "llm_entry": "LLM entry",
    "llm_comprehension": "LLM comprehension",
    "semantic_mapping": "semantic mapping",
}


def _atomic_write(path: Path, data: bytes) -> Path:
    """The feature store's atomic write (temporary file, fsync, rename; an OSError names the file)."""
    from ..features.store import atomic_write_bytes

    atomic_write_bytes(path, data)
    return path


def _f(x: Any, digits: int = 3) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _p(x: Any) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def write_json(report: Mapping[str, Any], out_dir: Path | str) -> Path:
    """``report.json``: the report dict, indented, strict JSON (no NaN)."""
    text = json.dumps(report, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    return _atomic_write(Path(out_dir) / REPORT_FILE, text.encode())


def condition_text(model: Mapping[str, Any]) -> str:
    """The condition label of a report model entry (``"pretrained"``, ``"random weights"``, ...);
    ``""`` for reports made before conditions were recorded."""
    cond = model.get("condition")
    if isinstance(cond, Mapping):
        return str(cond.get("label") or cond.get("weights") or "")
    return str(cond or "")


def dataset_text(model: Mapping[str, Any]) -> str:
    """The dataset spec of a report model entry (its ``dataset`` block, else its manifest's)."""
    ds = model.get("dataset") or (model.get("manifest") or {}).get("dataset") or {}
    return str(ds.get("spec") or "")


def run_key_of(model: Mapping[str, Any]) -> str:
    return str(model.get("run_key") or (model.get("manifest") or {}).get("run_key") or "")


def csv_rows(report: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """One dict per model x layer x readout x probe, keys :data:`CSV_COLUMNS`. ``model`` is the
    report row id (unique per run), ``card`` the model card, ``condition`` the run's condition
    label, ``dataset`` the dataset spec, ``run_key`` the feature-store run key; the ``p_final*``
    columns repeat the model's answer accuracy on each of its rows (empty for baselines without
    one), so CSVs of several reports concatenate without hand tagging."""
    for m in report["models"]:
        pci = m.get("p_final_ci95") or [None, None]
        for r in m["layers"]:
            ci = r.get("ci95") or [None, None]
            yield {
                "model": m["id"],
                "title": m["title"],
                "kind": m["kind"],
                "synthetic": m["synthetic"],
                "card": m.get("card") or m["id"],
                "condition": condition_text(m),
                "dataset": dataset_text(m),
                "run_key": run_key_of(m),
                "probe": r["probe"],
                "layer": r["id"],
                "readout": r["readout"],
                "stage": r["stage"],
                "module": r["module"],
                "depth": r["depth"],
                "used": r["used"],
                "feeds_connector": r["feeds_connector"],
                "width": r.get("width"),
                "accuracy": r.get("accuracy"),
                "ci95_lo": ci[0],
                "ci95_hi": ci[1],
                "chance": r.get("chance"),
                "permutation_p": r.get("permutation_p"),
                "control_accuracy": r.get("control_accuracy"),
                "selectivity": r.get("selectivity"),
                "balanced_accuracy": r.get("balanced_accuracy"),
                "macro_f1": r.get("macro_f1"),
                "auroc": r.get("auroc"),
                "seed": r.get("seed"),
                "seed_sd": r.get("seed_sd"),
                "n_train": r.get("n_train"),
                "n_val": r.get("n_val"),
                "n_test": r.get("n_test"),
                "hyper": json.dumps(r.get("hyper") or {}, sort_keys=True),
                "p_final": m.get("p_final"),
                "p_final_ci95_lo": pci[0],
                "p_final_ci95_hi": pci[1],
                "p_final_n": m.get("p_final_n"),
            }


def write_csv(report: Mapping[str, Any], out_dir: Path | str) -> Path:
    """``report.csv``: one row per model x layer x readout (x probe); empty cells for missing values."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(report):
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return _atomic_write(Path(out_dir) / "report.csv", buf.getvalue().encode())


# -- shared table content ----------------------------------------------------------------------


def _summary_rows(report: Mapping[str, Any], probe: str) -> list[list[str]]:
    rows = []
    for m in report["models"]:
        prof = m.get("fhs", {}).get(probe)
        lay = [r for r in m["layers"] if r["probe"] == probe and r.get("accuracy") is not None]
        best = max(lay, key=lambda r: r["accuracy"]) if lay else None
        rows.append(
            [
                m["title"],
                condition_text(m) or "—",
                m["kind"],
                "yes" if m["synthetic"] else "no",
                _fhs_cell(prof, "vision"),
                _fhs_cell(prof, "connector"),
                _fhs_cell(prof, "llm"),
                _p_final_cell(m),
                f"{best['id']}/{best['readout']} {best['accuracy']:.3f}" if best else "—",
                prof["profile"] if prof else "—",
            ]
        )
    return rows


def _ci_text(ci: Any) -> str:
    if not ci or len(ci) != 2 or None in ci:
        return ""
    return f" [{_f(ci[0], 2)}, {_f(ci[1], 2)}]"


def _fhs_cell(prof: Mapping[str, Any] | None, module: str) -> str:
    """An FHS score with its 95% interval when the profile has one (``ci95`` of the module)."""
    if not prof or not prof[module]["n_layers"]:
        return "—"
    return _f(prof[module]["score"]) + _ci_text(prof[module].get("ci95"))


def _p_final_cell(m: Mapping[str, Any]) -> str:
    """P_final with its 95% interval, n and how it was scored (``p_final_method`` when present)."""
    if m.get("p_final") is None:
        return "—"
    text = _f(m.get("p_final")) + _ci_text(m.get("p_final_ci95"))
    extra = [f"n={m['p_final_n']}"] if m.get("p_final_n") else []
    if m.get("p_final_source") == "zeroshot":
        extra.append("zero-shot")
    if m.get("p_final_method"):
        extra.append(str(m["p_final_method"]))
    return text + (f" ({', '.join(extra)})" if extra else "")


SUMMARY_HEADER = [
    "model",
    "condition",
    "kind",
    "synthetic",
    "FHS_V",
    "FHS_C",
    "FHS_L",
    "P_final",
    "best layer (accuracy)",
    "profile",
]
LAYER_HEADER = ["layer", "readout", "stage", "depth", "n", "accuracy", "95% CI", "chance", "perm. p", "control",
                "selectivity", "bal. acc.", "macro-F1", "AUROC", "chosen"]  # fmt: skip
LAYER_NOTE = (
    "n: test samples the accuracy is measured on (train / val sizes in report.csv); accuracy ± seed SD when the "
    "probe was repeated over seeds."
)


TRAINED_HEADER = ["trained model", "recipe", "synthetic", "epochs (best)", "test accuracy", "95% CI", "bal. acc.",
                  "macro-F1", "AUROC", "val accuracy", "n test", "layer probes"]  # fmt: skip
TRAINED_NOTE = (
    "Classifiers trained end to end by `medprobe train` (finetune: the whole baseline; linear: a head on the frozen "
    "backbone; vision-tower: an MLLM's vision encoder up to the layer feeding its connector, mean-pooled). Test "
    "scored once with the best validation epoch; 95% CI: bootstrap of test accuracy."
)
ZEROSHOT_NOTE = (
    "P_final marked (zero-shot) is a contrastive baseline's zero-shot accuracy on test (`medprobe zeroshot`: "
    "class-name prompts vs image embeddings), the analogue of an MLLM's answer accuracy."
)


def _trained_rows(report: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for t in report.get("trained") or []:
        test = (t.get("metrics") or {}).get("test") or {}
        val = (t.get("metrics") or {}).get("val") or {}
        ci = t.get("test_ci95") or test.get("ci95") or [None, None]
        rows.append(
            [
                t.get("title") or t["id"],
                t["recipe"] + (" (frozen)" if t.get("frozen_backbone") and t["recipe"] != "linear" else ""),
                "yes" if t.get("synthetic") else "no",
                f"{t.get('epochs_run', '—')} ({t.get('best_epoch', '—')})",
                _f(test.get("accuracy")),
                f"[{_f(ci[0])}, {_f(ci[1])}]",
                _f(test.get("balanced_accuracy")),
                _f(test.get("macro_f1")),
                _f(test.get("auroc")),
                _f(val.get("accuracy")),
                _f(test.get("n")),
                t.get("layers_model") or "—",
            ]
        )
    return rows


def _has_zeroshot(report: Mapping[str, Any]) -> bool:
    return any(m.get("p_final_source") == "zeroshot" for m in report["models"])


def _chosen(hyper: Mapping[str, Any]) -> str:
    if "C" in hyper:
        return f"C={hyper['C']:.3g}"
    if "epoch" in hyper:
        return f"epoch {hyper['epoch']}"
    return ""


def _layer_rows(model: Mapping[str, Any], probe: str) -> list[list[str]]:
    out = []
    for r in model["layers"]:
        if r["probe"] != probe:
            continue
        ci = r.get("ci95") or [None, None]
        layer = (
            r["id"] + ("" if r["used"] else " (not passed on)") + (" (feeds connector)" if r["feeds_connector"] else "")
        )
        acc = _f(r.get("accuracy"))
        if r.get("seed_sd") is not None:
            acc += f" ± {r['seed_sd']:.3f}"
        if r.get("warnings"):
            acc += " ⚠"
        out.append(
            [
                layer,
                r["readout"],
                r["stage"],
                f"{r['depth']:.2f}",
                _f(r.get("n") if r.get("n") is not None else r.get("n_test")),
                acc,
                f"[{_f(ci[0])}, {_f(ci[1])}]",
                _f(r.get("chance")),
                _p(r.get("permutation_p")),
                _f(r.get("control_accuracy")),
                _f(r.get("selectivity"), 3) if r.get("selectivity") is None else f"{r['selectivity']:+.3f}",
                _f(r.get("balanced_accuracy")),
                _f(r.get("macro_f1")),
                _f(r.get("auroc")),
                _chosen(r.get("hyper") or {}),
            ]
        )
    return out


def _alpha(report: Mapping[str, Any]) -> float:
    return float(((report.get("diagnosis_settings") or {}).get("thresholds") or {}).get("alpha", 0.05))


def _diag_cells(model: Mapping[str, Any], probe: str, alpha: float = 0.05) -> list[tuple[str, str, str]]:
    """(mode, verdict, summary + what decided it) per mode for an MLLM."""
    out = []
    for v in model.get("diagnosis", {}).get(probe, []):
        why = decided_by(v, alpha)
        out.append((v["mode"], v["verdict"], v["summary"] + (f"; decided by: {why}" if why else "")))
    return out


def _cmp(a: float, b: float, strict: bool = False) -> str:
    return (">" if a > b else "≤") if strict else ("≥" if a >= b else "<")


def decided_by(v: Mapping[str, Any], alpha: float = 0.05) -> str:
    """The condition of the rule that decided verdict ``v`` (a ``diagnosis`` entry), with the
    numbers it compared, e.g. ``"drop 0.120 ≥ 0.050 and connector 0.610 < feeding layer's CI low
    0.700"``; the statistical test's effect / CI / p when the verdict carries them. ``""`` for
    verdicts that were not assessed (their summary says why)."""
    ev = v.get("evidence") or {}
    mode, parts = v.get("mode"), []
    if v.get("verdict") == "not_assessed":
        return ""
    if v.get("effect") is not None and v.get("p_value") is not None:  # diagnosis-2: a paired test decided
        th = ev.get("threshold")
        if th is None and isinstance(ev.get("thresholds"), Mapping):
            key = "llm_peak_drop" if str(v.get("statistic", "")).startswith("falls_from_peak") else "llm_drop"
            th = ev["thresholds"].get(key)
        e, p = float(v["effect"]), float(v["p_value"])
        first = f"effect {e:+.3f}" + _ci_text(v.get("ci95")) + (f" {_cmp(e, th)} minimum {th:.3f}" if th is not None else "")
        multiplicity = str(v.get("multiplicity") or "")
        second = f"p = {_p(p)} {'<' if p < alpha else '≥'} {alpha:g}" + (
            f" ({multiplicity})" if multiplicity and not multiplicity.startswith("none") else "")
        return f"{first} and {second}"
    try:
        if mode == "visual_representation" and "gap" in ev:
            hi = ev["vision_best"]["ci95"][1]
            base = ev["baseline_best"]["accuracy"]
            parts.append(f"gap {ev['gap']:+.3f} {_cmp(ev['gap'], ev['threshold'])} {ev['threshold']:.3f}")
            parts.append(f"vision CI high {hi:.3f} {_cmp(hi, base)} baseline {base:.3f}")
        elif mode == "connector_fidelity" and "drop" in ev:
            lo = ev["feeding_layer"]["ci95"][0]
            c = ev["connector"]["accuracy"]
            parts.append(f"drop {ev['drop']:+.3f} {_cmp(ev['drop'], ev['threshold'])} {ev['threshold']:.3f}")
            parts.append(f"connector {c:.3f} {_cmp(c, lo)} feeding layer's CI low {lo:.3f}")
        elif mode == "llm_comprehension" and "start_to_end" in ev:
            th = ev.get("thresholds") or {}
            if ev.get("ends_below_start"):
                parts.append(f"ends below start ({ev['start_to_end']:+.3f}, threshold {th.get('llm_drop')})")
            if ev.get("falls_from_peak"):
                parts.append(f"falls from peak ({ev['peak_to_end']:+.3f}, threshold {th.get('llm_peak_drop')})")
            if not parts:
                parts.append(f"neither ends below start ({ev['start_to_end']:+.3f}) nor falls from peak "
                             f"({ev['peak_to_end']:+.3f}) by the thresholds")
        elif mode == "semantic_mapping" and "difference" in ev:
            ci = ev["final_token_probe"]["ci95"]
            d = ev["difference"]
            outside = ev["p_final"] < ci[0] or ev["p_final"] > ci[1]
            parts.append(f"|P_final − probe| {abs(d):.3f} {_cmp(abs(d), ev['threshold'])} {ev['threshold']:.3f}")
            parts.append(f"P_final {'outside' if outside else 'inside'} the probe's CI [{ci[0]:.3f}, {ci[1]:.3f}]")
    except (KeyError, TypeError, IndexError):
        parts = []
    stats = []
    if v.get("effect") is not None:
        stats.append(f"effect {v['effect']:+.3f}" + _ci_text(v.get("ci95")))
    if v.get("p_value") is not None:
        stats.append(f"p = {_p(v['p_value'])}")
    return "; ".join([" and ".join(parts)] * bool(parts) + stats)


RUNS_HEADER = ["model", "card", "condition", "kind", "dataset", "classes", "split sizes", "skipped", "run key"]


def _run_rows(report: Mapping[str, Any]) -> list[list[str]]:
    """One row per report model: what run it is and what it read."""
    rows = []
    for m in report["models"]:
        ds = m.get("dataset") or {}
        man_ds = (m.get("manifest") or {}).get("dataset") or {}
        classes = ds.get("classes") or man_ds.get("classes") or []
        splits = ds.get("splits") or {}
        if not splits:  # older reports: the sizes the probes report
            lay = next((r for r in m["layers"] if r.get("n_train") is not None), None)
            if lay:
                splits = {"train": lay["n_train"], "val": lay.get("n_val"), "test": lay.get("n_test")}
        skipped = ds.get("skipped", len(man_ds.get("skipped") or []))
        rows.append([
            m["id"], m.get("card") or m["id"], condition_text(m) or "—", m["kind"], dataset_text(m) or "—",
            ", ".join(map(str, classes)) or "—",
            ", ".join(f"{k} {v}" for k, v in splits.items() if v is not None) or "—",
            str(skipped), run_key_of(m)[:12] or "—",
        ])  # fmt: skip
    return rows


def report_warnings(report: Mapping[str, Any]) -> list[str]:
    """Warnings a reader must see: data leakage / duplicates (``leakage`` of a model or the report),
    probe warnings per layer (``warnings``), skipped undecodable samples, a probe below the
    random-weights floor (``random_floor``)."""
    out: list[str] = []

    def add(where: str, item: Any) -> None:
        if isinstance(item, str):
            out.append(f"{where}: {item}")
        elif isinstance(item, Mapping):
            for key in ("warnings", "warning"):
                if item.get(key):
                    for w in item[key] if isinstance(item[key], list) else [item[key]]:
                        add(where, w)
                    return
            text = item.get("summary") or item.get("message")
            if not text and any(k in item for k in ("exact_clusters", "near_clusters", "cross_split_samples",
                                                   "patients_in_several_splits")):
                from ..datasets.groups import summary_line  # a run's duplicate / leakage record

                line = summary_line(item)
                text = line if line and line.startswith("LEAKAGE") else None
            if text:
                out.append(f"{where}: {text}")
            elif any(item.get(k) for k in ("duplicates", "n_duplicates", "cross_split", "leaks", "n_leaks")):
                out.append(f"{where}: " + json.dumps({k: v for k, v in item.items() if v}, default=str))
        elif isinstance(item, list):
            for w in item:
                add(where, w)

    add("report", report.get("leakage"))
    add("report", report.get("warnings"))
    for m in report["models"]:
        add(m["title"], m.get("leakage"))
        add(m["title"], m.get("warnings"))
        skipped = (m.get("dataset") or {}).get("skipped")
        if skipped:
            out.append(f"{m['title']}: {skipped} undecodable sample(s) were skipped (--skip-bad)")
        floor = m.get("random_floor")
        if isinstance(floor, Mapping) and floor.get("warning"):
            out.append(f"{m['title']}: {floor['warning']}")
        seen: set[str] = set()
        for r in m["layers"]:
            for w in r.get("warnings") or []:
                text = f"{m['title']} {r['id']}/{r['readout']} ({r['probe']}): {w}"
                if text not in seen:
                    seen.add(text)
                    out.append(text)
    return list(dict.fromkeys(out))


def package_versions(report: Mapping[str, Any]) -> dict[str, str]:
    """Package -> version over the runs' manifests (``versions``); a package whose runs used
    different versions lists them all, e.g. ``"4.46.0 / 4.47.1"``."""
    seen: dict[str, list[str]] = {"medprobe (report)": [str(report.get("medprobe_version"))]}
    for m in report["models"]:
        for pkg, ver in ((m.get("manifest") or {}).get("versions") or {}).items():
            vals = seen.setdefault(str(pkg), [])
            if str(ver) not in vals:
                vals.append(str(ver))
    return {k: " / ".join(v) for k, v in seen.items()}


# -- markdown ----------------------------------------------------------------------------------


def _md_cell(s: Any) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def _banner_text(report: Mapping[str, Any]) -> str:
    reasons = ", ".join(report.get("synthetic_reasons") or [])
    models = ", ".join(report.get("synthetic_models") or [])
    return f"{SYNTHETIC_BANNER}. Reasons: {reasons}. Synthetic models: {models}."


def random_floor_markdown(report: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the random-weights floor: per model with a twin in the report, its
    accuracy per layer beside the twin's (``random_floor``, docs/report-schema.md); ``[]`` if none."""
    L: list[str] = []
    for m in report["models"]:
        floor = m.get("random_floor")
        if not floor:
            continue
        for probe, twin_rows in floor["layers"].items():
            twin = {(r["id"], r["readout"]): r["accuracy"] for r in twin_rows}
            rows = [
                [r["id"], r["readout"], _f(r.get("accuracy")), _f(twin.get((r["id"], r["readout"]))),
                 _f(r["accuracy"] - twin[(r["id"], r["readout"])])
                 if r.get("accuracy") is not None and twin.get((r["id"], r["readout"])) is not None else "—"]
                for r in m["layers"] if r["probe"] == probe
            ]
            if not rows:
                continue
            L += [f"## Random-weights floor: {m['title']} — `{probe}` probe", "",
                  f"Twin `{floor['model']}` ({floor.get('weights')}): the same architecture and config with random "
                  "weights, extracted and probed alike; its accuracy is what architecture + probe give without training.", ""]
            L += _md_table(["layer", "readout", "model", "random floor", "above floor"], rows) + [""]
    return L


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown report (tables only; figures are in the HTML)."""
    L: list[str] = [f"# {report['title']}", ""]
    if report.get("synthetic"):
        L += [f"> **⚠ {_banner_text(report)}**", ""]
    if report.get("leakage_banner"):
        L += [f"> **⚠ {report['leakage_banner']}**", ""]
    L += [
        f"Generated {report['created']} by medprobe {report['medprobe_version']} "
        f"(schema `{report['schema']}` v{report['schema_version']}). Probes: "
        + ", ".join(f"`{p}`" + (" (primary)" if p == report["primary_probe"] else "") for p in report["probes"])
        + ". Figures: see `report.html`.",
        "",
    ]
    L += ["## Runs", ""] + _md_table(RUNS_HEADER, _run_rows(report)) + [""]
    warnings = report_warnings(report)
    if warnings:
        L += ["## Warnings", ""] + [f"- ⚠ {_md_cell(w)}" for w in warnings] + [""]
    ds = report["diagnosis_settings"]
    for probe in report["probes"]:
        L += [f"## Summary — `{probe}` probe", ""]
        L += _md_table(SUMMARY_HEADER, _summary_rows(report, probe)) + [""]
        if _has_zeroshot(report):
            L += [ZEROSHOT_NOTE, ""]
        mllms = [m for m in report["models"] if m["kind"] == "mllm"]
        if mllms:
            L += [f"## Failure-mode diagnosis — `{probe}` probe", ""]
            base = ds["baseline"].get(probe)
            L += [
                (f"Reference baseline: **{base['model']}** `{base['layer']}/{base['readout']}` accuracy {base['accuracy']:.3f}."
                 if base else "No baseline in this report: `visual_representation` is not assessed."),
                "",
            ]  # fmt: skip
            header = ["model"] + [MODE_TITLES[k] for k in MODE_TITLES]
            rows = []
            for m in mllms:
                cells = {mode: f"**{verdict}**: {summary}" for mode, verdict, summary in _diag_cells(m, probe, _alpha(report))}
                rows.append([m["title"]] + [cells.get(k, "—") for k in MODE_TITLES])
            L += _md_table(header, rows) + [""]
        L += statistics_markdown(report, probe)
    L += random_floor_markdown(report)
    if report.get("trained"):
        L += ["## Trained classifiers", "", TRAINED_NOTE, ""]
        L += _md_table(TRAINED_HEADER, _trained_rows(report)) + [""]
    L += [
        "## Rules",
        "",
        f"FHS ({report['fhs_settings']['score_version']}, λ = {report['fhs_settings']['lambda']}):",
        "",
    ]
    L += [f"- {r}" for r in report["fhs_settings"]["rules"]] + ["", f"Diagnosis ({ds['version']}):", ""]
    L += [f"- `{mode}`: {rule}" for mode, rule in ds["rules"].items()] + [""]
    for probe in report["probes"]:
        for m in report["models"]:
            rows = _layer_rows(m, probe)
            if not rows:
                continue
            flag = " — SYNTHETIC" if m["synthetic"] else ""
            cond = f", {condition_text(m)}" if condition_text(m) and condition_text(m) not in m["title"] else ""
            L += [f"## Layers: {m['title']} ({m['kind']}{cond}) — `{probe}` probe{flag}", "", LAYER_NOTE, ""]
            L += _md_table(LAYER_HEADER, rows) + [""]
    L += _provenance_md(report)
    return "\n".join(L)


# -- statistics of schema 2: FHS intervals, paired verdicts (rendered in md and html) ------------

FHS_CI_HEADER = ["model", "FHS_V [95% CI]", "FHS_C [95% CI]", "FHS_L [95% CI]", "P_final [95% CI]", "P_final method",
                 "paired samples × seeds"]  # fmt: skip
VERDICT_HEADER = ["model", "mode", "verdict", "effect", "paired 95% CI", "p", "n", "statistic", "multiplicity"]
P_FINAL_METHOD_TEXT = {"generate": "generated answers", "score": "answer scoring (log-likelihood)",
                       "zeroshot": "zero-shot (contrastive)"}  # fmt: skip
STATS_NOTE = (
    "Verdicts (diagnosis-2): present = effect at least its minimum size and the paired test significant at alpha "
    "after the multiplicity rule shown; intervals and p-values come from a paired bootstrap over samples and probe "
    "seeds. FHS intervals: basic bootstrap (curve and FHS recomputed per draw). Not assessed: the reason is given."
)


def _with_ci(x: Any, ci: Any) -> str:
    if x is None:
        return "—"
    return f"{x:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else " (no CI: no per-sample outcomes)")


def fhs_ci_rows(report: Mapping[str, Any], probe: str) -> list[list[str]]:
    """One row per model: FHS_V / FHS_C / FHS_L and P_final, each with its 95% interval."""
    rows = []
    for m in report["models"]:
        prof = (m.get("fhs") or {}).get(probe)
        if not prof:
            continue
        cells = [m["title"]]
        for mod in ("vision", "connector", "llm"):
            d = prof[mod]
            cells.append(_with_ci(d.get("score"), d.get("ci95")) if d.get("n_layers") else "—")
        pf = m.get("p_final")
        cells.append(_with_ci(pf, prof.get("p_final_ci95") or m.get("p_final_ci95")) if pf is not None else "—")
        cells.append(P_FINAL_METHOD_TEXT.get(m.get("p_final_method") or "", "—"))
        po = (m.get("paired_outcomes") or {}).get(probe)
        cells.append(f"{po['n']} × {po['n_seeds']}" if po else "none (not assessed)")
        rows.append(cells)
    return rows


def verdict_rows(report: Mapping[str, Any], probe: str) -> list[list[str]]:
    """One row per MLLM x mode: verdict, effect, paired CI, p, n, statistic, multiplicity."""
    rows = []
    for m in report["models"]:
        for v in (m.get("diagnosis") or {}).get(probe, []):
            ci = v.get("ci95")
            decided = v.get("p_value") is not None
            rows.append(
                [
                    m["title"],
                    v["mode"],
                    v["verdict"],
                    f"{v['effect']:+.3f}" if v.get("effect") is not None else "—",
                    f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "—",
                    _p(v.get("p_value")),
                    _f(v.get("n")),
                    v.get("statistic") or ("—" if decided else v.get("summary", "")),
                    v.get("multiplicity") or "—",
                ]
            )
    return rows


def statistics_markdown(report: Mapping[str, Any], probe: str) -> list[str]:
    """Markdown lines: the FHS-with-intervals table and the paired-verdict table of ``probe``."""
    L = [f"## FHS with 95% intervals — `{probe}` probe", ""]
    L += _md_table(FHS_CI_HEADER, fhs_ci_rows(report, probe)) + [""]
    rows = verdict_rows(report, probe)
    if rows:
        L += [f"## Verdict statistics — `{probe}` probe", "", STATS_NOTE, ""]
        L += _md_table(VERDICT_HEADER, rows) + [""]
    return L


def statistics_html(report: Mapping[str, Any], probe: str) -> str:
    """HTML: the FHS-with-intervals table and the paired-verdict table of ``probe``."""
    H = [f"<h2>FHS with 95% intervals — {_h(probe)} probe</h2>", _html_table(FHS_CI_HEADER, fhs_ci_rows(report, probe))]
    rows = verdict_rows(report, probe)
    if rows:
        H += [f"<h2>Verdict statistics — {_h(probe)} probe</h2>", f"<p>{_h(STATS_NOTE)}</p>"]
        H.append(_html_table(VERDICT_HEADER, rows, numeric_from=3))
    return "\n".join(H)


def _provenance_md(report: Mapping[str, Any]) -> list[str]:
    L = ["## Provenance", ""]
    command = (report.get("extra") or {}).get("command")
    if command:
        L += [f"Command: `{command}`", ""]
    L += _md_table(["package", "version"], sorted(package_versions(report).items())) + [""]
    return L


def write_markdown(report: Mapping[str, Any], out_dir: Path | str) -> Path:
    """``report.md``."""
    return _atomic_write(Path(out_dir) / "report.md", render_markdown(report).encode())


# -- html --------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1280px;color:#222;padding:0 16px}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.banner{background:#b00020;color:#fff;padding:14px 18px;font-size:1.15em;font-weight:600;border-radius:4px;margin:12px 0}
.banner small{display:block;font-weight:400;font-size:.8em;margin-top:4px}
.present{background:#fde2e2}.absent{background:#e3f4e1}.not_assessed{background:#eeeeee;color:#555}
.meta{color:#555;font-size:.9em}img{max-width:100%;border:1px solid #eee}
.warnings{background:#fff4ce;border:1px solid #e0b400;padding:8px 14px;border-radius:4px}
.decided{color:#444;font-size:.92em}code{background:#f3f3f3;padding:1px 3px}
pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px;max-height:420px}
"""


def _h(x: Any) -> str:
    return html.escape(str(x))


def _html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 99) -> str:
    out = ["<table><thead><tr>" + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = ' class="num"' if i >= numeric_from else ""
            cells.append(f"<td{cls}>{_h(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_h(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def render_html(report: Mapping[str, Any]) -> str:
    """The self-contained HTML report (figures embedded as base64 PNG)."""
    from . import figures

    H: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{_h(report['title'])}</title><style>{_CSS}</style></head><body>",
    ]
    if report.get("synthetic"):
        H.append(
            f'<div class="banner" id="synthetic-banner">⚠ {_h(SYNTHETIC_BANNER)}'
            f"<small>Reasons: {_h(', '.join(report.get('synthetic_reasons') or []))}. "
            f"Synthetic models: {_h(', '.join(report.get('synthetic_models') or []))}.</small></div>"
        )
    if report.get("leakage_banner"):
        H.append(f'<div class="banner" id="leakage-banner">⚠ {_h(report["leakage_banner"])}</div>')
    H.append(f"<h1>{_h(report['title'])}</h1>")
    H.append(
        f'<p class="meta">Generated {_h(report["created"])} by medprobe {_h(report["medprobe_version"])} '
        f"(schema {_h(report['schema'])} v{_h(report['schema_version'])}). Probes: "
        + ", ".join(_h(p) + (" (primary)" if p == report["primary_probe"] else "") for p in report["probes"])
        + ".</p>"
    )
    command = (report.get("extra") or {}).get("command")
    if command:
        H.append(f'<p class="meta">Command: <code>{_h(command)}</code></p>')
    warnings = report_warnings(report)
    if warnings:
        H.append('<div class="warnings" id="warnings"><b>⚠ Warnings</b><ul>')
        H += [f"<li>{_h(w)}</li>" for w in warnings]
        H.append("</ul></div>")
    H.append("<h2>Runs</h2>")
    H.append(_html_table(RUNS_HEADER, _run_rows(report)))
    ds = report["diagnosis_settings"]
    titles = ", ".join(f"{m['title']}" for m in report["models"])
    for probe in report["probes"]:
        H.append(f"<h2>Summary — {_h(probe)} probe</h2>")
        H.append(_html_table(SUMMARY_HEADER, _summary_rows(report, probe)))
        if _has_zeroshot(report):
            H.append(f"<p>{_h(ZEROSHOT_NOTE)}</p>")
        H.append(f"<h2>Layer curves — {_h(probe)} probe</h2>")
        H.append(_img(
            figures.layer_curves_png(report, probe),
            f"Overview: {probe} probe test accuracy against relative depth for {titles}, with 95% CI bands, "
            "P_final stars, baseline curves and the chance line",
        ))  # fmt: skip
        H.append("<p class=\"meta\">One panel per model: x = the model's probed layers by their real ids, "
                 "shaded by stage; band = 95% CI; star = P_final with its 95% CI.</p>")
        H.append(_img(
            figures.layer_panels_png(report, probe),
            f"One panel per model ({titles}): {probe} probe test accuracy per probed layer, labelled by layer id, "
            "with 95% CI bands, stage shading, chance line and P_final",
        ))  # fmt: skip
        H.append(f"<h2>Feature Health Score profiles — {_h(probe)} probe</h2>")
        H.append(_img(
            figures.fhs_profiles_png(report, probe),
            f"FHS_V, FHS_C, FHS_L and P_final per model under the {probe} probe (error bars: 95% CI where computed)",
        ))  # fmt: skip
        mllms = [m for m in report["models"] if m["kind"] == "mllm"]
        if mllms:
            H.append(f"<h2>Failure-mode diagnosis — {_h(probe)} probe</h2>")
            base = ds["baseline"].get(probe)
            H.append(
                f"<p>Reference baseline: <b>{_h(base['model'])}</b> {_h(base['layer'])}/{_h(base['readout'])} "
                f"accuracy {base['accuracy']:.3f}.</p>"
                if base
                else "<p>No baseline in this report: visual_representation is not assessed.</p>"
            )
            H.append(
                '<table class="diagnosis"><thead><tr><th>model</th>'
                + "".join(f"<th>{_h(t)}</th>" for t in MODE_TITLES.values())
                + "</tr></thead><tbody>"
            )
            for m in mllms:
                verdicts = {v["mode"]: v for v in m.get("diagnosis", {}).get(probe, [])}
                cells = []
                for mode in MODE_TITLES:
                    v = verdicts.get(mode)
                    if v is None:
                        cells.append("<td>—</td>")
                        continue
                    ev = json.dumps(v["evidence"], indent=1)
                    why = decided_by(v, _alpha(report))
                    why_html = f'<br><span class="decided">decided by: {_h(why)}</span>' if why else ""
                    cells.append(
                        f'<td class="{_h(v["verdict"])}"><b>{_h(v["verdict"])}</b><br>{_h(v["summary"])}{why_html}'
                        f"<details><summary>evidence</summary><pre>{_h(ev)}</pre></details></td>"
                    )
                H.append(f"<tr><td>{_h(m['title'])}</td>{''.join(cells)}</tr>")
            H.append("</tbody></table>")
        H.append(statistics_html(report, probe))
    if report.get("trained"):
        H.append('<h2 id="trained">Trained classifiers</h2>')
        H.append(f"<p>{_h(TRAINED_NOTE)}</p>")
        H.append(_html_table(TRAINED_HEADER, _trained_rows(report), numeric_from=3))
    H.append("<h2>Rules</h2>")
    H.append(
        f"<p>FHS {_h(report['fhs_settings']['score_version'])}, λ = {_h(report['fhs_settings']['lambda'])}:</p><ul>"
    )
    H += [f"<li>{_h(r)}</li>" for r in report["fhs_settings"]["rules"]]
    H.append(f"</ul><p>Diagnosis {_h(ds['version'])}:</p><ul>")
    H += [f"<li><b>{_h(mode)}</b>: {_h(rule)}</li>" for mode, rule in ds["rules"].items()]
    H.append("</ul>")
    H.append("<h2>Per-layer results</h2>")
    H.append(f'<p class="meta">{_h(LAYER_NOTE)}</p>')
    for probe in report["probes"]:
        for m in report["models"]:
            rows = _layer_rows(m, probe)
            if not rows:
                continue
            flag = " — SYNTHETIC" if m["synthetic"] else ""
            cond = f", {condition_text(m)}" if condition_text(m) and condition_text(m) not in m["title"] else ""
            H.append(
                f"<details><summary>{_h(m['title'])} ({_h(m['kind'])}{_h(cond)}) — {_h(probe)} probe{_h(flag)}</summary>"
            )
            H.append(_html_table(LAYER_HEADER, rows, numeric_from=3))
            H.append("</details>")
    H.append("<h2>Run manifests</h2>")
    for m in report["models"]:
        H.append(
            f"<details><summary>{_h(m['title'])}</summary><pre>{_h(json.dumps(m.get('manifest') or {}, indent=1))}</pre></details>"
        )
    H.append("<h2>Provenance</h2>")
    if command:
        H.append(f"<p>Command: <code>{_h(command)}</code></p>")
    H.append(_html_table(["package", "version"], sorted(package_versions(report).items())))
    H.append("</body></html>")
    return "\n".join(H)


def write_html(report: Mapping[str, Any], out_dir: Path | str) -> Path:
    """``report.html`` (self-contained)."""
    return _atomic_write(Path(out_dir) / "report.html", render_html(report).encode())




def write_report(
    report: Mapping[str, Any], out_dir: Path | str, formats: Sequence[str] = ("json", "csv", "md", "html")
) -> dict[str, Path]:
    """Write ``report`` in every format of ``formats`` into ``out_dir``; returns format -> path.
    Every format, the built-in ``json`` / ``csv`` / ``md`` / ``html`` included, is looked up in the
    plugin registry (``register_exporters``), so a plugin's exporter is used exactly like a built-in."""
    from ..plugins import get_plugins
    from ..registry import resolve_factory

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    exporters = get_plugins().exporters
    writers = {fmt: resolve_factory(exporters.get(fmt)) for fmt in formats}  # unknown formats fail before writing
    return {fmt: Path(writer(report, out_dir)) for fmt, writer in writers.items()}
