"""Where each job of a grid stands: done / running / failed / partial / pending, with its run key,
run directory, row count and estimated feature-store size.

A job is **done** when its run directory holds a complete run with the job's run key and every
probe of the experiment has saved results; **partial** when the run is incomplete (rows written
so far) or complete but a probe is missing; **failed** when its last attempt failed (the state
file keeps the error and the log path); **running** while a live process says so; else
**pending**.

Run keys: tiny jobs are planned here exactly (:func:`medprobe.features.plan.plan_extract` on the seeded
tiny model, which is cheap); real-weight jobs take the key their worker recorded once the
checkpoint was loaded (a key needs the checkpoint's preprocessing and layer map).

Size estimate = N samples x sum over selected layers of (width x readouts) x 4 bytes, with widths
from the planned (tiny) layer map, else from the recorded run or its plan, else from the real
layer map built without weights (the card's published config on the meta device, or the listing
recorded for remote-code families); ``?`` when none is known yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

from ..registry import MedprobeError
from .experiment import Experiment
from .jobs import Job
from .state import alive_here, log_path, read_state, read_submission

STATUSES = ("done", "running", "failed", "partial", "pending")


@dataclass
class JobStatus:
    job: Job
    status: str = "pending"
    run_key: str | None = None
    run_dir: Path | None = None
    rows: int | None = None
    size: int | None = None
    size_source: str = ""
    note: str = ""
    attempts: int = 0
    log: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "job": self.job.id,
            "model": self.job.model.ref,
            "dataset": self.job.dataset.name,
            "condition": self.job.condition.name,
            "kind": self.job.kind,
            "status": self.status,
            "run_key": self.run_key,
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "rows": self.rows,
            "estimated_bytes": self.size,
            "size_source": self.size_source,
            "note": self.note,
            "attempts": self.attempts,
            "log": str(self.log) if self.log else None,
            "resources": self.job.resources.to_dict(),
        }


class _PlanCache:
    """Tiny models and opened datasets shared by the jobs planned in one call."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, int], Any] = {}
        self.datasets: dict[str, Any] = {}

    def dataset(self, spec: str) -> Any:
        if spec not in self.datasets:
            from ..datasets import open_dataset

            try:
                self.datasets[spec] = open_dataset(spec)
            except MedprobeError as exc:
                self.datasets[spec] = exc
        return self.datasets[spec]

    def tiny_model(self, ref: str, seed: int) -> Any:
        if (ref, seed) not in self.models:
            from ..models.prepare import load_model

            self.models[(ref, seed)] = load_model(ref, tiny=True, seed=seed)
        return self.models[(ref, seed)]


def _plan_tiny(job: Job, exp: Experiment, cache: _PlanCache, adapter: Path | None) -> Any:
    from ..features.plan import plan_extract
    from ..runtime import resolve_device, resolve_dtype
    from .conditions import apply

    spec = job.spec
    ds = cache.dataset(spec["dataset"])
    if isinstance(ds, Exception):
        raise ds
    dev = resolve_device(spec["device"])
    if adapter is None:
        loaded = cache.tiny_model(spec["model"], spec["seed"])
    else:  # the adapter is injected in place: a fresh tiny model, not the shared one
        from ..models.prepare import load_model

        loaded = apply(load_model(spec["model"], tiny=True, seed=spec["seed"]), adapter)
    return plan_extract(loaded, ds, exp.runs_dir, layers=spec["layers"],
                        readouts=spec["readouts"], batch_size=spec["batch_size"], device=dev,
                        dtype=resolve_dtype(spec["dtype"], dev), limit=spec["limit"], seed=spec["seed"],
                        prompt=spec["prompt"], load_options=spec["load"])


@lru_cache(maxsize=32)
def _meta_model(card_id: str) -> Any:
    """The card's full-size model on the meta device (once per card and process)."""
    from ..models.meta import build_meta
    from ..models.zoo import get_adapter, get_card

    card = get_card(card_id)
    return build_meta(card, get_adapter(card.family))


def _meta_layer_map(card_id: str) -> Any:
    return _meta_model(card_id).layer_map


