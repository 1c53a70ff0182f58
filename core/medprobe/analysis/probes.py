"""Layer-wise probing: every layer of a run probed in one batched pass.

Entry point::

    from medprobe.analysis.probes import probe_layers
    res = probe_layers(features, labels, splits, probe="linear", seed=0)
    res["llm.03/image-mean"].accuracy
    res.save(run_dir / "probes" / "linear")

``features`` maps a feature key (``"<layer id>/<readout>"``) to an (N, D) float32 array -- an
``np.ndarray``, an ``np.memmap`` or a lazy Mapping whose values are read on access. Each value is
read exactly once. ``labels`` (N,) int64 in ``0..K-1``; ``splits`` (N,) of ``"train"``, ``"val"``,
``"test"``. Hyper-parameters are tuned on ``val`` only; ``test`` is scored once per layer.

How the batching works
    Rows are reordered once to ``[train | val | test]`` so every split is a contiguous slice (a view,
    no copy). Layers are read in order into one buffer per width D, of shape (L_D, N, D), until the
    buffers together reach ``max_chunk_bytes`` (default 1 GiB, counting the probe's own per-layer
    training state); that *chunk* -- one group of layers per width -- is then trained at once (one
    ``torch.bmm`` over the layer axis per width group) and freed before the next layers are read.
    So 60 layers x 5,000 x 4,096 float32 (4.9 GB) are never in memory twice: at most one chunk
    plus one layer (plus the layer a lazy mapping hands over while it is copied).

Label sets
    Besides the real labels, the probe fits (in the same pass) the control-task labels and
    ``n_permutations`` shuffled label sets when ``controls=True`` (see :mod:`.controls`). Their test
    accuracies become ``control_accuracy`` / ``selectivity`` and ``permutation_p``.

Probes are classes with a ``name``, keyword hyper-parameters, :meth:`Probe.settings` and
:meth:`Probe.train_chunk`; the built-ins are ``linear`` (:class:`~.linear.LinearProbe`) and
``mlp`` (:class:`~.mlp.MLPProbe`). Other names are looked up in the plugin registry
(``register_probes``). torch is imported only when a chunk is trained.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import controls as _controls
from . import metrics as _metrics
from .results import LayerProbeResult, ProbeError, ProbeResults

DEFAULT_MAX_CHUNK_BYTES = 1 << 30
SPLITS = ("train", "val", "test")
BUILTIN_PROBES = {
    "linear": "medprobe.analysis.linear:LinearProbe",
    "mlp": "medprobe.analysis.mlp:MLPProbe",
}


@dataclass
class ProbeData:
    """The rows of one run in ``[train | val | test]`` order, with every label set.

    ``order`` (N,): original row index of each reordered row. ``label_sets`` (S, N) int64 in the
    reordered row order: row 0 the real labels, then the control task (if ``has_control``), then the
    permutations. ``n_classes`` K.
    """

    order: np.ndarray
    n_train: int
    n_val: int
    n_test: int
    n_classes: int
    label_sets: np.ndarray
    has_control: bool
    n_permutations: int

    @property
    def n(self) -> int:
        return self.n_train + self.n_val + self.n_test

    @property
    def n_sets(self) -> int:
        return int(self.label_sets.shape[0])

    @property
    def control_index(self) -> int | None:
        return 1 if self.has_control else None

    @property
    def perm_slice(self) -> slice:
        start = 2 if self.has_control else 1
        return slice(start, start + self.n_permutations)

    def selection_sets(self) -> list[int]:
        """Label sets that get their own hyper-parameter selection (real, control)."""
        return [0, 1] if self.has_control else [0]

    @property
    def test_slice(self) -> slice:
        return slice(self.n_train + self.n_val, self.n)


@dataclass
class LayerOutput:
    """What a probe returns per layer of a chunk.

    ``test_proba`` (S, n_test, K) float32: class probabilities on the test rows for every label
    set (rows in reordered order). ``hyper`` / ``control_hyper``: what was selected on val for the
    real and control sets. ``weights``: the real-task probe's parameters (see ``results.py``).
    """

    key: str
    test_proba: np.ndarray
    hyper: dict[str, Any]
    control_hyper: dict[str, Any] | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)


class Probe:
    """Base class of probes. Subclasses set ``name`` and ``default_permutations`` and implement
    :meth:`settings`, :meth:`state_bytes_per_layer` and :meth:`train_chunk`."""

    name: str = ""
    default_permutations: int = 20

    def settings(self) -> dict[str, Any]:
        """JSON-safe hyper-parameters, recorded in the results."""
        raise NotImplementedError

    def state_bytes_per_layer(self, width: int, data: ProbeData) -> int:
        """Bytes of training state per layer besides the (N, D) features (for chunk sizing)."""
        return 0

    def train_chunk(self, groups: Sequence[tuple[list[str], Any]], data: ProbeData, seed: int) -> list[LayerOutput]:
        """Train on a chunk: ``groups`` is a list of ``(keys, X)``, one per width, with ``X`` a torch
        float32 tensor (L, N, D) in reordered row order that shares memory with the read buffer
        (do not modify it). Returns one :class:`LayerOutput` per key."""
        raise NotImplementedError

    def fit_layers(
        self,
        features: Mapping[str, Any],
        labels: Any,
        splits: Any,
        *,
        seed: int = 0,
        controls: bool = True,
        n_classes: int | None = None,
        groups: Any = None,
        n_permutations: int | None = None,
        max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
        n_boot: int = 1000,
        device: str = "cpu",
    ) -> ProbeResults:
        """Probe every key of ``features``; see :func:`probe_layers`."""
        return run_probe(
            self,
            features,
            labels,
            splits,
            seed=seed,
            controls=controls,
            n_classes=n_classes,
            groups=groups,
            n_permutations=n_permutations,
            max_chunk_bytes=max_chunk_bytes,
            n_boot=n_boot,
            device=device,
        )


def layer_seed(seed: int, key: str) -> int:
    """A 63-bit seed derived from the run seed and a feature key (independent of chunking)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big") >> 1


