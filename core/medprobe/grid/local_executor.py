"""The ``local`` executor: jobs one after another in this process, a progress bar over jobs.

Each job writes its own log (``GRID/jobs/<job>/job.log``). Ctrl-C stops the grid after marking
the running job ``interrupted``; running the grid again resumes it (the feature store keeps the
finished shards) and skips every finished job.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .executors import OnResult, check_options

OPTIONS = ()


def run_local(payloads: Sequence[dict[str, Any]], options: Mapping[str, Any], progress: bool | None = None,
              on_result: OnResult | None = None) -> list[dict[str, Any]]:
    from ..progress import progress_bar
    from .worker import run_job

    check_options("local", options, OPTIONS)
    results = []
    bar = progress_bar(total=len(payloads), desc="grid jobs", enabled=progress)
    try:
        for payload in payloads:
            bar.set_postfix_str(payload["job"]["id"], refresh=True)
            result = run_job(payload)
            results.append(result)
            bar.update(1)
            if on_result is not None:
                on_result(result)
    finally:
        bar.close()
    return results
