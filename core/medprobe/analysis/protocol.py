"""The probing protocol: which rows train, select and score every probe, over which seeds.

One value, :class:`ProbeSettings`, declares every option of a probing run (protocol, k, seeds,
permutations, recipe, controls, bootstrap, memory, device). It travels unchanged from the
``probe`` command / :func:`medprobe.tasks.pipeline.probe_run` / :func:`~.probes.probe_layers` to
:meth:`~.probes.Probe.fit_layers` and :func:`~.probes.run_probe`.

:func:`make_design` turns labels, splits, groups and the settings into a :class:`Design`: the rows
read from the feature store, the scored rows, and one :class:`Plan` per (seed, fold) saying which
rows train, which select the hyper-parameter (the *inner* split) and which are scored.

Protocols
    ``cv`` (default): k folds (default 5) over every row (or every non-test row with
    ``holdout=True``), stratified by class and grouped by ``groups`` (patient id / duplicate
    cluster; default one group per row): all members of a group land in one fold. For outer fold f
    the inner split is: fold ``(f + 1) mod k`` selects the hyper-parameter, the other k - 2 folds
    train it; the probe is then refitted on all k - 1 training folds (``linear``) or kept at the
    selected epoch (``mlp``) and scores fold f. The scored fold never takes part in any choice.
    Every seed draws its own fold assignment, so every scored row gets exactly one out-of-fold
    prediction per layer per seed.
    ``split``: the dataset's train / val / test split: val selects, test is scored (one plan per
    seed, the same rows for every seed).
    ``holdout=True`` (cv only): cv over the train + val rows; in addition, per seed, a probe
    selected on val and refitted on train + val scores the official ``test`` rows once; that score
    is reported separately under ``holdout`` and never mixed into the cv accuracy.

Permutation nulls
    ``n_permutations`` label sets (default 100). ``cv``: labels permuted over the cv rows; each
    permuted set goes through the folds of one seed (permutation r uses seed ``r mod S``), trained,
    selected nowhere (the hyper-parameter of the real labels in that fold is reused: it is *not*
    re-selected per permutation for ``linear`` and the ``paper`` MLP recipe) and scored against
    the permuted labels. A null accuracy therefore carries single-seed variance while the observed
    accuracy is a mean over seeds (conservative). ``split``: as before -- shuffled within train and
    within val, scored on the real test labels.

Bad input is refused before any training (:class:`FoldError`, naming the class / group / fold and
the workable range of k).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import controls as _controls
from .results import ProbeError

PROTOCOLS = ("cv", "split")
SPLITS = ("train", "val", "test")
DEFAULT_K = 5
DEFAULT_SEEDS = (0, 1, 2)
DEFAULT_PERMUTATIONS = 100
MIN_K = 3  # outer fold + inner selection fold + at least one inner training fold
DEFAULT_MAX_CHUNK_BYTES = 1 << 30


class FoldError(ProbeError):
    """The data cannot be split into the requested folds (names the class / group / fold and k)."""


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        if int(value) < 1:
            raise ProbeError(f"seeds must be a positive count or a list of seeds, got {value}")
        return tuple(range(int(value)))
    out = tuple(int(s) for s in value)
    if not out:
        raise ProbeError("seeds needs at least one seed")
    if len(set(out)) != len(out):
        raise ProbeError(f"seeds must be distinct, got {list(out)}")
    return out


@dataclass(frozen=True)
class ProbeSettings:
    """Every option of a probing run, declared once.

    ``protocol``: ``"cv"`` or ``"split"``; ``k``: folds (cv); ``seeds``: a count (``3`` -> 0, 1,
    2) or a list; ``n_permutations``: size of the permutation null (0: none); ``controls``: run
    the permutation null and the control task; ``recipe``: the probe's named recipe (``mlp``:
    ``"paper"`` or ``"tuned"``; ``linear``: ``"grid"``; ``None`` -> the probe's default);
    ``holdout``: cv on train + val and the official test rows scored separately; ``n_boot``:
    bootstrap draws of the CIs; ``max_chunk_bytes``: memory budget of one chunk of layers;
    ``device``: torch device.
    """

    protocol: str = "cv"
    k: int = DEFAULT_K
    seeds: Any = DEFAULT_SEEDS
    n_permutations: int = DEFAULT_PERMUTATIONS
    controls: bool = True
    recipe: str | None = None
    holdout: bool = False
    n_boot: int = 1000
    max_chunk_bytes: int = DEFAULT_MAX_CHUNK_BYTES
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ProbeError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        object.__setattr__(self, "seeds", _seeds(self.seeds))
        object.__setattr__(self, "k", int(self.k))
        object.__setattr__(self, "n_permutations", int(self.n_permutations))
        if self.protocol == "cv" and self.k < MIN_K:
            raise ProbeError(f"--protocol cv needs k >= {MIN_K} (outer fold, inner selection fold, training folds); got {self.k}")
        if self.n_permutations < 0:
            raise ProbeError(f"n_permutations must be >= 0, got {self.n_permutations}")
        if self.holdout and self.protocol != "cv":
            raise ProbeError("holdout=True applies to --protocol cv (split already scores test only)")

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def split_options(cls, options: Mapping[str, Any], base: "ProbeSettings | None" = None) -> tuple["ProbeSettings", dict[str, Any]]:
        """Separate settings fields from probe hyper-parameters in ``options``.

        ``seed=S`` is a *base* seed: ``seeds = (S, S + 1, ...)``, as many as the default count (or
        as ``base`` has). Returns ``(settings, hyper)``: ``base`` (default: the defaults) updated
        with the settings fields.
        """
        opts = dict(options)
        if "seed" in opts:
            if opts.get("seeds") is not None:
                raise ProbeError("pass seeds=... or seed=..., not both")
            count = len(base.seeds) if base is not None else len(DEFAULT_SEEDS)
            s0 = opts.pop("seed")
            if s0 is not None:
                opts["seeds"] = tuple(int(s0) + i for i in range(count))
        names = set(cls.field_names())
        fields = {k: opts.pop(k) for k in list(opts) if k in names and opts[k] is not None}
        settings = dataclasses.replace(base, **fields) if base is not None else cls(**fields)
        return settings, opts

    def protocol_block(self, *, recipe: str, hyper_selection: str, n_scored: int, n_permutations: int) -> dict[str, Any]:
        """The ``protocol`` block of ``results.json`` (format ``medprobe.probe/2``)."""
        return {
            "name": self.protocol,
            "k": self.k if self.protocol == "cv" else None,
            "seeds": list(self.seeds),
            "n_permutations": int(n_permutations),
            "recipe": recipe,
            "hyper_selection": hyper_selection,
            "n_scored": int(n_scored),
            "holdout": bool(self.holdout),
        }

    def dir_name(self, probe: str) -> str:
        """Folder name of these settings' results under ``RUN/probes/``."""
        seeds = "-".join(str(s) for s in self.seeds)
        base = f"{probe}-{self.protocol}{self.k if self.protocol == 'cv' else ''}-seeds{seeds}"
        extra = []
        if self.recipe:
            extra.append(self.recipe)
        if self.holdout:
            extra.append("holdout")
        return "-".join([base, *extra])

    def matches(self, protocol: Mapping[str, Any]) -> bool:
        """Whether saved results with this ``protocol`` block answer these settings (same
        protocol, k, seeds, holdout; the recipe when one is named). Controls and the number of
        permutations may differ, as results saved without controls answer a report too."""
        return (
            protocol.get("name") == self.protocol
            and (protocol.get("k") == (self.k if self.protocol == "cv" else None))
            and list(protocol.get("seeds") or []) == list(self.seeds)
            and bool(protocol.get("holdout")) == self.holdout
            and (self.recipe is None or protocol.get("recipe") == self.recipe)
        )


