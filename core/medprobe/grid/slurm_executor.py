"""The ``slurm`` executor: one Slurm job array per resource request, one array element per job,
submitted through submitit.

Options (``[executor.slurm]`` in the experiment, or ``-X key=value``):

``cluster``          ``"slurm"`` (default), or ``"local"`` / ``"debug"`` to run the same submission
                     on this machine with submitit's local / in-process executor (tests, laptops)
``partition``, ``account``, ``qos``, ``constraint``   the usual sbatch settings
``array_parallelism``  at most this many elements of an array run at once (default 16)
``setup``            shell lines run before the job on the node (``["module load cuda",
                     "source /work/venv/bin/activate"]``)
``additional``       table of further sbatch parameters (``{ exclusive = true }``)
``python``           the Python that runs the jobs on the nodes (default: this one)
``wait``             wait for the jobs and report them (default true); false: submit and return,
                     then follow with ``medprobe grid status``

Each job asks for ``gpus_per_node = resources.gpus``, ``cpus_per_task = resources.cpus``,
``mem_gb`` from ``resources.memory`` and ``timeout_min = resources.time``. submitit keeps its own
files (pickled job, stdout/stderr of the array element) under ``GRID/submitit/``; the job's log is
still ``GRID/jobs/<job>/job.log``. Requires ``pip install submitit``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from .executors import ExecutorError, OnResult, check_options, crashed

OPTIONS = ("cluster", "partition", "account", "qos", "constraint", "array_parallelism", "setup", "additional", "python",
           "wait")


def _import_submitit() -> Any:
    try:
        import submitit
    except ImportError as exc:
        raise ExecutorError(f"executor 'slurm' needs submitit: pip install 'submitit>=1.5' ({exc})") from None
    return submitit


def _parameters(res: Mapping[str, Any], options: Mapping[str, Any], cluster: str) -> dict[str, Any]:
    params: dict[str, Any] = {
        "name": "medprobe-grid",
        "timeout_min": int(res["time_min"]),
        "gpus_per_node": int(res["gpus"]),
        "cpus_per_task": int(res["cpus"]),
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if res.get("memory"):
        params["mem_gb"] = max(1, math.ceil(int(res["memory"]) / 10**9))
    if cluster == "slurm":
        for key in ("partition", "account", "qos", "constraint"):
            if options.get(key):
                params[f"slurm_{key}"] = options[key]
        params["slurm_array_parallelism"] = int(options.get("array_parallelism", 16))
        if options.get("setup"):
            params["slurm_setup"] = list(options["setup"])
        if options.get("additional"):
            params["slurm_additional_parameters"] = dict(options["additional"])
    elif cluster == "local" and options.get("setup"):
        params["local_setup"] = list(options["setup"])
    return params


def _log_of(job: Any) -> str | None:
    try:
        return str(job.paths.stderr)
    except Exception:  # pragma: no cover - debug executor jobs have no files
        return None


def run_slurm(payloads: Sequence[dict[str, Any]], options: Mapping[str, Any], progress: bool | None = None,
              on_result: OnResult | None = None) -> list[dict[str, Any]]:
    check_options("slurm", options, OPTIONS)
    submitit = _import_submitit()
    from ..progress import progress_bar
    from .state import write_submission
    from .worker import run_job

    if not payloads:
        return []
    cluster = str(options.get("cluster", "slurm"))
    if cluster not in ("slurm", "local", "debug"):
        raise ExecutorError(f"executor 'slurm': cluster {cluster!r} must be 'slurm', 'local' or 'debug'")
    out = Path(payloads[0]["out"])
    kwargs: dict[str, Any] = {}
    if options.get("python") and cluster in ("slurm", "local"):
        kwargs[f"{cluster}_python"] = str(options["python"])
    try:
        executor = submitit.AutoExecutor(folder=str(out / "submitit" / "%j"), cluster=cluster, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise ExecutorError(f"executor 'slurm' (cluster {cluster}): {exc}; is Slurm (sbatch) available here?") from None

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for payload in payloads:
        res = payload["job"]["resources"]
        groups.setdefault(tuple(sorted(res.items())), []).append(payload)
    submitted: list[tuple[Any, dict[str, Any]]] = []
    for key, group in groups.items():
        executor.update_parameters(**_parameters(dict(key), options, cluster))
        jobs = executor.map_array(run_job, group)
        for job, payload in zip(jobs, group):
            write_submission(out, payload["job"]["id"], digest=payload["job"]["digest"],
                             executor_job=f"{cluster} {job.job_id}", submitit_log=_log_of(job))
            submitted.append((job, payload))
    if not options.get("wait", True):
        return [{"job": p["job"]["id"], "status": "submitted", "executor_job": j.job_id} for j, p in submitted]

    results: list[dict[str, Any]] = []
    by_id = {id(job): payload for job, payload in submitted}
    bar = progress_bar(total=len(submitted), desc=f"grid jobs ({cluster})", enabled=progress)
    try:
        for job in submitit.helpers.as_completed([j for j, _ in submitted]):
            payload = by_id[id(job)]
            try:
                result = job.result()
            except Exception as exc:  # the array element died (killed, timeout, out of memory)
                result = crashed(payload, f"{cluster} job {job.job_id} failed: {str(exc).strip().splitlines()[-1][:300]}",
                                 log=_log_of(job))
            results.append(result)
            bar.update(1)
            if on_result is not None:
                on_result(result)
    except BaseException:
        for job, _ in submitted:
            if not job.done():
                job.cancel(check=False)
        raise
    finally:
        bar.close()
    return results
