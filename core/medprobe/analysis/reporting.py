"""The report as a typed object: :class:`Report` over the ``report.json`` dict.

``medprobe report`` / ``compare`` / ``demo`` serialise a report dict (schema ``medprobe.report``,
see ``docs/report-schema.md``, built by :func:`medprobe.analysis.report.build_report`). The Python
API returns the same content as a :class:`Report`::

    report = mp.report(["runs/lingshu-7b__lesions__3f2a", "runs/resnet50__lesions__9c1e"])
    report.models[0].id, report.models[0].layers[0].accuracy      # typed rows
    report.fhs("lingshu-7b")                  # FHSProfile: FHS_V -> FHS_C -> FHS_L -> P_final
    report.diagnosis("lingshu-7b")            # [Verdict] of the four failure modes
    report.plot_layers()                      # matplotlib Figure (accuracy vs relative depth)
    report.to_frame()                         # pandas DataFrame, one row per model x layer x readout x probe
    report.save("out/"); Report.load("out/report.json")

:meth:`Report.to_dict` returns the dict exactly as built or read (keys a newer medprobe adds are
kept), so ``Report.from_dict(r.to_dict()).to_dict() == r.to_dict()``. Accuracies and rates are
fractions in [0, 1]; depths are relative positions in [0, 1] over a model's probed layers.

Importing this module imports neither torch nor numpy; pandas and matplotlib are imported by the
methods that need them (pandas is the optional extra ``medprobe[pandas]``).
"""

from __future__ import annotations

import copy
import html
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..registry import MedprobeError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .diagnosis import Verdict
    from .fhs import FHSProfile

#: the formats :meth:`Report.save` writes by default (as ``medprobe report --out``)
DEFAULT_FORMATS = ("json", "csv", "md", "html")


