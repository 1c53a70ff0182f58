"""Extraction plans: what one extraction produces, known before any forward pass.

:func:`plan_extract` computes the run key, run directory and manifest of extracting a loaded model
over an opened dataset (experiment grids use it to tell done jobs from pending ones; ``classify``
uses it for the features it captures in its own forward pass). No forward pass, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ..adapter import LoadedModel
from ..layermap import LayerSpec
from ..registry import MedprobeError
from ..runtime import git_hash, package_versions
from .provenance import condition_and_leakage, dataset_record, preprocessing_fingerprint, select_samples, synthetic_reasons
from .readouts import applicable, parse_readouts
from .store import FORMAT, run_key

#: bump when the capture/readout code changes what a feature means
FEATURE_VERSION = "1"


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


def check_readouts_apply(model_id: str, selected: Sequence[LayerSpec], wanted: Sequence[str],
                         per_layer: dict[str, list[str]]) -> None:
    """Raise :class:`~medprobe.readouts.ReadoutError` when no requested readout applies to any
    selected layer (e.g. ``cls`` on a CNN), before anything is written."""
    if any(per_layer.values()):
        return
    from .readouts import ReadoutError

    layouts = sorted({f"{s.stage}/{s.layout}" + (f"+{s.prefix_tokens} prefix" if s.prefix_tokens else "") for s in selected})
    raise ReadoutError(
        f"model '{model_id}': readout {','.join(wanted)} applies to no selected layer "
        f"({len(selected)} layers, {', '.join(layouts)}): cls needs a ViT block with a class token, last-token and "
        "text-mean an LLM layer; use --readout image-mean (or select other --layers)"
    )


def check_readouts_for_card(card: Any, readouts: str | Sequence[str] | None) -> None:
    """Before a model is loaded: text readouts alone on a vision-only card apply to no layer."""
    from .readouts import ReadoutError

    wanted = parse_readouts(readouts)
    if card.kind != "mllm" and set(wanted) <= {"last-token", "text-mean"}:
        raise ReadoutError(
            f"model '{card.id}': readout {','.join(wanted)} applies to no selected layer (a vision-only model has no "
            "LLM layers); use --readout image-mean"
        )


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
    from ..prompts import classification_question

    load_options = dict(load_options or {})
    adapter = loaded.adapter
    selected: list[LayerSpec] = loaded.layer_map.select(layers)
    wanted = parse_readouts(readouts)
    per_layer = {s.id: applicable(s, wanted) for s in selected}
    check_readouts_apply(loaded.card.id, selected, wanted, per_layer)
    samples = select_samples(ds.samples, limit, seed)
    if not samples:
        raise MedprobeError(f"dataset '{ds.spec}' has no samples")
    question = prompt if prompt is not None else classification_question(ds.classes)
    is_mllm = loaded.card.kind == "mllm"
    dev, dt = device, dtype

    payload = {
        "format": FORMAT,
        "feature_version": FEATURE_VERSION,
        "model": loaded.card.identity(),
        "weights": loaded.weights,
        "adapter": {"family": adapter.family, "version": adapter.version},
        "dataset": {"spec": ds.spec, "fingerprint": ds.fingerprint(), "sample_ids": [s.id for s in samples]},
        "layers": [s.id for s in selected],
        "readouts": list(wanted),
        "preprocessing": preprocessing_fingerprint(loaded),
        "prompt": question if is_mllm else None,
        "dtype": dt,
    }
    adapter_lora = loaded.extra.get("adapter_lora")  # set by medprobe.models.lora.apply_lora
    if adapter_lora is not None:
        payload["adapter_lora"] = adapter_lora
    key = run_key(payload)
    condition, leakage, groups = condition_and_leakage(loaded, ds, samples, adapter_lora)
    twin = "+random-init" if condition["weights"] == "random" else ""
    run_dir = Path(out) / f"{loaded.card.id.replace('/', '_').replace(':', '_')}{twin}__{ds.name}__{key[:12]}"
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
        "dataset": dict(dataset_record(ds, samples, limit), groups=groups),
        "condition": condition,
        "leakage": leakage,
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
