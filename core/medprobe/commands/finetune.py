"""``medprobe finetune``: LoRA SFT of an MLLM on the classification prompt (the "after" model).

The adapter it writes is probed with ``medprobe extract ... --adapter DIR``. Defaults and the
training example are documented in :mod:`medprobe.models.lora`.
"""

from __future__ import annotations

import click

from .options import load_options


@click.command()
@click.option("--model", "-m", "model", required=True, help="MLLM card id or alias.")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec; only its train split is used.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Adapter directory to write.")
@click.option("--rank", default=8, show_default=True, type=int, help="LoRA rank r.")
@click.option("--alpha", default=16.0, show_default=True, type=float, help="LoRA alpha (scale alpha / r).")
@click.option("--dropout", default=0.05, show_default=True, type=float, help="LoRA dropout.")
@click.option("--targets", default="q_proj,v_proj", show_default=True, help="Comma-separated module names to adapt.")
@click.option("--scope", default="llm", show_default=True, type=click.Choice(["llm", "all"]),
              help="llm: only modules inside the LLM layers; all: also same-named vision-tower modules.")
@click.option("--epochs", default=1, show_default=True, type=int)
@click.option("--lr", default=1e-4, show_default=True, type=float, help="AdamW learning rate.")
@click.option("--weight-decay", default=0.0, show_default=True, type=float)
@click.option("--batch-size", default=4, show_default=True, type=int)
@click.option("--max-steps", default=None, type=int, help="Stop after N optimizer steps.")
@click.option("--prompt", default=None, help="Question to train on (default: the classification question).")
@click.option("--overwrite", is_flag=True, help="Replace an adapter already in --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the fine-tuning record as JSON.")
@load_options(exclude=("lora", "merge_lora", "weights", "random_init", "device_map", "max_memory", "image_size"))
def finetune(model, dataset, out, rank, alpha, dropout, targets, scope, epochs, lr, weight_decay, batch_size,
             max_steps, prompt, overwrite, as_json, load):
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
    result = run_finetune(model, dataset, out, settings=settings, prompt=prompt, overwrite=overwrite, load=load)
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
