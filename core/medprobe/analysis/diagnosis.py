"""The failure modes of an MLLM, decided by paired tests on per-sample outcomes (``diagnosis-2``).

Every verdict is ``present``, ``absent`` or ``not_assessed`` (with the reason) and carries its
effect size (accuracy points, as a fraction), the paired 95% interval of that effect, its
p-value, the statistic, the multiplicity rule, the number of paired samples ``n`` and the rule in
words. A mode is ``present`` only when **the effect is at least its minimum size** (defaults in
:class:`Thresholds`) **and the paired test is significant at ``alpha`` = 0.05** after the stated
multiplicity rule. The statistics are in :mod:`.inference`; every draw resamples samples *and*
probe seeds, so seed variance is part of every interval and p-value.

Inputs are the model's probed points (layer id, stage, depth, readout, ...) and ``outcomes``:
``"<layer id>/<readout>"`` -> correct (S_seeds, N) bool, the same N samples for every key.
Accuracy of a key = mean over seeds and samples. ``P_final`` per sample is an (N,) bool vector
aligned with those samples.

``visual_representation``
    V = the MLLM's vision layers (readouts ``image-mean`` and ``cls``); R = the layers of the
    reference baseline model (the one with the best layer in the report), on the same samples.
    Effect = best R - best V. Test: intersection-union -- the best R (re-selected in every draw)
    above *every* V layer, p = max of the per-layer paired-bootstrap p-values. Present iff effect
    >= ``visual_gap`` (0.03) and p < alpha. Not assessed without a baseline, or when the
    baseline has no outcomes on the same samples.
``connector_fidelity``
    F = the vision layer feeding the connector (``feeds_connector``; else the last used vision
    layer), Cn = last connector layer (``image-mean``). Effect = F - Cn, one-sided paired
    bootstrap. Present iff effect >= ``connector_drop`` (0.02) and p < alpha. One pre-specified
    comparison: no multiplicity adjustment.
``llm_entry``
    The entry into the LLM: Cn against the first LLM layer's image tokens S (``image-mean``).
    Effect = Cn - S, one-sided paired bootstrap. Present iff effect >= ``entry_drop`` (0.02) and
    p < alpha. One comparison.
``llm_comprehension``
    LLM ``image-mean`` curve, start S, end E. Two sub-tests, Holm-adjusted together:
    ``ends_below_start`` (effect S - E, paired bootstrap, minimum ``llm_drop`` 0.02) and
    ``falls_from_peak`` (effect peak - E; studentised max-statistic over every LLM layer before E,
    so choosing the peak is paid for; the interval re-selects the peak in every draw; minimum
    ``llm_peak_drop`` 0.05). Present iff a sub-test meets its minimum and its Holm-adjusted p <
    alpha. The verdict reports the decisive sub-test (the significant one, else the smaller p).
``semantic_mapping``
    T = the final-input-token probe (readout ``last-token``) at the last LLM layer; P_final =
    the model's own answers on the same samples. Not assessed when T is not above its
    majority-class chance (one-sided bootstrap, p >= alpha: a probe at chance says nothing about
    what the answer loses), or without per-sample answers. Effect = T - P_final, one-sided paired
    bootstrap. Present iff effect >= ``semantic_gap`` (0.02) and p < alpha -- only when P_final is
    *below* the probe; a P_final above it is absent with the direction in the evidence. The
    evidence names how P_final was obtained (``generate`` / ``score`` / ``zeroshot``).

Without per-sample outcomes (probe results older than format ``medprobe.probe/2``) no mode is
decided: each is ``not_assessed`` with that reason, and the evidence carries the marginal
accuracies, labelled descriptive. There is no silent fallback to the old marginal-CI rules.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from . import inference as _inf
from ..registry import MedprobeError

DIAGNOSIS_VERSION = "diagnosis-2"
MODES = ("visual_representation", "connector_fidelity", "llm_entry", "llm_comprehension", "semantic_mapping")
PRESENT, ABSENT, NOT_ASSESSED = "present", "absent", "not_assessed"
VISION_READOUTS = ("image-mean", "cls")
P_FINAL_METHODS = ("generate", "score", "zeroshot")
P_FINAL_KEY = "P_final"
NO_OUTCOMES = (
    "no per-sample outcomes (probe results without outcomes.safetensors, written before format medprobe.probe/2): "
    "a paired test is impossible; re-run `medprobe probe` on the run to decide this mode"
)


class DiagnosisError(MedprobeError):
    """Diagnosis inputs are inconsistent (outcome shapes, P_final alignment); names the key."""


@dataclass(frozen=True)
class Thresholds:
    """Minimum effect sizes (accuracy points as fractions) and the significance level ``alpha``;
    a mode is present only when its effect reaches the minimum *and* its paired test is significant."""

    visual_gap: float = 0.03
    connector_drop: float = 0.02
    entry_drop: float = 0.02
    llm_drop: float = 0.02
    llm_peak_drop: float = 0.05
    semantic_gap: float = 0.02
    alpha: float = 0.05

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Thresholds":
        return cls(**{k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def rules(self) -> dict[str, str]:
        """Each mode's rule in words, with these thresholds filled in."""
        a = self.alpha
        return {
            "visual_representation": f"best reference-baseline layer - best vision layer >= {self.visual_gap} and "
            f"intersection-union paired-bootstrap p < {a} (baseline above every vision layer)",
            "connector_fidelity": f"feeding vision layer F - connector output Cn >= {self.connector_drop} and "
            f"one-sided paired-bootstrap p < {a}",
            "llm_entry": f"connector output Cn - first LLM layer image tokens S >= {self.entry_drop} and "
            f"one-sided paired-bootstrap p < {a}",
            "llm_comprehension": f"(start S - end E >= {self.llm_drop}) or (peak - end E >= {self.llm_peak_drop}, "
            f"peak re-selected: max-t over the LLM layers) on the LLM image-token curve, with Holm-adjusted p < {a} "
            "over the two sub-tests",
            "semantic_mapping": f"final-input-token probe T - P_final >= {self.semantic_gap} (P_final below T) and "
            f"one-sided paired-bootstrap p < {a}; not assessed when T is not above chance (p >= {a})",
        }


