"""``medprobe probe | report | compare | demo``: probes, FHS, diagnosis and the side-by-side report."""

from __future__ import annotations

import click

PROBE_CHOICES = click.Choice(["linear", "mlp", "all"])


def _print_report_summary(rep, out: str | None) -> None:
    """Print the FHS profiles of a :class:`medprobe.analysis.reporting.Report` (or its dict)."""
    report = rep.data if hasattr(rep, "data") else rep
    if report.get("synthetic"):
        click.echo(f"NOTE: {report.get('banner', 'synthetic inputs')}")
    primary = report.get("primary_probe")
    click.echo(f"FHS profiles ({primary} probe):")
    for m in report["models"]:
        profile = ((m.get("fhs") or {}).get(primary) or {}).get("profile", "")
        click.echo(f"  {m['id']:<28} {m['kind']:<9} {profile}")
    if out:
        click.echo(f"report written to {out} (report.json, report.csv, report.md, report.html)")


@click.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--probe", "probe", type=PROBE_CHOICES, default="linear", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--no-controls", is_flag=True, help="Skip the permutation null and the control task.")
@click.option("--force", is_flag=True, help="Retrain even when results for this probe and seed exist.")
@click.option("--json", "as_json", is_flag=True)
def probe(run, probe, seed, no_controls, force, as_json):
    """Probe every captured layer of RUN (all layers trained together, batched)."""
    from ..tasks.pipeline import probe_dir, probe_run  # probe_run is the API's medprobe.probe
    from ..features.store import Run
    from .output import echo_json, echo_table

    r = Run.open(run)
    results = probe_run(r, probe, seed=seed, controls=not no_controls, force=force)
    if as_json:
        echo_json({name: res.to_dict() for name, res in results.items()})
        return
    for name, res in results.items():
        click.echo(f"{name} probe (seed {seed}) -> {probe_dir(r, name, seed)}")
        echo_table(
            ["layer/readout", "accuracy", "95% CI", "chance", "perm p", "selectivity"],
            [
                [key, f"{lr.accuracy:.3f}", "[{:.3f}, {:.3f}]".format(*lr.ci95) if lr.ci95 else "",
                 f"{lr.chance:.3f}" if lr.chance is not None else "",
                 f"{lr.permutation_p:.3f}" if lr.permutation_p is not None else "",
                 f"{lr.selectivity:+.3f}" if lr.selectivity is not None else ""]
                for key, lr in res.layers.items()
            ],
        )
    if r.manifest.get("synthetic"):
        click.echo("NOTE: " + "; ".join(r.manifest["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for report.json/.csv/.md/.html.")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False), help="A run to show as the baseline row.")
@click.option("--probe", "probe", type=PROBE_CHOICES, default="linear", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
def report(runs, out, baseline, probe, seed):
    """Side-by-side report from existing run directories (probing them first when needed)."""
    from ..api import report as make_report

    _print_report_summary(make_report(list(runs), out, baseline=baseline, probe=probe, seed=seed), out)


@click.command()
@click.option("--models", required=True, help="Comma-separated model references, e.g. lingshu-7b,medgemma-4b,resnet50.")
@click.option("--dataset", "-d", required=True, help="Dataset spec.")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--tiny", is_flag=True, help="Tiny random models (offline pipeline check; not a finding).")
@click.option("--probe", "probe", type=PROBE_CHOICES, default="linear", show_default=True)
@click.option("--layers", default=None, help="Layer patterns (default: all).")
@click.option("--readout", "readouts", default="image-mean,last-token", show_default=True)
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--limit", default=None, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--classify", "classify", type=click.Choice(["score", "generate", "none"]), default="score",
              show_default=True, help="How MLLMs answer the classification question for P_final.")
def compare(models, dataset, out, tiny, probe, layers, readouts, batch_size, limit, device, dtype, seed, classify):
    """Extract + probe + classify + score + report several models on one dataset."""
    from ..api import compare as run_compare

    rep = run_compare(models, dataset, out, tiny=tiny, probe=probe, layers=layers, readouts=readouts,
                      batch_size=batch_size, limit=limit, device=device, dtype=dtype, seed=seed,
                      classify=None if classify == "none" else classify)
    _print_report_summary(rep, out)


@click.command()
@click.option("--out", default="demo-out", show_default=True, type=click.Path(file_okay=False))
@click.option("--probe", "probe", type=PROBE_CHOICES, default="linear", show_default=True)
@click.option("--dataset", "-d", default=None, help="A synthetic dataset spec instead of the embedded default "
              "(e.g. 'synthetic:lesions?n=60&size=48' for a quicker run).")
def demo(out, probe, dataset):
    """Run the whole pipeline offline on the embedded synthetic dataset with tiny random models."""
    from ..api import demo as run_demo
    from ..tasks.pipeline import DEMO_DATASET, DEMO_MODELS

    click.echo(f"demo: {', '.join(DEMO_MODELS)} (tiny random) on {dataset or DEMO_DATASET} - a pipeline check, "
               "not a medical finding")
    _print_report_summary(run_demo(out, probe=probe, dataset=dataset), out)
