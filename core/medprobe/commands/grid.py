"""``medprobe grid run | status | report``: a whole study from one experiment file."""

from __future__ import annotations

import tomllib
from typing import Any

import click

EXECUTOR_CHOICES = ["local", "ray", "slurm"]
_grid_option = click.option("--grid", "grid_dir", default=None, type=click.Path(file_okay=False),
                            help="Grid folder (runs, job states, logs); default [experiment].out of the file.")
_only_option = click.option("--only", default=None, metavar="PATTERN",
                            help="Only jobs whose id, model, dataset or condition matches (fnmatch, comma-separated).")


def _parse_value(text: str) -> Any:
    """``2`` -> 2, ``true`` -> True, ``["a", "b"]`` -> list, anything else -> the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _executor_options(items: tuple[str, ...]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="-X/--executor-option")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _load(experiment: str, grid_dir: str | None) -> Any:
    from ..grid import load_experiment

    return load_experiment(experiment, out=grid_dir)


def _table(statuses: list[Any]) -> None:
    from ..grid.resources import format_size
    from .output import echo_table

    def key(s: Any) -> str:
        if s.job.condition.kind == "train":
            return "(train run)"
        return (s.run_key or "")[:12] or ("(at load)" if not s.job.tiny else "")

    rows = [
        [s.job.id, s.job.model.ref, s.job.dataset.name, s.job.condition.name, s.status, key(s),
         s.rows if s.rows is not None else "?", "" if s.job.condition.kind == "train" else format_size(s.size),
         s.job.resources.describe(), s.note]
        for s in statuses
    ]
    echo_table(["job", "model", "dataset", "condition", "status", "run key", "rows", "est. size", "resources", "note"], rows)


def _totals(statuses: list[Any]) -> str:
    from ..grid.resources import format_size
    from ..grid.status import summary

    counts = ", ".join(f"{n} {s}" for s, n in summary(statuses).items() if n)
    extract_jobs = [s for s in statuses if s.job.condition.kind != "train"]
    known = [s.size for s in extract_jobs if s.size is not None]
    todo = [s.size for s in extract_jobs if s.size is not None and s.status != "done"]
    unknown = sum(1 for s in extract_jobs if s.size is None)
    parts = [f"feature store about {format_size(sum(known))} ({format_size(sum(todo))} still to write)"] if known else []
    if unknown:
        parts.append(f"{unknown} job(s) of unknown size (known once their model has been loaded)")
    return f"{len(statuses)} jobs: {counts}" + "".join(f"; {p}" for p in parts)


def _failures(statuses_or_results: list[Any]) -> None:
    for item in statuses_or_results:
        if isinstance(item, dict):
            job, error, log = item["job"], item.get("error"), item.get("log")
        else:
            job, error, log = item.job.id, item.note, item.state.get("log") or item.log
        click.echo(f"FAILED {job}: {error}", err=True)
        click.echo(f"  log: {log}", err=True)


@click.group()
def grid() -> None:
    """Run a whole study (models x datasets x conditions) from one experiment file, locally, on a
    Ray cluster or on Slurm; finished jobs are never re-run, interrupted ones resume."""


@grid.command("run")
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@click.option("--executor", "-e", type=click.Choice(EXECUTOR_CHOICES), default="local", show_default=True,
              help="local: one job after another here; ray: one Ray task per job; slurm: one array element per job (submitit).")
@click.option("--dry-run", is_flag=True, help="Print the job table (status, run key, estimated size) and run nothing.")
@_only_option
@_grid_option
@click.option("--executor-option", "-X", "executor_options", multiple=True, metavar="KEY=VALUE",
              help="Executor option overriding [executor.<name>] (e.g. -X cluster=local, -X address=auto, -X num_cpus=4).")
@click.option("--device-map", default=None, help="e.g. 'auto': spread each MLLM over the job's GPUs (models that set none).")
@click.option("--progress/--no-progress", default=None, help="Progress bar over jobs (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the job table / results as JSON.")
@click.pass_context
def run(ctx, experiment, executor, dry_run, only, grid_dir, executor_options, device_map, progress, as_json):
    """Run the pending jobs of EXPERIMENT (a TOML experiment file)."""
    from ..grid import run_grid
    from .output import echo_json

    exp = _load(experiment, grid_dir)
    outcome = run_grid(exp, executor=executor, only=only, dry_run=dry_run, options=_executor_options(executor_options),
                       progress=progress, device_map=device_map)
    if as_json:
        echo_json({"grid": str(exp.out), "jobs": [s.to_dict() for s in outcome.statuses], "results": outcome.results})
    else:
        click.echo(f"grid: {exp.out}")
        _table(outcome.statuses)
        click.echo(_totals(outcome.statuses))
        if dry_run:
            click.echo(f"dry run: {len(outcome.to_run)} job(s) would run with the {executor} executor")
        elif not outcome.to_run:
            click.echo("nothing to do: every job is done")
        else:
            done = sum(1 for r in outcome.results if r.get("status") == "done")
            other = len(outcome.results) - done - len(outcome.failed)
            click.echo(f"ran {len(outcome.results)} job(s) with the {executor} executor: {done} done, "
                       f"{len(outcome.failed)} failed" + (f", {other} submitted" if other else ""))
    if outcome.failed:
        _failures(outcome.failed)
        click.echo(f"{len(outcome.failed)} of {len(outcome.results)} job(s) failed (exit status 1); "
                   "fix the cause in the log and run again: done jobs are kept", err=True)
        raise SystemExit(1)


@grid.command("status")
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@_only_option
@_grid_option
@click.option("--json", "as_json", is_flag=True)
def status(experiment, only, grid_dir, as_json):
    """Show done / running / failed / partial / pending for every job of EXPERIMENT."""
    from ..grid import expand_jobs, grid_status
    from .output import echo_json

    exp = _load(experiment, grid_dir)
    statuses = grid_status(exp, expand_jobs(exp, only))
    if as_json:
        echo_json({"grid": str(exp.out), "jobs": [s.to_dict() for s in statuses]})
        return
    click.echo(f"grid: {exp.out}")
    _table(statuses)
    click.echo(_totals(statuses))
    failed = [s for s in statuses if s.status == "failed"]
    if failed:
        _failures(failed)


@grid.command("report")
@click.argument("experiment", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the reports and index page.")
@_only_option
@_grid_option
@click.option("--json", "as_json", is_flag=True, help="Print the index as JSON.")
def report(experiment, out, only, grid_dir, as_json):
    """One report per (dataset, condition) over the finished runs, plus OUT/index.html."""
    from ..grid import grid_report
    from .output import echo_json

    exp = _load(experiment, grid_dir)
    index = grid_report(exp, out, only=only)
    if as_json:
        echo_json(index)
        return
    if index["synthetic"]:
        click.echo("SYNTHETIC: tiny random models and/or synthetic data - a pipeline check, not a medical finding.")
    for g in index["groups"]:
        where = f"{out}/{g['dir']}/report.html" if not g["error"] else g["error"]
        click.echo(f"{g['dataset']} / {g['condition']}: {len(g['models'])} model(s) -> {where}")
        if g["missing"]:
            click.echo("  not finished: " + ", ".join(f"{m['job']} ({m['status']})" for m in g["missing"]))
    click.echo(f"index: {out}/index.html")
