"""``medprobe cache``: list, inspect, verify and remove run directories."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import click

from .output import echo_json, echo_table

DEFAULT_ROOT = os.environ.get("MEDPROBE_CACHE_DIR", "runs")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@click.group()
def cache() -> None:
    """Feature-store run directories (default root: $MEDPROBE_CACHE_DIR or ./runs)."""


@cache.command("ls")
@click.option("--root", default=DEFAULT_ROOT, show_default=True, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def ls(root: str, as_json: bool) -> None:
    """List runs under ROOT."""
    from ..store import list_runs

    runs = list_runs(root)
    rows = [
        {
            "run": r.path.name,
            "model": r.model_id,
            "dataset": r.manifest["dataset"]["spec"],
            "status": r.manifest["status"],
            "rows": f"{r.manifest.get('rows_done', 0)}/{len(r.sample_ids)}",
            "synthetic": r.manifest.get("synthetic", False),
            "bytes": _size(r.path),
        }
        for r in runs
    ]
    if as_json:
        echo_json(rows)
        return
    echo_table(["run", "model", "dataset", "status", "rows", "synthetic", "bytes"], [list(x.values()) for x in rows])


@cache.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True)
def info(run: str, as_json: bool) -> None:
    """Show a run's manifest summary."""
    from ..store import Run

    r = Run.open(run)
    m = r.manifest
    data = {
        "run": str(r.path),
        "run_key": m["run_key"],
        "status": m["status"],
        "model": r.model_id,
        "weights": m["model"]["weights"],
        "dataset": m["dataset"]["spec"],
        "classes": m["dataset"]["classes"],
        "samples": len(r.sample_ids),
        "rows_done": m.get("rows_done"),
        "layers": [l["id"] for l in m["layers"]],
        "readouts": m["readouts"],
        "dtype": m["dtype"],
        "device": m["device"],
        "batch_size": m["batch_size"],
        "versions": m["versions"],
        "git": m.get("git"),
        "synthetic_reasons": m.get("synthetic_reasons", []),
    }
    if as_json:
        echo_json(data)
        return
    for k, v in data.items():
        click.echo(f"{k:>18}: {v}")


@cache.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
def verify(run: str) -> None:
    """Recompute every checksum of RUN; exit 1 when anything is missing or changed."""
    from ..store import Run

    problems = Run.open(run).verify()
    if problems:
        for p in problems:
            click.echo(p, err=True)
        raise SystemExit(1)
    click.echo(f"{run}: ok")


@cache.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--yes", is_flag=True, help="Do not ask.")
def rm(runs: tuple[str, ...], yes: bool) -> None:
    """Delete run directories (only folders that hold a medprobe manifest)."""
    from ..store import Run

    for run in runs:
        r = Run.open(run)  # refuses folders that are not runs
        if not yes and not click.confirm(f"delete {r.path}?"):
            continue
        shutil.rmtree(r.path)
        click.echo(f"removed {r.path}")
