"""Layer-wise probing: every layer of a run probed in one batched pass, under one protocol.

Entry point::

    from medprobe.analysis.probes import probe_layers
    res = probe_layers(features, labels, splits, probe="linear")            # cv, k 5, seeds 0 1 2, 100 perms
    res = probe_layers(features, labels, splits, protocol="split", seeds=(0,))  # the held-out split
    res["llm.03/image-mean"].accuracy           # mean over seeds of the out-of-fold accuracy
    correct, proba = res.outcomes("llm.03/image-mean")   # (S, N_scored), (S, N_scored, K)
    res.save(run_dir / "probes" / "linear-cv5-seeds0-1-2")

``features`` maps a feature key (``"<layer id>/<readout>"``) to an (N, D) float32 array -- an
``np.ndarray``, an ``np.memmap`` or a lazy Mapping whose values are read on access. Each value is
read exactly once. ``labels`` (N,) int64 in ``0..K-1``; ``splits`` (N,) of ``"train"``, ``"val"``,
``"test"``; ``groups`` (N,) patient / duplicate-cluster ids (folds are grouped by them). Every
option of the protocol is one :class:`~.protocol.ProbeSettings` value (see :mod:`.protocol` for
the protocols, the inner split and the permutation null).

How the batching works
    The rows the protocol uses are read once per layer, in one order (:attr:`Design.rows`), into
    one buffer per width D, of shape (L_D, n_rows, D), until the buffers together reach
    ``max_chunk_bytes`` (default 1 GiB, counting the probe's own per-layer training state); that
    *chunk* is trained at once and freed before the next layers are read. Within a chunk the
    probe trains every plan (seed x fold), label set (real, control, permutations) and
    hyper-parameter candidate: ``linear`` as heads of one batched solve (:mod:`.linear`), ``mlp``
    and plugin probes plan after plan (:meth:`Probe.train_design`), layers and label sets batched.

Probes are classes with a ``name``, keyword hyper-parameters, :meth:`Probe.settings` and
:meth:`Probe.train_chunk` (one plan, rows ``[train | val | test]``); the built-ins are ``linear``
(:class:`~.linear.LinearProbe`) and ``mlp`` (:class:`~.mlp.MLPProbe`). Other names are looked up
in the plugin registry (``register_probes``). torch is imported only when a chunk is trained.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np

from . import controls as _controls
from . import metrics as _metrics
from .protocol import DEFAULT_MAX_CHUNK_BYTES, Design, Plan, ProbeSettings, make_design
from .results import LayerProbeResult, ProbeError, ProbeResults

SPLITS = ("train", "val", "test")
BUILTIN_PROBES = {
    "linear": "medprobe.analysis.linear:LinearProbe",
    "mlp": "medprobe.analysis.mlp:MLPProbe",
}


@dataclass
class ProbeData:
    """The rows of one plan in ``[train | val | test]`` order, with every label set.

    ``order`` (N,): position of each reordered row in the chunk's rows. ``label_sets`` (S, N)
    int64 in the reordered row order: row 0 the real labels, then the control task (if
    ``has_control``), then the permutations. ``n_classes`` K. Under ``cv``, "train" / "val" are
    the inner split of a training fold and "test" the scored fold.
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
    """What a probe returns per layer of a chunk, for one plan.

    ``test_proba`` (S, n_test, K) float32: class probabilities on the scored rows for every label
    set (rows in the plan's order). ``hyper`` / ``control_hyper``: what was selected on the inner
    split for the real and control sets. ``weights``: the real-task probe's parameters (see
    ``results.py``). ``warnings``: short messages (e.g. chosen epoch is the last one).
    """

    key: str
    test_proba: np.ndarray
    hyper: dict[str, Any]
    control_hyper: dict[str, Any] | None = None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def plan_data(design: Design, plan: Plan) -> ProbeData:
    """The :class:`ProbeData` of one plan: rows ``[sel_train | sel_val | score]`` and its label sets."""
    order = plan.order
    sets = [design.y[order]]
    has_control = design.control_labels is not None and plan.role != "holdout"
    if has_control:
        sets.append(design.control_labels[order])
    sets.extend(design.perm_labels[r][order] for r in plan.perms)
    return ProbeData(
        order=order,
        n_train=int(plan.sel_train.size),
        n_val=int(plan.sel_val.size),
        n_test=int(plan.score.size),
        n_classes=design.n_classes,
        label_sets=np.ascontiguousarray(np.stack(sets)),
        has_control=has_control,
        n_permutations=len(plan.perms),
    )