@dataclass
class Verdict:
    """One failure mode of one model: ``verdict`` in present / absent / not_assessed, with its
    effect, paired 95% interval, p-value, statistic and multiplicity rule (``None`` when not
    assessed)."""

    mode: str
    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    rule: str = ""
    effect: float | None = None
    ci95: list[float] | None = None
    p_value: float | None = None
    statistic: str | None = None
    multiplicity: str | None = None
    n: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        ci = d.get("ci95")
        return cls(
            mode=d["mode"],
            verdict=d["verdict"],
            summary=d.get("summary", ""),
            evidence=dict(d.get("evidence") or {}),
            rule=d.get("rule", ""),
            effect=d.get("effect"),
            ci95=list(ci) if ci is not None else None,
            p_value=d.get("p_value"),
            statistic=d.get("statistic"),
            multiplicity=d.get("multiplicity"),
            n=d.get("n"),
        )


@dataclass
class Point:
    """One probed (layer, readout) of a model: what the rules read. ``accuracy`` / ``ci95`` are the
    probe's own (marginal) figures, kept for description; decisions use the outcomes."""

    id: str
    stage: str
    depth: float
    readout: str
    accuracy: float
    ci95: tuple[float, float]
    used: bool = True
    feeds_connector: bool = False
    chance: float | None = None

    @property
    def key(self) -> str:
        return f"{self.id}/{self.readout}"

    @classmethod
    def of(cls, item: Any) -> "Point":
        g = (lambda n, d=None: item.get(n, d)) if isinstance(item, Mapping) else (lambda n, d=None: getattr(item, n, d))
        ci = g("ci95") or (g("accuracy"), g("accuracy"))
        chance = g("chance")
        return cls(
            id=str(g("id")),
            stage=str(g("stage")),
            depth=float(g("depth", 0.0)),
            readout=str(g("readout", "image-mean")),
            accuracy=float(g("accuracy")),
            ci95=(float(ci[0]), float(ci[1])),
            used=bool(g("used", True)),
            feeds_connector=bool(g("feeds_connector", False)),
            chance=None if chance is None else float(chance),
        )


