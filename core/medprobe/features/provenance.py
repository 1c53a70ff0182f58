"""What a run records about where its features came from: the sample subset, the dataset record,
the preprocessing fingerprint and the synthetic flags.

Every task that writes a run or record (extract, classify, zero-shot, train, finetune) calls these,
so the same facts are recorded the same way everywhere. No torch.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

from ..adapter import LoadedModel
from .store import sample_ids_sha256


def select_samples(samples: list[Any], limit: int | None, seed: int) -> list[Any]:
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
        "sample_ids_sha256": sample_ids_sha256([s.id for s in samples]),
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


def condition_and_leakage(
    loaded: LoadedModel, ds: Any, samples: Sequence[Any], adapter_lora: Any = None
) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """``(condition, leakage, groups)`` of extracting ``loaded`` over ``samples`` of ``ds``: the
    manifest's ``condition`` block (weights pretrained / random twin / tiny random, LoRA;
    :mod:`medprobe.models.condition`), its ``leakage`` block and ``dataset.groups``, one group label
    per row aligned with ``dataset.sample_ids`` (:mod:`medprobe.datasets.groups`). The condition
    follows from the weights label and LoRA identity, both in the run key (a twin's key always
    differs from its model's); the leakage record and groups follow from the images and are
    recorded, not keyed (docs/feature-store.md)."""
    from ..datasets.groups import dataset_leakage
    from ..models.condition import weights_condition

    condition = weights_condition(loaded.weights, adapter_lora, loaded.extra.get("random_init_redrawn"))
    leakage, groups = dataset_leakage(ds, samples)
    return condition, leakage, groups
