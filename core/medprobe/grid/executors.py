"""Executors: how the pending jobs of a grid are run.

============  ==================================================================================
``local``     one after another in this process (:mod:`.local_executor`)
``ray``       one Ray task per job with the job's GPU / CPU / memory request (:mod:`.ray_executor`;
              optional extra ``ray``)
``slurm``     one Slurm array element per job through submitit (:mod:`.slurm_executor`; optional
              extra ``submitit``; ``cluster = "local"`` runs the same code with submitit's local
              executor)
============  ==================================================================================

An executor gets the payloads of the jobs to run (``{"job": spec, "out": grid folder}``, the
argument of :func:`medprobe.grid.worker.run_job`) and returns one result dict per job, failures
included: a crashed worker (killed, out of memory) is recorded as ``failed`` in the job's state
with its log path, and the other jobs go on.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, Sequence

from ..registry import MedprobeError

#: executor name -> "module:function" taking (payloads, options, progress, on_result)
EXECUTORS: dict[str, str] = {
    "local": "medprobe.grid.local_executor:run_local",
    "ray": "medprobe.grid.ray_executor:run_ray",
    "slurm": "medprobe.grid.slurm_executor:run_slurm",
}

#: called with each job's result as it arrives
OnResult = Callable[[dict[str, Any]], None]


class ExecutorError(MedprobeError):
    """An executor cannot start (missing optional dependency, bad option); names the executor."""


def check_options(name: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ExecutorError(f"executor '{name}': unknown option(s) {unknown}; known: {sorted(known)}")


def crashed(payload: dict[str, Any], message: str, log: str | None = None) -> dict[str, Any]:
    """Record a job whose worker died without reporting (and return its result dict)."""
    from pathlib import Path

    from .state import log_path, write_state

    spec, out = payload["job"], Path(payload["out"])
    log = log or str(log_path(out, spec["id"]))
    write_state(out, spec["id"], status="failed", digest=spec["digest"], error=message[:500], log=log)
    return {"job": spec["id"], "status": "failed", "error": message[:500], "log": log}


def get_executor(name: str) -> Callable[..., list[dict[str, Any]]]:
    if name not in EXECUTORS:
        raise ExecutorError(f"unknown executor '{name}'; choose one of {sorted(EXECUTORS)}")
    module, _, attr = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)
