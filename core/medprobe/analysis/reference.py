"""Per-layer reference implementations of the two probes (a plain Python loop over layers).

They define what the batched probes must reproduce, and they are what the benchmark compares
against:

``reference_linear``  scikit-learn: ``StandardScaler`` fit on train, ``LogisticRegression``
                      (lbfgs, L2) for every C of the coarse grid then the fine grid, the same
                      selection rule (val accuracy, ties -> lowest val log-loss), refit of scaler and
                      model on train+val, test scored once.
``reference_mlp``     one ``torch.nn.Sequential`` per layer (Linear -> ReLU -> Dropout -> Linear),
                      ``torch.optim.AdamW`` (fused kernel, as the batched probe) with a linear-warmup
                      cosine ``LambdaLR``, mini-batches of 4, the epoch with the best val accuracy
                      (ties -> lowest val loss) kept, test scored once. Initial weights and the
                      sample order are the batched probe's (``mlp.init_heads``), so with
                      ``dropout=0`` both give the same numbers up to float rounding.

Both take the inputs of :func:`~.probes.probe_layers`. With ``controls=True`` they also run the
control task and ``n_permutations`` permutation fits, one model per label set, built by the same
:mod:`.controls` functions (so the work equals the batched probe's): the control task gets its own
selection; ``linear`` permutations are refitted at the real task's C, ``mlp`` permutations pick
their epoch on shuffled val labels. They return ``{key: {"accuracy": float, "proba": (n_test, K),
"hyper": {...}, "control_accuracy": float | None, "null": [accuracies] | None}}`` with test rows in
original order.

``reference_linear_design`` is the scikit-learn loop of the ``cv`` protocol (:mod:`.protocol`):
one ``LogisticRegression`` per (layer, plan, C value) and per (layer, plan, permutation), on the
same folds, inner splits and permuted label sets as the batched probe.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from . import controls as _controls
from .linear import DEFAULT_COARSE_GRID, DEFAULT_FINE_STEPS


def _split_indices(splits: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sp = np.asarray(splits).astype(str)
    return np.flatnonzero(sp == "train"), np.flatnonzero(sp == "val"), np.flatnonzero(sp == "test")


def _label_sets(y: np.ndarray, splits: Any, K: int, controls: bool, n_permutations: int, groups: Any, seed: int):
    """(control labels or None, (R, N) permutation label sets)."""
    if not controls:
        return None, np.zeros((0, y.size), dtype=np.int64)
    sp = np.asarray(splits).astype(str)
    control = _controls.control_labels(y, sp, K, groups=groups, seed=seed)
    perms = (
        _controls.permuted_labels(y, sp, n_permutations, seed=seed)
        if n_permutations
        else np.zeros((0, y.size), np.int64)
    )
    return control, perms


def _full_proba(model: Any, Z: np.ndarray, K: int) -> np.ndarray:
    """predict_proba mapped onto all K classes (classes unseen in training get probability 0)."""
    p = model.predict_proba(Z)
    out = np.zeros((Z.shape[0], K))
    out[:, model.classes_.astype(int)] = p
    return out


def _val_scores(model: Any, Z: np.ndarray, y: np.ndarray, K: int) -> tuple[float, float]:
    p = _full_proba(model, Z, K)
    acc = float(np.mean(p.argmax(1) == y))
    loss = float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-300, None))))
    return acc, loss


def reference_linear(
    features: Mapping[str, Any],
    labels: Any,
    splits: Any,
    *,
    n_classes: int | None = None,
    coarse_grid: Sequence[float] = DEFAULT_COARSE_GRID,
    fine_steps: Sequence[float] = DEFAULT_FINE_STEPS,
    max_iter: int = 1000,
    tol: float = 1e-4,
    controls: bool = False,
    n_permutations: int = 0,
    groups: Any = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """scikit-learn per-layer linear probe (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(labels, dtype=np.int64)
    K = int(n_classes) if n_classes is not None else int(y.max()) + 1
    tr, va, te = _split_indices(splits)
    fit = np.concatenate([tr, va])
    control, perms = _label_sets(y, splits, K, controls, n_permutations, groups, seed)
    out: dict[str, dict[str, Any]] = {}

    def select(Ztr: np.ndarray, Zva: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
        """(C, val accuracy, val log-loss) chosen coarse -> fine for labels ``target``."""

        def score(C: float) -> tuple[float, float, float]:
            m = LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(Ztr, target[tr])
            return (C, *_val_scores(m, Zva, target[va], K))

        def best_of(cands: list[tuple[float, float, float]]) -> tuple[float, float, float]:
            top = max(a for _, a, _ in cands)
            return min((c for c in cands if c[1] >= top - 1e-9), key=lambda c: c[2])

        c_best = best_of([score(C) for C in coarse_grid])
        return best_of([c_best] + [score(c_best[0] * 10.0**s) for s in fine_steps])

    def refit(Zfit: np.ndarray, Zte: np.ndarray, target: np.ndarray, C: float) -> tuple[np.ndarray, Any]:
        model = LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(Zfit, target[fit])
        return _full_proba(model, Zte, K), model

    for key in features:
        X = np.asarray(features[key], dtype=np.float32)
        sc = StandardScaler().fit(X[tr])
        Ztr, Zva = sc.transform(X[tr]), sc.transform(X[va])
        sc2 = StandardScaler().fit(X[fit])
        Zfit, Zte = sc2.transform(X[fit]), sc2.transform(X[te])
        C_sel, val_acc, val_loss = select(Ztr, Zva, y)
        proba, model = refit(Zfit, Zte, y, C_sel)
        entry: dict[str, Any] = {
            "accuracy": float(np.mean(proba.argmax(1) == y[te])),
            "proba": proba,
            "hyper": {
                "C": float(C_sel),
                "val_accuracy": val_acc,
                "val_log_loss": val_loss,
                "n_iter": int(model.n_iter_[0]),
            },
            "control_accuracy": None,
            "null": None,
        }
        if control is not None:
            c_proba, _ = refit(Zfit, Zte, control, select(Ztr, Zva, control)[0])
            entry["control_accuracy"] = float(np.mean(c_proba.argmax(1) == control[te]))
            entry["null"] = [float(np.mean(refit(Zfit, Zte, p, C_sel)[0].argmax(1) == y[te])) for p in perms]
        out[key] = entry
    return out


def reference_mlp(
    features: Mapping[str, Any],
    labels: Any,
    splits: Any,
    *,
    n_classes: int | None = None,
    seed: int = 0,
    hidden: int = 256,
    dropout: float = 0.1,
    lr: float = 1e-4,
    weight_decay: float = 0.01,
    epochs: int = 20,
    batch_size: int = 4,
    warmup_ratio: float = 0.05,
    standardize: bool = True,
    controls: bool = False,
    n_permutations: int = 0,
    groups: Any = None,
) -> dict[str, dict[str, Any]]:
    """Per-layer torch MLP probe, the paper's recipe (see the module docstring)."""
    import torch
    from torch import nn

    from .mlp import adamw, init_heads, lr_factor
    from .probes import layer_seed

    y = np.asarray(labels, dtype=np.int64)
    K = int(n_classes) if n_classes is not None else int(y.max()) + 1
    tr, va, te = _split_indices(splits)
    control, perms = _label_sets(y, splits, K, controls, n_permutations, groups, seed)
    steps_per_epoch = math.ceil(tr.size / batch_size)
    total = epochs * steps_per_epoch
    warmup = math.ceil(warmup_ratio * total)

    n_sets = 1 + (1 + n_permutations if controls else 0)

    def train(X: torch.Tensor, target: np.ndarray, init: tuple) -> tuple[np.ndarray, dict[str, Any]]:
        """One MLP on (N, D) standardised X for labels ``target``: test probabilities, hyper."""
        D = X.shape[1]
        torch.manual_seed(seed)  # dropout masks
        model = nn.Sequential(nn.Linear(D, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, K))
        with torch.no_grad():  # the batched probe's initial draws for this (layer, label set)
            w1, c1, w2, c2 = init
            model[0].weight.copy_(w1.T)
            model[0].bias.copy_(c1)
            model[3].weight.copy_(w2.T)
            model[3].bias.copy_(c2)
        opt = adamw(list(model.parameters()), lr=lr, weight_decay=weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, total))
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(seed)
        Xtr, ytr = X[tr], torch.from_numpy(target[tr])
        Xva, yva = X[va], torch.from_numpy(target[va])
        best: tuple[float, float, int, Any] = (-1.0, math.inf, 0, None)
        for epoch in range(epochs):
            model.train()
            perm = rng.permutation(tr.size)
            for s in range(steps_per_epoch):
                idx = torch.from_numpy(perm[s * batch_size : (s + 1) * batch_size])
                loss = loss_fn(model(Xtr[idx]), ytr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            model.eval()
            with torch.no_grad():
                z = model(Xva)
                acc = float((z.argmax(1) == yva).float().mean())
                vloss = float(loss_fn(z, yva))
            if acc > best[0] + 1e-9 or (acc >= best[0] - 1e-9 and vloss < best[1]):
                best = (acc, vloss, epoch + 1, {k: v.clone() for k, v in model.state_dict().items()})
        model.load_state_dict(best[3])
        model.eval()
        with torch.no_grad():
            proba = torch.softmax(model(X[te]), dim=1).numpy()
        return proba, {"epoch": best[2], "val_accuracy": best[0], "val_loss": best[1]}

    out: dict[str, dict[str, Any]] = {}
    for key in features:
        X = torch.tensor(np.asarray(features[key], dtype=np.float32))
        if standardize:
            var, mean = torch.var_mean(X[tr], dim=0, correction=0)
            std = torch.where(var.sqrt() > 0, var.sqrt(), torch.ones_like(var))
            X = (X - mean) / std
        W1, b1, W2, b2 = init_heads(torch.Generator().manual_seed(layer_seed(seed, key)), n_sets, X.shape[1], hidden, K)
        heads = [(W1[s], b1[s], W2[s], b2[s]) for s in range(n_sets)]
        proba, hyper = train(X, y, heads[0])
        entry: dict[str, Any] = {
            "accuracy": float(np.mean(proba.argmax(1) == y[te])),
            "proba": proba,
            "hyper": hyper,
            "control_accuracy": None,
            "null": None,
        }
        if control is not None:
            c_proba, _ = train(X, control, heads[1])
            entry["control_accuracy"] = float(np.mean(c_proba.argmax(1) == control[te]))
            entry["null"] = [
                float(np.mean(train(X, p, heads[2 + r])[0].argmax(1) == y[te])) for r, p in enumerate(perms)
            ]
        out[key] = entry
    return out


def reference_linear_design(
    features: Mapping[str, Any],
    design: Any,
    *,
    coarse_grid: Sequence[float] = DEFAULT_COARSE_GRID,
    fine_steps: Sequence[float] = DEFAULT_FINE_STEPS,
    max_iter: int = 1000,
    tol: float = 1e-4,
    keys: Sequence[str] | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, dict[str, Any]]:
    """scikit-learn per-layer loop over the plans of a cv :class:`~.protocol.Design` (the protocol
    of :meth:`~.linear.LinearProbe.train_design`, one model per fit).

    Per layer: ``StandardScaler`` fit on the cv rows (``design.scored``); per plan, C chosen coarse
    -> fine on ``sel_train`` / ``sel_val`` (val accuracy, ties -> lowest val log-loss), refit on
    ``fit``, ``score`` predicted; each of the plan's permutations refitted at that C on its
    permuted labels and scored against ``design.perm_targets``. Returns ``{key: {"proba": (S,
    n_scored, K), "accuracy": seed-mean accuracy, "C": [per main plan], "null": (P,) accuracies}}``;
    ``keys`` limits the layers (default: all); ``timings``, if given, accumulates wall seconds
    under ``"select"`` (C selection + real refit) and ``"permutations"`` (permutation refits), and
process CPU seconds under ``"select_cpu"`` / ``"permutations_cpu"``.
    """
    import time

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    K = design.n_classes
    y = design.y
    S = len(design.settings.seeds)
    where = np.full(design.n_rows, -1, dtype=np.int64)
    where[design.scored] = np.arange(design.n_scored)
    y_sc = y[design.scored]
    out: dict[str, dict[str, Any]] = {}

    def fit(Z, rows, target, C):
        return LogisticRegression(C=C, max_iter=max_iter, tol=tol).fit(Z[rows], target[rows])

    def best_of(cands):
        top = max(a for _, a, _ in cands)
        return min((c for c in cands if c[1] >= top - 1e-9), key=lambda c: c[2])

    for key in keys if keys is not None else list(features):
        X = np.asarray(features[key], dtype=np.float32)[design.rows]
        Z = StandardScaler().fit(X[design.scored]).transform(X)
        proba = np.zeros((S, design.n_scored, K))
        null = np.zeros(design.n_permutations)
        Cs = []
        for plan in design.main_plans():
            t0, c0 = time.perf_counter(), time.process_time()

            def score(C: float) -> tuple[float, float, float]:
                m = fit(Z, plan.sel_train, y, C)
                return (C, *_val_scores(m, Z[plan.sel_val], y[plan.sel_val], K))

            c_best = best_of([score(C) for C in coarse_grid])
            C_sel = best_of([c_best] + [score(c_best[0] * 10.0**s) for s in fine_steps])[0]
            Cs.append(float(C_sel))
            proba[plan.seed_index, where[plan.score]] = _full_proba(fit(Z, plan.fit, y, C_sel), Z[plan.score], K)
            t1, c1 = time.perf_counter(), time.process_time()
            for r in plan.perms:
                p = _full_proba(fit(Z, plan.fit, design.perm_labels[r], C_sel), Z[plan.score], K)
                null[r] += np.sum(p.argmax(1) == design.perm_targets[r, plan.score])
            if timings is not None:
                timings["select"] = timings.get("select", 0.0) + t1 - t0
                timings["permutations"] = timings.get("permutations", 0.0) + time.perf_counter() - t1
                timings["select_cpu"] = timings.get("select_cpu", 0.0) + c1 - c0
                timings["permutations_cpu"] = timings.get("permutations_cpu", 0.0) + time.process_time() - c1
        out[key] = {
            "proba": proba,
            "accuracy": float((proba.argmax(2) == y_sc[None, :]).mean()),
            "C": Cs,
            "null": null / design.n_scored,
        }
    return out
