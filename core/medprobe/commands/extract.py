"""``medprobe extract``: capture every selected layer of a model over a dataset into a run."""

from __future__ import annotations

import contextlib

import click

from .options import echo_outcome, load_options, force_option, honour_deprecated, json_option, layers_option
from .options import limit_option, open_dataset_for, readout_option, skip_bad_option, store_option, store_root
from .options import check_probeable_subset


@contextlib.contextmanager
def _store_warnings_as_lines():
    """Show :class:`medprobe.features.store.StoreWarning` (a damaged shard or run being recomputed) as one
    ``warning: ...`` line on stderr, when it happens."""
    import warnings

    from ..features.store import StoreWarning

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
@store_option(old_out=True)
@layers_option()
@readout_option
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1), help="Images per forward pass.")
@limit_option()
@skip_bad_option
@force_option("Start the run over even when a run with the same key exists (default: reuse it, or resume it "
              "from its last complete batch).", old_no_resume=True)
@json_option("Print the run summary as JSON.")
@click.option("--world-size", default=None, type=int,
              help="Data-parallel extraction over N processes (default: WORLD_SIZE from torchrun / accelerate).")
@click.option("--rank", default=None, type=int, help="This process's rank 0..N-1 (default: RANK from the environment).")
@load_options()
@honour_deprecated
def extract(model, dataset, store, layers, readouts, batch_size, limit, skip_bad, force, as_json, world_size, rank,
            load):
    """Extract pooled features of every selected layer (one forward pass per batch) into a run under --store.

    A rerun with the same settings reuses the finished run; an interrupted one resumes from its
    last complete batch (the output says which)."""
    from ..features.extract import extract as run_extract
    from .output import echo_json

    if world_size is None and rank is None:
        from ..features.distributed import env_world

        world_size, rank = env_world() or (None, None)
    elif world_size is not None and rank is None:
        raise click.UsageError("--world-size needs --rank")
    ds = open_dataset_for(dataset, skip_bad=skip_bad)
    small = check_probeable_subset(ds, limit=limit, seed=load.seed)
    with _store_warnings_as_lines():
        run = run_extract(model, ds, store_root(store), layers=layers, readouts=readouts, batch_size=batch_size,
                          limit=limit, resume=not force, world_size=world_size, rank=rank, load=load)
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
    if small:
        click.echo(small, err=True)
    if as_json:
        echo_json(summary)
        return
    echo_outcome(getattr(run, "outcome", None), run.path)
    click.echo(f"run: {run.path}")
    click.echo(f"{summary['rows']} samples x {summary['features']} (layer, readout) feature sets")
    if run.manifest["synthetic"]:
        click.echo("NOTE: " + "; ".join(run.manifest["synthetic_reasons"]) + " - pipeline check only, not a medical finding.")
