"""Zero-shot classification with a contrastive model: the CLIP analogue of an MLLM's P_final.

::

    from medprobe.tasks.zeroshot import zeroshot
    run = zeroshot("biomedclip", "synthetic:lesions", "runs/biomedclip-zs")
    run.metrics["test"]["accuracy"]

For every class, each prompt template of :data:`DEFAULT_TEMPLATES` is filled with the class name
(underscores and hyphens read as spaces: ``round_lesion`` -> ``round lesion``) and encoded by the
model's text tower; the L2-normalised prompt embeddings of a class are averaged and normalised
again (prompt ensembling, as in CLIP). Every image is encoded by the image tower and
L2-normalised. The prediction is the class with the highest cosine similarity; the class scores
used for AUROC are ``softmax(100 * cosine)`` (100 = CLIP's maximal learned logit scale). No
training: every split is scored, and the test split's accuracy is the number the report shows
as the baseline's ``P_final`` (the zero-shot analogue of the accuracy of an MLLM's answers).

Families: any adapter with ``encode_images(loaded, batch)`` and ``encode_texts(loaded, texts)``
(``open_clip``, ``hf_clip``).

The run directory holds ``zeroshot.json`` (format ``medprobe.tasks.zeroshot/1``): ``model`` (card,
weights, adapter), ``dataset`` (spec, name, classes, fingerprint, synthetic, counts), ``templates``,
``prompts`` (class -> texts), ``scoring``, ``metrics`` per split (``n``, ``accuracy``,
``balanced_accuracy``, ``macro_f1``, ``auroc``, ``ci95`` (bootstrap of accuracy), ``chance``,
``confusion``), ``p_final`` / ``p_final_n`` (test accuracy and size), synthetic flags, versions.
"""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..registry import MedprobeError
from ..features.store import read_record

ZEROSHOT_FORMAT = "medprobe.tasks.zeroshot/1"
ZEROSHOT_FILE = "zeroshot.json"
#: prompt templates; ``{c}`` is the class name
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a medical image of {c}.",
    "a medical image showing {c}.",
    "an image of {c}.",
    "{c}.",
)
#: cosine similarities are multiplied by this before the softmax that gives class scores
LOGIT_SCALE = 100.0
SPLITS = ("train", "val", "test")


class ZeroShotError(MedprobeError):
    """Zero-shot classification cannot run, or a zero-shot run cannot be read; names the model / file."""


def class_text(name: str) -> str:
    """A class name as prompt text: :func:`medprobe.prompts.answer_text`, with hyphens also
    read as spaces and runs of spaces collapsed (``round_lesion`` -> ``round lesion``)."""
    from ..prompts import answer_text

    return " ".join(answer_text(name).replace("-", " ").split())


def class_prompts(classes: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES) -> dict[str, list[str]]:
    """class name -> its prompts, one per template (each template must contain ``{c}``)."""
    bad = [t for t in templates if "{c}" not in t]
    if not templates or bad:
        raise ZeroShotError(f"prompt templates must each contain '{{c}}' (the class name); bad: {bad or 'none given'}")
    return {c: [t.format(c=class_text(c)) for t in templates] for c in classes}