@dataclass
class BaselineRef:
    """The best baseline layer of a report, for ``visual_representation``. ``outcomes``: the
    reference baseline model's per-sample outcomes ``key -> (S, N)`` (all its layers; not part
    of :meth:`to_dict`), or ``None`` for results without outcomes."""

    model: str
    layer: str
    readout: str
    accuracy: float
    ci95: tuple[float, float]
    outcomes: dict[str, np.ndarray] | None = field(default=None, repr=False, compare=False)
    #: why the baseline's outcomes cannot be paired with the model's (``None``: no such problem)
    unpaired_reason: str | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layer": self.layer,
            "readout": self.readout,
            "accuracy": self.accuracy,
            "ci95": list(self.ci95),
            "paired": self.outcomes is not None,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BaselineRef":
        return cls(
            d["model"], d["layer"], d["readout"], float(d["accuracy"]), (float(d["ci95"][0]), float(d["ci95"][1]))
        )


def best_baseline(
    baselines: Mapping[str, Iterable[Any]], outcomes: Mapping[str, Mapping[str, Any] | None] | None = None
) -> BaselineRef | None:
    """The highest-accuracy (layer, readout) over every baseline model: ``model id -> points``;
    ``outcomes``: ``model id -> {key: correct (S, N)}`` (or ``None``), attached to the winner."""
    best: BaselineRef | None = None
    for model, items in baselines.items():
        for it in items:
            p = Point.of(it)
            if best is None or p.accuracy > best.accuracy:
                best = BaselineRef(model, p.id, p.readout, p.accuracy, p.ci95)
    if best is not None and outcomes is not None:
        oc = outcomes.get(best.model)
        best.outcomes = {k: _inf.as_outcomes(v, k) for k, v in oc.items()} if oc else None
    return best


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _pt(p: Point, boot: _inf.PairedBootstrap | None = None, key: str | None = None) -> dict[str, Any]:
    """A compared layer in the evidence: marginal figures, and with outcomes the seed-mean accuracy,
    its paired-bootstrap interval (samples and seeds) and the per-seed accuracies."""
    out: dict[str, Any] = {"layer": p.id, "readout": p.readout, "accuracy": _r(p.accuracy), "ci95": [_r(p.ci95[0]), _r(p.ci95[1])]}
    k = key or p.key
    if boot is not None and k in boot:
        lo, hi = _inf.accuracy_ci(boot, k)
        out.update(
            {
                "accuracy": _r(boot.point(k)),
                "ci95": [_r(lo), _r(hi)],
                "ci95_method": "paired bootstrap over samples and seeds",
                "seed_accuracies": [_r(a) for a in boot.seed_accuracies(k)],
            }
        )
    return out


def _decided(
    mode: str, comp: _inf.Comparison, present: bool, summary: str, evidence: dict[str, Any], rule: str
) -> Verdict:
    evidence = {**evidence, "test": comp.to_dict()}
    return Verdict(
        mode=mode,
        verdict=PRESENT if present else ABSENT,
        summary=summary,
        evidence=evidence,
        rule=rule,
        effect=_r(comp.effect),
        ci95=[_r(comp.ci95[0]), _r(comp.ci95[1])],
        p_value=float(comp.p_value),
        statistic=comp.statistic,
        multiplicity=comp.multiplicity,
        n=comp.n,
    )


def _pstr(p: float) -> str:
    return f"{p:.3g}" if p >= 0.001 else f"{p:.1e}"


def _effect_text(comp: _inf.Comparison, p: float | None = None) -> str:
    return f"{comp.effect:+.3f} [{comp.ci95[0]:+.3f}, {comp.ci95[1]:+.3f}], p = {_pstr(comp.p_value if p is None else p)}"


class _Ctx:
    """Points by role and the shared bootstrap of one diagnosis."""

    def __init__(self, points: list[Point], boot: _inf.PairedBootstrap | None, th: Thresholds) -> None:
        self.points, self.boot, self.th = points, boot, th
        self.rules = th.rules()

    def has(self, *pts: Point) -> bool:
        return self.boot is not None and all(p.key in self.boot for p in pts)

    def not_assessed(self, mode: str, reason: str, evidence: dict[str, Any] | None = None) -> Verdict:
        return Verdict(mode, NOT_ASSESSED, reason, dict(evidence or {}), self.rules[mode])

    def missing(self, mode: str, pts: Sequence[Point], evidence: dict[str, Any]) -> Verdict:
        if self.boot is None:
            return self.not_assessed(mode, NO_OUTCOMES, {**evidence, "marginal_only": "descriptive, not a test"})
        lacking = [p.key for p in pts if p.key not in self.boot]
        return self.not_assessed(mode, f"no per-sample outcomes for {', '.join(lacking)}", evidence)

    def curve(self, stage: str, readout: str = "image-mean") -> list[Point]:
        return sorted((p for p in self.points if p.stage == stage and p.readout == readout), key=lambda p: p.depth)


