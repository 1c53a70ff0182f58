"""``medprobe probe | report | compare | demo``: probes, FHS, diagnosis and the side-by-side report."""

from __future__ import annotations

import os
from typing import Any

import click

from .options import CLASSIFY_MODE_HELP, DEFAULT_CLASSIFY_MODE, json_option, layers_option, limit_option, probe_option
from .options import readout_option, skip_bad_option, dataset_spec


def _print_report_summary(rep, out: str | None, as_json: bool = False) -> None:
    """Print the FHS profiles of a :class:`medprobe.analysis.reporting.Report` (or its dict); with
    ``as_json`` the summary as JSON (report path, rows with card, condition, FHS, P_final)."""
    report = rep.data if hasattr(rep, "data") else rep
    if as_json:
        from .output import echo_json

        primary = report.get("primary_probe")
        echo_json({
            "report": str(out) if out else None,
            "synthetic": report.get("synthetic"),
            "primary_probe": primary,
            "models": [
                {"id": m["id"], "card": m.get("card") or m["id"], "kind": m["kind"],
                 "condition": (m.get("condition") or {}).get("label") if isinstance(m.get("condition"), dict)
                 else m.get("condition"),
                 "p_final": m.get("p_final"), "p_final_ci95": m.get("p_final_ci95"),
                 "fhs": ((m.get("fhs") or {}).get(primary) or {}).get("profile")}
                for m in report["models"]
            ],
        })  # fmt: skip
        return
    for m in report["models"]:
        skipped = (m.get("dataset") or {}).get("skipped")
        if skipped:
            click.echo(f"{m['id']}: {skipped} bad sample(s) were skipped (--skip-bad)", err=True)
    if report.get("synthetic"):
        click.echo(f"NOTE: {report.get('banner', 'synthetic inputs')}")
    if report.get("leakage_banner"):
        click.echo(report["leakage_banner"])
    primary = report.get("primary_probe")
    click.echo(f"FHS profiles ({primary} probe):")
    for m in report["models"]:
        profile = ((m.get("fhs") or {}).get(primary) or {}).get("profile", "")
        click.echo(f"  {m['id']:<28} {m['kind']:<9} {profile}")
    if out:
        click.echo(f"report written to {out} (report.json, report.csv, report.md, report.html)")


def _parse_seeds(value: str | None) -> Any:
    """``--seeds 3`` -> 3 seeds (base ``--seed``); ``--seeds 0,4,7`` -> that list."""
    if value is None:
        return None
    try:
        parts = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a count or a comma-separated list of integers, got {value!r}") from None
    return parts if "," in value else parts[0]


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@probe_option
@click.option("--protocol", type=click.Choice(["cv", "split"]), default="cv", show_default=True,
              help="cv: k stratified, grouped folds, every sample scored once per seed; split: the held-out test split.")
@click.option("--k", "k", default=5, show_default=True, type=int, help="Folds of --protocol cv.")
@click.option("--seeds", default="3", show_default=True, help="Probe seeds: a count (from --seed) or a list, e.g. 0,1,2.")
@click.option("--seed", default=0, show_default=True, type=int, help="First seed when --seeds is a count.")
@click.option("--permutations", "n_permutations", default=100, show_default=True, type=int,
              help="Permutation-null size for both probes.")
@click.option("--recipe", default=None, help="Named probe recipe: mlp 'paper' (default) or 'tuned'; linear 'grid'.")
@click.option("--holdout", is_flag=True, help="cv on train+val and the official test split scored once, reported separately.")
@click.option("--no-controls", is_flag=True, help="Skip the permutation null and the control task.")
@click.option("--force", is_flag=True, help="Retrain even when results for these settings exist (default: reuse them).")
@json_option("Print every probe's results as JSON (probe name -> results).")
def probe(run, probe, protocol, k, seeds, seed, n_permutations, recipe, holdout, no_controls, force, as_json):
    """Probe every captured layer of RUN (all layers, folds, seeds and permutations batched).

    Results are saved in RUN/probes/<settings>; a rerun with the same settings reuses them (the output says so)."""
    from ..analysis.protocol import ProbeSettings
    from ..datasets.groups import summary_line
    from ..features.store import Run
    from ..tasks.pipeline import parse_probes, probe_dir, probe_run  # probe_run is what medprobe.probe wraps
    from .output import echo_json, echo_table

    parsed = _parse_seeds(seeds)
    seed_list = list(range(seed, seed + parsed)) if isinstance(parsed, int) else parsed
    settings = ProbeSettings(protocol=protocol, k=k, seeds=seed_list, n_permutations=n_permutations,
                             controls=not no_controls, recipe=recipe, holdout=holdout)
    r = Run.open(run)
    saved = {n for n in parse_probes(probe) if not force and (probe_dir(r, n, settings) / "results.json").is_file()}
    results = probe_run(r, probe, settings=settings, force=force)
    leakage = r.manifest.get("leakage")
    if as_json:
        echo_json({name: res.to_dict() for name, res in results.items()})  # protocol.leakage: the duplicates
        return
    line = summary_line(leakage) if leakage is not None else (
        "LEAKAGE: not recorded (run extracted before duplicate checks); re-extract to group folds by duplicate cluster")
    if line:
        click.echo(line)
    for name, res in results.items():
        pr = res.protocol
        what = f"cv k={pr.get('k')}" if pr.get("name") == "cv" else "split (test)"
        click.echo(f"{name} probe, recipe {pr.get('recipe')}, {what}, seeds {pr.get('seeds')}, "
                   f"{pr.get('n_permutations')} permutations, {pr.get('n_scored')} samples scored -> "
                   f"{probe_dir(r, name, settings)}: "
                   + ("reused saved results (--force retrains)" if name in saved else "trained"))
        click.echo(f"  selection: {pr.get('hyper_selection')}")
        if pr.get("n_permutations"):
            click.echo(f"  permutations: {pr.get('permutation_selection')}")
        holdout_rows = any(lr.holdout for lr in res.layers.values())
        head = ["layer/readout", "accuracy", "95% CI", "seed sd", "chance", "perm p", "selectivity"]
        if holdout_rows:
            head.append("held-out test")
        rows = []
        for key, lr in res.layers.items():
            row = [key, f"{lr.accuracy:.3f}", "[{:.3f}, {:.3f}]".format(*lr.ci95) if lr.ci95 else "",
                   f"{lr.seed_sd:.3f}" if lr.seed_sd is not None else "",
                   f"{lr.chance:.3f}" if lr.chance is not None else "",
                   f"{lr.permutation_p:.3f}" if lr.permutation_p is not None else "",
                   f"{lr.selectivity:+.3f}" if lr.selectivity is not None else ("n/i" if lr.control_note else "")]
            if holdout_rows:
                row.append(f"{lr.holdout['accuracy']:.3f} (n={lr.holdout['n']})" if lr.holdout else "")
            rows.append(row)
        echo_table(head, rows)
        notes = {lr.control_note for lr in res.layers.values() if lr.control_note}
        for note in sorted(notes):
            click.echo(f"  n/i: {note}")
        warned = [(key, w) for key, lr in res.layers.items() for w in lr.warnings]
        for key, w in warned:
            click.echo(f"  WARNING {key}: {w}")
        if holdout_rows:
            click.echo("  held-out test: the official test rows, scored once per seed by a probe selected on val; "
                       "not part of the cv accuracy")
    if r.manifest.get("synthetic"):
        click.echo("NOTE: " + "; ".join(r.manifest["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for report.json/.csv/.md/.html.")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False), help="A run to show as the baseline row.")