def zeroshot_scores(image_embeddings: Any, class_embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities and class scores.

    ``image_embeddings`` (N, D) and ``class_embeddings`` (K, D), any scale (both are L2-normalised
    here). Returns ``cosine`` (N, K) and ``proba`` (N, K) = ``softmax(LOGIT_SCALE * cosine)``;
    the prediction is ``cosine.argmax(axis=1)``.
    """
    img = np.asarray(image_embeddings, dtype=np.float64)
    cls = np.asarray(class_embeddings, dtype=np.float64)
    if img.ndim != 2 or cls.ndim != 2 or img.shape[1] != cls.shape[1]:
        raise ZeroShotError(f"embeddings must be (N, D) and (K, D) with the same D, got {img.shape} and {cls.shape}")
    img = img / np.maximum(np.linalg.norm(img, axis=1, keepdims=True), 1e-12)
    cls = cls / np.maximum(np.linalg.norm(cls, axis=1, keepdims=True), 1e-12)
    cosine = img @ cls.T
    logits = LOGIT_SCALE * cosine
    logits -= logits.max(axis=1, keepdims=True)
    proba = np.exp(logits)
    proba /= proba.sum(axis=1, keepdims=True)
    return cosine, proba


def _normalise(x: Any) -> Any:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def class_embeddings(adapter: Any, loaded: Any, prompts: dict[str, list[str]]) -> np.ndarray:
    """(K, D) float64: per class, the normalised mean of its normalised prompt embeddings."""
    import torch

    rows = []
    with torch.no_grad():
        for texts in prompts.values():
            emb = _normalise(adapter.encode_texts(loaded, texts).float())
            rows.append(_normalise(emb.mean(dim=0)).cpu().double().numpy())
    return np.stack(rows)


@dataclass
class ZeroShotRun:
    """A zero-shot run directory (what :func:`zeroshot` returns)."""

    path: Path
    record: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "ZeroShotRun":
        path = Path(path)
        record = read_record(path, ZEROSHOT_FILE, ZEROSHOT_FORMAT, "zero-shot run", ZeroShotError,
                             required=("model", "dataset", "metrics"))
        return cls(path=path, record=record)

    @property
    def model_id(self) -> str:
        return str(self.record["model"]["card"]["id"])

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.record["metrics"]

    @property
    def p_final(self) -> float:
        return float(self.record["p_final"])

    @property
    def p_final_n(self) -> int:
        return int(self.record["p_final_n"])


def is_zeroshot_dir(path: str | Path) -> bool:
    return (Path(path) / ZEROSHOT_FILE).is_file()


def zeroshot(
    model: str | Any,
    dataset: str | Any,
    out: str | Path,
    *,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 32,
    progress: bool | None = None,
    load: Any = None,
    **load_fields: Any,
) -> ZeroShotRun:
    """Zero-shot classify every image of ``dataset`` with ``model``; write ``out/zeroshot.json``.

    ``model``: a card id / ``family:NAME`` of a contrastive family, or a loaded model. ``load``: which
    model, how (:class:`~medprobe.models.prepare.LoadOptions`); ``load_fields`` its fields as keywords:
    ``tiny`` (the card's tiny random model: pipeline check, flagged synthetic), ``weights``,
    ``random_init``, ``source``, ``device``, ``dtype``, ``seed`` (seeds the tiny model and the bootstrap).
    """
    import torch

    from ..datasets import open_dataset
    from ..features.provenance import synthetic_reasons
    from ..progress import progress_bar
    from ..runtime import git_hash, package_versions
    from ..features.store import atomic_write_bytes, ensure_writable
    from .training.record import json_safe, split_metrics
    from ..models.prepare import options_of, prepare_model

    opts = options_of(load, load_fields)
    seed = opts.seed
    if batch_size < 1:
        raise ZeroShotError("--batch-size must be at least 1")
    ds = open_dataset(dataset) if isinstance(dataset, str) else dataset
    if len(ds.classes) < 2:
        raise ZeroShotError(f"dataset '{ds.spec}' has fewer than two classes")
    ensure_writable(Path(out), "the zero-shot run (zeroshot.json)", "choose a writable --out")
    loaded, dev, dt = prepare_model(model, opts)
    adapter = loaded.adapter
    missing = [m for m, has in (("encode_images", adapter.encodes_images), ("encode_texts", adapter.has_text_tower))
               if not has]
    if missing:
        raise ZeroShotError(
            f"model '{loaded.card.id}': family '{loaded.card.family}' has no {' / '.join(missing)}; zero-shot "
            "classification needs a contrastive image-text model (an adapter declaring encodes_images and "
            "has_text_tower)"
        )
    prompts = class_prompts(ds.classes, templates)
    loaded.model.eval()
    text = class_embeddings(adapter, loaded, prompts)

    samples = {s: ds.by_split(s) for s in SPLITS}
    bar = progress_bar(total=sum(len(v) for v in samples.values()), desc=f"zero-shot {loaded.card.id}", enabled=progress)
    metrics: dict[str, Any] = {}
    train_labels = np.array([s.label for s in samples["train"]], dtype=np.int64)
    if train_labels.size == 0:
        train_labels = np.array([s.label for s in ds.samples], dtype=np.int64)
    for split, rows in samples.items():
        if not rows:
            continue
        parts = []
        with torch.no_grad():
            for lo in range(0, len(rows), batch_size):
                chunk = rows[lo : lo + batch_size]
                batch = adapter.preprocess(loaded, [ds.load_image(s) for s in chunk])
                parts.append(adapter.encode_images(loaded, batch).float().cpu().double().numpy())
                bar.update(len(chunk))
        _, proba = zeroshot_scores(np.concatenate(parts), text)
        labels = np.array([s.label for s in rows], dtype=np.int64)
        metrics[split] = split_metrics(labels, proba, train_labels=train_labels, n_classes=len(ds.classes), seed=seed)
    bar.close()
    if "test" not in metrics:
        raise ZeroShotError(f"dataset '{ds.spec}' has an empty test split; P_final is the test accuracy")

    reasons = synthetic_reasons(loaded, ds)
    record = {
        "format": ZEROSHOT_FORMAT,
        "model": {
            "card": loaded.card.to_dict(),
            "weights": loaded.weights,
            "adapter": adapter.family,
            "adapter_version": adapter.version,
        },
        "dataset": {
            "spec": ds.spec,
            "name": ds.name,
            "classes": list(ds.classes),
            "fingerprint": ds.fingerprint(),
            "synthetic": bool(getattr(ds, "synthetic", False)),
            "counts": {s: len(v) for s, v in samples.items()},
        },
        "templates": list(templates),
        "prompts": prompts,
        "scoring": (
            "per class: mean of the L2-normalised prompt embeddings, normalised; prediction = arg-max cosine "
            f"similarity with the L2-normalised image embedding; class scores = softmax({LOGIT_SCALE:g} * cosine)"
        ),
        "metrics": metrics,
        "p_final": metrics["test"]["accuracy"],
        "p_final_n": metrics["test"]["n"],
        "p_final_meaning": "zero-shot test accuracy: the contrastive-model analogue of an MLLM's P_final",
        "seed": seed,
        "dtype": dt,
        "device": dev,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
        "versions": package_versions(),
        "git": git_hash(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }
    out = Path(out)
    text_json = json.dumps(json_safe(record), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(out / ZEROSHOT_FILE, text_json.encode())
    return ZeroShotRun.open(out)