class ReportLookupError(MedprobeError, KeyError):
    """A model id or probe is not in the report; the message lists what is."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


def _pandas() -> Any:
    try:
        import pandas
    except ImportError:
        raise MedprobeError(
            "Report tables as DataFrames need pandas, the optional extra 'medprobe[pandas]': "
            "pip install 'medprobe[pandas]' (or pip install pandas)"
        ) from None
    return pandas


@dataclass(frozen=True)
class LayerRow:
    """One probed layer x readout x probe of a model (a ``layers`` row of ``report.json``).

    ``accuracy``, ``ci95`` (bootstrap 95% interval), ``chance``, ``control_accuracy``,
    ``balanced_accuracy``, ``macro_f1`` and ``auroc`` are fractions in [0, 1] on the test split;
    ``selectivity`` = accuracy - control accuracy; ``depth`` is the relative depth in [0, 1];
    ``width`` the feature dimension D of the (N, D) features the probe was trained on.
    """

    id: str
    stage: str
    module: str
    depth: float
    readout: str
    probe: str
    accuracy: float | None
    ci95: tuple[float, float] | None = None
    used: bool = True
    feeds_connector: bool = False
    width: int | None = None
    chance: float | None = None
    permutation_p: float | None = None
    control_accuracy: float | None = None
    selectivity: float | None = None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None
    auroc: float | None = None
    seed: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    hyper: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "LayerRow":
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in known}
        ci = values.get("ci95")
        values["ci95"] = (float(ci[0]), float(ci[1])) if ci and None not in ci else None
        values["hyper"] = dict(values.get("hyper") or {})
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = list(self.ci95) if self.ci95 is not None else None
        d["hyper"] = dict(self.hyper)
        return d


@dataclass(frozen=True)
class ModelResult:
    """One model of a report: identity, synthetic flags, ``P_final`` and its per-layer rows.

    ``p_final`` is the accuracy (fraction) of the model's own generated answers (MLLMs; ``None``
    when there were none), ``p_final_ci95`` its Wilson 95% interval; ``p_final_source`` is
    ``"zeroshot"`` when a contrastive baseline's ``p_final`` is its zero-shot accuracy. Use :meth:`Report.fhs` and
    :meth:`Report.diagnosis` for the scores.
    """

    id: str
    title: str
    kind: str
    category: str | None
    synthetic: bool
    synthetic_reasons: tuple[str, ...]
    p_final: float | None
    p_final_n: int | None
    p_final_ci95: tuple[float, float] | None
    layers: tuple[LayerRow, ...] = field(repr=False)
    p_final_source: str | None = None
    #: the model card id (``id`` is the report row id: the card id, or ``"<card> [<condition>]"``
    #: when several runs of one card share the report)
    card: str | None = None
    #: the feature-store run key of the row
    run_key: str | None = None
    #: the run's condition label (``"pretrained"``, ``"random weights"``, ``"tiny random"``,
    #: ``"... + LoRA <name> (<sha>)"``); the full dict is ``raw["condition"]``
    condition: str | None = None
    raw: Mapping[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelResult":
        ci = d.get("p_final_ci95")
        cond = d.get("condition")
        label = (cond.get("label") or cond.get("weights")) if isinstance(cond, Mapping) else cond
        return cls(
            id=str(d["id"]),
            title=str(d.get("title") or d["id"]),
            kind=str(d["kind"]),
            category=d.get("category"),
            synthetic=bool(d.get("synthetic", False)),
            synthetic_reasons=tuple(d.get("synthetic_reasons") or ()),
            p_final=d.get("p_final"),
            p_final_n=d.get("p_final_n"),
            p_final_ci95=(float(ci[0]), float(ci[1])) if ci else None,
            layers=tuple(LayerRow.from_dict(r) for r in d.get("layers", [])),
            p_final_source=d.get("p_final_source"),
            card=d.get("card") or str(d["id"]),
            run_key=d.get("run_key"),
            condition=str(label) if label else None,
            raw=d,
        )

    def rows(self, probe: str | None = None, readout: str | None = None) -> list[LayerRow]:
        """The layer rows, optionally of one probe and / or one readout, in report order (depth)."""
        return [r for r in self.layers if (probe is None or r.probe == probe) and (readout is None or r.readout == readout)]

    def to_dict(self) -> dict[str, Any]:
        """The model entry of ``report.json`` (with its ``fhs``, ``diagnosis`` and ``manifest``)."""
        return copy.deepcopy(dict(self.raw))


@dataclass
class Report:
    """A side-by-side report of MLLMs and baselines (see the module docstring).

    ``synthetic`` is true when any model ran with tiny / random weights or on synthetic data:
    such numbers check the pipeline only and are not medical findings (``banner`` says so).
    ``probes`` lists the probe names with results; ``primary_probe`` is the one methods use by
    default. ``path`` is where the report was last saved or read from (``None`` in memory only).
    """

    title: str
    created: str
    medprobe_version: str
    synthetic: bool
    synthetic_reasons: list[str]
    banner: str | None
    probes: list[str]
    primary_probe: str
    models: list[ModelResult]
    data: dict[str, Any] = field(repr=False)
    path: Path | None = None

    # -- construction and serialisation ------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], path: str | Path | None = None) -> "Report":
        """Wrap a report dict (as :func:`medprobe.analysis.report.build_report` returns or
        ``report.json`` holds); rejects other schemas and newer schema versions."""
        from .report import REPORT_SCHEMA, REPORT_SCHEMA_VERSION

        where = str(path) if path is not None else "report dict"
        if data.get("schema") != REPORT_SCHEMA:
            raise MedprobeError(f"{where}: schema {data.get('schema')!r} is not {REPORT_SCHEMA!r}")
        version = data.get("schema_version")
        if not isinstance(version, int) or version > REPORT_SCHEMA_VERSION:
            raise MedprobeError(
                f"{where}: schema_version {version!r}; this medprobe reads up to {REPORT_SCHEMA_VERSION} (upgrade medprobe)"
            )
        data = copy.deepcopy(dict(data))
        try:
            models = [ModelResult.from_dict(m) for m in data["models"]]
            return cls(
                title=str(data["title"]),
                created=str(data.get("created", "")),
                medprobe_version=str(data.get("medprobe_version", "")),
                synthetic=bool(data.get("synthetic", False)),
                synthetic_reasons=list(data.get("synthetic_reasons") or []),
                banner=data.get("banner"),
                probes=list(data["probes"]),
                primary_probe=str(data["primary_probe"]),
                models=models,
                data=data,
                path=Path(path) if path is not None else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MedprobeError(f"{where}: malformed report ({type(exc).__name__}: {exc})") from None

    def to_dict(self) -> dict[str, Any]:
        """The ``report.json`` dict (a deep copy; strict-JSON values)."""
        return copy.deepcopy(self.data)

    @classmethod
    def load(cls, path: str | Path) -> "Report":
        """Read ``report.json`` (or a directory holding one)."""
        from .report import load_report

        path = Path(path)
        data = load_report(path)
        return cls.from_dict(data, path=path / "report.json" if path.is_dir() else path)

    def save(self, out: str | Path, formats: Sequence[str] = DEFAULT_FORMATS) -> dict[str, Path]:
        """Write the report into the folder ``out`` in each format (``json``, ``csv``, ``md``,
        ``html`` or a plugin exporter), as ``medprobe report --out`` does; returns format -> path."""
        from .exporters import write_report

        written = write_report(self.data, out, formats)
        if "json" in written:
            self.path = written["json"]
        return written

    # -- lookups -----------------------------------------------------------------------------

    @property
    def model_ids(self) -> list[str]:
        """The model ids in report order."""
        return [m.id for m in self.models]

    @property
    def trained(self) -> list[dict[str, Any]]:
        """The trained classifiers in the report (``medprobe train`` runs; ``trained`` in
        ``report.json``, fields in docs/report-schema.md), as dicts; empty when there are none."""
        return copy.deepcopy(list(self.data.get("trained") or []))

    def model(self, model_id: str) -> ModelResult:
        """The :class:`ModelResult` of ``model_id``: a row id as in :attr:`model_ids`, or a card id
        that only one row of the report has (several runs of one card: use the row id, e.g.
        ``"lingshu-7b [random weights]"``)."""
        for m in self.models:
            if m.id == model_id:
                return m
        same_card = [m for m in self.models if m.card == model_id]
        if len(same_card) == 1:
            return same_card[0]
        if same_card:
            raise ReportLookupError(
                f"card '{model_id}' has {len(same_card)} runs in report '{self.title}'; name one: "
                + ", ".join(repr(m.id) for m in same_card)
            )
        raise ReportLookupError(f"model '{model_id}' is not in report '{self.title}'; models: {', '.join(self.model_ids)}")

    def _probe(self, probe: str | None) -> str:
        name = probe or self.primary_probe
        if name not in self.probes:
            raise ReportLookupError(f"report '{self.title}' has no results of probe '{name}'; probes: {', '.join(self.probes)}")
        return name

    def metric(self, name: str, model_id: str, **options: Any) -> Any:
        """A metric registered by a plugin (``register_metrics``; the built-in ``fhs``) computed on
        ``model_id``'s entry of this report: ``factory(model_entry, **options)``, e.g.
        ``report.metric("fhs", "lingshu-7b", probe="linear")``. Unknown names list the registered ones."""
        from ..plugins import get_plugins
        from ..registry import resolve_factory

        factory = resolve_factory(get_plugins().metrics.get(name))
        return factory(self.model(model_id).raw, **options)

    def fhs(self, model_id: str, probe: str | None = None) -> "FHSProfile":
        """The FHS profile of ``model_id`` under ``probe`` (default: the primary probe):
        ``.vision`` / ``.connector`` / ``.llm`` (:class:`~medprobe.analysis.fhs.ModuleFHS`, with
        the score and the accuracies it is made of), ``.p_final`` and ``.text()``."""
        from .fhs import FHSProfile

        name = self._probe(probe)
        model = self.model(model_id)
        model_id, entry = model.id, model.raw
        profile = (entry.get("fhs") or {}).get(name)
        if profile is None:
            raise ReportLookupError(f"model '{model_id}' has no FHS profile for probe '{name}'")
        return FHSProfile.from_dict(profile)

    def diagnosis(self, model_id: str, probe: str | None = None) -> list["Verdict"]:
        """The four failure-mode verdicts of the MLLM ``model_id`` under ``probe`` (default: the
        primary probe), each ``present`` / ``absent`` / ``not_assessed`` with its evidence.
        Baselines are not diagnosed: asking for one raises :class:`ReportLookupError`."""
        from .diagnosis import Verdict

        name = self._probe(probe)
        model = self.model(model_id)
        if model.kind != "mllm":
            raise ReportLookupError(f"model '{model_id}' is a {model.kind}: failure modes are diagnosed for MLLMs only")
        return [Verdict.from_dict(v) for v in (model.raw.get("diagnosis") or {}).get(name, [])]

    # -- tables ------------------------------------------------------------------------------

    def to_frame(self) -> Any:
        """A tidy :class:`pandas.DataFrame`, one row per model x layer x readout x probe, with the
        columns of ``report.csv`` (``model, title, kind, synthetic, probe, layer, readout, stage,
        module, depth, used, feeds_connector, width, accuracy, ci95_lo, ci95_hi, chance,
        permutation_p, control_accuracy, selectivity, balanced_accuracy, macro_f1, auroc, seed,
        n_train, n_val, n_test, hyper``; ``hyper`` as JSON text). Needs ``medprobe[pandas]``."""
        from .exporters import CSV_COLUMNS, csv_rows

        pd = _pandas()
        return pd.DataFrame(list(csv_rows(self.data)), columns=list(CSV_COLUMNS))

    def fhs_frame(self, probe: str | None = None) -> Any:
        """One row per model: ``model, kind, FHS_V, FHS_C, FHS_L, P_final, profile`` under
        ``probe`` (default primary); a module without probed layers is ``None``."""
        pd = _pandas()
        name = self._probe(probe)
        rows = []
        for m in self.models:
            if name not in (m.raw.get("fhs") or {}):
                continue
            prof = self.fhs(m.id, name)
            score = {k: (v.score if v.n_layers else None) for k, v in prof.modules().items()}
            rows.append({"model": m.id, "kind": m.kind, "FHS_V": score["vision"], "FHS_C": score["connector"],
                         "FHS_L": score["llm"], "P_final": prof.p_final, "profile": prof.text()})
        return pd.DataFrame(rows, columns=["model", "kind", "FHS_V", "FHS_C", "FHS_L", "P_final", "profile"])

    def diagnosis_frame(self, probe: str | None = None) -> Any:
        """One row per MLLM x failure mode: ``model, mode, verdict, summary`` under ``probe``."""
        pd = _pandas()
        name = self._probe(probe)
        rows = [
            {"model": m.id, "mode": v.mode, "verdict": v.verdict, "summary": v.summary}
            for m in self.models
            if m.kind == "mllm"
            for v in self.diagnosis(m.id, name)
        ]
        return pd.DataFrame(rows, columns=["model", "mode", "verdict", "summary"])

    # -- figures -----------------------------------------------------------------------------

    def plot_layers(self, probe: str | None = None) -> "Figure":
        """The layer-curve figure (the one in ``report.html``): test accuracy (y, [0, 1]) of every
        model against relative depth (x, [0, 1]), CI bands, P_final stars, baseline best lines and
        the chance line; a stage ribbon per MLLM below. A :class:`matplotlib.figure.Figure`
        (shown inline by Jupyter after ``%matplotlib inline``)."""
        from .figures import layer_curves_figure

        return layer_curves_figure(self.data, self._probe(probe))

    def plot_panels(self, probe: str | None = None) -> "Figure":
        """One small panel per report row (the second figure of ``report.html``): test accuracy
        (y, [0, 1]) per probed layer, x labelled with the real layer ids, stage shading, CI band,
        chance, best baseline and P_final with its 95% CI."""
        from .figures import layer_panels_figure

        return layer_panels_figure(self.data, self._probe(probe))

    def plot_fhs(self, probe: str | None = None) -> "Figure":
        """FHS_V -> FHS_C -> FHS_L -> P_final per model (baselines at FHS_V), as a Figure."""
        from .figures import fhs_profiles_figure

        return fhs_profiles_figure(self.data, self._probe(probe))

    # -- display -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        flag = ", SYNTHETIC" if self.synthetic else ""
        return f"Report({self.title!r}, models={self.model_ids}, probes={self.probes}{flag})"

    def _repr_html_(self) -> str:
        """A small summary table for notebooks: the synthetic banner, then one row per model
        (FHS_V, FHS_C, FHS_L, P_final, best layer, profile) under the primary probe -- the
        summary table of ``report.html``."""
        from .exporters import SUMMARY_HEADER, _html_table, _summary_rows

        parts = []
        if self.synthetic:
            parts.append(
                '<div style="background:#b00020;color:#fff;padding:6px 10px;font-weight:600">'
                f"&#9888; {html.escape(self.banner or 'synthetic inputs')}</div>"
            )
        parts.append(f"<p><b>{html.escape(self.title)}</b>: {len(self.models)} models, "
                     f"{html.escape(self.primary_probe)} probe</p>")
        parts.append(_html_table(SUMMARY_HEADER, _summary_rows(self.data, self.primary_probe)))
        return "\n".join(parts)
