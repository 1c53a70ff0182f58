"""``medprobe extract``: capture every selected layer of a model over a dataset into a run."""

from __future__ import annotations

import contextlib

import click

from .options import load_options


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
@click.option("--out", default="runs", show_default=True, type=click.Path(file_okay=False), help="Folder holding run directories.")
@click.option("--layers", default=None, help="Layer patterns, e.g. 'vision.*,connector,llm.*' (default: all).")
@click.option("--readout", "readouts", default="image-mean,last-token", show_default=True, help="Readouts (image-mean, cls, last-token, text-mean).")
@click.option("--batch-size", default=8, show_default=True, type=int)
@click.option("--limit", default=None, type=int, help="Use a deterministic subset of N samples.")
@click.option("--resume/--no-resume", default=True, show_default=True, help="Reuse / continue an existing run with the same key.")
@click.option("--json", "as_json", is_flag=True, help="Print the run summary as JSON.")
@click.option("--world-size", default=None, type=int,
              help="Data-parallel extraction over N processes (default: WORLD_SIZE from torchrun / accelerate).")
@click.option("--rank", default=None, type=int, help="This process's rank 0..N-1 (default: RANK from the environment).")
@load_options()
def extract(model, dataset, out, layers, readouts, batch_size, limit, resume, as_json, world_size, rank, load):
    """Extract pooled features of every selected layer (one forward pass per batch)."""
    from ..features.extract import extract as run_extract
    from .output import echo_json

    if world_size is None and rank is None:
        from ..features.distributed import env_world

        world_size, rank = env_world() or (None, None)
    elif world_size is not None and rank is None:
        raise click.UsageError("--world-size needs --rank")
    with _store_warnings_as_lines():
        run = run_extract(model, dataset, out, layers=layers, readouts=readouts, batch_size=batch_size, limit=limit,
                          resume=resume, world_size=world_size, rank=rank, load=load)
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
