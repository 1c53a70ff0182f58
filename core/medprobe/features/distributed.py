"""Data-parallel extraction: N processes share one model's dataset, whole batches per rank.

Batch ``b`` (rows ``[b x batch_size, (b + 1) x batch_size)``) goes to rank ``b % world_size``, so
every batch is computed exactly as a single process computes it, and the merged run is
bit-identical to a single-process run with the same batch size. Each rank writes its own
shards, atomically, with a small manifest of the batches it holds::

    RUN/ranks/rank-K/rank.json                  # {"run_key", "world_size", "rank", "batch_size",
                                                #  "shards": [{"file", "batches": [[b, start, stop]...], "sha256"}]}
    RUN/ranks/rank-K/shard-000000.safetensors   # "<layer>/<readout>" -> (rows of its batches, D) float32

A rank that is killed resumes from its last shard. When a rank finishes it takes the run's file
lock and, if every rank's batches are on disk, merges them into the normal run (shards in row
order, then :meth:`medprobe.features.store.RunWriter.finalize`) and removes ``RUN/ranks``; otherwise it
leaves the merge to the rank that finishes last. With a ``torch.distributed`` process group
initialised (e.g. gloo under ``torchrun``), every rank first waits at a barrier, so all of them
return the complete run.

Launch::

    torchrun --nproc_per_node 4 -m medprobe.cli extract -m lingshu-7b -d busi:/data/BUSI
    medprobe extract ... --world-size 2 --rank 0 &  medprobe extract ... --world-size 2 --rank 1

``medprobe extract`` reads ``RANK`` / ``WORLD_SIZE`` (set by ``torchrun`` and ``accelerate
launch``) when ``--world-size`` is not given.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..registry import MedprobeError
from .store import Run, RunWriter, StoreError, _save_tensors, atomic_write_json, sha256_file

RANK_FORMAT = "medprobe.rank/1"
RANKS_DIR = "ranks"


class DistributedError(MedprobeError):
    """Inconsistent ranks or rank shards; the message names the run and the rank."""


def env_world() -> tuple[int, int] | None:
    """``(world_size, rank)`` from ``WORLD_SIZE`` / ``RANK`` (torchrun, accelerate launch) when
    the world has more than one process, else ``None``."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
    except ValueError:
        raise DistributedError(
            f"WORLD_SIZE={os.environ.get('WORLD_SIZE')!r} / RANK={os.environ.get('RANK')!r} are not integers"
        ) from None
    return (world, rank) if world > 1 else None


def check_rank(world_size: int, rank: int | None) -> None:
    if rank is None or not 0 <= rank < world_size:
        raise DistributedError(f"--rank must be in 0..{world_size - 1} for --world-size {world_size}, got {rank}")


def rank_device(device: str, rank: int) -> str:
    """``auto`` on a GPU machine -> this process's GPU (``LOCAL_RANK``, else rank modulo the GPU
    count); anything else is returned unchanged."""
    if device != "auto":
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local = int(os.environ.get("LOCAL_RANK", rank))
    return f"cuda:{local % torch.cuda.device_count()}"


def _rank_dir(run_dir: Path, rank: int) -> Path:
    return run_dir / RANKS_DIR / f"rank-{rank}"


def _rank_header(plan: Any, world_size: int, rank: int) -> dict[str, Any]:
    return {
        "format": RANK_FORMAT,
        "run_key": plan.key,
        "world_size": world_size,
        "rank": rank,
        "batch_size": plan.batch_size,
        "rows": len(plan.samples),
    }


def _read_rank(run_dir: Path, rank: int) -> dict[str, Any] | None:
    import json

    path = _rank_dir(run_dir, rank) / "rank.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DistributedError(f"{path}: corrupt rank manifest ({exc}); delete {path.parent} to recompute its batches") from None