def _uses_meta_map(job: Job) -> bool:
    """A real-weight job of the card's own checkpoint whose card has a published config."""
    from ..models.zoo import get_adapter, get_card

    if job.tiny:
        return False
    card = get_card(job.model.ref)
    return bool(get_adapter(card.family).meta_capable and card.published_config
                and not (job.spec.get("load") or {}).get("source"))


def _gpu_note(job: Job, rows: int | None) -> str:
    """``GPU ~X at DTYPE, batch B (estimate)`` for a real-weight MLLM job, from the meta-device
    model; dtype ``auto`` is taken as bfloat16 on a GPU and float32 on ``device = "cpu"`` (then
    the note says ``memory``)."""
    from .resources import extraction_estimate, format_size

    device = str(job.spec.get("device") or "auto")
    on_cpu = device == "cpu"
    dtype = job.spec.get("dtype") or "auto"
    if dtype == "auto":
        dtype = "float32" if on_cpu else "bfloat16"  # what resolve_dtype gives on the CPU / a CUDA device
    dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)
    from ..models.zoo import get_card

    est = extraction_estimate(_meta_model(get_card(job.model.ref).id), n=rows, dtype=dtype, batch_size=int(job.spec["batch_size"]),
                              layers=job.spec["layers"], readouts=job.spec["readouts"])
    where = "memory" if on_cpu else "GPU"
    return f"{where} ~{format_size(est['gpu_bytes'])} at {dtype}, batch {job.spec['batch_size']} (estimate)"


def _listing_estimate(job: Job, rows: int | None) -> int | None:
    """Estimate from the real layer map without weights: the card's published config built on the
    meta device (:mod:`medprobe.models.meta`), else a remote-code family's recorded module listing."""
    from ..models.zoo import get_adapter, get_card

    if rows is None:
        return None
    card = get_card(job.model.ref)
    adapter = get_adapter(card.family)
    from ..features.readouts import applicable, parse_readouts
    from .resources import feature_store_bytes

    if _uses_meta_map(job):  # the card's own checkpoint (a --source directory may hold another config)
        lmap = _meta_layer_map(card.id)
    elif adapter.needs_remote_code:
        from ..models.zoo import resolve_layers

        _, lmap = resolve_layers(job.model.ref)
    else:
        return None
    wanted = parse_readouts(job.spec["readouts"])
    return feature_store_bytes(rows, [(s.width, len(applicable(s, wanted))) for s in lmap.select(job.spec["layers"])])


def _probes_missing(run: Any, probes: Sequence[str], seed: int, options: Any = None) -> list[str]:
    """The probes whose results (under the job's own ``[probe]`` settings: protocol, k, seeds ...)
    are not in the run yet."""
    from ..analysis.protocol import ProbeSettings
    from ..tasks.pipeline import probe_dir

    settings, _hyper = ProbeSettings.split_options({**dict(options or {}), "seed": seed})
    return [p for p in probes if not (probe_dir(run, p, settings) / "results.json").is_file()]