def _visual(c: _Ctx, baseline: BaselineRef | None) -> Verdict:
    mode = "visual_representation"
    vision = [p for p in c.points if p.stage == "vision" and p.readout in VISION_READOUTS]
    if not vision:
        return c.not_assessed(mode, "no probed vision layers")
    v = max(vision, key=lambda p: p.accuracy)
    ev: dict[str, Any] = {"vision_best": _pt(v, c.boot), "threshold": c.th.visual_gap}
    if baseline is None:
        return c.not_assessed(mode, "no baseline in this report to compare against", ev)
    ev["baseline_best"] = baseline.to_dict()
    if not c.has(*vision):
        return c.missing(mode, vision, ev)
    if baseline.unpaired_reason:
        return c.not_assessed(mode, baseline.unpaired_reason, ev)
    if not baseline.outcomes:
        return c.not_assessed(
            mode, f"baseline '{baseline.model}' has no per-sample outcomes: a paired comparison is impossible", ev
        )
    n_ref = {o.shape[1] for o in baseline.outcomes.values()}
    if n_ref != {c.boot.n}:
        return c.not_assessed(
            mode,
            f"baseline '{baseline.model}' was scored on {sorted(n_ref)} samples, this model on {c.boot.n}: not paired",
            ev,
        )
    ref_keys = [f"baseline:{baseline.model}:{k}" for k in baseline.outcomes]
    for rk, arr in zip(ref_keys, baseline.outcomes.values()):
        c.boot.outcomes.setdefault(rk, arr)
    comp = _inf.best_exceeds_all(c.boot, ref_keys, [p.key for p in vision])
    ev["vision_best"] = _pt(max(vision, key=lambda p: c.boot.point(p.key)), c.boot)
    present = comp.effect >= c.th.visual_gap and comp.p_value < c.th.alpha
    summary = (
        f"best baseline {baseline.model} vs best vision layer {comp.detail['layer_best']}: gap {_effect_text(comp)}"
    )
    return _decided(mode, comp, present, summary, ev, c.rules[mode])


def _feeding(c: _Ctx) -> tuple[Point, str] | None:
    vision = c.curve("vision")
    if not vision:
        return None
    feeding = [p for p in vision if p.feeds_connector]
    used = [p for p in vision if p.used]
    if feeding:
        return feeding[-1], "feeds_connector"
    return (used[-1] if used else vision[-1]), "last used vision layer"


def _connector(c: _Ctx) -> Verdict:
    mode = "connector_fidelity"
    conn = c.curve("connector")
    fed = _feeding(c)
    if fed is None or not conn:
        return c.not_assessed(mode, f"no probed {'vision' if fed is None else 'connector'} layer (image-mean)")
    f, how = fed
    cn = conn[-1]
    ev: dict[str, Any] = {"feeding_layer": _pt(f, c.boot), "feeding_layer_rule": how, "connector": _pt(cn, c.boot),
                          "threshold": c.th.connector_drop}  # fmt: skip
    if not c.has(f, cn):
        return c.missing(mode, [f, cn], {**ev, "drop": _r(f.accuracy - cn.accuracy)})
    comp = _inf.paired_difference(c.boot, f.key, cn.key)
    present = comp.effect >= c.th.connector_drop and comp.p_value < c.th.alpha
    summary = f"{f.key} {c.boot.point(f.key):.3f} -> {cn.key} {c.boot.point(cn.key):.3f}: drop {_effect_text(comp)}"
    return _decided(mode, comp, present, summary, ev, c.rules[mode])


def _entry(c: _Ctx) -> Verdict:
    mode = "llm_entry"
    conn, llm = c.curve("connector"), c.curve("llm")
    if not conn or not llm:
        return c.not_assessed(mode, f"no probed {'connector' if not conn else 'LLM'} layer (image-mean)")
    cn, s = conn[-1], llm[0]
    ev: dict[str, Any] = {"connector": _pt(cn, c.boot), "first_llm_layer": _pt(s, c.boot), "threshold": c.th.entry_drop}
    if not c.has(cn, s):
        return c.missing(mode, [cn, s], {**ev, "drop": _r(cn.accuracy - s.accuracy)})
    comp = _inf.paired_difference(c.boot, cn.key, s.key)
    present = comp.effect >= c.th.entry_drop and comp.p_value < c.th.alpha
    summary = f"{cn.key} {c.boot.point(cn.key):.3f} -> {s.key} {c.boot.point(s.key):.3f}: drop {_effect_text(comp)}"
    return _decided(mode, comp, present, summary, ev, c.rules[mode])


