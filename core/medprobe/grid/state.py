"""Per-job state files: what happened to a job the last time it ran.

``GRID/jobs/<job id>/state.json`` (written atomically) holds ``status`` (``running`` | ``done`` | ``failed`` | ``interrupted``), the job ``digest`` it was recorded for,
``attempts``, ``host``/``pid``, times, and once known the feature-store ``run_key`` / ``run_dir``
and the run's size; a failure adds ``error`` (one line) and the ``log`` path. The job's own log is
``GRID/jobs/<job id>/job.log`` (appended by every attempt). A batch system's acceptance of the
job (Slurm array element id) is kept apart in ``submitted.json``, so it never races the worker.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..features.store import atomic_write_json

STATE = "state.json"
LOG = "job.log"
SUBMISSION = "submitted.json"


def job_dir(out: Path, job_id: str) -> Path:
    return Path(out) / "jobs" / job_id


def log_path(out: Path, job_id: str) -> Path:
    return job_dir(out, job_id) / LOG


def read_state(out: Path, job_id: str) -> dict[str, Any] | None:
    """The recorded state, or ``None`` when the job never ran (an unreadable file counts as none)."""
    path = job_dir(out, job_id) / STATE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_state(out: Path, job_id: str, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into the job's state (``None`` values remove keys) and write it atomically."""
    state = read_state(out, job_id) or {"job": job_id}
    for key, value in fields.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    state["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    atomic_write_json(job_dir(out, job_id) / STATE, state)
    return state


def write_submission(out: Path, job_id: str, **info: Any) -> None:
    """Record that a batch system accepted the job (kept apart from the state the worker writes)."""
    atomic_write_json(job_dir(out, job_id) / SUBMISSION, dict(info, submitted=time.strftime("%Y-%m-%dT%H:%M:%S%z")))


def read_submission(out: Path, job_id: str) -> dict[str, Any] | None:
    try:
        data = json.loads((job_dir(out, job_id) / SUBMISSION).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def here() -> dict[str, Any]:
    """Where this process runs (recorded with ``running``)."""
    return {"host": socket.gethostname(), "pid": os.getpid()}


def alive_here(state: dict[str, Any]) -> bool:
    """True when ``state`` says running in a process that still exists on this host."""
    if state.get("status") != "running" or state.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(state.get("pid", -1)), 0)
    except (OSError, ValueError):
        return False
    return True
