"""``medprobe grid run``: expand the experiment into jobs, skip the finished ones, hand the rest
to an executor.

::

    from medprobe.grid import load_experiment, run_grid
    exp = load_experiment("examples/tiny-study.toml")
    outcome = run_grid(exp, executor="local")        # or "ray", "slurm"
    outcome.results                                  # one dict per job that ran (status done / failed)

A job is never re-run once done (complete run with the job's run key, probes saved); an
interrupted grid resumes where it stopped (partial runs continue from their last shard).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .executors import OnResult, get_executor
from .experiment import Experiment
from .jobs import expand_jobs
from .state import alive_here
from .status import JobStatus, grid_status


@dataclass
class GridOutcome:
    """``statuses``: every selected job before running; ``to_run``: the ones handed to the
    executor; ``results``: what the executor reported (empty for a dry run)."""

    statuses: list[JobStatus]
    to_run: list[JobStatus]
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.results if r.get("status") == "failed"]


def run_grid(
    exp: Experiment,
    *,
    executor: str = "local",
    only: Sequence[str] | str | None = None,
    dry_run: bool = False,
    options: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    device_map: str | None = None,
    on_result: OnResult | None = None,
) -> GridOutcome:
    """Run (or, with ``dry_run``, only plan) the experiment's pending jobs on ``executor``.

    ``options`` override the experiment's ``[executor.<name>]`` table; ``device_map`` (e.g.
    ``"auto"``) applies to every MLLM job that sets none itself.
    """
    run_executor = get_executor(executor)  # unknown names fail before any planning
    jobs = expand_jobs(exp, only, device_map=device_map)
    statuses = grid_status(exp, jobs)
    to_run = [s for s in statuses if s.status != "done" and not alive_here(s.state)]
    outcome = GridOutcome(statuses, to_run)
    if dry_run or not to_run:
        return outcome
    exp.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(exp.path, exp.out / "experiment.toml")
    merged = dict(exp.executors.get(executor, {}))
    merged.update(options or {})
    payloads = [{"job": s.job.spec, "out": str(exp.out)} for s in to_run]
    outcome.results = run_executor(payloads, merged, progress=progress, on_result=on_result)
    return outcome