def _llm(c: _Ctx) -> Verdict:
    mode = "llm_comprehension"
    llm = c.curve("llm")
    if len(llm) < 2:
        return c.not_assessed(mode, "fewer than two probed LLM layers (image-mean)")
    s, e = llm[0], llm[-1]
    ev: dict[str, Any] = {"start": _pt(s, c.boot), "end": _pt(e, c.boot),
                          "thresholds": {"llm_drop": c.th.llm_drop, "llm_peak_drop": c.th.llm_peak_drop}}  # fmt: skip
    if not c.has(*llm):
        return c.missing(mode, llm, {**ev, "start_to_end": _r(e.accuracy - s.accuracy)})
    below = _inf.paired_difference(c.boot, s.key, e.key)
    peak = _inf.peak_then_fall(c.boot, [p.key for p in llm[:-1]], e.key)
    adj = _inf.holm([below.p_value, peak.p_value])
    subs = {
        "ends_below_start": (below, adj[0], c.th.llm_drop),
        "falls_from_peak": (peak, adj[1], c.th.llm_peak_drop),
    }
    passed = {name: comp.effect >= thr and p < c.th.alpha for name, (comp, p, thr) in subs.items()}
    ev["peak"] = _pt(next(p for p in llm if p.key == peak.detail["peak"]), c.boot)
    ev["sub_tests"] = {
        name: {**comp.to_dict(), "p_holm": p, "threshold": thr, "passed": passed[name]}
        for name, (comp, p, thr) in subs.items()
    }
    for name in subs:
        ev[name] = passed[name]
    winners = [n for n in subs if passed[n]]
    decisive = min(winners or list(subs), key=lambda n: subs[n][1])
    comp, p_adj, _ = subs[decisive]
    comp = _inf.Comparison(
        effect=comp.effect,
        ci95=comp.ci95,
        p_value=p_adj,
        statistic=f"{decisive}: {comp.statistic}",
        multiplicity=f"Holm over 2 sub-tests (ends_below_start, falls_from_peak); falls_from_peak: {peak.multiplicity}",
        n=comp.n,
        n_seeds=comp.n_seeds,
    )
    ev["decisive_sub_test"] = decisive
    summary = (
        f"LLM image tokens: start {c.boot.point(s.key):.3f}, peak {c.boot.point(peak.detail['peak']):.3f} at "
        f"{peak.detail['peak'].split('/')[0]}, end {c.boot.point(e.key):.3f}; {decisive.replace('_', ' ')} "
        f"{_effect_text(comp)} (Holm)"
    )
    return _decided(mode, comp, bool(winners), summary, ev, c.rules[mode])


P_FINAL_DESCRIPTION = {
    "generate": "accuracy of the model's greedy generated answers (medprobe classify --mode generate)",
    "score": "accuracy of the highest-likelihood class answer (medprobe classify --mode score), not generated text",
    "zeroshot": "zero-shot accuracy of a contrastive model (class-name prompts vs image embeddings)",
}