def get_probe(name: str, **hyper: Any) -> Probe:
    """Instantiate a probe by name: the built-ins, else the plugin registry."""
    from ..registry import resolve_factory

    spec = BUILTIN_PROBES.get(name)
    if spec is None:
        from ..plugins import get_plugins

        spec = get_plugins().probes.get(name)  # raises NotFoundError listing close names
    cls = resolve_factory(spec)
    try:
        return cls(**hyper)
    except TypeError as exc:
        raise ProbeError(f"probe '{name}' does not accept these hyper-parameters: {exc}") from None


def probe_layers(
    features: Mapping[str, Any],
    labels: Any,
    splits: Any,
    *,
    probe: str = "linear",
    seed: int = 0,
    controls: bool = True,
    n_classes: int | None = None,
    groups: Any = None,
    n_permutations: int | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    n_boot: int = 1000,
    device: str = "cpu",
    **hyper: Any,
) -> ProbeResults:
    """Probe every layer of a run with one probe, all layers batched.

    ``features``: key -> (N, D) float32; ``labels`` (N,) int; ``splits`` (N,) str. ``groups`` (N,):
    control-task group ids (sample ids or duplicate-cluster ids; default one group per row).
    ``n_permutations``: size of the permutation null (default: the probe's
    ``default_permutations``; ignored without ``controls``). ``max_chunk_bytes``: memory budget
    of one chunk. ``n_boot``: bootstrap resamples of the CI. ``device``: torch device that trains
    the chunks (``"cpu"``, ``"cuda"``, ``"cuda:1"``). ``hyper``: the probe's hyper-parameters (e.g.
    ``hidden=256`` for ``mlp``, ``coarse_grid=...`` for ``linear``).
    """
    return get_probe(probe, **hyper).fit_layers(
        features,
        labels,
        splits,
        seed=seed,
        controls=controls,
        n_classes=n_classes,
        groups=groups,
        n_permutations=n_permutations,
        max_chunk_bytes=max_chunk_bytes,
        n_boot=n_boot,
        device=device,
    )


# -- data preparation --------------------------------------------------------------------------