def job_status(exp: Experiment, job: Job, cache: _PlanCache | None = None, *, resolve: bool = True) -> JobStatus:
    """The status of one job (``resolve=False`` skips planning tiny models)."""
    from ..features.store import Run, StoreError

    cache = cache or _PlanCache()
    st = JobStatus(job, log=log_path(exp.out, job.id))
    state = read_state(exp.out, job.id)
    if state is not None and state.get("digest") != job.digest:
        state = None  # recorded for an older version of this job
    st.state = state or {}
    st.attempts = int(st.state.get("attempts", 0))
    notes: list[str] = []
    if job.spec.get("train"):
        return _train_status(exp, job, st, cache, resolve)
    from .conditions import adapter_path, trained

    adapter = adapter_path(job.spec, exp.out)
    ready = adapter is None or (trained(adapter) if job.spec["adapter"] == "train" else adapter.is_dir())
    if adapter is not None and not ready:
        notes.append("adapter not trained yet" if job.spec["adapter"] == "train" else f"adapter {adapter} not found")
    if resolve and job.tiny and ready:
        try:
            plan = _plan_tiny(job, exp, cache, adapter)
        except MedprobeError as exc:
            notes.append(f"cannot plan: {exc}".splitlines()[0])
        else:
            st.run_key, st.run_dir, st.rows = plan.key, plan.run_dir, len(plan.samples)
            st.size = plan.estimated_bytes()
            st.size_source = "tiny layer map" if st.size is not None else ""
    if st.run_key is None and st.state.get("run_key"):
        st.run_key, st.run_dir = st.state["run_key"], Path(st.state["run_dir"])
        st.rows = st.state.get("rows")
    if st.rows is None and resolve:
        ds = cache.dataset(job.spec["dataset"])
        if isinstance(ds, Exception):
            notes.append(f"dataset: {ds}".splitlines()[0])
        else:
            from ..features.provenance import select_samples

            st.rows = len(select_samples(ds.samples, job.spec["limit"], job.spec["seed"]))
    partial = False
    run = None
    if st.run_dir is not None:
        try:
            run = Run.open(st.run_dir)
        except StoreError:
            run = None
        if run is not None and run.key != st.run_key:
            run = None
    if run is not None and run.complete:
        st.size = sum(int(f["shape"][0]) * int(f["shape"][1]) * 4 for f in run.manifest.get("features", []))
        st.size_source = "run"
        missing = _probes_missing(run, job.spec["probes"], job.spec["seed"], job.spec.get("probe_options"))
        if not missing:
            st.status = "done"
        else:
            partial = True
            notes.append(f"probes missing: {', '.join(missing)}")
    elif run is not None:
        partial = True
        notes.append(f"rows {run.manifest.get('rows_done', 0)}/{len(run.sample_ids)}")
    if st.size is None:
        for key, source in (("feature_bytes", "run"), ("estimated_bytes", "recorded plan")):
            if st.state.get(key) is not None:
                st.size, st.size_source = int(st.state[key]), source
                break
    if st.size is None and resolve:
        try:
            st.size = _listing_estimate(job, st.rows)
        except MedprobeError:
            st.size = None
        st.size_source = "real layer map (meta device / recorded listing)" if st.size is not None else ""
    if st.status != "done" and resolve and not job.spec.get("train"):
        try:
            if _uses_meta_map(job):
                notes.append(_gpu_note(job, st.rows))
        except MedprobeError:
            pass
    if st.status != "done":
        status = st.state.get("status")
        if status == "running" and (alive_here(st.state) or st.state.get("host") not in (None, _hostname())):
            st.status = "running"
        elif status == "failed":
            st.status = "failed"
            notes.insert(0, st.state.get("error", "failed"))
        elif partial:
            st.status = "partial"
        else:
            st.status = "pending"
            sub = read_submission(exp.out, job.id)
            if sub is not None and sub.get("digest") == job.digest and status not in ("interrupted",):
                notes.insert(0, f"submitted ({sub.get('executor_job', '?')})")
    st.note = "; ".join(n for n in notes if n)
    return st


def _train_status(exp: Experiment, job: Job, st: JobStatus, cache: _PlanCache, resolve: bool) -> JobStatus:
    """Status of a ``[[train]]`` job: done once its run holds ``train.json``."""
    from ..tasks.training.record import is_train_dir
    from .worker import train_dir

    st.run_dir = train_dir(exp.out, job.id)
    if resolve:
        ds = cache.dataset(job.spec["dataset"])
        if isinstance(ds, Exception):
            st.note = f"dataset: {ds}".splitlines()[0]
        else:
            st.rows = len(ds.samples)
    status = st.state.get("status")
    if is_train_dir(st.run_dir):
        st.status = "done"
    elif status == "running" and (alive_here(st.state) or st.state.get("host") not in (None, _hostname())):
        st.status = "running"
    elif status == "failed":
        st.status = "failed"
        st.note = "; ".join(n for n in (st.state.get("error", "failed"), st.note) if n)
    return st


def _hostname() -> str:
    import socket

    return socket.gethostname()


def grid_status(exp: Experiment, jobs: Sequence[Job], *, resolve: bool = True) -> list[JobStatus]:
    """Status of every job, sharing tiny models and datasets between them."""
    cache = _PlanCache()
    return [job_status(exp, j, cache, resolve=resolve) for j in jobs]


def summary(statuses: Sequence[JobStatus]) -> dict[str, int]:
    """Count per status, in :data:`STATUSES` order."""
    return {s: sum(1 for x in statuses if x.status == s) for s in STATUSES}