def _semantic(
    c: _Ctx,
    p_final: float | None,
    p_final_ci: Sequence[float] | None,
    p_final_method: str | None,
    has_p_final_outcomes: bool,
) -> Verdict:
    mode = "semantic_mapping"
    last = c.curve("llm", "last-token")
    if not last:
        return c.not_assessed(mode, "no final-input-token probe (readout last-token)")
    t = last[-1]
    ev: dict[str, Any] = {
        "final_token_probe": _pt(t, c.boot),
        "threshold": c.th.semantic_gap,
        "p_final_method": p_final_method,
        "p_final_method_description": P_FINAL_DESCRIPTION.get(p_final_method or "", "not recorded"),
    }
    if p_final is not None:
        ev["p_final"] = _r(p_final)
    if p_final_ci is not None:
        ev["p_final_ci95"] = [_r(p_final_ci[0]), _r(p_final_ci[1])]
    if p_final is None and not has_p_final_outcomes:
        return c.not_assessed(mode, "P_final (accuracy of the model's own answers) not available", ev)
    if not c.has(t):
        return c.missing(mode, [t], ev)
    if not has_p_final_outcomes:
        return c.not_assessed(
            mode, "P_final has no per-sample answers aligned with the probe's samples: a paired test is impossible", ev
        )
    if t.chance is not None:
        gate = _inf.above_level(c.boot, t.key, t.chance)
        ev["above_chance"] = {**gate.to_dict(), "chance": _r(t.chance)}
        if gate.p_value >= c.th.alpha:
            return c.not_assessed(
                mode,
                f"final-token probe {t.key} {c.boot.point(t.key):.3f} is not above chance {t.chance:.3f} "
                f"(p = {_pstr(gate.p_value)}): it cannot show what the answer loses",
                ev,
            )
    else:
        ev["above_chance"] = "chance not recorded for the final-token probe: the chance gate was not applied"
    comp = _inf.paired_difference(c.boot, t.key, P_FINAL_KEY)
    pf = c.boot.point(P_FINAL_KEY)
    ev["p_final_paired"] = {"accuracy": _r(pf), "n": c.boot.n, "note": "P_final on the probe's scored samples"}
    ev["direction"] = "lower" if comp.effect > 0 else "higher" if comp.effect < 0 else "equal"
    present = comp.effect >= c.th.semantic_gap and comp.p_value < c.th.alpha
    how = p_final_method or "method not recorded"
    summary = (
        f"P_final ({how}) {pf:.3f} vs final-token probe {t.key} {c.boot.point(t.key):.3f}: "
        f"probe - P_final {_effect_text(comp)}" + (" (P_final higher: not a mapping loss)" if comp.effect < 0 else "")
    )
    return _decided(mode, comp, present, summary, ev, c.rules[mode])


def diagnose(
    points: Iterable[Any],
    *,
    outcomes: Mapping[str, Any] | None = None,
    p_final: float | None = None,
    p_final_ci: Sequence[float] | None = None,
    p_final_correct: Any = None,
    p_final_method: str | None = None,
    baseline: BaselineRef | None = None,
    thresholds: Thresholds | None = None,
    n_boot: int = _inf.DEFAULT_N_BOOT,
    seed: int = 0,
) -> list[Verdict]:
    """The verdicts of one MLLM under one probe, in :data:`MODES` order.

    ``points``: its probed (layer, readout) entries -- mappings or objects with ``id``, ``stage``,
    ``depth``, ``readout``, ``accuracy``, ``ci95`` and optionally ``used`` / ``feeds_connector`` /
    ``chance``. ``outcomes``: ``"<id>/<readout>"`` -> correct (S, N) bool on the same N samples
    (``None``: results without outcomes, every mode not assessed). ``p_final_correct``: (N,)
    bool, the answers' correctness on the same samples; ``p_final_method``: ``generate`` /
    ``score`` / ``zeroshot``. ``baseline``: the reference baseline (:func:`best_baseline`).
    ``n_boot`` / ``seed``: the shared paired bootstrap.
    """
    th = thresholds or Thresholds()
    if p_final_method is not None and p_final_method not in P_FINAL_METHODS:
        raise DiagnosisError(f"p_final_method {p_final_method!r} must be one of {P_FINAL_METHODS}")
    pts = [Point.of(p) for p in points]
    boot = None
    if outcomes:
        oc = dict(outcomes)
        if p_final_correct is not None:
            pf = np.asarray(p_final_correct)
            n = {np.asarray(v).shape[-1] for v in oc.values()}
            if pf.ndim != 1 or n != {pf.shape[0]}:
                raise DiagnosisError(
                    f"P_final per-sample correctness has shape {pf.shape}; the probe outcomes have N = {sorted(n)} "
                    "samples: align the answers with the probe's sample_index first"
                )
            oc[P_FINAL_KEY] = pf
        try:
            boot = _inf.PairedBootstrap(oc, n_boot=n_boot, seed=seed)
        except _inf.InferenceError as exc:
            raise DiagnosisError(f"diagnosis: {exc}") from None
    c = _Ctx(pts, boot, th)
    return [
        _visual(c, baseline),
        _connector(c),
        _entry(c),
        _llm(c),
        _semantic(c, p_final, p_final_ci, p_final_method, boot is not None and P_FINAL_KEY in boot),
    ]