class Probe:
    """Base class of probes. Subclasses set ``name``, ``recipes`` (the first is the default) and
    implement :meth:`settings`, :meth:`state_bytes_per_layer` and :meth:`train_chunk`."""

    name: str = ""
    recipes: tuple[str, ...] = ("default",)
    recipe: str = "default"
    #: how the hyper-parameter of the permutation heads is chosen (recorded in the results)
    permutation_selection: str = "the real labels' hyper-parameter of the same fit (not re-selected)"

    def settings(self) -> dict[str, Any]:
        """JSON-safe hyper-parameters, recorded in the results."""
        raise NotImplementedError

    def hyper_selection(self) -> str:
        """One line: what is selected on the inner split, and how."""
        return "probe-defined"

    def state_bytes_per_layer(self, width: int, data: ProbeData) -> int:
        """Bytes of training state per layer besides the (N, D) features (for chunk sizing)."""
        return 0

    def state_bytes_for_design(self, width: int, design: Design) -> int:
        """Bytes of training state per layer for a whole design: one plan at a time plus its
        reordered copy of the layer (the default :meth:`train_design`)."""
        biggest = max(design.plans, key=lambda p: p.order.size + len(p.perms))
        data = plan_data(design, biggest)
        return self.state_bytes_per_layer(width, data) + data.n * width * 4

    def train_chunk(self, groups: Sequence[tuple[list[str], Any]], data: ProbeData, seed: int) -> list[LayerOutput]:
        """Train one plan on a chunk: ``groups`` is a list of ``(keys, X)``, one per width, with
        ``X`` a torch float32 tensor (L, N, D) in the plan's ``[train | val | test]`` row order (do
        not modify it). Returns one :class:`LayerOutput` per key."""
        raise NotImplementedError

    def train_design(self, groups: Sequence[tuple[list[str], Any]], design: Design) -> Iterator[tuple[int, LayerOutput]]:
        """Train every plan of ``design`` on a chunk; ``groups``: ``(keys, X)`` with X (L,
        n_rows, D) in :attr:`Design.rows` order. Yields ``(plan index, LayerOutput)``.

        Default: plan after plan, each a :meth:`train_chunk` call on the plan's reordered rows
        (plans with the same rows share one reordered copy)."""
        import torch

        cached: tuple[bytes, list] | None = None
        for pi, plan in enumerate(design.plans):
            data = plan_data(design, plan)
            sig = data.order.tobytes()
            if cached is None or cached[0] != sig:
                cached = None  # free the previous copy first
                idx = torch.from_numpy(data.order)
                cached = (sig, [(keys, X.index_select(1, idx.to(X.device))) for keys, X in groups])
            for out in self.train_chunk(cached[1], data, plan.seed):
                yield pi, out

    def fit_layers(
        self,
        features: Mapping[str, Any],
        labels: Any,
        splits: Any,
        settings: ProbeSettings | None = None,
        *,
        n_classes: int | None = None,
        groups: Any = None,
        class_names: Sequence[str] | None = None,
    ) -> ProbeResults:
        """Probe every key of ``features``; see :func:`probe_layers`."""
        return run_probe(self, features, labels, splits, settings or ProbeSettings(), n_classes=n_classes,
                         groups=groups, class_names=class_names)


