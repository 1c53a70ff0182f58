"""``medprobe extract``: capture every selected layer of a model over a dataset into a run."""

from __future__ import annotations

import click


@click.command()
@click.option("--model", "-m", "model", required=True, help="Card id, alias or family:NAME (e.g. timm:resnet18).")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False), help="Folder holding run directories.")
@click.option("--layers", default=None, help="Layer patterns, e.g. 'vision.*,connector,llm.*' (default: all).")
@click.option("--readout", "readouts", default="image-mean,last-token", show_default=True, help="Readouts (image-mean, cls, last-token, text-mean).")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda:N")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]))
@click.option("--limit", default=None, type=int, help="Use a deterministic subset of N samples.")
@click.option("--tiny", is_flag=True, help="Tiny random model of the card's class (offline pipeline check; not a finding).")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Reuse / continue an existing run with the same key.")
@click.option("--source", default=None, help="Hub id or local directory overriding the card's hub id.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--weights", default=None, type=click.Path(exists=True), help="Local weights file/dir (baselines).")
@click.option("--random-init", is_flag=True, help="Random weights on purpose (a control; baselines).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (e.g. Hulu-Med).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
def extract(model, dataset, out, layers, readouts, batch_size, device, dtype, limit, tiny, resume, source, revision,
            weights, random_init, trust_remote_code, seed, as_json):
    """Extract pooled features of every selected layer (one forward pass per batch)."""
    from ..extract import extract as run_extract
    from .output import echo_json

    options = {}
    for name, value in (("source", source), ("revision", revision), ("weights", weights)):
        if value is not None:
            options[name] = value
    if random_init:
        options["random_init"] = True
    if trust_remote_code:
        options["trust_remote_code"] = True
    run = run_extract(model, dataset, out, layers=layers, readouts=readouts, batch_size=batch_size, device=device,
                      dtype=dtype, limit=limit, tiny=tiny, resume=resume, seed=seed, **options)
    summary = {
        "run": str(run.path),
        "model": run.model_id,
        "rows": len(run.sample_ids),
        "features": len(run.feature_keys),
        "synthetic": run.manifest["synthetic_reasons"],
    }
    if as_json:
        echo_json(summary)
        return
    click.echo(f"run: {run.path}")
    click.echo(f"{summary['rows']} samples x {summary['features']} (layer, readout) feature sets")
    if run.manifest["synthetic"]:
        click.echo("NOTE: " + "; ".join(run.manifest["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")
