"""``medprobe zeroshot``: zero-shot classification with a contrastive model (P_final of a CLIP baseline).

Prompt templates and scoring: :mod:`medprobe.zeroshot`.
"""

from __future__ import annotations

import click

from .common import json_option, limit_option, open_dataset_for, skip_bad_option


@click.command()
@click.option("--model", "-m", "model", required=True, help="open_clip / hf_clip card id or family:NAME.")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write (zeroshot.json).")
@click.option("--template", "templates", multiple=True,
              help="Prompt template with '{c}' for the class name (repeatable; default: medprobe's four templates).")
@click.option("--tiny", is_flag=True, help="Tiny random model of the card's class (offline pipeline check; not a finding).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1), help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda:N")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Compute dtype (auto: bf16 on GPUs that have it, else fp32).")
@click.option("--weights", default=None, type=click.Path(exists=True), help="Local weights file/dir.")
@click.option("--random-init", is_flag=True, help="Random weights on purpose (a control).")
@click.option("--source", default=None, help="Hub id or local directory overriding the card's hub id.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the tiny model.")
@limit_option("Classify a stratified subset of N samples of the dataset.")
@skip_bad_option
@json_option("Print the metrics as JSON.")
def zeroshot(model, dataset, out, templates, tiny, batch_size, device, dtype, weights, random_init, source, seed, limit,
             skip_bad, as_json):
    """Classify DATASET with MODEL's image and text towers from class-name prompts."""
    from ..zeroshot import DEFAULT_TEMPLATES, zeroshot as run_zeroshot
    from .output import echo_json, echo_table

    options = {k: v for k, v in (("weights", weights), ("source", source)) if v is not None}
    if random_init:
        options["random_init"] = True
    ds = open_dataset_for(dataset, skip_bad=skip_bad, limit=limit)
    run = run_zeroshot(model, ds, out, templates=tuple(templates) or DEFAULT_TEMPLATES, tiny=tiny,
                       batch_size=batch_size, device=device, dtype=dtype, seed=seed, **options)
    if as_json:
        echo_json({"run": str(run.path), "p_final": run.p_final, "metrics": run.metrics,
                   "synthetic": run.record["synthetic_reasons"]})
        return
    click.echo(f"run: {run.path}  (P_final = zero-shot test accuracy {run.p_final:.3f}, n = {run.p_final_n})")
    echo_table(
        ["split", "n", "accuracy", "95% CI", "bal. acc.", "macro-F1", "AUROC"],
        [[s, m["n"], f"{m['accuracy']:.3f}", "[{:.3f}, {:.3f}]".format(*m["ci95"]), f"{m['balanced_accuracy']:.3f}",
          f"{m['macro_f1']:.3f}", "—" if m["auroc"] is None else f"{m['auroc']:.3f}"]
         for s, m in run.metrics.items()],
    )
    if run.record["synthetic"]:
        click.echo("NOTE: " + "; ".join(run.record["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")
