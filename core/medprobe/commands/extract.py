"""``medprobe extract``: capture every selected layer of a model over a dataset into a run."""

from __future__ import annotations

import contextlib

import click


@contextlib.contextmanager
def _store_warnings_as_lines():
    """Show :class:`medprobe.store.StoreWarning` (a damaged shard or run being recomputed) as one
    ``warning: ...`` line on stderr, when it happens."""
    import warnings

    from ..store import StoreWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", StoreWarning)
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, StoreWarning):
                click.echo(f"warning: {message}", err=True)
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


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
@click.option("--device-map", default=None, help="Spread a large model over the GPUs (accelerate), e.g. 'auto'.")
@click.option("--max-memory", "max_memory", multiple=True, metavar="DEVICE=SIZE",
              help="Memory limit per device with --device-map, e.g. 0=70GiB 1=70GiB cpu=200GiB (repeatable).")
@click.option("--world-size", default=None, type=int,
              help="Data-parallel extraction over N processes (default: WORLD_SIZE from torchrun / accelerate).")
@click.option("--rank", default=None, type=int, help="This process's rank 0..N-1 (default: RANK from the environment).")
@click.option("--adapter", "adapter_dir", default=None, type=click.Path(exists=True, file_okay=False),
              help="peft LoRA adapter directory to apply (e.g. from `medprobe finetune`); part of the run key.")
@click.option("--merge-adapter", is_flag=True, help="Merge the --adapter weights into the model instead of wrapping layers.")
def extract(model, dataset, out, layers, readouts, batch_size, device, dtype, limit, tiny, resume, source, revision,
            weights, random_init, trust_remote_code, seed, as_json, device_map, max_memory, world_size, rank,
            adapter_dir, merge_adapter):
    """Extract pooled features of every selected layer (one forward pass per batch)."""
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
    with _store_warnings_as_lines():
        run = run_extract(model, dataset, out, layers=layers, readouts=readouts, batch_size=batch_size, device=device,
                          dtype=dtype, limit=limit, tiny=tiny, resume=resume, seed=seed, world_size=world_size,
                          rank=rank, adapter=adapter_dir, merge_adapter=merge_adapter, **options)
    if not run.complete:
        click.echo(f"rank {rank}/{world_size}: batches written under {run.path / 'ranks'}; the run completes when the "
                   "last rank finishes")
        return
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
