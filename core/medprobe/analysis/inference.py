"""Paired inference on per-sample probe outcomes: the statistics behind every verdict.

Every probed (layer, readout) of a model is scored on the *same* samples, so layers are compared
sample by sample, never through overlapping marginal intervals. Inputs are per-sample outcome
arrays ``correct`` of shape ``(S, N)`` (bool): ``S`` probe seeds, ``N`` scored samples, the same
``N`` samples in the same order for every key. A key's accuracy is the mean over seeds and samples.

Statistics (pure numpy; scipy for the binomial tail):

:class:`PairedBootstrap`
    ``B`` draws shared by every key (that is what makes it paired): draw ``b`` resamples the ``N``
    samples with replacement (multinomial counts ``w_b``, the same for all keys) and, per key,
    resamples that key's ``S`` seeds with replacement (counts ``m_b``), independently per key --
    different layers' probes are different fits. With ``x_bs = (w_b . correct_s) / N`` (seed s on
    the resampled samples) and ``xbar_b`` their mean, the resampled accuracy of a key is
    ``xbar_b + c_S * (sum_s m_bs x_bs / S - xbar_b)``: the seed-mean accuracy on the resampled
    samples with its seed part scaled by :func:`seed_scale` ``c_S = sqrt(S / (S - 1)) *
    t_{S-1, 0.95} / z_{0.95}``. The first factor undoes the ``(S - 1) / S`` shrinkage of
    resampling S seeds with replacement (the seed part's variance becomes ``s^2 / S``, unbiased);
    the second pays for estimating that variance from only S seeds, as a t test with S - 1
    degrees of freedom would (2.92 / 1.645 at S = 3, 1.11 at S = 10), so a verdict whose noise is
    mostly seed noise keeps its 5% level. Without it, simulated null rates reached 6% at S = 3
    (docs/benchmarks.md). So every interval and p-value includes sample *and* seed variance. With
    ``S = 1`` the seed part is absent, and :attr:`PairedBootstrap.seed_variance` says so.
:func:`paired_difference`
    One pre-specified comparison ``d = acc(a) - acc(b)``, one-sided alternative ``d > 0``:
    ``p = (1 + #{d*_b <= 0}) / (1 + B)`` (the percentile-bootstrap test, inverted percentile
    interval), 95% percentile interval of ``d*``.
:func:`peak_then_fall`
    "Some earlier layer is above the end layer": a single-step studentised max-statistic
    (Westfall & Young 1993) over the candidate layers ``l``: ``d_l = acc(l) - acc(end)``,
    ``t = max_l d_l / se_l`` with ``se_l`` the bootstrap SD of ``d*_l``; the null distribution is
    the centred ``max_l (d*_l - d_l) / se_l``, so picking the peak among the layers is paid for, and
    the correlation between layers is used rather than ignored (Bonferroni would be far too
    conservative at correlation 0.95). The reported effect is ``acc(peak) - acc(end)`` at the
    observed peak; its interval re-selects the peak in every draw (``max_l acc*_l - acc*_end``).
:func:`best_exceeds_all`
    "A reference beats every one of these layers": the reference is the best of its own layers,
    re-selected in every draw; the alternative holds only if the reference is above each layer,
    an intersection-union test (Berger 1982): ``p = max_l p_l``, no multiplicity penalty needed.
:func:`above_level`
    One key above a fixed level (e.g. chance): ``p = (1 + #{acc* <= level}) / (1 + B)``.
:func:`mcnemar_exact`
    Exact two-sided McNemar test of two paired outcome vectors of one seed: binomial test of the
    discordant pairs at 1/2 (``p = min(1, 2 P[X <= min(n01, n10)])``, equal to
    ``scipy.stats.binomtest(n01, n01 + n10, 0.5).pvalue``).
:func:`holm`
    Holm's step-down adjustment of a family of p-values (Holm 1979).

All p-values are one-sided unless a name says otherwise. :class:`Comparison` is what each test
returns: effect, 95% interval, p-value, the statistic in words and the multiplicity rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ..registry import MedprobeError

DEFAULT_N_BOOT = 2000
LEVEL = 0.95


class InferenceError(MedprobeError, ValueError):
    """Outcome arrays that cannot be compared (shapes, empty, unknown key); names the key."""


@dataclass
class Comparison:
    """The result of one paired test. ``effect``/``ci95`` in accuracy points (fractions);
    ``p_value`` one-sided for the stated alternative; ``detail`` holds test-specific numbers."""

    effect: float
    ci95: tuple[float, float]
    p_value: float
    statistic: str
    multiplicity: str
    n: int
    n_seeds: dict[str, int] = field(default_factory=dict)
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "effect": round(self.effect, 6),
            "ci95": [round(self.ci95[0], 6), round(self.ci95[1], 6)],
            "p_value": float(self.p_value),
            "statistic": self.statistic,
            "multiplicity": self.multiplicity,
            "n": self.n,
            "n_seeds": dict(self.n_seeds),
            **self.detail,
        }


def as_outcomes(correct: Any, key: str = "?") -> np.ndarray:
    """``correct`` (N,) or (S, N), bool-like -> (S, N) bool. Raises :class:`InferenceError`."""
    arr = np.asarray(correct)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InferenceError(f"outcomes of '{key}' must be (S, N) with S, N >= 1, got shape {arr.shape}")
    if arr.dtype != bool:
        if not np.isin(arr, (0, 1)).all():
            raise InferenceError(f"outcomes of '{key}' must be 0/1 or bool (per-sample correctness)")
        arr = arr.astype(bool)
    return arr


class PairedBootstrap:
    """Shared bootstrap draws over samples (and, per key, over seeds) for a set of keys.

    ``outcomes``: key -> correct (S_key, N) bool (or (N,)); every key must have the same N.
    Resampled accuracies are computed on first use of a key and cached: :meth:`draws` gives
    ``(B,)`` float64. The sample counts ``w`` (B, N) are drawn once from ``default_rng(seed)``;
    each key's seed counts from a generator seeded by ``(seed, key)``, so a key's draws do not
    depend on which other keys were asked for.
    """

    def __init__(self, outcomes: Mapping[str, Any], *, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> None:
        if n_boot < 99:
            raise InferenceError(f"n_boot = {n_boot}: use at least 99 bootstrap draws")
        self.outcomes = {k: as_outcomes(v, k) for k, v in outcomes.items()}
        ns = {v.shape[1] for v in self.outcomes.values()}
        if len(ns) > 1:
            sizes = {k: v.shape[1] for k, v in self.outcomes.items()}
            raise InferenceError(f"paired outcomes need the same samples for every key; sample counts: {sizes}")
        self.n = ns.pop() if ns else 0
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self._cache: dict[str, np.ndarray] = {}
        self._w: np.ndarray | None = None

    @property
    def weights(self) -> np.ndarray:
        """(B, N) float32 multinomial sample counts of the draws (row sums = N)."""
        if self._w is None:
            if self.n == 0:
                raise InferenceError("no outcomes to resample")
            rng = np.random.default_rng(self.seed)
            idx = rng.integers(0, self.n, size=(self.n_boot, self.n))
            flat = (idx + (np.arange(self.n_boot) * self.n)[:, None]).ravel()
            self._w = np.bincount(flat, minlength=self.n_boot * self.n).reshape(self.n_boot, self.n).astype(np.float32)
        return self._w

    def __contains__(self, key: str) -> bool:
        return key in self.outcomes

    def get(self, key: str) -> np.ndarray:
        try:
            return self.outcomes[key]
        except KeyError:
            raise InferenceError(f"no per-sample outcomes for '{key}'; keys: {', '.join(self.outcomes)}") from None

    def n_seeds(self, key: str) -> int:
        return int(self.get(key).shape[0])

    @property
    def seed_variance(self) -> bool:
        """True when every key has at least two seeds (seed variance is in the draws)."""
        return all(v.shape[0] >= 2 for v in self.outcomes.values())

    def point(self, key: str) -> float:
        """Seed-mean accuracy of ``key`` on all samples."""
        return float(self.get(key).mean())

    def seed_accuracies(self, key: str) -> list[float]:
        return [float(x) for x in self.get(key).mean(axis=1)]

    def draws(self, key: str) -> np.ndarray:
        """(B,) resampled seed-mean accuracies of ``key`` (see the class docstring). The first call
        computes every key not yet cached in one matrix product (B, N) @ (N, sum S)."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        self.get(key)
        todo = [k for k in self.outcomes if k not in self._cache]
        stacked = np.concatenate([self.outcomes[k] for k in todo], axis=0).T.astype(np.float32)  # (N, sum S)
        per_seed_all = (self.weights @ stacked).astype(np.float64) / self.n  # (B, sum S)
        col = 0
        for k in todo:
            s = self.outcomes[k].shape[0]
            per_seed = per_seed_all[:, col : col + s]
            col += s
            if s > 1:
                digest = hashlib.sha256(k.encode()).digest()
                rng = np.random.default_rng([self.seed, int.from_bytes(digest[:8], "little")])
                m = rng.multinomial(s, np.full(s, 1.0 / s), size=self.n_boot).astype(np.float64)  # (B, S)
                full = per_seed.mean(axis=1)
                resampled = (m * per_seed).sum(axis=1) / s
                self._cache[k] = full + seed_scale(s) * (resampled - full)
            else:
                self._cache[k] = per_seed[:, 0].copy()
        return self._cache[key]

    def p_greater(self, diff: np.ndarray) -> float:
        """One-sided bootstrap p of ``diff > 0`` from draws ``diff`` (B,): (1 + #{<= 0}) / (1 + B)."""
        return float((1 + np.count_nonzero(diff <= 0)) / (1 + diff.size))