@dataclass
class Plan:
    """One training of every layer: rows are positions in :attr:`Design.rows` order.

    ``sel_train`` / ``sel_val``: rows that train and select the hyper-parameter; ``fit``: rows of
    the final (refitted) probe; ``score``: the scored rows. ``perms``: indices of the permuted label
    sets trained in this plan. ``role``: ``"cv"`` / ``"split"`` (scored into the main result) or
    ``"holdout"``. ``seed_index``: position of ``seed`` in the settings' seeds.
    """

    seed: int
    seed_index: int
    fold: int | None
    role: str
    sel_train: np.ndarray
    sel_val: np.ndarray
    fit: np.ndarray
    score: np.ndarray
    perms: list[int] = field(default_factory=list)

    @property
    def order(self) -> np.ndarray:
        """Rows as ``[sel_train | sel_val | score]`` (the layout of :class:`~.probes.ProbeData`)."""
        return np.concatenate([self.sel_train, self.sel_val, self.score])


@dataclass
class Design:
    """Rows, labels and plans of one probing run.

    ``rows`` (n_rows,) original row indices read into every chunk, in that order; ``y`` (n_rows,)
    int64; ``scored`` (n_scored,) positions into ``rows`` of the rows the main result scores (the
    ``sample_index`` of the outcomes is ``rows[scored]``); ``plans`` (every role); ``perm_labels``
    (P, n_rows) int64 and ``perm_targets`` (P, n_rows) the labels permutation r is scored against;
    ``control_labels`` (n_rows,) or ``None`` when the control task is not informative
    (``control_note`` says why).
    """

    settings: ProbeSettings
    rows: np.ndarray
    y: np.ndarray
    n_classes: int
    scored: np.ndarray
    plans: list[Plan]
    perm_labels: np.ndarray
    perm_targets: np.ndarray
    control_labels: np.ndarray | None
    control_note: str | None
    folds: dict[int, np.ndarray] = field(default_factory=dict)
    holdout_scored: np.ndarray | None = None
    groups_given: bool = False

    @property
    def n_rows(self) -> int:
        return int(self.rows.size)

    @property
    def n_scored(self) -> int:
        return int(self.scored.size)

    @property
    def n_permutations(self) -> int:
        return int(self.perm_labels.shape[0])

    def main_plans(self) -> list[Plan]:
        return [p for p in self.plans if p.role != "holdout"]