def layer_seed(seed: int, key: str) -> int:
    """A 63-bit seed derived from the run seed and a feature key (independent of chunking)."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big") >> 1


def get_probe(name: str, recipe: str | None = None, **hyper: Any) -> Probe:
    """Instantiate a probe by name (the built-ins, else the plugin registry) with a named recipe
    (``None``: the probe's default) and keyword hyper-parameters."""
    from ..registry import resolve_factory

    spec = BUILTIN_PROBES.get(name)
    if spec is None:
        from ..plugins import get_plugins

        spec = get_plugins().probes.get(name)  # raises NotFoundError listing close names
    cls = resolve_factory(spec)
    recipes = getattr(cls, "recipes", ("default",))
    if recipe is not None and recipe not in recipes:
        raise ProbeError(f"probe '{name}' has no recipe {recipe!r}; recipes: {', '.join(recipes)}")
    try:
        probe = cls(recipe=recipe, **hyper) if recipe is not None and recipes != ("default",) else cls(**hyper)
    except TypeError as exc:
        raise ProbeError(f"probe '{name}' does not accept these hyper-parameters: {exc}") from None
    return probe


def probe_layers(
    features: Mapping[str, Any],
    labels: Any,
    splits: Any,
    *,
    probe: str = "linear",
    settings: ProbeSettings | None = None,
    n_classes: int | None = None,
    groups: Any = None,
    class_names: Sequence[str] | None = None,
    **options: Any,
) -> ProbeResults:
    """Probe every layer of a run with one probe, all layers batched.

    ``features``: key -> (N, D) float32; ``labels`` (N,) int; ``splits`` (N,) str; ``groups`` (N,):
    patient / duplicate-cluster ids (cv folds and the control task are grouped by them; default
    one group per row). ``settings``: a :class:`~.protocol.ProbeSettings`; ``options`` may
    override any of its fields by name (``protocol="cv"``, ``k=5``, ``seeds=(0, 1, 2)``,
    ``n_permutations=100``, ``recipe=...``, ``controls``, ``holdout``, ``n_boot``,
    ``max_chunk_bytes``, ``device``; ``seed=S`` means ``seeds=(S,)``); every other option is a
    hyper-parameter of the probe (e.g. ``hidden=256`` for ``mlp``, ``coarse_grid=...`` for
    ``linear``).
    """
    settings, hyper = ProbeSettings.split_options(options, settings)
    return get_probe(probe, settings.recipe, **hyper).fit_layers(
        features, labels, splits, settings, n_classes=n_classes, groups=groups, class_names=class_names
    )


# -- chunks ------------------------------------------------------------------------------------
class _Bucket:
    """A (capacity, N, D) float32 buffer for one width; pages are touched only as layers fill it."""

    def __init__(self, width: int, capacity: int, n_rows: int):
        self.width = width
        self.buffer = np.empty((capacity, n_rows, width), dtype=np.float32)
        self.keys: list[str] = []

    def group(self) -> tuple[list[str], np.ndarray]:
        return self.keys, self.buffer[: len(self.keys)]


def _fill_layer(arr: Any, key: str, rows: np.ndarray, out: np.ndarray) -> None:
    """Check one layer's (N, D) array and write its ``rows`` into ``out`` (n_rows, D) float32."""
    if getattr(arr, "dtype", None) == np.float32:
        np.take(arr, rows, axis=0, out=out)  # memmaps are read straight into the buffer
    else:
        out[...] = np.asarray(arr)[rows]
    finite = np.isfinite(out).all(axis=1)
    if not finite.all():
        raise ProbeError(f"features['{key}'] holds NaN or inf in {int((~finite).sum())} of {rows.size} rows")


def _layer_shape(arr: Any, key: str, n_labels: int) -> tuple[int, int]:
    shape = getattr(arr, "shape", None)
    if shape is None or len(shape) != 2:
        raise ProbeError(f"features['{key}'] must be an (N, D) array, got shape {shape}")
    if int(shape[0]) != n_labels:
        raise ProbeError(f"features['{key}'] has {shape[0]} rows but labels have {n_labels}")
    if int(shape[1]) < 1:
        raise ProbeError(f"features['{key}'] has no feature columns")
    return int(shape[0]), int(shape[1])


def iter_chunks(
    features: Mapping[str, Any],
    keys: Iterable[str],
    design: Design,
    probe: Probe,
    max_chunk_bytes: int,
    n_labels: int,
) -> Iterable[list[tuple[list[str], np.ndarray]]]:
    """Yield chunks: lists of ``(keys, X)`` groups, one per width, X (L, n_rows, D) float32 in
    :attr:`Design.rows` order. Each key is read exactly once, in the given order.

    A layer costs ``n_rows * D * 4`` bytes plus the probe's :meth:`Probe.state_bytes_for_design`; a chunk
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
        _, width = _layer_shape(arr, key, n_labels)
        n_rows = design.n_rows
        cost = n_rows * width * 4 + probe.state_bytes_for_design(width, design)
        if buckets and pending + cost > max_chunk_bytes:
            yield [b.group() for b in buckets.values()]
            buckets, pending = {}, 0
        bucket = buckets.get(width)
        if bucket is None:  # holds every later layer of this width that fits in the budget
            capacity = max(1, min((max_chunk_bytes - pending) // cost, len(keys) - pos))
            bucket = buckets[width] = _Bucket(width, capacity, n_rows)
        _fill_layer(arr, key, design.rows, bucket.buffer[len(bucket.keys)])
        del arr
        bucket.keys.append(key)
        pending += cost
    if buckets:
        yield [b.group() for b in buckets.values()]


# -- the driver --------------------------------------------------------------------------------


def _mean_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float | None]:
    """Metrics (:data:`~.metrics.METRIC_NAMES`) averaged over seeds; proba (S, n, K)."""
    per_seed = [_metrics.classification_metrics(y, p) for p in proba]
    out: dict[str, float | None] = {}
    for name in _metrics.METRIC_NAMES:
        vals = [m[name] for m in per_seed]
        out[name] = None if any(v is None for v in vals) else float(np.mean(vals))
    return out


def _summarise_hyper(fits: list[dict[str, Any]]) -> dict[str, Any]:
    """One layer's hyper-parameters over its fits: the single fit's values, or medians of the
    numeric values (``all`` for booleans) with every fit listed under ``per_fit``."""
    if len(fits) == 1:
        return {k: v for k, v in fits[0].items() if k not in ("seed", "fold")}
    out: dict[str, Any] = {}
    for name in fits[0]:
        if name in ("seed", "fold"):
            continue
        vals = [f.get(name) for f in fits]
        if all(isinstance(v, bool) for v in vals):
            out[name] = all(vals)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            med = float(np.median(vals))
            out[name] = int(round(med)) if all(isinstance(v, int) for v in vals) else med
    out["summary"] = "medians over the fits (booleans: all); per_fit lists every fit"
    out["per_fit"] = fits
    return out


def run_probe(
    probe: Probe,
    features: Mapping[str, Any],
    labels: Any,
    splits: Any,
    settings: ProbeSettings,
    *,
    n_classes: int | None = None,
    groups: Any = None,
    class_names: Sequence[str] | None = None,
) -> ProbeResults:
    """Lay out the design, train ``probe`` chunk by chunk, and compute every metric and control."""
    import torch

    t0 = time.perf_counter()
    design = make_design(labels, splits, settings, n_classes=n_classes, groups=groups, class_names=class_names)
    keys = list(features.keys())
    if not keys:
        raise ProbeError("no feature keys to probe")
    seeds = settings.seeds
    S, K, P = len(seeds), design.n_classes, design.n_permutations
    n_sc = design.n_scored
    where = np.full(design.n_rows, -1, dtype=np.int64)
    where[design.scored] = np.arange(n_sc)
    has_control = design.control_labels is not None
    n_hold = int(design.holdout_scored.size) if design.holdout_scored is not None else 0
    acc: dict[str, dict[str, Any]] = {}

    def slot(key: str) -> dict[str, Any]:
        if key not in acc:
            acc[key] = {
                "proba": np.full((S, n_sc, K), np.nan, dtype=np.float32),
                "control": np.full((S, n_sc, K), np.nan, dtype=np.float32) if has_control else None,
                "hold": np.full((S, n_hold, K), np.nan, dtype=np.float32) if n_hold else None,
                "null": np.zeros(P, dtype=np.int64),
                "fits": [],
                "hold_fits": [],
                "warnings": Counter(),
                "n_fits": 0,
                "weights": None,
            }
        return acc[key]

    widths: dict[str, int] = {}
    dev = torch.device(settings.device)
    n_chunks = 0
    n_labels = int(np.asarray(labels).shape[0])
    for chunk in iter_chunks(features, keys, design, probe, settings.max_chunk_bytes, n_labels):
        tensors = [(chunk_keys, torch.from_numpy(X).to(dev)) for chunk_keys, X in chunk]
        for pi, out in probe.train_design(tensors, design):
            plan = design.plans[pi]
            a = slot(out.key)
            tp = out.test_proba
            fit = {"seed": plan.seed, "fold": plan.fold, **out.hyper}
            if out.control_hyper is not None:
                fit["control"] = out.control_hyper
            if plan.role == "holdout":
                a["hold"][plan.seed_index] = tp[0]
                a["hold_fits"].append(fit)
                continue
            a["proba"][plan.seed_index, where[plan.score]] = tp[0]
            off = 1
            if has_control:
                a["control"][plan.seed_index, where[plan.score]] = tp[1]
                off = 2
            for j, r in enumerate(plan.perms):
                a["null"][r] += int((tp[off + j].argmax(-1) == design.perm_targets[r, plan.score]).sum())
            a["fits"].append(fit)
            a["n_fits"] += 1
            a["warnings"].update(set(out.warnings))
            if out.weights and a["weights"] is None and settings.protocol == "split":
                a["weights"] = out.weights
        for chunk_keys, X in chunk:
            widths.update({k: int(X.shape[2]) for k in chunk_keys})
        n_chunks += 1
        del tensors, chunk

    y_sc = design.y[design.scored]
    if settings.protocol == "split":
        y_train = design.y[design.plans[0].sel_train]
        chance = _metrics.chance_accuracy(y_train, y_sc)
        chance_rule = "majority training class, scored on test"
    else:
        chance = _metrics.chance_accuracy(y_sc, y_sc)
        chance_rule = "majority class of the scored rows (its frequency)"
    control_chance = None
    if has_control:
        c_sc = design.control_labels[design.scored]
        control_chance = _metrics.chance_accuracy(design.control_labels[design.plans[0].sel_train], c_sc)
    layers: dict[str, LayerProbeResult] = {}
    weights: dict[str, dict[str, np.ndarray]] = {}
    outcomes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in keys:
        a = acc[key]
        proba = a["proba"]
        if np.isnan(proba).any():
            raise ProbeError(f"internal: some scored rows of '{key}' got no prediction (protocol {settings.protocol})")
        correct = proba.argmax(axis=2) == y_sc[None, :]
        seed_acc = correct.mean(axis=1)
        metrics = _mean_metrics(y_sc, proba)
        metrics["accuracy"] = float(seed_acc.mean())
        spread = _metrics.seed_spread(seed_acc)
        res = LayerProbeResult(
            key=key,
            probe=probe.name,
            metrics=metrics,
            ci95=_metrics.seed_bootstrap_ci(correct, n_boot=settings.n_boot, seed=seeds[0]),
            chance=chance,
            seed=seeds[0],
            n_train=int(design.plans[0].sel_train.size),
            n_val=int(design.plans[0].sel_val.size),
            n_test=int(design.plans[0].score.size),
            width=widths[key],
            hyper=_summarise_hyper(a["fits"]),
            n=n_sc,
            seed_accuracies=[float(x) for x in seed_acc],
            seed_sd=spread["sd"],
            warnings=[f"{msg} ({n} of {a['n_fits']} fits)" for msg, n in sorted(a["warnings"].items())],
        )
        if settings.controls:
            if has_control:
                c_acc = float((a["control"].argmax(axis=2) == c_sc[None, :]).mean())
                res.control_accuracy = c_acc
                res.control_chance = control_chance
                res.selectivity = _controls.selectivity(res.accuracy, c_acc)
            else:
                res.control_note = design.control_note
            if P:
                null = a["null"] / n_sc
                res.permutation_p = _controls.permutation_p(res.accuracy, null)
                res.permutation_null = _controls.null_summary(null)
        if a["hold"] is not None:
            y_h = design.y[design.holdout_scored]
            hc = a["hold"].argmax(axis=2) == y_h[None, :]
            h_acc = hc.mean(axis=1)
            res.holdout = {
                "accuracy": float(h_acc.mean()),
                "seed_accuracies": [float(x) for x in h_acc],
                "seed_sd": _metrics.seed_spread(h_acc)["sd"],
                "ci95": list(_metrics.seed_bootstrap_ci(hc, n_boot=settings.n_boot, seed=seeds[0])),
                "n": int(y_h.size),
                "hyper": _summarise_hyper(a["hold_fits"]),
                "definition": "official test rows scored once per seed by a probe selected on val and refitted on "
                "train+val; reported separately, never part of the cv accuracy",
            }
        layers[key] = res
        outcomes[key] = (correct, proba)
        if a["weights"]:
            weights[key] = a["weights"]
    recipe = getattr(probe, "recipe", "default")
    protocol = settings.protocol_block(recipe=recipe, hyper_selection=probe.hyper_selection(), n_scored=n_sc,
                                       n_permutations=P)
    protocol["permutation_selection"] = probe.permutation_selection if P else None
    cv_rule = (
        f"{settings.k} folds stratified by class and grouped by "
        f"{'the given groups' if design.groups_given else 'sample (one group per row)'}; inner split: fold f+1 "
        "selects, the other k-2 train; every scored row gets one out-of-fold prediction per seed"
    )
    run_settings = {
        **probe.settings(),
        "controls": bool(settings.controls),
        "n_permutations": P,
        "control_task": _controls.CONTROL_TASK_DEFINITION if has_control else None,
        "control_note": design.control_note,
        "control_groups": "given" if groups is not None else "one per sample (row index)",
        "permutation": (_controls.PERMUTATION_DEFINITION if settings.protocol == "split" else _controls.CV_PERMUTATION_DEFINITION)
        if P else None,
        "folds": cv_rule if settings.protocol == "cv" else None,
        "bootstrap": {"n_boot": settings.n_boot, "level": 0.95,
                      "method": "hierarchical percentile: each draw one probe seed and a resample of the scored rows"},
        "chance": chance_rule,
        "max_chunk_bytes": int(settings.max_chunk_bytes),
        "chunks": n_chunks,
        "device": str(dev),
        "torch": torch.__version__,
    }
    results = ProbeResults(
        probe=probe.name,
        seed=seeds[0],
        n_classes=design.n_classes,
        layers=layers,
        settings=run_settings,
        elapsed_s=time.perf_counter() - t0,
        weights=weights,
        protocol=protocol,
    )
    results.set_outcomes(design.rows[design.scored], outcomes)
    return results
