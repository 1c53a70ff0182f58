"""Run one grid job in the current process: extract (resuming any partial run), then probe.

:func:`run_job` is what every executor calls (in-process, as a Ray task, as a Slurm array
element), with the plain-data payload ``{"job": <job spec>, "out": <grid folder>}``. It never
raises for a failing job: the error and traceback go to the job's log, ``failed`` to its state
file, and the result says so, so one bad job does not stop the others. ``KeyboardInterrupt``
marks the job ``interrupted`` and propagates (the grid stops; a re-run resumes).

A ``[[train]]`` job runs :func:`medprobe.tasks.train.train` into ``GRID/trained/<job id>/`` instead.

Result: ``{"job", "status": "done" | "failed", "run_dir", "run_key", "log", "error", "seconds"}``.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Iterator

from .state import here, job_dir, log_path, read_state, write_state


@contextlib.contextmanager
def job_log(path: Path) -> Iterator[Any]:
    """Send this process's Python output (stdout, stderr, logging, warnings) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", buffering=1, encoding="utf-8") as f:
        handler = logging.StreamHandler(f)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        try:
            with contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
                yield f
        finally:
            root.removeHandler(handler)


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _load_options(spec: dict[str, Any]) -> dict[str, Any]:
    options = dict(spec.get("load") or {})
    if "max_memory" in options:
        options["max_memory"] = {int(k) if str(k).isdigit() else k: v for k, v in options["max_memory"].items()}
    return options


def train_dir(out: Path, job_id: str) -> Path:
    """Where a ``[[train]]`` job writes its ``medprobe train`` run."""
    return Path(out) / "trained" / job_id


def execute_train(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Train one ``[[train]]`` job's classifier (kept when already trained); returns run facts."""
    from ..tasks.train import train
    from ..tasks.training.record import TrainError, TrainRun

    path = train_dir(out, spec["id"])
    try:
        TrainRun.open(path)
        print(f"[{_stamp()}] already trained: {path}", flush=True)
    except TrainError:
        options = dict(spec["train"]["options"])
        load = _load_options(spec)
        if not spec["tiny"]:
            load["dtype"] = spec["dtype"]
        print(f"[{_stamp()}] training {spec['model']} ({spec['train']['recipe']}) into {path}", flush=True)
        write_state(out, spec["id"], run_dir=str(path))
        train(spec["model"], spec["dataset"], path, recipe=spec["train"]["recipe"], seed=spec["seed"], tiny=spec["tiny"],
              device=spec["device"], overwrite=True, progress=False, **options, **load)
    return {"run_dir": str(path)}


def execute(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Extract and probe one job (no state bookkeeping); returns run facts."""
    if spec.get("train"):
        return execute_train(spec, out)
    from ..datasets import open_dataset
    from ..features.extract import extract
    from ..features.plan import plan_extract
    from ..tasks.pipeline import probe_run
    from ..models.prepare import LoadOptions, prepare_model
    from ..runtime import resolve_device, resolve_dtype
    from .conditions import prepare_adapter

    runs = out / "runs"
    options = _load_options(spec)
    dev = resolve_device(spec["device"])
    dt = resolve_dtype(spec["dtype"], dev)
    adapter = prepare_adapter(spec, out, device=dev, dtype=dt)
    _free_memory()  # the fine-tuning model (lora:train) before the extraction model is loaded
    ds = open_dataset(spec["dataset"])
    print(f"[{_stamp()}] loading {spec['model']} ({'tiny random' if spec['tiny'] else 'weights'}) on {dev} ({dt})", flush=True)
    known = {k: v for k, v in options.items() if k in LoadOptions.field_names()}
    extra = {k: v for k, v in options.items() if k not in known}  # a [[model]] load_options table: family options
    load = LoadOptions.from_mapping({**known, "extra": extra or None, "tiny": spec["tiny"], "seed": spec["seed"],
                                     "device": dev, "dtype": dt, "lora": str(adapter) if adapter else None},
                                    where=f"job {spec['id']}")
    loaded, dev, dt = prepare_model(spec["model"], load)
    common = dict(layers=spec["layers"], readouts=spec["readouts"], batch_size=spec["batch_size"], limit=spec["limit"],
                  seed=spec["seed"], prompt=spec["prompt"])
    plan = plan_extract(loaded, ds, runs, device=dev, dtype=dt, load_options=options, **common)
    # recorded before the first batch, so `grid status` can see a partial run of a real-weight model
    write_state(out, spec["id"], run_key=plan.key, run_dir=str(plan.run_dir), rows=len(plan.samples),
                estimated_bytes=plan.estimated_bytes(), adapter=str(adapter) if adapter else None)
    print(f"[{_stamp()}] extracting {spec['dataset']} into {plan.run_dir}", flush=True)
    run = extract(loaded, ds, runs, progress=False, load=load.replace(lora=None), **{k: v for k, v in common.items() if k != "seed"})
    write_state(out, spec["id"], feature_bytes=sum(int(f["shape"][0]) * int(f["shape"][1]) * 4
                                                   for f in run.manifest["features"]))
    del loaded
    probe_options = dict(spec.get("probe_options") or {})
    if dev.startswith("cuda"):
        probe_options.setdefault("device", dev)
    for probe in spec["probes"]:
        print(f"[{_stamp()}] probing ({probe})", flush=True)
        probe_run(run, probe, seed=spec["seed"], **probe_options)
    return {"run_dir": str(run.path), "run_key": run.key}


def run_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one job with state and log bookkeeping; see the module docstring."""
    spec, out = payload["job"], Path(payload["out"])
    job_id = spec["id"]
    log = log_path(out, job_id)
    job_dir(out, job_id).mkdir(parents=True, exist_ok=True)
    previous = read_state(out, job_id) or {}
    attempts = int(previous.get("attempts", 0)) + 1 if previous.get("digest") == spec["digest"] else 1
    stale = previous.get("digest") != spec["digest"]
    write_state(out, job_id, status="running", digest=spec["digest"], attempts=attempts, started=_stamp(),
                finished=None, error=None, log=str(log), **here(),
                **({"run_key": None, "run_dir": None, "rows": None, "estimated_bytes": None, "feature_bytes": None}
                   if stale else {}))
    t0 = time.time()
    result: dict[str, Any] = {"job": job_id, "log": str(log)}
    with job_log(log) as f:
        print(f"\n[{_stamp()}] job {job_id} attempt {attempts} on {here()['host']} (pid {here()['pid']})", file=f, flush=True)
        try:
            facts = execute(spec, out)
        except KeyboardInterrupt:
            write_state(out, job_id, status="interrupted", finished=_stamp())
            print(f"[{_stamp()}] interrupted", file=f, flush=True)
            raise
        except Exception as exc:
            traceback.print_exc(file=f)
            message = " ".join(line.strip() for line in f"{type(exc).__name__}: {exc}".splitlines())[:500]
            write_state(out, job_id, status="failed", error=message, finished=_stamp(), seconds=round(time.time() - t0, 1))
            result.update(status="failed", error=message, seconds=round(time.time() - t0, 1))
        else:
            write_state(out, job_id, status="done", finished=_stamp(), seconds=round(time.time() - t0, 1), **facts)
            print(f"[{_stamp()}] done: {facts['run_dir']}", file=f, flush=True)
            result.update(status="done", error=None, seconds=round(time.time() - t0, 1), **facts)
        finally:
            _free_memory()
    return result


def _free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