# -- folds ---------------------------------------------------------------------------------------


def _group_codes(groups: Any, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ProbeError(f"groups must have shape ({n},), got {g.shape}")
    return np.unique(g.astype(str), return_inverse=True)[1]


def check_folds(y: np.ndarray, codes: np.ndarray, k: int, class_names: Sequence[str] | None = None, group_names: Any = None) -> None:
    """Refuse (before any training) data that k stratified grouped folds cannot serve.

    ``y`` (n,) int64 labels, ``codes`` (n,) group codes. Errors name the class or group and the
    workable range of k: a class with fewer than k groups (each fold must hold every class), a
    group larger than a fold (``n / k`` rows).
    """
    n = y.size
    name = (lambda c: repr(class_names[c])) if class_names is not None else (lambda c: f"{c}")
    present = np.unique(y)
    if present.size < 2:
        raise FoldError("probing needs at least two classes among the rows to cross-validate")
    groups_per_class = {int(c): np.unique(codes[y == c]).size for c in present}
    worst = min(groups_per_class, key=lambda c: groups_per_class[c])
    if groups_per_class[worst] < k:
        m = groups_per_class[worst]
        hint = f"use --k {m} or less (k >= {MIN_K})" if m >= MIN_K else f"no k >= {MIN_K} is workable: add samples of that class or use --protocol split"
        raise FoldError(
            f"class {name(worst)} has {int((y == worst).sum())} samples in {m} group(s): {k} stratified folds need at "
            f"least {k} per class; {hint}"
        )
    sizes = np.bincount(codes)
    big = int(sizes.argmax())
    if sizes[big] > n / k:
        kmax = int(n // sizes[big])
        label = group_names[np.flatnonzero(codes == big)[0]] if group_names is not None else big
        hint = f"use --k {kmax} or less (k >= {MIN_K})" if kmax >= MIN_K else "no k >= 3 is workable: use --protocol split"
        raise FoldError(
            f"group {str(label)!r} holds {int(sizes[big])} of {n} samples, more than one of {k} folds ({n / k:.1f}); {hint}"
        )


def stratified_group_folds(y: np.ndarray, groups: Any, k: int, seed: int) -> np.ndarray:
    """Fold id (n,) int64 in ``0..k-1``: every group in one fold, class counts balanced.

    ``y`` (n,) int64, ``groups`` (n,) hashable or ``None`` (one group per row). Groups are taken in
    a seeded random order, larger groups first, and each goes to the fold where the squared
    relative deviation of the class counts from their targets (``n_c / k``) grows least (ties: the
    fold with fewest rows, then the lowest index). Deterministic in ``(y, groups, k, seed)``.
    """
    y = np.asarray(y, dtype=np.int64)
    n = y.size
    codes = _group_codes(groups, n)
    G = int(codes.max()) + 1 if n else 0
    K = int(y.max()) + 1
    counts = np.zeros((G, K), dtype=np.int64)
    np.add.at(counts, (codes, y), 1)
    sizes = counts.sum(1)
    rng = np.random.default_rng([seed, 7919])
    shuffled = rng.permutation(G)
    order = shuffled[np.argsort(-sizes[shuffled], kind="stable")]
    target = np.maximum(counts.sum(0) / k, 1e-9)  # (K,)
    fold_counts = np.zeros((k, K), dtype=np.float64)
    fold_size = np.zeros(k)
    group_fold = np.empty(G, dtype=np.int64)
    for g in order:
        cand = fold_counts + counts[g][None, :]
        cost = (((cand - target) / target) ** 2).sum(1) - (((fold_counts - target) / target) ** 2).sum(1)
        best = np.lexsort((np.arange(k), fold_size, np.round(cost, 9)))[0]
        group_fold[g] = best
        fold_counts[best] += counts[g]
        fold_size[best] += sizes[g]
    return group_fold[codes]


def _check_assigned(y: np.ndarray, fold: np.ndarray, k: int, seed: int, class_names) -> None:
    name = (lambda c: repr(class_names[c])) if class_names is not None else (lambda c: f"{c}")
    for f in range(k):
        inner_train = ~np.isin(fold, [f, (f + 1) % k])
        for part, mask in (("scored fold", fold == f), ("training folds", inner_train)):
            present = np.unique(y[mask])
            if present.size < 2:
                raise FoldError(
                    f"seed {seed}: the {part} of fold {f} hold a single class ({name(int(present[0])) if present.size else 'no rows'}); "
                    f"use a smaller --k (k >= {MIN_K}) or --protocol split"
                )


# -- the design ----------------------------------------------------------------------------------


def validate_labels(labels: Any, splits: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """Labels (N,) int64, splits (N,) str and K, checked."""
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
    return y, sp, k


def _split_plan_rows(sp: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    idx = {s: np.flatnonzero(sp == s) for s in SPLITS}
    for s in SPLITS:
        if idx[s].size == 0:
            raise ProbeError(f"the '{s}' split is empty; the split protocol tunes on 'val' and scores 'test' once")
    if np.unique(y[idx["train"]]).size < 2:
        raise ProbeError("the 'train' split holds a single class; a probe cannot be fitted")
    return idx


def _recurs(codes: np.ndarray, a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.intersect1d(codes[a], codes[b]).size)


def make_design(
    labels: Any,
    splits: Any,
    settings: ProbeSettings,
    *,
    n_classes: int | None = None,
    groups: Any = None,
    class_names: Sequence[str] | None = None,
) -> Design:
    """Validate the inputs and lay out every plan (see the module docstring). Raises
    :class:`~.results.ProbeError` / :class:`FoldError` before any training."""
    y_all, sp, K = validate_labels(labels, splits, n_classes)
    n = y_all.size
    codes_all = _group_codes(groups, n)
    group_names = np.asarray(groups) if groups is not None else None
    seeds = settings.seeds
    S = len(seeds)
    P = settings.n_permutations if settings.controls else 0
    plans: list[Plan] = []
    folds: dict[int, np.ndarray] = {}
    holdout_scored = None
    if settings.protocol == "split":
        rows = np.arange(n)
        idx = _split_plan_rows(sp, y_all)
        fit = np.concatenate([idx["train"], idx["val"]])
        for si, s in enumerate(seeds):
            plans.append(Plan(s, si, None, "split", idx["train"], idx["val"], fit, idx["test"]))
        scored = idx["test"]
        y = y_all
        perm_labels = _controls.permuted_labels(y, sp, P, seed=seeds[0]) if P else np.zeros((0, n), np.int64)
        perm_targets = np.repeat(y[None, :], P, axis=0)  # scored on the real test labels
        recur = _recurs(codes_all, fit, idx["test"])
        control_split = sp
        where = "across the train/val and test splits"
    else:
        if settings.holdout:
            idx = _split_plan_rows(sp, y_all)
            rows = np.concatenate([np.sort(np.concatenate([idx["train"], idx["val"]])), idx["test"]])
            n_cv = idx["train"].size + idx["val"].size
        else:
            rows = np.arange(n)
            n_cv = n
        y = y_all[rows]
        codes = codes_all[rows]
        cv_pos = np.arange(n_cv)
        check_folds(y[:n_cv], codes[:n_cv], settings.k, class_names,
                    group_names[rows][:n_cv] if group_names is not None else None)
        k = settings.k
        for si, s in enumerate(seeds):
            fold = stratified_group_folds(y[:n_cv], codes[:n_cv], k, s)
            _check_assigned(y[:n_cv], fold, k, s, class_names)
            folds[s] = fold
            for f in range(k):
                v = (f + 1) % k
                plans.append(
                    Plan(s, si, f, "cv", cv_pos[(fold != f) & (fold != v)], cv_pos[fold == v], cv_pos[fold != f], cv_pos[fold == f])
                )
        scored = cv_pos
        if settings.holdout:
            sp_rows = sp[rows]
            tr, va, te = (np.flatnonzero(sp_rows == s) for s in SPLITS)
            holdout_scored = te
            for si, s in enumerate(seeds):
                plans.append(Plan(s, si, None, "holdout", tr, va, np.concatenate([tr, va]), te))
        rng = np.random.default_rng([seeds[0], 104729])
        perm_labels = np.repeat(y[None, :], P, axis=0)
        for r in range(P):
            perm_labels[r, :n_cv] = y[:n_cv][rng.permutation(n_cv)]
        perm_targets = perm_labels  # cv: trained and scored on the permuted labels
        recur = False  # folds are grouped by the same groups: no group is ever on both sides
        control_split = None
        where = "across folds (the folds are grouped by these groups)"
    for r in range(P):  # permutation r goes through the main plans of seed r mod S
        for p in plans:
            if p.role != "holdout" and p.seed_index == r % S:
                p.perms.append(r)
    control = None
    note = None
    if settings.controls:
        if recur and control_split is not None:
            control = _controls.control_labels(y, control_split, K, groups=groups, seed=seeds[0])
        else:
            what = "given groups" if groups is not None else "one group per sample"
            note = f"control task not informative: no group ({what}) recurs {where}, so control labels cannot be learned"
    return Design(
        settings=settings,
        rows=rows,
        y=y,
        n_classes=K,
        scored=scored,
        plans=plans,
        perm_labels=perm_labels,
        perm_targets=perm_targets,
        control_labels=control,
        control_note=note,
        folds=folds,
        holdout_scored=holdout_scored,
        groups_given=groups is not None,
    )
