"""The paper's four failure modes, decided with stated thresholds and shown with their evidence.

Every verdict is ``present``, ``absent`` or ``not_assessed`` (with the reason), and carries the
numbers it was decided on. Accuracies are test accuracies of one probe; ``CI`` is that layer's
bootstrap 95% interval. A mode is ``present`` only when the effect is both larger than a minimum
size *and* outside the relevant confidence interval (defaults in :class:`Thresholds`):

``visual_representation``
    V = best probe accuracy over the MLLM's vision layers (all vision blocks, readouts
    ``image-mean`` and ``cls``); B = best probe accuracy of the best baseline in the same report
    (over all its layers and readouts). Present iff ``B - V >= visual_gap`` (0.03) and
    ``CI_hi(V) < B``. Not assessed without a baseline.
``connector_fidelity``
    F = the vision layer that feeds the connector (``feeds_connector``; else the last used vision
    layer), Cn = the last connector layer (``image-mean``). Present iff ``F - Cn >= connector_drop``
    (0.02) and ``Cn < CI_lo(F)``.
``llm_comprehension``
    LLM ``image-mean`` curve with start S (first LLM layer), end E (last) and peak P (max).
    Present iff (``S - E >= llm_drop`` (0.02) and ``E < CI_lo(S)``) -- it ends below its start --
    or (``P - E >= llm_peak_drop`` (0.05) and ``E < CI_lo(P)``) -- it falls through the layers
    after peaking.
``semantic_mapping``
    T = probe accuracy of the final input token (readout ``last-token``) at the last LLM layer;
    P_final = accuracy of the model's generated answers. Present iff ``|P_final - T| >=
    semantic_gap`` (0.02) and P_final lies outside ``CI(T)``; the direction (lower / higher) is
    part of the evidence. Not assessed when P_final is missing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping, Sequence

DIAGNOSIS_VERSION = "diagnosis-1"
MODES = ("visual_representation", "connector_fidelity", "llm_comprehension", "semantic_mapping")
PRESENT, ABSENT, NOT_ASSESSED = "present", "absent", "not_assessed"
VISION_READOUTS = ("image-mean", "cls")


@dataclass(frozen=True)
class Thresholds:
    """Minimum effect sizes (accuracy points as fractions); each rule also requires the effect to
    leave the 95% CI named in the module docstring."""

    visual_gap: float = 0.03
    connector_drop: float = 0.02
    llm_drop: float = 0.02
    llm_peak_drop: float = 0.05
    semantic_gap: float = 0.02

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Thresholds":
        return cls(**{k: float(v) for k, v in d.items() if k in cls.__dataclass_fields__})

    def rules(self) -> dict[str, str]:
        """Each mode's rule in words, with these thresholds filled in."""
        return {
            "visual_representation": f"best baseline B - best vision layer V >= {self.visual_gap} and CI_hi(V) < B",
            "connector_fidelity": f"feeding vision layer F - connector output Cn >= {self.connector_drop} and Cn < CI_lo(F)",
            "llm_comprehension": f"(start S - end E >= {self.llm_drop} and E < CI_lo(S)) or "
            f"(peak P - end E >= {self.llm_peak_drop} and E < CI_lo(P)) on the LLM image-token curve",
            "semantic_mapping": f"|P_final - final-input-token probe T| >= {self.semantic_gap} and P_final outside CI(T)",
        }


@dataclass
class Verdict:
    """One failure mode of one model: ``verdict`` in present / absent / not_assessed."""

    mode: str
    verdict: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Verdict":
        return cls(
            mode=d["mode"],
            verdict=d["verdict"],
            summary=d.get("summary", ""),
            evidence=dict(d.get("evidence") or {}),
            rule=d.get("rule", ""),
        )


