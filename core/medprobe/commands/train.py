"""``medprobe train``: train a baseline (finetune / linear) or an MLLM's vision tower as a classifier.

Recipes, defaults and the run directory are documented in :mod:`medprobe.tasks.train` and
:mod:`medprobe.tasks.training.record`; ``medprobe report RUN ...`` shows the trained run.
"""

from __future__ import annotations

import click

from .options import force_option, honour_deprecated, json_option, layers_option, limit_option, load_options
from .options import open_dataset_for, skip_bad_option


@click.command()
@click.option("--model", "-m", "model", required=True,
              help="Baseline card id / family:NAME (finetune, linear) or MLLM card id (vision-tower).")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Run directory to write (train.json, checkpoint/).")
@click.option("--recipe", type=click.Choice(["finetune", "linear", "vision-tower"]), default="finetune", show_default=True,
              help="finetune: the whole baseline; linear: a head on the frozen backbone; vision-tower: an MLLM's vision encoder.")
@click.option("--epochs", default=None, type=int, help="Maximum epochs (default per recipe: 30 / 100 / 10).")
@click.option("--lr", default=None, type=float,
              help="Backbone learning rate (default 1e-4 finetune, 1e-5 vision-tower); head lr for frozen backbones (1e-3).")
@click.option("--head-lr", default=None, type=float, help="Head learning rate (default 1e-3).")
@click.option("--batch-size", default=None, type=int, help="Training batch (default 32 / 64 / 16).")
@click.option("--patience", default=None, type=int, help="Early-stopping patience in epochs (default 5 / 15 / 3).")
@limit_option("Train and score on a stratified subset of N samples of the dataset.")
@skip_bad_option
@click.option("--freeze", is_flag=True, help="Train the head only on the frozen backbone (implied by --recipe linear).")
@click.option("--layer", default=None, help="vision-tower: the vision layer to pool (default: the one feeding the connector).")
@click.option("--probe-layers", is_flag=True, help="Also extract the trained model's layers into RUN/layers for the report.")
@layers_option("With --probe-layers: layer patterns (default all; 'vision' for vision-tower).", dest="layer_patterns")
@force_option("Replace a trained run already in --out (default: refuse).", old_overwrite=True)
@json_option("Print the run's metrics as JSON.")
@load_options(exclude=("lora", "merge_lora", "device_map", "max_memory"), dtype_default=None)
@honour_deprecated
def train(model, dataset, out, recipe, epochs, lr, head_lr, batch_size, patience, limit, skip_bad, freeze, layer,
          probe_layers, layer_patterns, force, as_json, load):
    """Train MODEL as a classifier on DATASET: early stopping on val, test scored once with the best epoch."""
    from ..tasks.train import format_epoch, train as run_train
    from .output import echo_json, echo_table

    ds = open_dataset_for(dataset, skip_bad=skip_bad, limit=limit)
    run = run_train(
        model, ds, out, recipe=recipe, epochs=epochs, lr=lr, head_lr=head_lr, batch_size=batch_size,
        patience=patience, freeze=freeze, layer=layer, probe_layers=probe_layers, probe_layer_patterns=layer_patterns,
        overwrite=force, on_epoch=None if as_json else (lambda e: click.echo(format_epoch(e))), load=load,
    )
    if as_json:
        echo_json({"run": str(run.path), "best_epoch": run.best_epoch, "metrics": run.metrics,
                   "synthetic": run.record["synthetic_reasons"]})
        return
    rec = run.record
    click.echo(f"run: {run.path}  (best epoch {run.best_epoch} of {rec['epochs_run']}"
               + (", stopped early" if rec["stopped_early"] else "") + ")")
    echo_table(
        ["split", "n", "accuracy", "95% CI", "bal. acc.", "macro-F1", "AUROC"],
        [[s, m["n"], f"{m['accuracy']:.3f}", "[{:.3f}, {:.3f}]".format(*m["ci95"]), f"{m['balanced_accuracy']:.3f}",
          f"{m['macro_f1']:.3f}", "—" if m["auroc"] is None else f"{m['auroc']:.3f}"]
         for s, m in run.metrics.items()],
    )
    if rec.get("layers_run"):
        click.echo(f"layers of the trained model: {run.layers_run_path}")
    if rec["synthetic"]:
        click.echo("NOTE: " + "; ".join(rec["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")
