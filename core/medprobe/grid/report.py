"""``medprobe grid report``: one report per (dataset, condition) over the grid's finished runs,
plus an index page.

Reports refuse runs on different datasets, so the grid's runs are grouped by dataset and
condition; each group is passed to :func:`medprobe.tasks.pipeline.report_runs` (which probes any run
whose probe results are missing) and written to ``DIR/<dataset>__<condition>/``. Baselines run
under ``base`` only; they are the reference rows of every condition's report on their dataset.
``DIR/index.{json,md,html}`` lists the groups, the models in each with their FHS profile, and
the jobs not finished yet. ``[[train]]`` runs (``medprobe train``) join every group of their
dataset: the report lists their test accuracy beside the probes.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any, Sequence

from ..registry import MedprobeError
from ..features.store import atomic_write_bytes, atomic_write_json
from .experiment import Experiment
from .jobs import expand_jobs
from .status import JobStatus, grid_status

INDEX_FORMAT = "medprobe.grid-index/1"


def _complete(st: JobStatus) -> bool:
    return st.status == "done" or (st.status == "partial" and st.note.startswith("probes missing"))


def _groups(exp: Experiment, statuses: Sequence[JobStatus]) -> list[dict[str, Any]]:
    groups = []
    for ds in exp.datasets:
        everything = [s for s in statuses if s.job.dataset.name == ds.name]
        trained = [s for s in everything if s.job.condition.kind == "train"]
        mine = [s for s in everything if s.job.condition.kind != "train"]
        baselines = [s for s in mine if s.job.kind != "mllm"] + trained
        labels = list(dict.fromkeys(s.job.condition.label for s in mine if s.job.kind == "mllm"))
        if not labels and any(s.job.kind != "mllm" for s in mine):
            labels = ["base"]
        for label in labels:
            members = [s for s in mine if s.job.kind == "mllm" and s.job.condition.label == label] + baselines
            cond = next((s.job.condition for s in members if s.job.condition.label == label), members[0].job.condition)
            groups.append({"dataset": ds.name, "spec": ds.spec, "condition": cond.name, "label": label, "members": members})
    return groups


def _summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Per model of a report: its FHS profile (primary probe); per trained classifier: its test accuracy."""
    primary = report.get("primary_probe")
    rows = []
    for m in report.get("models", []):
        fhs = m.get("fhs", {}).get(primary, {})
        rows.append({"id": m["id"], "kind": m["kind"], "profile": fhs.get("profile", ""), "synthetic": m.get("synthetic")})
    for t in report.get("trained", []):
        acc = t.get("test_accuracy")
        rows.append({"id": t["id"], "kind": f"trained ({t['recipe']})", "synthetic": t.get("synthetic"),
                     "profile": f"test accuracy {acc:.3f}" if isinstance(acc, (int, float)) else "test accuracy n/a"})
    return rows