@dataclass
class Point:
    """One probed (layer, readout) of a model: what the rules read."""

    id: str
    stage: str
    depth: float
    readout: str
    accuracy: float
    ci95: tuple[float, float]
    used: bool = True
    feeds_connector: bool = False

    @property
    def key(self) -> str:
        return f"{self.id}/{self.readout}"

    @classmethod
    def of(cls, item: Any) -> "Point":
        g = (lambda n, d=None: item.get(n, d)) if isinstance(item, Mapping) else (lambda n, d=None: getattr(item, n, d))
        ci = g("ci95") or (g("accuracy"), g("accuracy"))
        return cls(
            id=str(g("id")),
            stage=str(g("stage")),
            depth=float(g("depth", 0.0)),
            readout=str(g("readout", "image-mean")),
            accuracy=float(g("accuracy")),
            ci95=(float(ci[0]), float(ci[1])),
            used=bool(g("used", True)),
            feeds_connector=bool(g("feeds_connector", False)),
        )


@dataclass
class BaselineRef:
    """The best baseline layer of a report, for ``visual_representation``."""

    model: str
    layer: str
    readout: str
    accuracy: float
    ci95: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BaselineRef":
        return cls(
            d["model"], d["layer"], d["readout"], float(d["accuracy"]), (float(d["ci95"][0]), float(d["ci95"][1]))
        )


def best_baseline(baselines: Mapping[str, Iterable[Any]]) -> BaselineRef | None:
    """The highest-accuracy (layer, readout) over every baseline model: ``model id -> points``."""
    best: BaselineRef | None = None
    for model, items in baselines.items():
        for it in items:
            p = Point.of(it)
            if best is None or p.accuracy > best.accuracy:
                best = BaselineRef(model, p.id, p.readout, p.accuracy, p.ci95)
    return best


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)


def _pt(p: Point) -> dict[str, Any]:
    return {"layer": p.id, "readout": p.readout, "accuracy": _r(p.accuracy), "ci95": [_r(p.ci95[0]), _r(p.ci95[1])]}


def _visual(points: list[Point], baseline: BaselineRef | None, th: Thresholds) -> Verdict:
    rule = th.rules()["visual_representation"]
    vision = [p for p in points if p.stage == "vision" and p.readout in VISION_READOUTS]
    if not vision:
        return Verdict("visual_representation", NOT_ASSESSED, "no probed vision layers", {}, rule)
    v = max(vision, key=lambda p: p.accuracy)
    ev: dict[str, Any] = {"vision_best": _pt(v), "threshold": th.visual_gap}
    if baseline is None:
        return Verdict("visual_representation", NOT_ASSESSED, "no baseline in this report to compare against", ev, rule)
    gap = baseline.accuracy - v.accuracy
    ev.update({"baseline_best": baseline.to_dict(), "gap": _r(gap)})
    present = gap >= th.visual_gap and v.ci95[1] < baseline.accuracy
    summary = (
        f"best vision layer {v.key} {v.accuracy:.3f} vs best baseline {baseline.model} {baseline.accuracy:.3f} "
        f"(gap {gap:+.3f})"
    )
    return Verdict("visual_representation", PRESENT if present else ABSENT, summary, ev, rule)


def _connector(points: list[Point], th: Thresholds) -> Verdict:
    rule = th.rules()["connector_fidelity"]
    vision = sorted((p for p in points if p.stage == "vision" and p.readout == "image-mean"), key=lambda p: p.depth)
    conn = sorted((p for p in points if p.stage == "connector" and p.readout == "image-mean"), key=lambda p: p.depth)
    if not vision or not conn:
        missing = "vision" if not vision else "connector"
        return Verdict("connector_fidelity", NOT_ASSESSED, f"no probed {missing} layer (image-mean)", {}, rule)
    feeding = [p for p in vision if p.feeds_connector]
    used = [p for p in vision if p.used]
    f = feeding[-1] if feeding else (used[-1] if used else vision[-1])
    c = conn[-1]
    drop = f.accuracy - c.accuracy
    ev = {
        "feeding_layer": _pt(f),
        "feeding_layer_rule": "feeds_connector" if feeding else "last used vision layer",
        "connector": _pt(c),
        "drop": _r(drop),
        "threshold": th.connector_drop,
    }
    present = drop >= th.connector_drop and c.accuracy < f.ci95[0]
    summary = f"{f.key} {f.accuracy:.3f} -> {c.key} {c.accuracy:.3f} (change {-drop:+.3f})"
    return Verdict("connector_fidelity", PRESENT if present else ABSENT, summary, ev, rule)