def _verified_rank_shards(rdir: Path, state: dict[str, Any]) -> list[dict[str, Any]]:
    """The rank's recorded shards that are intact (present, size, sha256); a bad one is dropped
    with a :class:`~medprobe.features.store.StoreWarning` and its batches are computed again."""
    import warnings

    from .store import StoreWarning

    good = []
    for shard in state["shards"]:
        path = rdir / shard["file"]
        if not path.is_file():
            problem = "missing"
        elif "bytes" in shard and path.stat().st_size != shard["bytes"]:
            problem = f"{path.stat().st_size} bytes, {shard['bytes']} recorded (truncated)"
        elif sha256_file(path) != shard["sha256"]:
            problem = "checksum mismatch (content changed since it was recorded)"
        else:
            good.append(shard)
            continue
        warnings.warn(StoreWarning(f"{path}: {problem}; recomputing its batches {[b for b, _, _ in shard['batches']]}"),
                      stacklevel=3)
    if len(good) != len(state["shards"]):
        state = dict(state, shards=good)
        atomic_write_json(rdir / "rank.json", state)
    return good


def _matches(state: dict[str, Any] | None, header: dict[str, Any]) -> bool:
    return state is not None and all(state.get(k) == v for k, v in header.items())


def _main_rows_done(plan: Any) -> int:
    """Rows already in the (incomplete) main run; ranks skip batches that end before them."""
    try:
        run = Run.open(plan.run_dir)
    except StoreError:
        return 0
    return int(run.manifest.get("rows_done", 0)) if run.key == plan.key else 0


def _start_main_run(plan: Any, world_size: int) -> Run | None:
    """Create the incomplete main run (so ``medprobe cache`` lists it) unless it exists; return it
    when it is already complete."""
    from filelock import FileLock

    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(plan.run_dir / ".lock")):
        try:
            run = Run.open(plan.run_dir)
        except StoreError:
            run = None
        if run is not None and run.complete and run.key == plan.key:
            return run
        if run is None:
            manifest = dict(plan.manifest, distributed={"world_size": world_size, "assignment": "batch b -> rank b % world_size"})
            RunWriter.create_or_resume(plan.run_dir, manifest, resume=True)
    return None


def extract_rank(
    plan: Any,
    loaded: Any,
    ds: Any,
    world_size: int,
    rank: int,
    *,
    resume: bool = True,
    progress: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> Run:
    """Compute this rank's batches of ``plan`` (:class:`medprobe.features.plan.ExtractPlan`) into its
    own shards, then merge if every rank is done. Returns the run (complete once merged)."""
    from filelock import FileLock

    from ..progress import progress_bar
    from .engine import ShardBuffer, capture_batches

    check_rank(world_size, rank)
    if not resume:
        raise DistributedError(
            f"{plan.run_dir}: --no-resume is not supported with data-parallel extraction; delete the run directory instead"
        )
    done_run = _start_main_run(plan, world_size)
    if done_run is not None:
        return done_run
    start_row = _main_rows_done(plan)
    header = _rank_header(plan, world_size, rank)
    rdir = _rank_dir(plan.run_dir, rank)
    rdir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(rdir / ".lock")):
        state = _read_rank(plan.run_dir, rank)
        if not _matches(state, header):  # another world size / batch size / key: start this rank over
            for f in rdir.glob("shard-*"):
                f.unlink()
            state = dict(header, shards=[])
            atomic_write_json(rdir / "rank.json", state)
        state["shards"] = _verified_rank_shards(rdir, state)
        listed = {s["file"] for s in state["shards"]}
        for f in rdir.glob("shard-*"):
            if f.name not in listed:  # written by a killed rank but never recorded
                f.unlink()
        have = {b for s in state["shards"] for b, _, _ in s["batches"]}
        mine = [(b, lo, hi) for b, (lo, hi) in enumerate(plan.batch_rows())
                if b % world_size == rank and hi > start_row and b not in have]
        bar = progress_bar(total=sum(hi - lo for _, lo, hi in mine), desc=f"extract {loaded.card.id} rank {rank}/{world_size}",
                           enabled=progress)

        def flush(arrays: dict[tuple[str, str], np.ndarray], batches: list[tuple[int, int, int]]) -> None:
            used = [int(s["file"][len("shard-"):len("shard-") + 6]) for s in state["shards"]]
            name = f"shard-{max(used, default=-1) + 1:06d}.safetensors"  # never reuse a listed name
            sha, size = _save_tensors(rdir / name, {f"{lid}/{ro}": v.astype(np.float32, copy=False)
                                                    for (lid, ro), v in arrays.items()})
            state["shards"].append({"file": name, "batches": [list(b) for b in batches], "sha256": sha, "bytes": size})
            atomic_write_json(rdir / "rank.json", state)

        buffer = ShardBuffer(flush)
        capture_batches(plan, loaded, ds, mine, buffer, bar=bar, on_batch=on_batch)
        buffer.flush()
        bar.close()
    _barrier()
    merged = merge_ranks(plan, world_size)
    return merged if merged is not None else Run.open(plan.run_dir)


