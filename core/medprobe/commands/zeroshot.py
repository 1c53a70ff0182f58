"""``medprobe zeroshot``: zero-shot classification with a contrastive model (P_final of a CLIP baseline).

Prompt templates and scoring: :mod:`medprobe.tasks.zeroshot`.
"""

from __future__ import annotations

import click

from .options import load_options


@click.command()
@click.option("--model", "-m", "model", required=True, help="open_clip / hf_clip card id or family:NAME.")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write (zeroshot.json).")
@click.option("--template", "templates", multiple=True,
              help="Prompt template with '{c}' for the class name (repeatable; default: medprobe's four templates).")
@click.option("--batch-size", default=32, show_default=True, type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@load_options(exclude=("lora", "merge_lora", "trust_remote_code", "device_map", "max_memory"))
def zeroshot(model, dataset, out, templates, batch_size, as_json, load):
    """Classify DATASET with MODEL's image and text towers from class-name prompts."""
    from ..tasks.zeroshot import DEFAULT_TEMPLATES, zeroshot as run_zeroshot
    from .output import echo_json, echo_table

    run = run_zeroshot(model, dataset, out, templates=tuple(templates) or DEFAULT_TEMPLATES, batch_size=batch_size,
                       load=load)
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
