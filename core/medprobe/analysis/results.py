"""Probe results: what :func:`medprobe.analysis.probes.probe_layers` returns and saves.

No torch here (reports load results without it). On disk a result directory holds::

    DIR/results.json          ProbeResults.to_dict() (format "medprobe.probe/2"; "/1" still loads)
    DIR/outcomes.safetensors  per-sample out-of-fold outcomes of every layer (format /2):
                              "sample_index" int64 (N_scored,): row indices into the run's samples,
                                  the same order for every layer;
                              "<key>::correct" uint8 (S_seeds, N_scored): 1 where seed s classified
                                  sample i correctly;
                              "<key>::proba" float32 (S_seeds, N_scored, K): class probabilities.
    DIR/weights.safetensors   split protocol only, per layer the real-task probe of the first seed:
                              "<key>::<name>" -> array
                              linear: W (D, K), b (K,), mean (D,), scale (D,)
                              mlp:    W1 (D, H), b1 (H,), W2 (H, K), b2 (K,), mean (D,), scale (D,)

Weights act on standardised features ``(x - mean) / scale``; logits = ``z @ W + b`` (linear) or
``relu(z @ W1 + b1) @ W2 + b2`` (mlp). No pickle anywhere. ``ProbeResults.outcomes(key)`` reads
the outcomes lazily (paired statistics across layers use them: every layer is scored on the same
samples, in the same order).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..registry import MedprobeError

RESULTS_FORMAT = "medprobe.probe/2"
READABLE_FORMATS = ("medprobe.probe/1", "medprobe.probe/2")
RESULTS_FILE = "results.json"
WEIGHTS_FILE = "weights.safetensors"
OUTCOMES_FILE = "outcomes.safetensors"


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

    ``metrics``: accuracy, balanced_accuracy, macro_f1, auroc (``None`` when undefined), each the
    mean over probe seeds of the metric on the scored samples (out-of-fold rows under ``cv``, the
    test split under ``split``); ``ci95``: hierarchical bootstrap interval of the seed-mean accuracy
    (samples and seed resampled, :func:`~.metrics.seed_bootstrap_ci`); ``n``: samples scored;
    ``seed_accuracies`` (S,) and ``seed_sd``: the seed spread; ``chance``: majority-class chance;
    ``permutation_p`` / ``permutation_null``: the permutation test (``None`` without controls);
    ``control_accuracy`` / ``selectivity``: the control task, ``None`` with ``control_note`` when it
    is not informative; ``hyper``: what was chosen on the inner split (``C`` / ``epoch``) and how;
    ``warnings``: convergence and selection warnings (e.g. chosen epoch = last epoch, lbfgs not
    converged); ``holdout``: the separate held-out score on the official test rows (``cv`` with
    ``holdout``), else ``None``.
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
    n: int | None = None
    seed_accuracies: list[float] = field(default_factory=list)
    seed_sd: float | None = None
    warnings: list[str] = field(default_factory=list)
    control_note: str | None = None
    holdout: dict[str, Any] | None = None

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
                "n": self.n,
                "seed_accuracies": list(self.seed_accuracies),
                "seed_sd": self.seed_sd,
                "warnings": list(self.warnings),
                "control_note": self.control_note,
                "holdout": self.holdout,
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
                # format /1 scored the test split once with one seed
                n=int(d["n"]) if d.get("n") is not None else int(d["n_test"]),
                seed_accuracies=[float(a) for a in d["seed_accuracies"]] if d.get("seed_accuracies") is not None
                else [float(d["metrics"]["accuracy"])],
                seed_sd=float(d["seed_sd"]) if d.get("seed_sd") is not None else 0.0,
                warnings=[str(w) for w in d.get("warnings") or []],
                control_note=d.get("control_note"),
                holdout=d.get("holdout"),
            )
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ProbeError(f"layer result {d.get('key', '?')!r} is malformed: {type(exc).__name__}: {exc}") from None


@dataclass
class ProbeResults:
    """Every layer of one run probed with one probe.

    ``layers`` maps feature key -> :class:`LayerProbeResult` in the order the keys were given;
    ``settings`` holds the probe's hyper-parameters and control settings; ``protocol`` the
    protocol block (``name``, ``k``, ``seeds``, ``n_permutations``, ``recipe``,
    ``hyper_selection``, ``n_scored``, ``holdout``); ``weights`` maps key -> {name: array} for the
    real-task probe (not part of :meth:`to_dict`; written by :meth:`save`). Per-sample outcomes:
    :attr:`sample_index` and :meth:`outcomes` (in memory after training, read lazily from
    ``outcomes.safetensors`` after :meth:`load`).
    """

    probe: str
    seed: int
    n_classes: int
    layers: dict[str, LayerProbeResult]
    settings: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0
    weights: dict[str, dict[str, np.ndarray]] = field(default_factory=dict, repr=False)
    protocol: dict[str, Any] = field(default_factory=dict)
    format: str = RESULTS_FORMAT
    _outcomes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _sample_index: np.ndarray | None = field(default=None, repr=False)
    _directory: Path | None = field(default=None, repr=False)

    def set_outcomes(self, sample_index: np.ndarray, outcomes: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Attach per-sample outcomes: ``sample_index`` (N_scored,) int64 and key -> ``(correct
        (S, N_scored) bool, proba (S, N_scored, K) float32)``."""
        self._sample_index = np.asarray(sample_index, dtype=np.int64)
        self._outcomes = {k: (np.asarray(c, dtype=bool), np.asarray(p, dtype=np.float32)) for k, (c, p) in outcomes.items()}

    def _read_outcomes(self) -> None:
        if self._sample_index is not None:
            return
        path = self._directory / OUTCOMES_FILE if self._directory is not None else None
        if path is None or not path.is_file():
            where = f"{path}" if path is not None else "these results (not saved, not trained here)"
            raise ProbeError(
                f"no per-sample outcomes in {where}: results of format {self.format!r} predate them; "
                "re-probe with --force to write them"
            )
        from safetensors.numpy import load_file

        tensors = load_file(str(path))
        self._sample_index = tensors.pop("sample_index").astype(np.int64)
        grouped: dict[str, dict[str, np.ndarray]] = {}
        for name, arr in tensors.items():
            key, _, what = name.rpartition("::")
            grouped.setdefault(key, {})[what] = arr
        self._outcomes = {k: (v["correct"].astype(bool), v["proba"].astype(np.float32)) for k, v in grouped.items()}

    @property
    def sample_index(self) -> np.ndarray:
        """(N_scored,) int64: row indices into the run's samples, the order of every :meth:`outcomes`."""
        self._read_outcomes()
        return self._sample_index  # type: ignore[return-value]

    def outcomes(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """``(correct (S, N_scored) bool, proba (S, N_scored, K) float32)`` of feature ``key``: per
        probe seed, the out-of-fold (cv) or test (split) outcome of every scored sample."""
        self._read_outcomes()
        try:
            return self._outcomes[key]
        except KeyError:
            raise ProbeError(f"probe '{self.probe}' has no outcomes for '{key}'; keys: {', '.join(self._outcomes)}") from None

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
                "protocol": self.protocol,
                "settings": self.settings,
                "elapsed_s": round(self.elapsed_s, 3),
                "layers": [r.to_dict() for r in self.layers.values()],
            }
        )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProbeResults":
        fmt = d.get("format")
        if fmt not in READABLE_FORMATS:
            raise ProbeError(f"probe results have format {fmt!r}; this medprobe reads {', '.join(READABLE_FORMATS)}")
        layers = [LayerProbeResult.from_dict(x) for x in d.get("layers", [])]
        return cls(
            probe=d["probe"],
            seed=int(d["seed"]),
            n_classes=int(d["n_classes"]),
            layers={r.key: r for r in layers},
            settings=dict(d.get("settings") or {}),
            elapsed_s=float(d.get("elapsed_s") or 0.0),
            protocol=dict(d.get("protocol") or _legacy_protocol(d, layers)),
            format=str(fmt),
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``results.json``, ``outcomes.safetensors`` (when outcomes are attached) and
        ``weights.safetensors`` into ``directory`` (created)."""
        from safetensors.numpy import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self._sample_index is not None:
            out = {"sample_index": np.ascontiguousarray(self._sample_index, dtype=np.int64)}
            for key, (correct, proba) in self._outcomes.items():
                out[f"{key}::correct"] = np.ascontiguousarray(correct, dtype=np.uint8)
                out[f"{key}::proba"] = np.ascontiguousarray(proba, dtype=np.float32)
            tmp = directory / (OUTCOMES_FILE + ".tmp")
            save_file(out, str(tmp), metadata={"format": RESULTS_FORMAT, "probe": self.probe})
            tmp.replace(directory / OUTCOMES_FILE)
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
        out._directory = directory
        wpath = directory / WEIGHTS_FILE
        if weights and wpath.exists():
            from safetensors.numpy import load_file

            for name, arr in load_file(str(wpath)).items():
                key, _, param = name.rpartition("::")
                out.weights.setdefault(key, {})[param] = arr
        return out


def _legacy_protocol(d: Mapping[str, Any], layers: list[LayerProbeResult]) -> dict[str, Any]:
    """The protocol block of a format /1 result: one seed, the test split scored once."""
    settings = d.get("settings") or {}
    return {
        "name": "split",
        "k": None,
        "seeds": [int(d["seed"])],
        "n_permutations": int(settings.get("n_permutations") or 0),
        "recipe": "paper" if d.get("probe") == "mlp" else "grid",
        "hyper_selection": "val split (format medprobe.probe/1)",
        "n_scored": layers[0].n_test if layers else 0,
        "holdout": False,
    }