def prepare_data(
    labels: Any,
    splits: Any,
    *,
    n_classes: int | None,
    controls: bool,
    n_permutations: int,
    groups: Any,
    seed: int,
) -> ProbeData:
    """Validate labels and splits, reorder rows and build the label sets."""
    y = np.asarray(labels)
    sp = np.asarray(splits).astype(str)
    if y.ndim != 1:
        raise ProbeError(f"labels must be 1-D (N,), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ProbeError(f"labels must be integers 0..K-1, got dtype {y.dtype}")
    if sp.shape != y.shape:
        raise ProbeError(f"splits {sp.shape} and labels {y.shape} must have the same length")
    unknown = sorted(set(np.unique(sp)) - set(SPLITS))
    if unknown:
        raise ProbeError(f"splits must be 'train', 'val' or 'test'; found {unknown}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ProbeError("labels must be non-negative class indices")
    k = int(n_classes) if n_classes is not None else int(y.max()) + 1
    if y.size and y.max() >= k:
        raise ProbeError(f"label {int(y.max())} is outside 0..{k - 1} (n_classes={k})")
    if k < 2:
        raise ProbeError("probing needs at least two classes")
    idx = {s: np.flatnonzero(sp == s) for s in SPLITS}
    for s in SPLITS:
        if idx[s].size == 0:
            raise ProbeError(f"the '{s}' split is empty; probes tune on 'val' and score 'test' once")
    if np.unique(y[idx["train"]]).size < 2:
        raise ProbeError("the 'train' split holds a single class; a probe cannot be fitted")
    order = np.concatenate([idx["train"], idx["val"], idx["test"]])
    sets = [y]
    if controls:
        sets.append(_controls.control_labels(y, sp, k, groups=groups, seed=seed))
        if n_permutations > 0:
            sets.extend(_controls.permuted_labels(y, sp, n_permutations, seed=seed))
    label_sets = np.stack(sets)[:, order]
    return ProbeData(
        order=order,
        n_train=int(idx["train"].size),
        n_val=int(idx["val"].size),
        n_test=int(idx["test"].size),
        n_classes=k,
        label_sets=np.ascontiguousarray(label_sets),
        has_control=controls,
        n_permutations=n_permutations if controls else 0,
    )


class _Bucket:
    """A (capacity, N, D) float32 buffer for one width; pages are touched only as layers fill it."""

    def __init__(self, width: int, capacity: int, n_rows: int):
        self.width = width
        self.buffer = np.empty((capacity, n_rows, width), dtype=np.float32)
        self.keys: list[str] = []

    def group(self) -> tuple[list[str], np.ndarray]:
        return self.keys, self.buffer[: len(self.keys)]


def _fill_layer(arr: Any, key: str, data: ProbeData, out: np.ndarray) -> None:
    """Check one layer's (N, D) array and write it row-reordered into ``out`` (N, D) float32."""
    if getattr(arr, "dtype", None) == np.float32:
        np.take(arr, data.order, axis=0, out=out)  # memmaps are read straight into the buffer
    else:
        out[...] = np.asarray(arr)[data.order]
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise ProbeError(f"features['{key}'] holds NaN or inf in {int((~finite).sum())} of {data.n} rows")


def _layer_shape(arr: Any, key: str, data: ProbeData) -> tuple[int, int]:
    shape = getattr(arr, "shape", None)
    if shape is None or len(shape) != 2:
        raise ProbeError(f"features['{key}'] must be an (N, D) array, got shape {shape}")
    if int(shape[0]) != data.n:
        raise ProbeError(f"features['{key}'] has {shape[0]} rows but labels have {data.n}")
    if int(shape[1]) < 1:
        raise ProbeError(f"features['{key}'] has no feature columns")
    return int(shape[0]), int(shape[1])


def iter_chunks(
    features: Mapping[str, Any],
    keys: Iterable[str],
    data: ProbeData,
    probe: Probe,
    max_chunk_bytes: int,
) -> Iterable[list[tuple[list[str], np.ndarray]]]:
    """Yield chunks: lists of ``(keys, X)`` groups, one per width, X (L, N, D) float32 in reordered
    row order. Each key is read exactly once, in the given order.

    A layer costs ``N * D * 4`` bytes plus the probe's :meth:`Probe.state_bytes_per_layer`; a chunk
    is yielded as soon as the next layer would take it past ``max_chunk_bytes`` (a chunk always
    holds at least one layer).
    """
    keys = list(keys)
    buckets: dict[int, _Bucket] = {}
    pending = 0
    for pos, key in enumerate(keys):
        try:
            arr = features[key]
        except KeyError:
            raise ProbeError(f"feature key '{key}' is missing from the features mapping") from None
        _, width = _layer_shape(arr, key, data)
        cost = data.n * width * 4 + probe.state_bytes_per_layer(width, data)
        if buckets and pending + cost > max_chunk_bytes:
            yield [b.group() for b in buckets.values()]
            buckets, pending = {}, 0
        bucket = buckets.get(width)
        if bucket is None:  # holds every later layer of this width that fits in the budget
            capacity = max(1, min((max_chunk_bytes - pending) // cost, len(keys) - pos))
            bucket = buckets[width] = _Bucket(width, capacity, data.n)
        _fill_layer(arr, key, data, bucket.buffer[len(bucket.keys)])
        del arr
        bucket.keys.append(key)
        pending += cost
    if buckets:
        yield [b.group() for b in buckets.values()]


# -- the driver --------------------------------------------------------------------------------


def run_probe(
    probe: Probe,
    features: Mapping[str, Any],
    labels: Any,
    splits: Any,
    *,
    seed: int = 0,
    controls: bool = True,
    n_classes: int | None = None,
    groups: Any = None,
    n_permutations: int | None = None,
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES,
    n_boot: int = 1000,
    device: str = "cpu",
) -> ProbeResults:
    """Prepare the data, train ``probe`` chunk by chunk, and compute every metric and control."""
    import torch

    t0 = time.perf_counter()
    n_perm = probe.default_permutations if n_permutations is None else int(n_permutations)
    data = prepare_data(
        labels, splits, n_classes=n_classes, controls=controls, n_permutations=n_perm, groups=groups, seed=seed
    )
    keys = list(features.keys())
    if not keys:
        raise ProbeError("no feature keys to probe")
    outputs: dict[str, LayerOutput] = {}
    widths: dict[str, int] = {}
    dev = torch.device(device)
    n_chunks = 0
    for chunk in iter_chunks(features, keys, data, probe, max_chunk_bytes):
        tensors = [(chunk_keys, torch.from_numpy(X).to(dev)) for chunk_keys, X in chunk]
        for out in probe.train_chunk(tensors, data, seed):
            outputs[out.key] = out
        for chunk_keys, X in chunk:
            widths.update({k: int(X.shape[2]) for k in chunk_keys})
        n_chunks += 1
        del tensors, chunk

    y_train = data.label_sets[0, : data.n_train]
    y_test = data.label_sets[0, data.test_slice]
    chance = _metrics.chance_accuracy(y_train, y_test)
    if data.has_control:
        c_train = data.label_sets[1, : data.n_train]
        c_test = data.label_sets[1, data.test_slice]
        control_chance = _metrics.chance_accuracy(c_train, c_test)
    layers: dict[str, LayerProbeResult] = {}
    weights: dict[str, dict[str, np.ndarray]] = {}
    for key in keys:
        out = outputs[key]
        proba = out.test_proba
        m = _metrics.classification_metrics(y_test, proba[0])
        correct = proba[0].argmax(axis=1) == y_test
        ci = _metrics.bootstrap_ci(correct, n_boot=n_boot, seed=seed)
        res = LayerProbeResult(
            key=key,
            probe=probe.name,
            metrics=m,
            ci95=ci,
            chance=chance,
            seed=seed,
            n_train=data.n_train,
            n_val=data.n_val,
            n_test=data.n_test,
            width=widths[key],
            hyper=out.hyper,
        )
        if data.has_control:
            c_acc = _metrics.accuracy(c_test, proba[1].argmax(axis=1))
            res.control_accuracy = c_acc
            res.control_chance = control_chance
            res.selectivity = _controls.selectivity(res.accuracy, c_acc)
            if out.control_hyper is not None:
                res.hyper = {**res.hyper, "control": out.control_hyper}
            if data.n_permutations:
                null = (proba[data.perm_slice].argmax(axis=2) == y_test[None, :]).mean(axis=1)
                res.permutation_p = _controls.permutation_p(res.accuracy, null)
                res.permutation_null = _controls.null_summary(null)
        layers[key] = res
        if out.weights:
            weights[key] = out.weights
    settings = {
        **probe.settings(),
        "controls": bool(controls),
        "n_permutations": data.n_permutations,
        "control_task": _controls.CONTROL_TASK_DEFINITION if controls else None,
        "control_groups": "given" if groups is not None else "one per sample (row index)",
        "permutation": _controls.PERMUTATION_DEFINITION if controls and data.n_permutations else None,
        "bootstrap": {"n_boot": n_boot, "level": 0.95, "method": "percentile"},
        "chance": "majority training class, scored on test",
        "max_chunk_bytes": int(max_chunk_bytes),
        "chunks": n_chunks,
        "device": str(dev),
        "torch": torch.__version__,
    }
    return ProbeResults(
        probe=probe.name,
        seed=seed,
        n_classes=data.n_classes,
        layers=layers,
        settings=settings,
        elapsed_s=time.perf_counter() - t0,
        weights=weights,
    )
