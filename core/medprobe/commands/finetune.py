"""``medprobe finetune``: LoRA SFT of an MLLM on the classification prompt (the "after" model).

The adapter it writes is probed with ``medprobe extract ... --adapter DIR``. Defaults and the
training example are documented in :mod:`medprobe.lora`.
"""

from __future__ import annotations

import click

from .common import deprecated_option, force_option, honour_deprecated, json_option, limit_option, open_dataset_for, skip_bad_option


@click.command()
@click.option("--model", "-m", "model", required=True, help="MLLM card id or alias.")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec; only its train split is used.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Adapter directory to write.")
@click.option("--tiny", is_flag=True, help="Tiny random model of the card's class (offline pipeline check; not a finding).")
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
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds shuffling, LoRA init and the tiny model.")
@limit_option("Train on a stratified subset of N samples of the dataset (its train split).")
@skip_bad_option
@click.option("--prompt", default=None, help="Question to train on (default: the classification question).")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda:N")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Compute dtype (auto: bf16 on GPUs that have it, else fp32).")
@click.option("--source", default=None, help="Hub id or local directory overriding the card's hub id.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (e.g. Hulu-Med).")
@force_option("Replace an adapter already in --out (default: refuse).", old_overwrite=True)
@json_option("Print the fine-tuning record as JSON.")
@honour_deprecated
def finetune(model, dataset, out, tiny, rank, alpha, dropout, targets, scope, epochs, lr, weight_decay, batch_size,
             max_steps, seed, limit, skip_bad, prompt, device, dtype, source, revision, trust_remote_code, force, as_json):
    """LoRA fine-tune MODEL on the classification prompt of DATASET's train split; the loss is on the
    class-name answer tokens only. Writes a peft adapter (+ train_log.jsonl, medprobe_finetune.json)
    to OUT for `medprobe extract --adapter OUT`."""
    from ..lora import LoraSettings, finetune as run_finetune
    from .output import echo_json

    settings = LoraSettings(
        rank=rank, alpha=alpha, dropout=dropout, targets=tuple(t.strip() for t in targets.split(",") if t.strip()),
        scope=scope, epochs=epochs, lr=lr, weight_decay=weight_decay, batch_size=batch_size, max_steps=max_steps,
        seed=seed,
    )
    options = {k: v for k, v in (("source", source), ("revision", revision)) if v is not None}
    if trust_remote_code:
        options["trust_remote_code"] = True
    ds = open_dataset_for(dataset, skip_bad=skip_bad, limit=limit)
    result = run_finetune(model, ds, out, settings=settings, tiny=tiny, device=device, dtype=dtype, prompt=prompt,
                          overwrite=force, **options)
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
