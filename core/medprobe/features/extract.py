"""Feature extraction: dataset -> model -> pooled features of every selected layer -> run directory.

::

    from medprobe.features.extract import extract
    run = extract("lingshu-7b", "synthetic:lesions", out="runs/", tiny=True,
                  layers="vision.*,connector,llm.*", readouts=("image-mean", "last-token"))
    run.features("llm.03", "image-mean")     # (N, D) float32 memmap

The plan (:func:`medprobe.features.plan.plan_extract`: run key, directory, manifest) is made before
any forward pass; the engine (:mod:`medprobe.features.engine`) runs one forward pass per batch that
captures every selected layer, and rows are written in shards of whole batches. A killed extraction
resumes from its last complete shard and ends bit-identical to an uninterrupted one (same batches,
same order, deterministic ops); every recorded shard is verified first and a damaged one recomputed
(:meth:`medprobe.features.store.RunWriter.create_or_resume`). A complete run with the same key is
reused without taking the lock once every file is verified (so also from a read-only folder); a
damaged one is recomputed with a warning. Writing needs a writable folder, checked before the
forward pass. A second process on an incomplete run waits on the run's file lock, then resumes or
finds it complete. A readout set that applies to no selected layer is refused before anything is
written (:func:`medprobe.features.plan.check_readouts_apply`); a misspelt layer pattern before the
model is loaded (:func:`medprobe.layermap.check_patterns`). With ``world_size``/``rank``, :func:`extract` hands the batches to
:mod:`medprobe.features.distributed` (data-parallel extraction).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..adapter import LoadedModel
from ..layermap import check_patterns
from ..models.prepare import LoadOptions
from ..registry import MedprobeError
from .store import ManifestError, Run, RunWriter, StoreError, StoreWarning, ensure_writable


def reusable_run(plan: Any) -> Run | None:
    """The complete run of ``plan`` (:class:`~.plan.ExtractPlan`) when it is on disk and intact
    (every file verified), read without the write lock; ``None`` otherwise (missing, incomplete,
    another key, damaged)."""
    try:
        existing = Run.open(plan.run_dir)
    except StoreError:
        return None
    if not (existing.complete and existing.key == plan.key) or existing.verify():
        return None
    return existing


def extract(
    model: str | LoadedModel,
    dataset: str | Any,
    out: str | Path = "runs",
    *,
    layers: str | Sequence[str] | None = None,
    readouts: str | Sequence[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    resume: bool = True,
    prompt: str | None = None,
    progress: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
    world_size: int | None = None,
    rank: int | None = None,
    load: LoadOptions | None = None,
    **load_fields: Any,
) -> Run:
    """Extract features; returns the complete :class:`~medprobe.features.store.Run`.

    Args:
        model: a card id / ``family:NAME`` reference, or an already loaded model.
        dataset: a dataset spec (``synthetic:lesions``, ``busi:/data/BUSI``) or a Dataset.
        out: the folder that holds run directories (one subfolder per run key).
        layers: layer patterns (``"vision.*,connector,llm.*"``); default all layers.
        readouts: readout names; default ``image-mean,last-token``.
        limit: extract a deterministic subset of this many samples (smoke runs).
        prompt: the question for MLLMs; default lists the dataset's classes.
        on_batch: called with the batch number (counted from the first batch this call computes)
            after each batch (tests use it to interrupt).
        world_size, rank: data-parallel extraction (:mod:`medprobe.features.distributed`): this process
            computes batches ``b`` with ``b % world_size == rank`` into its own shards; the rank
            that finishes last merges every rank's shards into the run, which is then complete.
            The returned run is incomplete on the other ranks (unless a ``torch.distributed``
            process group is initialised: then every rank waits at a barrier for the merge).
        load: which model, how (:class:`~medprobe.models.prepare.LoadOptions`); ``load_fields`` are
            its fields as keywords (``tiny=True``, ``device="cpu"``, ``lora=DIR`` ...; ``adapter`` /
            ``merge_adapter`` are older names of ``lora`` / ``merge_lora``). A LoRA adapter's identity
            is part of the run key.
    """
    from ..datasets import open_dataset
    from ..models.prepare import options_of, prepare_model
    from .engine import ShardBuffer, capture_batches
    from .plan import plan_extract

    opts = options_of(load, load_fields)
    if batch_size < 1:
        raise MedprobeError("--batch-size must be at least 1")
    check_patterns(layers, model if isinstance(model, str) else model.card.id)  # a misspelt pattern, before loading
    distributed = world_size is not None and world_size > 1
    if distributed:
        from .distributed import check_rank, rank_device

        check_rank(world_size, rank)
        opts = opts.replace(device=rank_device(opts.device, rank))
    if isinstance(model, str):
        from ..models.zoo import get_card
        from .plan import check_readouts_for_card

        check_readouts_for_card(get_card(model), readouts)
    ds = open_dataset(dataset) if isinstance(dataset, str) else dataset
    loaded, dev, dt = prepare_model(model, opts)
    plan = plan_extract(loaded, ds, out, layers=layers, readouts=readouts, batch_size=batch_size, device=dev, dtype=dt,
                        limit=limit, seed=opts.seed, prompt=prompt, load_options=opts.adapter_kwargs())
    if distributed:
        from .distributed import extract_rank

        return extract_rank(plan, loaded, ds, world_size, rank, resume=resume, progress=progress, on_batch=on_batch)
    samples, run_dir = plan.samples, plan.run_dir
    if resume:
        reused = reusable_run(plan)  # no lock: a complete run is read as it is (also in a read-only folder)
        if reused is not None:
            reused.outcome = {"status": "reused", "from_row": len(samples), "rows": len(samples)}
            return reused

    from filelock import FileLock

    from ..progress import progress_bar

    ensure_writable(run_dir, "the run's shards and manifest",
                    "choose a writable --out (a complete run with this key there would have been reused)")
    with FileLock(str(run_dir / ".lock")):
        start_over = not resume
        if resume:
            try:
                existing = Run.open(run_dir)
            except ManifestError:
                raise
            except StoreError:
                existing = None
            if existing is not None and existing.complete and existing.key == plan.key:
                problems = existing.verify()
                if not problems:
                    existing.outcome = {"status": "reused", "from_row": len(samples), "rows": len(samples)}
                    return existing
                warnings.warn(StoreWarning(
                    f"{run_dir}: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
                    + "; recomputing the run"), stacklevel=2)
                start_over = True
        writer = RunWriter.create_or_resume(run_dir, plan.manifest, resume=not start_over)
        start = writer.rows_done
        todo = [(b, lo, hi) for b, (lo, hi) in enumerate(plan.batch_rows()) if lo >= start]
        first = todo[0][0] if todo else 0
        bar = progress_bar(total=len(samples), initial=start, desc=f"extract {loaded.card.id}", enabled=progress)
        buffer = ShardBuffer(lambda arrays, _batches: writer.write_shard(arrays))
        capture_batches(plan, loaded, ds, todo, buffer, bar=bar,
                        on_batch=None if on_batch is None else (lambda b: on_batch(b - first)))
        buffer.flush()
        bar.close()
        labels = np.array([s.label for s in samples], dtype=np.int64)
        run = writer.finalize(labels, [s.split for s in samples])
        run.outcome = {"status": "resumed" if start else "new", "from_row": start, "rows": len(samples)}
        return run

