"""The ``ray`` executor: one Ray task per job, with the job's resources as the task's request.

Options (``[executor.ray]`` in the experiment, or ``-X key=value``):

``address``          ``"auto"`` / ``"ray://host:10001"`` to join a running cluster; absent: start a
                     local Ray instance for this grid (stopped at the end)
``num_cpus``,        size of that local instance (default: what Ray detects)
``num_gpus``
``env_vars``         table of environment variables for the workers (e.g. ``HF_HUB_OFFLINE = "1"``)
``allow_infeasible`` keep jobs whose request exceeds the cluster's total resources waiting (for
                     autoscaling clusters); default: fail them at once with a clear error

A job asks for ``num_gpus = resources.gpus``, ``num_cpus = resources.cpus`` and ``memory =
resources.memory`` bytes. Tasks are not retried (``max_retries = 0``): a failed job is recorded
with its log and the grid goes on; rerun the grid to retry it. Requires ``pip install ray``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .executors import ExecutorError, OnResult, check_options, crashed

OPTIONS = ("address", "num_cpus", "num_gpus", "env_vars", "allow_infeasible")


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ExecutorError(f"executor 'ray' needs Ray: pip install 'ray>=2.40' ({exc})") from None
    return ray


def _infeasible(res: Mapping[str, Any], total: Mapping[str, float]) -> str | None:
    asks = {"GPU": res["gpus"], "CPU": res["cpus"], "memory": res["memory"] or 0}
    for key, want in asks.items():
        have = total.get(key, 0)
        if want and want > have:
            return f"asks for {want} {key}{' bytes' if key == 'memory' else ''}, the Ray cluster has {have:g} in total"
    return None


def run_ray(payloads: Sequence[dict[str, Any]], options: Mapping[str, Any], progress: bool | None = None,
            on_result: OnResult | None = None) -> list[dict[str, Any]]:
    check_options("ray", options, OPTIONS)
    ray = _import_ray()
    from ..progress import progress_bar
    from .worker import run_job

    started = False
    if not ray.is_initialized():
        init: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        for key in ("address", "num_cpus", "num_gpus"):
            if options.get(key) is not None:
                init[key] = options[key]
        if options.get("env_vars"):
            init["runtime_env"] = {"env_vars": {str(k): str(v) for k, v in dict(options["env_vars"]).items()}}
        ray.init(**init)
        started = True
    results: list[dict[str, Any]] = []
    bar = progress_bar(total=len(payloads), desc="grid jobs (ray)", enabled=progress)

    def done(result: dict[str, Any]) -> None:
        results.append(result)
        bar.update(1)
        if on_result is not None:
            on_result(result)

    refs: dict[Any, dict[str, Any]] = {}
    try:
        total = ray.cluster_resources()
        task = ray.remote(run_job)
        for payload in payloads:
            res = payload["job"]["resources"]
            why = None if options.get("allow_infeasible") else _infeasible(res, total)
            if why is not None:
                done(crashed(payload, f"job {payload['job']['id']} {why}"))
                continue
            request: dict[str, Any] = {"num_cpus": res["cpus"], "num_gpus": res["gpus"], "max_retries": 0,
                                       "name": f"medprobe:{payload['job']['id']}"}
            if res["memory"]:
                request["memory"] = int(res["memory"])
            refs[task.options(**request).remote(payload)] = payload
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as exc:  # the worker process died or the task was cancelled
                    result = crashed(refs[ref], f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}")
                done(result)
    except BaseException:  # Ctrl-C: do not leave tasks running on the cluster
        for ref in refs:
            try:
                ray.cancel(ref, force=True)
            except Exception:
                pass
        raise
    finally:
        bar.close()
        if started:
            ray.shutdown()
    return results