def _llm(points: list[Point], th: Thresholds) -> Verdict:
    rule = th.rules()["llm_comprehension"]
    llm = sorted((p for p in points if p.stage == "llm" and p.readout == "image-mean"), key=lambda p: p.depth)
    if len(llm) < 2:
        return Verdict("llm_comprehension", NOT_ASSESSED, "fewer than two probed LLM layers (image-mean)", {}, rule)
    s, e = llm[0], llm[-1]
    peak = max(llm, key=lambda p: p.accuracy)
    ends_below_start = (s.accuracy - e.accuracy) >= th.llm_drop and e.accuracy < s.ci95[0]
    falls_from_peak = (peak.accuracy - e.accuracy) >= th.llm_peak_drop and e.accuracy < peak.ci95[0]
    ev = {
        "start": _pt(s),
        "end": _pt(e),
        "peak": _pt(peak),
        "start_to_end": _r(e.accuracy - s.accuracy),
        "peak_to_end": _r(e.accuracy - peak.accuracy),
        "ends_below_start": ends_below_start,
        "falls_from_peak": falls_from_peak,
        "thresholds": {"llm_drop": th.llm_drop, "llm_peak_drop": th.llm_peak_drop},
    }
    summary = f"LLM image tokens: start {s.accuracy:.3f}, peak {peak.accuracy:.3f} at {peak.id}, end {e.accuracy:.3f}"
    return Verdict("llm_comprehension", PRESENT if (ends_below_start or falls_from_peak) else ABSENT, summary, ev, rule)


def _semantic(
    points: list[Point], p_final: float | None, p_final_ci: Sequence[float] | None, th: Thresholds
) -> Verdict:
    rule = th.rules()["semantic_mapping"]
    last = sorted((p for p in points if p.stage == "llm" and p.readout == "last-token"), key=lambda p: p.depth)
    if not last:
        return Verdict("semantic_mapping", NOT_ASSESSED, "no final-input-token probe (readout last-token)", {}, rule)
    t = last[-1]
    ev: dict[str, Any] = {"final_token_probe": _pt(t), "threshold": th.semantic_gap}
    if p_final is None:
        return Verdict(
            "semantic_mapping", NOT_ASSESSED, "P_final (accuracy of generated answers) not available", ev, rule
        )
    diff = p_final - t.accuracy
    outside = p_final < t.ci95[0] or p_final > t.ci95[1]
    present = abs(diff) >= th.semantic_gap and outside
    ev.update(
        {
            "p_final": _r(p_final),
            "difference": _r(diff),
            "direction": "lower" if diff < 0 else "higher" if diff > 0 else "equal",
        }
    )
    if p_final_ci is not None:
        ev["p_final_ci95"] = [_r(p_final_ci[0]), _r(p_final_ci[1])]
    summary = f"P_final {p_final:.3f} vs final-token probe {t.key} {t.accuracy:.3f} ({diff:+.3f})"
    return Verdict("semantic_mapping", PRESENT if present else ABSENT, summary, ev, rule)


def diagnose(
    points: Iterable[Any],
    *,
    p_final: float | None = None,
    p_final_ci: Sequence[float] | None = None,
    baseline: BaselineRef | None = None,
    thresholds: Thresholds | None = None,
) -> list[Verdict]:
    """The four verdicts of one MLLM under one probe.

    ``points``: its probed (layer, readout) entries -- mappings or objects with ``id``, ``stage``,
    ``depth``, ``readout``, ``accuracy``, ``ci95`` and optionally ``used`` / ``feeds_connector``.
    ``baseline``: the best baseline of the report (:func:`best_baseline`), or ``None``.
    """
    th = thresholds or Thresholds()
    pts = [Point.of(p) for p in points]
    return [
        _visual(pts, baseline, th),
        _connector(pts, th),
        _llm(pts, th),
        _semantic(pts, p_final, p_final_ci, th),
    ]
