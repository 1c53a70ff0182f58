"""Probe results: what :func:`medprobe.analysis.probes.probe_layers` returns and saves.

No torch here (reports load results without it). On disk a result directory holds::

    DIR/results.json          ProbeResults.to_dict() (format "medprobe.probe/1")
    DIR/weights.safetensors   per layer the real-task probe: "<key>::<name>" -> array
                              linear: W (D, K), b (K,), mean (D,), scale (D,)
                              mlp:    W1 (D, H), b1 (H,), W2 (H, K), b2 (K,), mean (D,), scale (D,)

Weights act on standardised features ``(x - mean) / scale``; logits = ``z @ W + b`` (linear) or
``relu(z @ W1 + b1) @ W2 + b2`` (mlp). No pickle anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..registry import MedprobeError

RESULTS_FORMAT = "medprobe.probe/1"
RESULTS_FILE = "results.json"
WEIGHTS_FILE = "weights.safetensors"


class ProbeError(MedprobeError):
    """Probe inputs are inconsistent, or a result directory cannot be read; names the layer / file."""


def _clean(value: Any) -> Any:
    """JSON-safe copy: numpy scalars -> Python, non-finite floats -> None, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value


@dataclass
class LayerProbeResult:
    """One probe on one feature key (``"<layer id>/<readout>"``).

    ``metrics``: accuracy, balanced_accuracy, macro_f1, auroc (``None`` when undefined) on the
    test split; ``ci95``: bootstrap interval of test accuracy; ``chance``: majority-class chance;
    ``permutation_p`` / ``permutation_null``: the permutation test (``None`` without controls);
    ``control_accuracy`` / ``selectivity``: the control task; ``hyper``: what was chosen on
    validation (``C`` / ``epoch``) and how it was chosen.
    """

    key: str
    probe: str
    metrics: dict[str, float | None]
    ci95: tuple[float, float]
    chance: float
    seed: int
    n_train: int
    n_val: int
    n_test: int
    width: int
    hyper: dict[str, Any] = field(default_factory=dict)
    permutation_p: float | None = None
    permutation_null: dict[str, Any] | None = None
    control_accuracy: float | None = None
    control_chance: float | None = None
    selectivity: float | None = None

    @property
    def accuracy(self) -> float:
        return float(self.metrics["accuracy"])  # type: ignore[arg-type]

    @property
    def layer(self) -> str:
        return self.key.split("/", 1)[0]

    @property
    def readout(self) -> str:
        return self.key.split("/", 1)[1] if "/" in self.key else "image-mean"

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "key": self.key,
                "probe": self.probe,
                "metrics": self.metrics,
                "ci95": list(self.ci95),
                "chance": self.chance,
                "permutation_p": self.permutation_p,
                "permutation_null": self.permutation_null,
                "control_accuracy": self.control_accuracy,
                "control_chance": self.control_chance,
                "selectivity": self.selectivity,
                "hyper": self.hyper,
                "seed": self.seed,
                "n_train": self.n_train,
                "n_val": self.n_val,
                "n_test": self.n_test,
                "width": self.width,
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerProbeResult":
        try:
            return cls(
                key=d["key"],
                probe=d["probe"],
                metrics=dict(d["metrics"]),
                ci95=(float(d["ci95"][0]), float(d["ci95"][1])),
                chance=float(d["chance"]),
                seed=int(d["seed"]),
                n_train=int(d["n_train"]),
                n_val=int(d["n_val"]),
                n_test=int(d["n_test"]),
                width=int(d["width"]),
                hyper=dict(d.get("hyper") or {}),
                permutation_p=d.get("permutation_p"),
                permutation_null=d.get("permutation_null"),
                control_accuracy=d.get("control_accuracy"),
                control_chance=d.get("control_chance"),
                selectivity=d.get("selectivity"),
            )
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ProbeError(f"layer result {d.get('key', '?')!r} is malformed: {type(exc).__name__}: {exc}") from None


@dataclass
class ProbeResults:
    """Every layer of one run probed with one probe.

    ``layers`` maps feature key -> :class:`LayerProbeResult` in the order the keys were given;
    ``settings`` holds the probe's hyper-parameters and control settings; ``weights`` maps key ->
    {name: array} for the real-task probe (not part of :meth:`to_dict`; written by :meth:`save`).
    """

    probe: str
    seed: int
    n_classes: int
    layers: dict[str, LayerProbeResult]
    settings: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)

    def __getitem__(self, key: str) -> LayerProbeResult:
        try:
            return self.layers[key]
        except KeyError:
            raise KeyError(f"probe '{self.probe}' has no result for '{key}'; keys: {', '.join(self.layers)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    def keys(self) -> list[str]:
        return list(self.layers)

    def accuracies(self) -> dict[str, float]:
        return {k: r.accuracy for k, r in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "format": RESULTS_FORMAT,
                "probe": self.probe,
                "seed": self.seed,
                "n_classes": self.n_classes,
                "settings": self.settings,
                "elapsed_s": round(self.elapsed_s, 3),
                "layers": [r.to_dict() for r in self.layers.values()],
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProbeResults":
        fmt = d.get("format")
        if fmt != RESULTS_FORMAT:
            raise ProbeError(f"probe results have format {fmt!r}; this medprobe reads {RESULTS_FORMAT!r}")
        layers = [LayerProbeResult.from_dict(x) for x in d.get("layers", [])]
        return cls(
            probe=d["probe"],
            seed=int(d["seed"]),
            n_classes=int(d["n_classes"]),
            layers={r.key: r for r in layers},
            settings=dict(d.get("settings") or {}),
            elapsed_s=float(d.get("elapsed_s") or 0.0),
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``results.json`` and ``weights.safetensors`` into ``directory`` (created)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            f"{key}::{name}": np.ascontiguousarray(arr, dtype=np.float32)
            for key, params in self.weights.items()
            for name, arr in params.items()
        }
        tmp = directory / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": RESULTS_FORMAT, "probe": self.probe})
        tmp.replace(directory / WEIGHTS_FILE)
        tmp = directory / (RESULTS_FILE + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        tmp.replace(directory / RESULTS_FILE)
        return directory

    @classmethod
    def load(cls, directory: str | Path, *, weights: bool = True) -> "ProbeResults":
        """Read a directory written by :meth:`save` (weights only if ``weights`` and present)."""
        directory = Path(directory)
        path = directory / RESULTS_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ProbeError(f"no probe results at {path}") from None
        except json.JSONDecodeError as exc:
            raise ProbeError(f"{path} is not valid JSON: {exc}") from None
        try:
            out = cls.from_dict(data)
        except ProbeError as exc:
            raise ProbeError(f"{path}: {exc}") from None
        wpath = directory / WEIGHTS_FILE
        if weights and wpath.exists():
            from safetensors.numpy import load_file

            for name, arr in load_file(str(wpath)).items():
                key, _, param = name.rpartition("::")
                out.weights.setdefault(key, {})[param] = arr
        return out