def _barrier() -> None:
    """Wait for every rank when a ``torch.distributed`` process group is initialised."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def merge_ranks(plan: Any, world_size: int) -> Run | None:
    """Under the run's lock: if every batch the main run still lacks is in some rank's shards,
    write them into the run in row order, finalize it and remove ``RUN/ranks``. Returns the
    complete run, or ``None`` while a rank is still missing batches."""
    from filelock import FileLock
    from safetensors import safe_open

    from .engine import BATCHES_PER_SHARD

    run_dir = plan.run_dir
    with FileLock(str(run_dir / ".lock")):
        try:
            run = Run.open(run_dir)
            if run.complete and run.key == plan.key:
                return run
        except StoreError:
            pass
        where: dict[int, tuple[Path, int]] = {}  # batch -> (rank shard file, first row in that file)
        checksums: dict[Path, str] = {}
        for rank in range(world_size):
            state = _read_rank(run_dir, rank)
            if not _matches(state, _rank_header(plan, world_size, rank)):
                continue
            for shard in state["shards"]:
                path = _rank_dir(run_dir, rank) / shard["file"]
                checksums[path] = shard["sha256"]
                offset = 0
                for b, lo, hi in shard["batches"]:
                    where[b] = (path, offset)
                    offset += hi - lo
        writer = RunWriter.create_or_resume(run_dir, plan.manifest, resume=True)
        start_row = writer.rows_done
        rows = plan.batch_rows()
        needed = [b for b, (lo, hi) in enumerate(rows) if hi > start_row]
        if any(b not in where for b in needed):
            return None
        for path in sorted({where[b][0] for b in needed}):
            if not path.is_file() or sha256_file(path) != checksums[path]:
                raise DistributedError(f"{path}: checksum mismatch; rerun that rank (it recomputes the damaged shard's batches)")
        n = len(plan.samples)
        shard_rows = plan.batch_size * BATCHES_PER_SHARD
        for lo in range(start_row, n, shard_rows):
            hi = min(lo + shard_rows, n)
            parts: dict[str, list[np.ndarray]] = {}
            for b in needed:
                b_lo, b_hi = rows[b]
                a, z = max(lo, b_lo), min(hi, b_hi)
                if a >= z:
                    continue
                path, offset = where[b]
                with safe_open(str(path), framework="numpy") as f:
                    for key in f.keys():
                        parts.setdefault(key, []).append(f.get_slice(key)[offset + a - b_lo : offset + z - b_lo])
            writer.write_shard({tuple(k.split("/", 1)): np.concatenate(v, axis=0) for k, v in parts.items()})
        labels = np.array([s.label for s in plan.samples], dtype=np.int64)
        run = writer.finalize(labels, [s.split for s in plan.samples])
        shutil.rmtree(run_dir / RANKS_DIR, ignore_errors=True)
        return run


__all__ = ["DistributedError", "env_world", "check_rank", "rank_device", "extract_rank", "merge_ranks"]
