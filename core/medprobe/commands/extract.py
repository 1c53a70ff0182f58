"""``medprobe extract``: capture every selected layer of a model over a dataset into a run."""

from __future__ import annotations

import click

from .common import (
    echo_outcome,
    force_option,
    honour_deprecated,
    json_option,
    layers_option,
    limit_option,
    open_dataset_for,
    readout_option,
    skip_bad_option,
    store_option,
    store_root,
    warn_small_splits,
)


@click.command()
@click.option("--model", "-m", "model", required=True, help="Card id, alias or family:NAME (e.g. timm:resnet18).")
@click.option("--dataset", "-d", "dataset", required=True, help="Dataset spec, e.g. synthetic:lesions or busi:PATH.")
@store_option(old_out=True)
@layers_option()
@readout_option
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda:N")
@click.option("--dtype", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "fp16", "fp32"]),
              help="Compute dtype (auto: bf16 on GPUs that have it, else fp32).")
@limit_option()
@skip_bad_option
@click.option("--tiny", is_flag=True, help="Tiny random model of the card's class (offline pipeline check; not a finding).")
@force_option("Start the run over even when a run with the same key exists (default: reuse it, or resume it "
              "from its last complete batch).", old_no_resume=True)
@click.option("--source", default=None, help="Hub id or local directory overriding the card's hub id.")
@click.option("--revision", default=None, help="Hub revision (branch, tag or commit).")
@click.option("--weights", default=None, type=click.Path(exists=True), help="Local weights file/dir (baselines).")
@click.option("--random-init", is_flag=True, help="Random weights on purpose (a control; baselines).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub (e.g. Hulu-Med).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seeds the --limit subset and the tiny model's weights (the split is the dataset's).")
@json_option("Print the run summary as JSON.")
@click.option("--device-map", default=None, help="Spread a large model over the GPUs (accelerate), e.g. 'auto'.")
@click.option("--max-memory", "max_memory", multiple=True, metavar="DEVICE=SIZE",
              help="Memory limit per device with --device-map, e.g. 0=70GiB 1=70GiB cpu=200GiB (repeatable).")
@click.option("--world-size", default=None, type=int,
              help="Data-parallel extraction over N processes (default: WORLD_SIZE from torchrun / accelerate).")
@click.option("--rank", default=None, type=int, help="This process's rank 0..N-1 (default: RANK from the environment).")
@click.option("--adapter", "adapter_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="peft LoRA adapter directory to apply (e.g. from `medprobe finetune`); part of the run key.")
@click.option("--merge-adapter", is_flag=True, help="Merge the --adapter weights into the model instead of wrapping layers.")
@honour_deprecated
def extract(model, dataset, store, layers, readouts, batch_size, device, dtype, limit, skip_bad, tiny, force, source,
            revision, weights, random_init, trust_remote_code, seed, as_json, device_map, max_memory, world_size, rank,
            adapter_dir, merge_adapter):
    """Extract pooled features of every selected layer (one forward pass per batch) into a run under --store.

    A rerun with the same settings reuses the finished run; an interrupted one resumes from its
    last complete batch (the output says which)."""
    from ..extract import extract as run_extract
    from .output import echo_json

    if merge_adapter and adapter_dir is None:
        raise click.UsageError("--merge-adapter needs --adapter DIR")
    options = {}
    for name, value in (("source", source), ("revision", revision), ("weights", weights)):
        if value is not None:
            options[name] = value
    if random_init:
        options["random_init"] = True
    if trust_remote_code:
        options["trust_remote_code"] = True
    if device_map is not None:
        options["device_map"] = device_map
    if max_memory:
        from ..grid.resources import parse_max_memory

        options["max_memory"] = parse_max_memory(max_memory)
    if world_size is None and rank is None:
        from ..distributed import env_world

        world_size, rank = env_world() or (None, None)
    elif world_size is not None and rank is None:
        raise click.UsageError("--world-size needs --rank")
    ds = open_dataset_for(dataset, skip_bad=skip_bad)
    warn_small_splits(ds, limit=limit, seed=seed)
    run = run_extract(model, ds, store_root(store), layers=layers, readouts=readouts, batch_size=batch_size,
                      device=device, dtype=dtype, limit=limit, tiny=tiny, resume=not force, seed=seed,
                      world_size=world_size, rank=rank, adapter=adapter_dir, merge_adapter=merge_adapter, **options)
    if not run.complete:
        click.echo(f"rank {rank}/{world_size}: batches written under {run.path / 'ranks'}; the run completes when the "
                   "last rank finishes")
        return
    summary = {
        "run": str(run.path),
        "model": run.model_id,
        "rows": len(run.sample_ids),
        "features": len(run.feature_keys),
        "outcome": getattr(run, "outcome", None),
        "skipped": len(run.manifest["dataset"].get("skipped") or []),
        "synthetic": run.manifest["synthetic_reasons"],
    }
    if as_json:
        echo_json(summary)
        return
    echo_outcome(getattr(run, "outcome", None), run.path)
    click.echo(f"run: {run.path}")
    click.echo(f"{summary['rows']} samples x {summary['features']} (layer, readout) feature sets")
    if run.manifest["synthetic"]:
        click.echo("NOTE: " + "; ".join(run.manifest["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")
