"""``medprobe finetune``: LoRA SFT of an MLLM on the classification prompt (the "after" model).

The adapter it writes is probed with ``medprobe extract ... --adapter DIR``. Defaults and the
training example are documented in :mod:`medprobe.models.lora`.
"""

from __future__ import annotations

import click

from .options import deprecated_option, force_option, honour_deprecated, json_option, limit_option, load_options
from .options import open_dataset_for, skip_bad_option


@click.command()
@click.option("--model", "-m", "model", required=True, help="MLLM card id or alias.")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec; only its train split is used.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Adapter directory to write.")
@click.option("--lora-rank", "rank", default=8, show_default=True, type=click.IntRange(min=1), help="LoRA rank r.")
@deprecated_option("--rank", "--lora-rank", "rank", type=int)
@click.option("--alpha", default=16.0, show_default=True, type=float, help="LoRA alpha (scale alpha / r).")
@click.option("--dropout", default=0.05, show_default=True, type=float, help="LoRA dropout.")
@click.option("--targets", default="q_proj,v_proj", show_default=True, help="Comma-separated module names to adapt.")
@click.option("--scope", default="llm", show_default=True, type=click.Choice(["llm", "all"]),
              help="llm: only modules inside the LLM layers; all: also same-named vision-tower modules.")
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(min=1), help="Passes over the train split.")
@click.option("--lr", default=1e-4, show_default=True, type=float, help="AdamW learning rate.")
@click.option("--weight-decay", default=0.0, show_default=True, type=float, help="AdamW weight decay.")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1), help="Images per optimizer step.")
@click.option("--max-steps", default=None, type=int, help="Stop after N optimizer steps.")
@limit_option("Train on a stratified subset of N samples of the dataset (its train split).")
@skip_bad_option
@click.option("--prompt", default=None, help="Question to train on (default: the classification question).")
@force_option("Replace an adapter already in --out (default: refuse).", old_overwrite=True)
@json_option("Print the fine-tuning record as JSON.")
@load_options(exclude=("lora", "merge_lora", "weights", "random_init", "device_map", "max_memory", "image_size"))
@honour_deprecated
def finetune(model, dataset, out, rank, alpha, dropout, targets, scope, epochs, lr, weight_decay, batch_size,
             max_steps, limit, skip_bad, prompt, force, as_json, load):
    """LoRA fine-tune MODEL on the classification prompt of DATASET's train split; the loss is on the
    class-name answer tokens only. Writes a peft adapter (+ train_log.jsonl, medprobe_finetune.json)
    to OUT for `medprobe extract --adapter OUT`."""
    from ..tasks.finetune import LoraSettings, finetune as run_finetune
    from .output import echo_json

    settings = LoraSettings(
        rank=rank, alpha=alpha, dropout=dropout, targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
        scope=scope, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_steps=max_steps,
        seed=load.seed,
    )
    ds = open_dataset_for(dataset, skip_bad=skip_bad, limit=limit)
    result = run_finetune(model, ds, out, settings=settings, prompt=prompt, overwrite=force, load=load)
    record = result.record
    if as_json:
        echo_json({"path": str(result.path), **record})
        return
    click.echo(f"adapter: {result.path}")
    click.echo(
        f"{record['steps']} steps on {record['dataset']['samples']} training images; loss "
        f"{record['first_loss']:.4f} -> {record['final_loss']:.4f} "
        f"({record['hyperparameters']['trainable_parameters']} trainable parameters)"
    )
    if record["synthetic"]:
        click.echo("NOTE: " + "; ".join(record["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")
