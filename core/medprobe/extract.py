"""Feature extraction: dataset -> model -> pooled features of every selected layer -> run directory.

::

    from medprobe.extract import extract
    run = extract("lingshu-7b", "synthetic:lesions", out="runs/", tiny=True,
                  layers="vision.*,connector,llm.*", readouts=("image-mean", "last-token"))
    run.features("llm.03", "image-mean")     # (N, D) float32 memmap

One forward pass per batch captures every selected layer (:class:`medprobe.capture.Capture`).
Rows are written in shards of whole batches; a killed extraction resumes from its last complete
shard and ends bit-identical to an uninterrupted one (same batches, same order, deterministic
ops). A second process on the same run waits on the run's file lock, then finds it complete.

:func:`plan_extract` computes the run key, run directory and manifest without a forward pass
(experiment grids use it to tell done jobs from pending ones); with ``world_size``/``rank``,
:func:`extract` hands the batches to :mod:`medprobe.distributed` (data-parallel extraction).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .adapter import LoadedModel
from .layermap import LayerSpec
from .readouts import ReadoutError, applicable, parse_readouts
from .registry import MedprobeError
from .store import FORMAT, Run, RunWriter, run_key
from .runtime import git_hash, package_versions

#: bump when the capture/readout code changes what a feature means
FEATURE_VERSION = "1"
#: rows per shard, in whole batches
BATCHES_PER_SHARD = 8


def _subset(samples: list[Any], limit: int | None, seed: int) -> list[Any]:
    """A deterministic subset of ``limit`` samples, spread over the dataset (seeded hash order)."""
    if limit is None or limit >= len(samples):
        return list(samples)

    def rank(s: Any) -> str:
        return hashlib.sha256(f"{seed}:{s.id}".encode()).hexdigest()

    keep = {s.id for s in sorted(samples, key=rank)[:limit]}
    return [s for s in samples if s.id in keep]


def preprocessing_fingerprint(loaded: LoadedModel) -> Any:
    """What the preprocessing is, as JSON-able data (adapter-declared, else the image processor)."""
    if "preprocessing" in loaded.extra:
        return loaded.extra["preprocessing"]
    proc = loaded.processor
    image_proc = getattr(proc, "image_processor", proc)
    to_dict = getattr(image_proc, "to_dict", None)
    if callable(to_dict):
        try:
            return to_dict()
        except Exception:  # pragma: no cover - exotic processors
            pass
    return {"processor": type(proc).__name__ if proc is not None else None, "image_size": loaded.extra.get("image_size")}


def dataset_record(ds: Any, samples: Sequence[Any], limit: int | None) -> dict[str, Any]:
    """What a run records about its data: spec, classes, fingerprint, the ordered sample ids (the row
    order of every feature file) and their hash, the subset limit, skipped samples, split method."""
    return {
        "spec": ds.spec,
        "name": ds.name,
        "classes": list(ds.classes),
        "fingerprint": ds.fingerprint(),
        "synthetic": bool(getattr(ds, "synthetic", False)),
        "sample_ids": [s.id for s in samples],
        "sample_ids_sha256": hashlib.sha256("\n".join(s.id for s in samples).encode()).hexdigest(),
        "limit": limit,
        "skipped": [[b.id, b.reason] for b in getattr(ds, "skipped", [])],
        "split_method": getattr(ds, "split_method", None),
    }


def synthetic_reasons(loaded: LoadedModel, dataset: Any) -> list[str]:
    reasons = []
    if loaded.weights.startswith("tiny-random"):
        reasons.append("tiny random model (--tiny)")
    elif loaded.weights.startswith("random"):
        reasons.append("random weights (--random-init)")
    if getattr(dataset, "synthetic", False):
        reasons.append(f"synthetic dataset ({dataset.spec})")
    return reasons


@dataclass
class ExtractPlan:
    """What one extraction produces, known before any forward pass.

    ``key`` is the feature-store run key (sha256 of ``payload``), ``run_dir`` the run directory
    under ``out``, ``manifest`` the manifest a new run starts with; ``selected`` the layers,
    ``per_layer`` layer id -> readouts captured there, ``samples`` the rows in order and
    ``question`` the MLLM prompt (``None`` for vision-only models).
    """

    key: str
    run_dir: Path
    payload: dict[str, Any]
    manifest: dict[str, Any]
    selected: list[LayerSpec]
    readouts: tuple[str, ...]
    per_layer: dict[str, list[str]]
    samples: list[Any]
    question: str | None
    batch_size: int

    def batch_rows(self) -> list[tuple[int, int]]:
        """Row ranges ``[start, stop)`` of every batch, in order (batch b starts at b x batch size)."""
        n = len(self.samples)
        return [(lo, min(lo + self.batch_size, n)) for lo in range(0, n, self.batch_size)]

    def estimated_bytes(self) -> int | None:
        """Size of the complete run's feature files: N x sum over layers of (width x readouts) x 4
        bytes; ``None`` when a selected layer declares no width."""
        total = 0
        for spec in self.selected:
            if spec.width is None:
                return None
            total += int(spec.width) * len(self.per_layer.get(spec.id, []))
        return len(self.samples) * total * 4


def plan_extract(
    loaded: LoadedModel,
    ds: Any,
    out: str | Path = "runs",
    *,
    layers: str | Sequence[str] | None = None,
    readouts: str | Sequence[str] | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "float32",
    limit: int | None = None,
    seed: int = 0,
    prompt: str | None = None,
    load_options: dict[str, Any] | None = None,
) -> ExtractPlan:
    """The run key, run directory and manifest of extracting ``loaded`` over the opened dataset
    ``ds`` (``device``/``dtype`` already resolved), without running the model."""
    from .prompts import classification_question
    from .zoo import get_adapter

    load_options = dict(load_options or {})
    adapter = get_adapter(loaded.card.family)
    selected: list[LayerSpec] = loaded.layer_map.select(layers)
    wanted = parse_readouts(readouts)
    per_layer = {s.id: applicable(s, wanted) for s in selected}
    if selected and not any(per_layer.values()):
        raise ReadoutError(
            f"readout(s) {', '.join(wanted)} apply to no selected layer of '{loaded.card.id}' "
            f"({', '.join(s.id for s in selected[:6])}{', ...' if len(selected) > 6 else ''}): cls needs a token layer "
            "with a class token, last-token / text-mean need LLM layers; use --readout image-mean"
        )
    samples = _subset(ds.samples, limit, seed)
    if not samples:
        raise MedprobeError(f"dataset '{ds.spec}' has no samples")
    question = prompt if prompt is not None else classification_question(ds.classes)
    is_mllm = loaded.card.kind == "mllm"
    dev, dt = device, dtype

    payload = {
        "format": FORMAT,
        "feature_version": FEATURE_VERSION,
        "model": loaded.card.to_dict(),
        "weights": loaded.weights,
        "adapter": {"family": adapter.family, "version": adapter.version},
        "dataset": {"spec": ds.spec, "fingerprint": ds.fingerprint(), "sample_ids": [s.id for s in samples]},
        "layers": [s.id for s in selected],
        "readouts": list(wanted),
        "preprocessing": preprocessing_fingerprint(loaded),
        "prompt": question if is_mllm else None,
        "dtype": dt,
    }
    adapter_lora = loaded.extra.get("adapter_lora")  # set by medprobe.lora.apply_adapter
    if adapter_lora is not None:
        payload["adapter_lora"] = adapter_lora
    key = run_key(payload)
    run_dir = Path(out) / f"{loaded.card.id.replace('/', '_').replace(':', '_')}__{ds.name}__{key[:12]}"
    reasons = synthetic_reasons(loaded, ds)
    manifest = {
        "format": FORMAT,
        "run_key": key,
        "feature_version": FEATURE_VERSION,
        "model": {
            "card": loaded.card.to_dict(),
            "weights": loaded.weights,
            "adapter": adapter.family,
            "adapter_version": adapter.version,
            "revision": load_options.get("revision"),
            "layer_map_resolved_against": loaded.layer_map.resolved_against,
            "adapter_lora": adapter_lora,
        },
        "dataset": dataset_record(ds, samples, limit),
        "layers": [s.to_dict() for s in selected],
        "readouts": list(wanted),
        "readouts_per_layer": per_layer,
        "preprocessing": payload["preprocessing"],
        "prompt": payload["prompt"],
        "dtype": dt,
        "device": dev,
        "batch_size": batch_size,
        "seed": seed,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
        "versions": package_versions(),
        "git": git_hash(),
    }
    return ExtractPlan(key=key, run_dir=run_dir, payload=payload, manifest=manifest, selected=selected,
                       readouts=wanted, per_layer=per_layer, samples=samples,
                       question=question if is_mllm else None, batch_size=batch_size)


def batch_features(plan: ExtractPlan, loaded: LoadedModel, ds: Any, cap: Any, chunk: Sequence[Any]) -> dict[tuple[str, str], np.ndarray]:
    """Features of one batch of samples: (layer id, readout) -> (B, D) float32, through the open
    :class:`~medprobe.capture.Capture` ``cap``. Non-finite features raise a CaptureError naming
    the model, layers and samples."""
    from .capture import CaptureError, NonFiniteFeatures
    from .zoo import get_adapter

    adapter = get_adapter(loaded.card.family)
    images = [ds.load_image(s) for s in chunk]
    batch = adapter.preprocess(loaded, images, plan.question)
    try:
        feats = cap.run(batch, lambda: adapter.forward(loaded, batch))
    except NonFiniteFeatures as exc:
        where = "; ".join(
            f"{lid}/{ro}: samples {[chunk[i].id for i in rows]}" for (lid, ro), rows in exc.rows.items()
        )
        raise CaptureError(
            f"model '{loaded.card.id}' ({plan.manifest['dtype']}): non-finite features in {where}; "
            f"rerun with --dtype bf16 or --dtype fp32 (completed shards are kept in {plan.run_dir})"
        ) from None
    return {k: v.numpy() for k, v in feats.items()}


def extract(
    model: str | LoadedModel,
    dataset: str | Any,
    out: str | Path = "runs",
    *,
    layers: str | Sequence[str] | None = None,
    readouts: str | Sequence[str] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    dtype: str = "auto",
    limit: int | None = None,
    tiny: bool = False,
    resume: bool = True,
    seed: int = 0,
    prompt: str | None = None,
    progress: bool | None = None,
    on_batch: Callable[[int], None] | None = None,
    world_size: int | None = None,
    rank: int | None = None,
    adapter: str | Path | None = None,
    merge_adapter: bool = False,
    **load_options: Any,
) -> Run:
    """Extract features; returns the complete :class:`~medprobe.store.Run`.

    Args:
        model: a card id / ``family:NAME`` reference, or an already loaded model.
        dataset: a dataset spec (``synthetic:lesions``, ``busi:/data/BUSI``) or a Dataset.
        out: the folder that holds run directories (one subfolder per run key).
        layers: layer patterns (``"vision.*,connector,llm.*"``); default all layers.
        readouts: readout names; default ``image-mean,last-token``.
        limit: extract a deterministic subset of this many samples (smoke runs).
        tiny: use the card's seeded tiny random model (pipeline checks only).
        prompt: the question for MLLMs; default lists the dataset's classes.
        on_batch: called with the batch number after each batch (tests use it to interrupt).
        world_size, rank: data-parallel extraction (:mod:`medprobe.distributed`): this process
            computes batches ``b`` with ``b % world_size == rank`` into its own shards; the rank
            that finishes last merges every rank's shards into the run, which is then complete.
            The returned run is incomplete on the other ranks (unless a ``torch.distributed``
            process group is initialised: then every rank waits at a barrier for the merge).
        adapter: a peft LoRA adapter directory applied after loading (:func:`medprobe.lora.apply_adapter`;
            ``merge_adapter`` folds it into the weights); its identity is part of the run key.
    """

    from .capture import Capture
    from .datasets import open_dataset
    from .zoo import prepare_model

    if batch_size < 1:
        raise MedprobeError("--batch-size must be at least 1")
    distributed = world_size is not None and world_size > 1
    if distributed:
        from .distributed import check_rank, rank_device

        check_rank(world_size, rank)
        device = rank_device(device, rank)
    ds = open_dataset(dataset) if isinstance(dataset, str) else dataset
    loaded, dev, dt = prepare_model(model, tiny=tiny, seed=seed, device=device, dtype=dtype, adapter=adapter,
                                    merge_adapter=merge_adapter, **load_options)
    plan = plan_extract(loaded, ds, out, layers=layers, readouts=readouts, batch_size=batch_size, device=dev, dtype=dt,
                        limit=limit, seed=seed, prompt=prompt, load_options=load_options)
    if distributed:
        from .distributed import extract_rank

        return extract_rank(plan, loaded, ds, world_size, rank, resume=resume, progress=progress, on_batch=on_batch)
    samples, run_dir = plan.samples, plan.run_dir

    from filelock import FileLock

    run_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(run_dir / ".lock")):
        if resume:
            try:
                existing = Run.open(run_dir)
                if existing.complete and existing.key == plan.key:
                    return existing
            except MedprobeError:
                pass
        writer = RunWriter.create_or_resume(run_dir, plan.manifest, resume=resume)
        shard_rows = batch_size * BATCHES_PER_SHARD
        buffer: dict[tuple[str, str], list[np.ndarray]] = {}
        buffered = 0
        start = writer.rows_done
        from .progress import progress_bar

        bar = progress_bar(total=len(samples), initial=start, desc=f"extract {loaded.card.id}", enabled=progress)
        with Capture(loaded.model, plan.selected, plan.readouts, stop_early=True, model_name=loaded.card.id) as cap:
            for batch_no, lo in enumerate(range(start, len(samples), batch_size)):
                chunk = samples[lo : lo + batch_size]
                for k, v in batch_features(plan, loaded, ds, cap, chunk).items():
                    buffer.setdefault(k, []).append(v)
                buffered += len(chunk)
                bar.update(len(chunk))
                if buffered >= shard_rows or lo + batch_size >= len(samples):
                    writer.write_shard({k: np.concatenate(v, axis=0) for k, v in buffer.items()})
                    buffer, buffered = {}, 0
                if on_batch is not None:
                    on_batch(batch_no)
        bar.close()
        labels = np.array([s.label for s in samples], dtype=np.int64)
        return writer.finalize(labels, [s.split for s in samples])