@probe_option
@click.option("--seed", default=0, show_default=True, type=int, help="Probe seed (saved results of this seed are reused).")
@json_option("Print the report summary as JSON (the full report is OUT/report.json).")
def report(runs, out, baseline, probe, seed, as_json):
    """Side-by-side report from existing run directories (probing them first when needed).

    Several runs of one card (before / after LoRA, random-weights twin, two checkpoints) are
    rows of their own, labelled by their condition."""
    from ..api import report as make_report

    _print_report_summary(make_report(list(runs), out, baseline=baseline, probe=probe, seed=seed), out, as_json)


@click.command()
@click.option("--models", required=True, help="Comma-separated model references, e.g. lingshu-7b,medgemma-4b,resnet50.")
@click.option("--dataset", "-d", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the report files.")
@click.option("--store", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Store root for the extract / classify runs [default: $MEDPROBE_CACHE_DIR, else OUT/runs].")
@click.option("--tiny", is_flag=True, help="Tiny random models (offline pipeline check; not a finding).")
@probe_option
@layers_option()
@readout_option
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward pass.")
@limit_option()
@skip_bad_option
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda:N")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Compute dtype (auto: bf16 on GPUs that have it, else fp32).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the --limit subset, tiny models and probes.")
@click.option("--classify", "classify", type=click.Choice(["generate", "score", "none"]), default=DEFAULT_CLASSIFY_MODE,
              show_default=True, help=CLASSIFY_MODE_HELP + " none = no P_final.")
@json_option("Print the report summary as JSON (the full report is OUT/report.json).")
def compare(models, dataset, out, store, tiny, probe, layers, readouts, batch_size, limit, skip_bad, device, dtype,
            seed, classify, as_json):
    """Extract + probe + classify + score + report several models on one dataset."""
    from ..api import compare as run_compare

    store = store or os.environ.get("MEDPROBE_CACHE_DIR") or None
    rep = run_compare(models, dataset_spec(dataset, skip_bad=skip_bad), out, tiny=tiny, probe=probe, layers=layers,
                      readouts=readouts, batch_size=batch_size, limit=limit, device=device, dtype=dtype, seed=seed,
                      classify=None if classify == "none" else classify, store=store)
    _print_report_summary(rep, out, as_json)


@click.command()
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the report files (and the runs, unless --store / $MEDPROBE_CACHE_DIR is set).")
@probe_option
@click.option("--dataset", "-d", default=None, help="A synthetic dataset spec instead of the embedded default "
              "(e.g. 'synthetic:lesions?n=60&size=48' for a quicker run).")
@click.option("--store", default=None, type=click.Path(file_okay=False), metavar="DIR",
              help="Store root for the runs [default: $MEDPROBE_CACHE_DIR, else OUT/runs].")
@json_option("Print the report summary as JSON (the full report is OUT/report.json).")
def demo(out, probe, dataset, store, as_json):
    """Run the whole pipeline offline on the embedded synthetic dataset with tiny random models."""
    from ..api import demo as run_demo
    from ..tasks.pipeline import DEMO_DATASET, demo_models

    if not as_json:
        click.echo(f"demo: {', '.join(demo_models())} (tiny random) on {dataset or DEMO_DATASET} - a pipeline check, "
                   "not a medical finding")
    store = store or os.environ.get("MEDPROBE_CACHE_DIR") or None
    _print_report_summary(run_demo(out, probe=probe, dataset=dataset, store=store), out, as_json)
