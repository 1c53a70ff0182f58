"""The paper's Feature Health Score (FHS) and the per-model profile FHS_V -> FHS_C -> FHS_L -> P_final.

For a module M (vision, connector, llm) with probe accuracies P_1 .. P_n along its layers in
pipeline order::

    FHS_M = P_end * (1 + GF) * VP
    GF    = ln(P_end / sqrt(P_start * P_min))
    VP    = exp(-lambda * sum_i |P_{i+1} - P_i| / P_end),   lambda = 0.2 by default

Rules medprobe adds where the paper is silent (versioned as :data:`SCORE_VERSION`):

* one-layer module: GF = 0, VP = 1, so FHS = P (the connector usually has one probe point);
* which layers: readout ``image-mean`` only (ViT: patch-token mean; CNN: global average pool;
  connector / LLM: mean over image-token positions); ViT ``cls`` and LLM ``last-token`` readouts
  are reported but not scored; vision blocks the MLLM never passes on (``used = False``, after the
  layer that feeds the connector) are excluded, so P_end is what the module hands downstream;
  stages ``stem`` / ``cnn`` / ``vision`` form the vision module (baselines), ``head`` is not scored;
* P_end = 0: FHS is its limit, 0; P_min = 0 with P_end > 0: GF is infinite and FHS is undefined
  (``score = None`` with a note) -- accuracies of exactly 0 only occur on degenerate test sets;
* accuracies must lie in [0, 1].

Uncertainty (:func:`fhs_draws`, used by :func:`fhs_profile` when per-sample outcomes are given):
every draw of a :class:`medprobe.analysis.inference.PairedBootstrap` resamples the samples (the
same resample for every layer) and each layer's probe seeds, recomputes the module's accuracy
curve and recomputes FHS from it with the rules above. FHS of a many-layer module is biased by
sampling noise (noise adds total variation and lowers P_min), so the plain percentile interval
misses the true value (measured: 32 flat layers at 0.8, N = 780, 11% coverage); ``ci95`` is
therefore the basic bootstrap interval ``[2 FHS - q97.5, 2 FHS - q2.5]`` of the defined draws,
which removes the bias to first order (97% coverage in the same case, 97% for a 28-layer
declining LLM curve; docs/benchmarks.md). ``bootstrap_bias`` = mean draw - FHS shows the size of
the bias; ``ci_undefined_fraction`` says how many draws hit the undefined case.
P_final's interval resamples the same samples. Without outcomes ``ci95`` is ``null``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

SCORE_VERSION = "fhs-1"
DEFAULT_LAMBDA = 0.2
FHS_READOUT = "image-mean"
FHS_MODULES = ("vision", "connector", "llm")
_MODULE_OF_STAGE = {
    "stem": "vision",
    "cnn": "vision",
    "vision": "vision",
    "connector": "connector",
    "llm": "llm",
    "head": "head",
}
RULES = (
    "FHS_M = P_end * (1 + GF) * VP; GF = ln(P_end / sqrt(P_start * P_min)); "
    "VP = exp(-lambda * sum|P_{i+1} - P_i| / P_end)",
    "one-layer module: GF = 0, VP = 1 (FHS = P)",
    "readout image-mean only; layers with used = false (after the connector-feeding layer) excluded",
    "P_end = 0 -> FHS = 0 (limit); P_min = 0 < P_end -> FHS undefined (null)",
)


@dataclass
class ModuleFHS:
    """The FHS of one module and the numbers it is made of (``None`` where undefined)."""

    module: str
    score: float | None
    n_layers: int
    layers: list[str] = field(default_factory=list)
    p_start: float | None = None
    p_end: float | None = None
    p_min: float | None = None
    growth: float | None = None
    volatility_penalty: float | None = None
    total_variation: float | None = None
    note: str | None = None
    #: paired-bootstrap 95% interval of ``score`` (samples and seeds resampled); ``None`` without outcomes
    ci95: list[float] | None = None
    ci_undefined_fraction: float | None = None
    #: mean of the bootstrap FHS draws minus ``score``: the estimator's bias from sampling noise
    bootstrap_bias: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModuleFHS":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__ if k in d})  # type: ignore[arg-type]


def module_fhs(
    curve: Sequence[float], *, lam: float = DEFAULT_LAMBDA, module: str = "", layers: Sequence[str] = ()
) -> ModuleFHS:
    """FHS of one module from its accuracy curve (pipeline order, values in [0, 1])."""
    p = [float(x) for x in curve]
    names = list(layers)
    if any(not (0.0 <= x <= 1.0) or math.isnan(x) for x in p):
        raise ValueError(f"FHS of module '{module}': accuracies must lie in [0, 1], got {p}")
    if not p:
        return ModuleFHS(module, None, 0, names, note="no probed layers")
    start, end, low = p[0], p[-1], min(p)
    tv = sum(abs(b - a) for a, b in zip(p, p[1:]))
    base = dict(module=module, n_layers=len(p), layers=names, p_start=start, p_end=end, p_min=low, total_variation=tv)
    if len(p) == 1:
        return ModuleFHS(score=end, growth=0.0, volatility_penalty=1.0, note="single layer: GF = 0, VP = 1", **base)
    if end == 0.0:
        return ModuleFHS(
            score=0.0, growth=None, volatility_penalty=0.0, note="P_end = 0: FHS taken as its limit 0", **base
        )
    if low == 0.0:
        return ModuleFHS(
            score=None, note="undefined: a layer has accuracy 0, so GF = ln(P_end / 0) is infinite", **base
        )
    gf = math.log(end / math.sqrt(start * low))
    vp = math.exp(-lam * tv / end)
    return ModuleFHS(score=end * (1.0 + gf) * vp, growth=gf, volatility_penalty=vp, **base)


@dataclass
class FHSProfile:
    """FHS_V -> FHS_C -> FHS_L -> P_final of one model under one probe."""

    vision: ModuleFHS
    connector: ModuleFHS
    llm: ModuleFHS
    p_final: float | None = None
    p_final_n: int | None = None
    lam: float = DEFAULT_LAMBDA
    readout: str = FHS_READOUT
    score_version: str = SCORE_VERSION
    #: paired-bootstrap 95% interval of ``p_final`` on the probe's samples (``None`` without per-sample answers)
    p_final_ci95: list[float] | None = None
    #: how the intervals were obtained (``None``: no per-sample outcomes, no intervals)
    ci_method: str | None = None

    def modules(self) -> dict[str, ModuleFHS]:
        return {"vision": self.vision, "connector": self.connector, "llm": self.llm}

    def text(self) -> str:
        """``FHS_V 0.712 -> FHS_C 0.705 -> FHS_L 0.650 -> P_final 0.520`` (modules without layers
        are left out; a missing P_final is said)."""
        parts = []
        for tag, m in (("FHS_V", self.vision), ("FHS_C", self.connector), ("FHS_L", self.llm)):
            if m.n_layers:
                parts.append(f"{tag} {m.score:.3f}" if m.score is not None else f"{tag} undefined")
        if self.connector.n_layers or self.llm.n_layers:
            parts.append(
                f"P_final {self.p_final:.3f}" if self.p_final is not None else "P_final n/a (no generated answers)"
            )
        return " -> ".join(parts) if parts else "no scorable layers"

    def to_dict(self) -> dict[str, Any]:
        return {
            "vision": self.vision.to_dict(),
            "connector": self.connector.to_dict(),
            "llm": self.llm.to_dict(),
            "p_final": self.p_final,
            "p_final_n": self.p_final_n,
            "profile": self.text(),
            "lambda": self.lam,
            "readout": self.readout,
            "score_version": self.score_version,
            "p_final_ci95": self.p_final_ci95,
            "ci_method": self.ci_method,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FHSProfile":
        return cls(
            vision=ModuleFHS.from_dict(d["vision"]),
            connector=ModuleFHS.from_dict(d["connector"]),
            llm=ModuleFHS.from_dict(d["llm"]),
            p_final=d.get("p_final"),
            p_final_n=d.get("p_final_n"),
            lam=float(d.get("lambda", DEFAULT_LAMBDA)),
            readout=d.get("readout", FHS_READOUT),
            score_version=d.get("score_version", SCORE_VERSION),
            p_final_ci95=d.get("p_final_ci95"),
            ci_method=d.get("ci_method"),
        )


def _get(item: Any, name: str, default: Any = None) -> Any:
    return item.get(name, default) if isinstance(item, Mapping) else getattr(item, name, default)


def module_curves(points: Iterable[Any]) -> dict[str, list[tuple[str, float]]]:
    """Group scorable points into per-module curves ``module -> [(layer id, accuracy), ...]``.

    A point is a mapping or object with ``id``, ``stage`` (or ``module``), ``depth``, ``used``,
    ``readout`` and ``accuracy``; points are ordered by depth.
    """
    curves: dict[str, list[tuple[float, str, float]]] = {m: [] for m in FHS_MODULES}
    for pt in points:
        if _get(pt, "readout", FHS_READOUT) != FHS_READOUT or not _get(pt, "used", True):
            continue
        acc = _get(pt, "accuracy")
        if acc is None:
            continue
        module = _get(pt, "module") or _MODULE_OF_STAGE.get(_get(pt, "stage", ""), "")
        if module in curves:
            curves[module].append((float(_get(pt, "depth", 0.0)), str(_get(pt, "id")), float(acc)))
    return {m: [(i, a) for _, i, a in sorted(v, key=lambda t: t[0])] for m, v in curves.items()}


def fhs_draws(curves: Any, *, lam: float = DEFAULT_LAMBDA) -> Any:
    """FHS of many curves at once: ``curves`` (B, n) accuracies -> (B,) float64 scores, the same
    rules as :func:`module_fhs` (one layer: P; P_end = 0: 0; P_min = 0 < P_end: NaN = undefined)."""
    import numpy as np

    p = np.asarray(curves, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] == 0:
        raise ValueError(f"fhs_draws needs (B, n >= 1) accuracy curves, got shape {p.shape}")
    end = p[:, -1]
    if p.shape[1] == 1:
        return end.copy()
    start, low = p[:, 0], p.min(axis=1)
    tv = np.abs(np.diff(p, axis=1)).sum(axis=1)
    out = np.full(p.shape[0], np.nan)
    zero_end = end == 0.0
    out[zero_end] = 0.0
    ok = ~zero_end & (low > 0.0)
    gf = np.log(end[ok] / np.sqrt(start[ok] * low[ok]))
    out[ok] = end[ok] * (1.0 + gf) * np.exp(-lam * tv[ok] / end[ok])
    return out


def fhs_profile(
    points: Iterable[Any],
    *,
    p_final: float | None = None,
    p_final_n: int | None = None,
    lam: float = DEFAULT_LAMBDA,
    bootstrap: Any = None,
    p_final_key: str | None = None,
) -> FHSProfile:
    """The FHS profile of one model from its per-layer points (see :func:`module_curves`).

    ``bootstrap``: a :class:`medprobe.analysis.inference.PairedBootstrap` over the model's
    per-sample outcomes (keys ``"<layer id>/image-mean"``); when given, every module whose layers
    all have outcomes gets ``ci95``, and ``p_final_key`` (a key of the bootstrap holding the
    answers' correctness) gives ``p_final_ci95``.
    """
    curves = module_curves(points)
    mods = {
        m: module_fhs([a for _, a in curves[m]], lam=lam, module=m, layers=[i for i, _ in curves[m]])
        for m in FHS_MODULES
    }
    prof = FHSProfile(
        vision=mods["vision"],
        connector=mods["connector"],
        llm=mods["llm"],
        p_final=p_final,
        p_final_n=p_final_n,
        lam=lam,
    )
    if bootstrap is not None:
        import numpy as np

        from .inference import accuracy_ci

        for m, mod in prof.modules().items():
            keys = [f"{i}/{FHS_READOUT}" for i, _ in curves[m]]
            if not keys or not all(k in bootstrap for k in keys):
                continue
            draws = fhs_draws(np.stack([bootstrap.draws(k) for k in keys], axis=1), lam=lam)
            defined = draws[~np.isnan(draws)]
            mod.ci_undefined_fraction = round(float(1.0 - defined.size / draws.size), 4)
            if defined.size and mod.score is not None:
                lo, hi = np.quantile(defined, [0.025, 0.975])
                mod.ci95 = [round(2 * mod.score - float(hi), 4), round(2 * mod.score - float(lo), 4)]
                mod.bootstrap_bias = round(float(defined.mean()) - mod.score, 4)
        if p_final_key is not None and p_final_key in bootstrap:
            lo, hi = accuracy_ci(bootstrap, p_final_key)
            prof.p_final_ci95 = [round(lo, 4), round(hi, 4)]
        prof.ci_method = (
            f"paired bootstrap (B = {bootstrap.n_boot}): samples resampled once per draw for every layer, each "
            "layer's probe seeds resampled; curve and FHS recomputed per draw; basic (reverse-percentile) interval "
            "2 FHS - q97.5 .. 2 FHS - q2.5, which corrects the noise bias of FHS to first order"
        )
    return prof


def fhs_metric(model: Mapping[str, Any], *, probe: str | None = None, lam: float = DEFAULT_LAMBDA) -> dict[str, Any]:
    """The registered ``fhs`` metric: a model entry of ``report.json`` (its ``layers`` rows, each
    with ``probe``, ``readout``, ``accuracy``...) -> the FHS profile dict of ``probe`` (default:
    the first probe found)."""
    rows = list(model.get("layers", []))
    probes = list(dict.fromkeys(r.get("probe") for r in rows))
    chosen = probe if probe is not None else (probes[0] if probes else None)
    rows = [r for r in rows if r.get("probe") == chosen]
    return fhs_profile(rows, p_final=model.get("p_final"), p_final_n=model.get("p_final_n"), lam=lam).to_dict()
