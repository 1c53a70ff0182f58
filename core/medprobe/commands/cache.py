"""``medprobe cache``: list, inspect, verify and remove run directories."""

from __future__ import annotations

import os

import click

from .options import honour_deprecated, json_option, store_option, store_root
from .output import echo_json, echo_table


@click.group()
def cache() -> None:
    """Feature-store run directories (default root: $MEDPROBE_CACHE_DIR or ./runs)."""


@cache.command("ls")
@store_option(old_root=True)
@json_option("Print the run list as JSON.")
@honour_deprecated
def ls(store: str | None, as_json: bool) -> None:
    """List runs under the store root (incomplete ones show their rows done)."""
    from ..api import list_runs, run_info

    problems: list = []
    infos = [run_info(r) for r in list_runs(store_root(store), problems)]
    for path, reason in problems:  # never skipped silently
        click.echo(f"warning: {path}: not listed, it cannot be opened: {reason} (check it with "
                   f"'medprobe cache verify {path}', remove it with 'medprobe cache rm {path}')", err=True)
    rows = [
        {
            "run": os.path.basename(i.run),
            "model": i.model,
            "dataset": i.dataset,
            "status": i.status,
            "rows": f"{i.rows_done or 0}/{i.samples}",
            "synthetic": i.synthetic,
            "bytes": i.bytes,
        }
        for i in infos
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(["run", "model", "dataset", "status", "rows", "synthetic", "bytes"], [list(x.values()) for x in rows])


@cache.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@json_option("Print the run's summary as JSON.")
def info(run: str, as_json: bool) -> None:
    """Show a run's manifest summary."""
    from ..api import run_info

    data = run_info(run).to_dict()
    if as_json:
        echo_json(data)
        return
    for k, v in data.items():
        click.echo(f"{k:>18}: {v}")


@cache.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
def verify(run: str) -> None:
    """Check RUN's manifest (schema, checksum) and every file it lists (size, sha256, shape);
    exit 1 when anything is missing, changed or damaged."""
    from ..api import open_run
    from ..features.store import ManifestError

    try:
        r = open_run(run)  # not a run at all: exit 2
    except ManifestError as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(1)
    problems = r.verify()
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise SystemExit(1)
    note = f" (unverified: {'; '.join(r.unverified)})" if r.unverified else ""
    click.echo(f"{run}: ok{note}")


@cache.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask.")
def rm(runs: tuple[str, ...], yes: bool) -> None:
    """Delete run directories (only folders that hold a medprobe manifest)."""
    from ..api import open_run, remove_run
    from ..features.store import ManifestError

    for run in runs:
        try:
            open_run(run)  # refuses folders that are not runs
        except ManifestError:
            pass  # damaged, but a run: it may be removed
        if not yes and not click.confirm(f"delete {run}?"):
            continue
        click.echo(f"removed {remove_run(run)}")