def seed_scale(s: int) -> float:
    """Scale of the resampled seed deviations for ``s`` seeds (see :class:`PairedBootstrap`):
    ``sqrt(s / (s - 1)) * t_{s-1}(0.95) / z(0.95)``; 0 for one seed (no seed part)."""
    if s < 2:
        return 0.0
    from scipy.stats import norm, t

    return float(np.sqrt(s / (s - 1)) * t.ppf(0.95, s - 1) / norm.ppf(0.95))


def _ci(x: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def accuracy_ci(boot: PairedBootstrap, key: str, level: float = LEVEL) -> tuple[float, float]:
    """Percentile interval of one key's accuracy (samples and seeds resampled)."""
    return _ci(boot.draws(key), level)


def paired_difference(boot: PairedBootstrap, a: str, b: str, *, multiplicity: str = "none (one comparison)") -> Comparison:
    """``acc(a) - acc(b)``, alternative ``> 0`` (a drop from ``a`` to ``b``); see the module docstring."""
    d = boot.draws(a) - boot.draws(b)
    return Comparison(
        effect=boot.point(a) - boot.point(b),
        ci95=_ci(d),
        p_value=boot.p_greater(d),
        statistic=f"paired bootstrap (B = {boot.n_boot}, samples and seeds resampled), one-sided: acc({a}) > acc({b})",
        multiplicity=multiplicity,
        n=boot.n,
        n_seeds={a: boot.n_seeds(a), b: boot.n_seeds(b)},
        detail={"mcnemar_p_per_seed": _mcnemar_per_seed(boot.get(a), boot.get(b))},
    )


def _mcnemar_per_seed(a: np.ndarray, b: np.ndarray) -> list[float]:
    """Exact two-sided McNemar p of seed s of ``a`` against seed s of ``b`` (min(S_a, S_b) seeds)."""
    return [mcnemar_exact(a[s], b[s]).p_value for s in range(min(a.shape[0], b.shape[0]))]


def peak_then_fall(boot: PairedBootstrap, layers: Sequence[str], end: str) -> Comparison:
    """Studentised max-statistic test that some layer of ``layers`` is above ``end``.

    ``layers``: the candidate peak keys (``end`` itself is skipped if listed). Effect: accuracy of
    the observed peak minus the end; interval: the peak re-selected in every draw.
    """
    cand = [k for k in layers if k != end]
    if not cand:
        raise InferenceError("peak_then_fall needs at least one layer besides the end layer")
    e = boot.draws(end)
    dstar = np.stack([boot.draws(k) - e for k in cand], axis=1)  # (B, L)
    d = np.array([boot.point(k) - boot.point(end) for k in cand])
    se = dstar.std(axis=0, ddof=1)
    ok = se > 0
    t_obs = np.where(ok, d / np.where(ok, se, 1.0), 0.0)
    t_null = np.where(ok, (dstar - d) / np.where(ok, se, 1.0), 0.0)
    t_max = float(t_obs.max())
    null_max = t_null.max(axis=1)
    p = float((1 + np.count_nonzero(null_max >= t_max)) / (1 + boot.n_boot))
    peak_i = int(np.argmax([boot.point(k) for k in cand]))
    reselected = np.stack([boot.draws(k) for k in cand], axis=1).max(axis=1) - e
    return Comparison(
        effect=float(d[peak_i]),
        ci95=_ci(reselected),
        p_value=p,
        statistic=(
            f"studentised max-statistic over {len(cand)} layers vs the end layer, paired bootstrap "
            f"(B = {boot.n_boot}, samples and seeds resampled); interval re-selects the peak in every draw"
        ),
        multiplicity=f"single-step max-t over {len(cand)} candidate peak layers (Westfall-Young)",
        n=boot.n,
        n_seeds={k: boot.n_seeds(k) for k in [*cand, end]},
        detail={"peak": cand[peak_i], "t_max": round(t_max, 4), "argmax_t": cand[int(np.argmax(t_obs))]},
    )


def best_exceeds_all(boot: PairedBootstrap, reference: Sequence[str], layers: Sequence[str]) -> Comparison:
    """Intersection-union test that the best of ``reference`` is above every key of ``layers``.

    Effect: best reference accuracy minus best layer accuracy (both observed); interval: both
    maxima re-selected in every draw; p = max over layers of the one-sided paired p of
    ``max_ref* - acc*_l > 0``.
    """
    if not reference or not layers:
        raise InferenceError("best_exceeds_all needs reference keys and layer keys")
    ref = np.stack([boot.draws(k) for k in reference], axis=1).max(axis=1)
    lay = np.stack([boot.draws(k) for k in layers], axis=1)
    ps = [boot.p_greater(ref - lay[:, j]) for j in range(lay.shape[1])]
    best_ref = max(reference, key=boot.point)
    best_lay = max(layers, key=boot.point)
    return Comparison(
        effect=boot.point(best_ref) - boot.point(best_lay),
        ci95=_ci(ref - lay.max(axis=1)),
        p_value=float(max(ps)),
        statistic=(
            f"intersection-union test: best of {len(reference)} reference layers (re-selected per draw) above each of "
            f"{len(layers)} layers, paired bootstrap (B = {boot.n_boot}); p = max of the per-layer p-values"
        ),
        multiplicity="intersection-union (p = max over layers; no adjustment needed)",
        n=boot.n,
        n_seeds={k: boot.n_seeds(k) for k in [*reference, *layers]},
        detail={"reference_best": best_ref, "layer_best": best_lay, "hardest_layer": layers[int(np.argmax(ps))]},
    )


def above_level(boot: PairedBootstrap, key: str, level: float) -> Comparison:
    """``acc(key) > level`` (a fixed number, e.g. chance): one-sided bootstrap p."""
    x = boot.draws(key)
    return Comparison(
        effect=boot.point(key) - level,
        ci95=_ci(x - level),
        p_value=boot.p_greater(x - level),
        statistic=f"bootstrap (B = {boot.n_boot}), one-sided: acc({key}) > {level:.4g}",
        multiplicity="none (one comparison)",
        n=boot.n,
        n_seeds={key: boot.n_seeds(key)},
    )


@dataclass
class McNemar:
    """Exact McNemar test: ``n01`` = a wrong & b right, ``n10`` = a right & b wrong."""

    n01: int
    n10: int
    p_value: float


def mcnemar_exact(a: Any, b: Any) -> McNemar:
    """Exact two-sided McNemar test of paired correctness vectors ``a``, ``b`` (N,) bool."""
    from scipy.stats import binom

    x, y = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if x.shape != y.shape or x.ndim != 1:
        raise InferenceError(f"mcnemar_exact needs two (N,) vectors of equal length, got {x.shape} and {y.shape}")
    n10 = int(np.count_nonzero(x & ~y))
    n01 = int(np.count_nonzero(~x & y))
    n = n01 + n10
    p = 1.0 if n == 0 else float(min(1.0, 2.0 * binom.cdf(min(n01, n10), n, 0.5)))
    return McNemar(n01, n10, p)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (monotone, capped at 1)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return [float(v) for v in out]