def grid_report(exp: Experiment, out: str | Path, *, only: Sequence[str] | str | None = None,
                formats: Sequence[str] = ("json", "csv", "md", "html")) -> dict[str, Any]:
    """Write every group's report and the index into ``out``; returns the index dict."""
    from ..tasks.pipeline import probe_run, report_runs

    out = Path(out)
    statuses = grid_status(exp, expand_jobs(exp, only))
    index: dict[str, Any] = {
        "format": INDEX_FORMAT,
        "experiment": exp.name,
        "experiment_file": str(exp.path),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "probes": list(exp.probes),
        "groups": [],
        "jobs": {s: n for s, n in _count(statuses).items()},
    }
    for group in _groups(exp, statuses):
        members = group.pop("members")
        ready = [s for s in members if _complete(s)]
        entry = dict(group, dir=f"{group['dataset']}__{group['label']}", models=[], error=None,
                     missing=[{"job": s.job.id, "status": s.status, "note": s.note} for s in members if not _complete(s)])
        if not any(s.job.kind == "mllm" for s in ready) and any(s.job.kind == "mllm" for s in members):
            entry["error"] = "no finished MLLM run in this group yet"
        elif not ready:
            entry["error"] = "no finished run in this group yet"
        else:
            ids = [s.job.model.ref for s in ready]
            try:
                for s in ready:  # probes missing from a run are trained with the experiment's options
                    if s.job.condition.kind != "train":
                        probe_run(s.run_dir, list(exp.probes), seed=exp.seed, **exp.probe_options)
                report = report_runs([s.run_dir for s in ready], out / entry["dir"], probes=list(exp.probes),
                                     seed=exp.seed, formats=formats,
                                     title=f"{exp.name}: {group['dataset']} ({group['condition']})")
            except MedprobeError as exc:
                entry["error"] = f"{exc} (models {ids})"
            else:
                entry["models"] = _summary_rows(report)
                entry["synthetic"] = bool(report.get("synthetic"))
        index["groups"].append(entry)
    index["synthetic"] = any(g.get("synthetic") for g in index["groups"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "index.json", index)
    atomic_write_bytes(out / "index.md", _markdown(index).encode())
    atomic_write_bytes(out / "index.html", _html(index).encode())
    return index


def _count(statuses: Sequence[JobStatus]) -> dict[str, int]:
    from .status import summary

    return summary(statuses)


def _markdown(index: dict[str, Any]) -> str:
    lines = [f"# {index['experiment']}: grid report", ""]
    if index["synthetic"]:
        lines += ["> **SYNTHETIC**: tiny random models and/or synthetic data - a pipeline check, not a medical finding.", ""]
    lines += ["Jobs: " + ", ".join(f"{n} {s}" for s, n in index["jobs"].items() if n), ""]
    for g in index["groups"]:
        lines += [f"## {g['dataset']} - {g['condition']}", ""]
        if g["error"]:
            lines += [f"_{g['error']}_", ""]
        else:
            lines += [f"Report: [{g['dir']}/report.md]({g['dir']}/report.md) ([html]({g['dir']}/report.html))", "",
                      "| model | kind | FHS profile |", "| --- | --- | --- |"]
            lines += [f"| {m['id']} | {m['kind']} | {m['profile']} |" for m in g["models"]]
            lines.append("")
        if g["missing"]:
            lines += ["Not finished: " + ", ".join(f"{m['job']} ({m['status']})" for m in g["missing"]), ""]
    return "\n".join(lines) + "\n"


def _html(index: dict[str, Any]) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{e(index['experiment'])}: grid report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.banner{background:#fde2e1;padding:.6em;"
        "border:1px solid #d33}.missing{color:#777}</style></head><body>",
        f"<h1>{e(index['experiment'])}: grid report</h1>",
    ]
    if index["synthetic"]:
        parts.append("<p class='banner'><b>SYNTHETIC</b>: tiny random models and/or synthetic data &mdash; a pipeline "
                     "check, not a medical finding.</p>")
    parts.append("<p>Jobs: " + e(", ".join(f"{n} {s}" for s, n in index["jobs"].items() if n)) + "</p>")
    for g in index["groups"]:
        parts.append(f"<h2>{e(g['dataset'])} &mdash; {e(g['condition'])}</h2>")
        if g["error"]:
            parts.append(f"<p><i>{e(g['error'])}</i></p>")
        else:
            parts.append(f"<p><a href='{e(g['dir'])}/report.html'>full report</a> &middot; "
                         f"<a href='{e(g['dir'])}/report.json'>json</a></p>")
            parts.append("<table><tr><th>model</th><th>kind</th><th>FHS profile</th></tr>")
            parts += [f"<tr><td>{e(m['id'])}</td><td>{e(m['kind'])}</td><td>{e(m['profile'])}</td></tr>" for m in g["models"]]
            parts.append("</table>")
        if g["missing"]:
            parts.append("<p class='missing'>Not finished: "
                         + e(", ".join(f"{m['job']} ({m['status']})" for m in g["missing"])) + "</p>")
    parts.append(f"<p class='missing'>{e(index['experiment_file'])} &middot; {e(index['created'])}</p></body></html>")
    return "\n".join(parts) + "\n"

