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
from typing import Any, Callable, Iterable, Mapping, Sequence

from .report import REPORT_FILE, SYNTHETIC_BANNER

CSV_COLUMNS = (
    "model", "title", "kind", "synthetic", "probe", "layer", "readout", "stage", "module", "depth", "used",
    "feeds_connector", "width", "accuracy", "ci95_lo", "ci95_hi", "chance", "permutation_p", "control_accuracy",
    "selectivity", "balanced_accuracy", "macro_f1", "auroc", "seed", "n_train", "n_val", "n_test", "hyper",
)  # fmt: skip
MODE_TITLES = {
    "visual_representation": "visual representation",
    "connector_fidelity": "connector fidelity",
    "llm_entry": "LLM entry",
    "llm_comprehension": "LLM comprehension",
    "semantic_mapping": "semantic mapping",
}


def _atomic_write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
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


def csv_rows(report: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """One dict per model x layer x readout x probe, keys :data:`CSV_COLUMNS`."""
    for m in report["models"]:
        for r in m["layers"]:
            ci = r.get("ci95") or [None, None]
            yield {
                "model": m["id"],
                "title": m["title"],
                "kind": m["kind"],
                "synthetic": m["synthetic"],
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
                "n_train": r.get("n_train"),
                "n_val": r.get("n_val"),
                "n_test": r.get("n_test"),
                "hyper": json.dumps(r.get("hyper") or {}, sort_keys=True),
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
                m["kind"],
                "yes" if m["synthetic"] else "no",
                _f(prof["vision"]["score"]) if prof and prof["vision"]["n_layers"] else "—",
                _f(prof["connector"]["score"]) if prof and prof["connector"]["n_layers"] else "—",
                _f(prof["llm"]["score"]) if prof and prof["llm"]["n_layers"] else "—",
                _f(m.get("p_final")) + (" (zero-shot)" if m.get("p_final_source") == "zeroshot" else ""),
                f"{best['id']}/{best['readout']} {best['accuracy']:.3f}" if best else "—",
                prof["profile"] if prof else "—",
            ]
        )
    return rows


SUMMARY_HEADER = [
    "model",
    "kind",
    "synthetic",
    "FHS_V",
    "FHS_C",
    "FHS_L",
    "P_final",
    "best layer (accuracy)",
    "profile",
]
LAYER_HEADER = ["layer", "readout", "stage", "depth", "accuracy", "95% CI", "chance", "perm. p", "control", "selectivity",
                "bal. acc.", "macro-F1", "AUROC", "chosen"]  # fmt: skip


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
        out.append(
            [
                layer,
                r["readout"],
                r["stage"],
                f"{r['depth']:.2f}",
                _f(r.get("accuracy")),
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


def _diag_cells(model: Mapping[str, Any], probe: str) -> list[tuple[str, str, str]]:
    """(mode, verdict, summary) per mode for an MLLM."""
    return [(v["mode"], v["verdict"], v["summary"]) for v in model.get("diagnosis", {}).get(probe, [])]


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
                cells = {mode: f"**{verdict}**: {summary}" for mode, verdict, summary in _diag_cells(m, probe)}
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
            L += [f"## Layers: {m['title']} ({m['kind']}) — `{probe}` probe{flag}", ""]
            L += _md_table(LAYER_HEADER, rows) + [""]
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
    ds = report["diagnosis_settings"]
    for probe in report["probes"]:
        H.append(f"<h2>Summary — {_h(probe)} probe</h2>")
        H.append(_html_table(SUMMARY_HEADER, _summary_rows(report, probe)))
        if _has_zeroshot(report):
            H.append(f"<p>{_h(ZEROSHOT_NOTE)}</p>")
        H.append(f"<h2>Layer curves — {_h(probe)} probe</h2>")
        H.append(_img(figures.layer_curves_png(report, probe), f"layer curves ({probe})"))
        H.append(f"<h2>Feature Health Score profiles — {_h(probe)} probe</h2>")
        H.append(_img(figures.fhs_profiles_png(report, probe), f"FHS profiles ({probe})"))
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
                    cells.append(
                        f'<td class="{_h(v["verdict"])}"><b>{_h(v["verdict"])}</b><br>{_h(v["summary"])}'
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
    for probe in report["probes"]:
        for m in report["models"]:
            rows = _layer_rows(m, probe)
            if not rows:
                continue
            flag = " — SYNTHETIC" if m["synthetic"] else ""
            H.append(f"<details><summary>{_h(m['title'])} ({_h(m['kind'])}) — {_h(probe)} probe{_h(flag)}</summary>")
            H.append(_html_table(LAYER_HEADER, rows, numeric_from=3))
            H.append("</details>")
    H.append("<h2>Run manifests</h2>")
    for m in report["models"]:
        H.append(
            f"<details><summary>{_h(m['title'])}</summary><pre>{_h(json.dumps(m.get('manifest') or {}, indent=1))}</pre></details>"
        )
    H.append("</body></html>")
    return "\n".join(H)


def write_html(report: Mapping[str, Any], out_dir: Path | str) -> Path:
    """``report.html`` (self-contained)."""
    return _atomic_write(Path(out_dir) / "report.html", render_html(report).encode())


BUILTIN_EXPORTERS: dict[str, Callable[[Mapping[str, Any], Path], Path]] = {
    "json": write_json,
    "csv": write_csv,
    "md": write_markdown,
    "html": write_html,
}


def write_report(
    report: Mapping[str, Any], out_dir: Path | str, formats: Sequence[str] = ("json", "csv", "md", "html")
) -> dict[str, Path]:
    """Write ``report`` in every format of ``formats`` into ``out_dir``; returns format -> path.
    Formats other than the built-ins come from the plugin registry (``register_exporters``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt in formats:
        writer = BUILTIN_EXPORTERS.get(fmt)
        if writer is None:
            from ..plugins import get_plugins
            from ..registry import resolve_factory

            writer = resolve_factory(get_plugins().exporters.get(fmt))
        written[fmt] = Path(writer(report, out_dir))
    return written
