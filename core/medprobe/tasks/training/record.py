"""The trained-run directory and its record ``train.json`` (format ``medprobe.tasks.train/1``). No torch.

A run directory written by :func:`medprobe.tasks.train.train` (``medprobe train --out RUN``)::

    RUN/train.json                    the record (below), written last: its presence marks a complete run
    RUN/train_log.jsonl               one JSON object per epoch (losses, accuracies, learning rate, time)
    RUN/checkpoint/head.safetensors   the classifier head of the best epoch: weight (K, D), bias (K,),
                                      mean (D,), scale (D,); logits = ((x - mean) / scale) @ weight.T + bias
    RUN/checkpoint/backbone.safetensors   the trained backbone of the best epoch (absent when frozen):
                                      timm / open_clip / hf_clip: the model's full state_dict (timm and
                                      open_clip files load with ``--weights``); vision-tower: the trained
                                      vision-tower parameters, named as in the full MLLM
    RUN/layers/<run>/                 with ``--probe-layers``: a feature-store run of the trained model

``train.json`` fields: ``format``, ``recipe``, ``frozen_backbone``, ``model`` (card, weights,
adapter, feature layer and width), ``hyper`` (every resolved hyper-parameter), ``seed``,
``dataset`` (spec, name, classes, fingerprint, synthetic, counts per split), ``class_weights``,
``preprocessing``, ``epochs_run``, ``best_epoch``, ``stopped_early``, ``metrics`` (per split:
``n``, ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc``, ``ci95`` (bootstrap 95%
interval of accuracy), ``chance``, ``confusion``), ``checkpoint`` (relative paths and sha256),
``layers_run`` (relative path or null), ``synthetic`` / ``synthetic_reasons``, ``device``,
``versions``, ``git``, ``elapsed_s``, ``created``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...registry import MedprobeError
from ...features.store import read_record

TRAIN_FORMAT = "medprobe.tasks.train/1"
TRAIN_FILE = "train.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoint"
BACKBONE_FILE = "backbone.safetensors"
HEAD_FILE = "head.safetensors"
LAYERS_DIR = "layers"
SPLITS = ("train", "val", "test")
#: bootstrap resamples of the accuracy interval
N_BOOT = 1000


class TrainError(MedprobeError):
    """Training cannot run or a trained-run directory cannot be read; names the model / file."""


def split_metrics(labels: Any, proba: Any, *, train_labels: Any, n_classes: int, seed: int = 0) -> dict[str, Any]:
    """Metrics of one split from labels (n,) int and class probabilities (n, K) float.

    ``accuracy``, ``balanced_accuracy``, ``macro_f1``, ``auroc`` (:mod:`medprobe.analysis.metrics`,
    prediction = arg-max), ``ci95`` (percentile bootstrap of accuracy, ``N_BOOT`` resamples,
    seeded), ``chance`` (majority training class) and ``confusion`` (K, K): rows true, columns
    predicted.
    """
    from ...analysis import metrics as m

    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape != (y.shape[0], n_classes):
        raise TrainError(f"probabilities must be (n, K) = ({y.shape[0]}, {n_classes}), got {p.shape}")
    pred = p.argmax(axis=1)
    out: dict[str, Any] = {"n": int(y.size)}
    out.update(m.classification_metrics(y, p))
    out["ci95"] = list(m.bootstrap_ci(pred == y, n_boot=N_BOOT, seed=seed))
    out["chance"] = m.chance_accuracy(np.asarray(train_labels, dtype=np.int64), y)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    out["confusion"] = confusion.tolist()
    return out


def json_safe(value: Any) -> Any:
    """JSON-safe copy: numpy scalars and arrays -> Python, non-finite floats -> None, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def write_record(path: Path, record: Mapping[str, Any]) -> None:
    """Write ``train.json`` atomically (strict JSON: non-finite floats become null)."""
    from ...features.store import atomic_write_bytes

    text = json.dumps(json_safe(record), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    atomic_write_bytes(Path(path) / TRAIN_FILE, text.encode())


def is_train_dir(path: str | Path) -> bool:
    """True when ``path`` is a directory holding ``train.json``."""
    return (Path(path) / TRAIN_FILE).is_file()


@dataclass
class TrainRun:
    """A complete trained run (what :func:`medprobe.tasks.train.train` returns)."""

    path: Path
    record: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "TrainRun":
        path = Path(path)
        record = read_record(path, TRAIN_FILE, TRAIN_FORMAT, "trained run", TrainError,
                             required=("recipe", "model", "dataset", "metrics", "best_epoch"))
        return cls(path=path, record=record)

    @property
    def model_id(self) -> str:
        return str(self.record["model"]["card"]["id"])

    @property
    def recipe(self) -> str:
        return str(self.record["recipe"])

    @property
    def run_id(self) -> str:
        """The id the report gives this trained model: ``<card id>+<recipe>``."""
        return f"{self.model_id}+{self.recipe}"

    @property
    def metrics(self) -> dict[str, dict[str, Any]]:
        return self.record["metrics"]

    @property
    def test_accuracy(self) -> float:
        return float(self.metrics["test"]["accuracy"])

    @property
    def best_epoch(self) -> int:
        return int(self.record["best_epoch"])

    @property
    def synthetic(self) -> bool:
        return bool(self.record.get("synthetic"))

    def file(self, key: str) -> Path | None:
        """Absolute path of a checkpoint file (``backbone`` / ``head``), or None when absent."""
        rel = (self.record.get("checkpoint") or {}).get(key)
        return (self.path / rel) if rel else None

    @property
    def layers_run_path(self) -> Path | None:
        rel = self.record.get("layers_run")
        return (self.path / rel) if rel else None

    def log(self) -> list[dict[str, Any]]:
        """The per-epoch log (``train_log.jsonl``)."""
        file = self.path / LOG_FILE
        if not file.is_file():
            return []
        return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]

    def report_entry(self, layers_model: str | None = None) -> dict[str, Any]:
        """This run as an entry of the report's ``trained`` list (docs/report-schema.md)."""
        r = self.record
        card = r["model"]["card"]
        test = r["metrics"].get("test", {})
        return json_safe(
            {
                "id": self.run_id,
                "model": card["id"],
                "title": f"{card.get('title') or card['id']} ({self.recipe})",
                "model_kind": card.get("kind"),
                "category": card.get("category"),
                "recipe": self.recipe,
                "frozen_backbone": bool(r.get("frozen_backbone")),
                "weights": r["model"].get("weights"),
                "feature_layer": r["model"].get("feature_layer"),
                "synthetic": self.synthetic,
                "synthetic_reasons": list(r.get("synthetic_reasons") or []),
                "best_epoch": r.get("best_epoch"),
                "epochs_run": r.get("epochs_run"),
                "stopped_early": r.get("stopped_early"),
                "seed": r.get("seed"),
                "hyper": r.get("hyper") or {},
                "metrics": {s: {k: v for k, v in r["metrics"][s].items() if k != "confusion"} for s in SPLITS if s in r["metrics"]},
                "test_accuracy": test.get("accuracy"),
                "test_ci95": test.get("ci95"),
                "dataset": {k: r["dataset"].get(k) for k in ("spec", "name", "fingerprint", "classes")},
                "layers_model": layers_model,
                "path": str(self.path),
            }
        )

