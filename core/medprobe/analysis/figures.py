"""Report figures as PNG bytes, drawn with matplotlib's object API on the Agg canvas.

No pyplot and no global backend switch: ``matplotlib.figure.Figure`` renders to PNG through Agg
whatever backend the host process uses, and nothing needs a display or the network.

``layer_curves_figure(report, probe)`` (PNG bytes: ``layer_curves_png``)
    Probe accuracy of every model against relative depth (0 = first probed layer, 1 = last) on one
    axis: MLLM ``image-mean`` curves with their 95% CI bands (blocks the MLLM never uses drawn
    dotted), the final-input-token probe (hollow marker) and P_final (star) at the end, baseline
    curves faint with a dashed horizontal line at each baseline's best accuracy, and the
    majority-class chance line. Below it, one ribbon per MLLM shows its stage bands
    (vision / connector / LLM) on the same depth axis.
``layer_panels_figure(report, probe)`` (PNG bytes: ``layer_panels_png``)
    One small panel per report row (so three or more models' CI bands never overlap): x = the
    model's probed layers in order, labelled with their real layer ids, background shaded by
    stage; y = test accuracy with its 95% CI band; the best baseline layer as a dashed line in
    each MLLM panel, chance as a dotted line, P_final as a star with its 95% CI at the right.
``fhs_profiles_figure(report, probe)`` (PNG bytes: ``fhs_profiles_png``)
    FHS_V -> FHS_C -> FHS_L -> P_final per model (error bars: the 95% intervals when the profile
    carries ``ci95``); baselines are shown at FHS_V.

Every legend and panel title names the row's condition (``pretrained``, ``random weights``,
``tiny random``, ``+ LoRA ...``) so two runs of one card stay apart.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

from matplotlib.figure import Figure

STAGE_COLORS = {
    "stem": "#c7d7ea",
    "cnn": "#c7d7ea",
    "vision": "#c7d7ea",
    "connector": "#f6d7a7",
    "llm": "#cfe8cf",
    "head": "#e3d3ea",
}
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _label(model: Mapping[str, Any]) -> str:
    """The title of a report row with its condition (unless the title already carries it)."""
    cond = model.get("condition")
    text = (cond.get("label") or cond.get("weights") or "") if isinstance(cond, Mapping) else (cond or "")
    title = str(model["title"])
    return f"{title} [{text}]" if text and str(text) not in title else title


def _p_final_offsets(models: list[Mapping[str, Any]], base: float = 1.03, step: float = 0.018) -> dict[int, float]:
    """x position of each model's P_final star: models whose P_final values are within 0.01 of
    another's are spread apart by ``step`` so equal values never hide each other."""
    xs: dict[int, float] = {}
    placed: list[tuple[float, float]] = []
    for i, m in enumerate(models):
        p = m.get("p_final")
        if p is None:
            continue
        x = base
        while any(abs(px - x) < step / 2 and abs(py - p) < 0.01 for px, py in placed):
            x += step
        placed.append((x, p))
        xs[i] = x
    return xs


def _rows(model: Mapping[str, Any], probe: str, readout: str | None = None) -> list[dict[str, Any]]:
    rows = [r for r in model["layers"] if r["probe"] == probe and r.get("accuracy") is not None]
    if readout is not None:
        rows = [r for r in rows if r["readout"] == readout]
    return sorted(rows, key=lambda r: r["depth"])


def layer_curves_png(report: Mapping[str, Any], probe: str) -> bytes:
    """The layer-curve figure of ``probe`` (see the module docstring) as PNG bytes."""
    return _png(layer_curves_figure(report, probe))


def layer_curves_figure(report: Mapping[str, Any], probe: str) -> Figure:
    """The layer-curve figure of ``probe`` (see the module docstring): x = relative depth in
    [0, 1], y = test accuracy in [0, 1]; one stage ribbon per MLLM below."""
    models = report["models"]
    mllms = [m for m in models if m["kind"] == "mllm"]
    baselines = [m for m in models if m["kind"] == "baseline"]
    n_rib = max(1, len(mllms))
    fig = Figure(figsize=(10.5, 5.2 + 0.28 * n_rib))
    gs = fig.add_gridspec(2, 1, height_ratios=[5.0, 0.32 * n_rib + 0.25], hspace=0.08)
    ax = fig.add_subplot(gs[0])
    rib = fig.add_subplot(gs[1], sharex=ax)
    chance = None
    star_x = _p_final_offsets(mllms)
    for i, m in enumerate(mllms):
        color = PALETTE[i % len(PALETTE)]
        rows = _rows(m, probe, "image-mean")
        if not rows:
            continue
        chance = chance if chance is not None else rows[0].get("chance")
        xs = [r["depth"] for r in rows]
        lo = [r["ci95"][0] for r in rows]
        hi = [r["ci95"][1] for r in rows]
        ax.fill_between(xs, lo, hi, color=color, alpha=0.15, linewidth=0)
        used = [r for r in rows if r["used"]]
        ax.plot(
            [r["depth"] for r in used], [r["accuracy"] for r in used], "-o", color=color, ms=3, lw=1.6, label=_label(m)
        )
        unused = [r for r in rows if not r["used"]]
        if unused:  # dotted branch from the layer that feeds the connector through the unused blocks
            anchor = [r for r in used if r["depth"] < unused[0]["depth"]][-1:]
            branch = anchor + unused
            ax.plot(
                [r["depth"] for r in branch],
                [r["accuracy"] for r in branch],
                ":",
                color=color,
                lw=1.3,
                marker="o",
                ms=2.5,
                label=f"{_label(m)} (vision blocks not passed on)",
            )
        last = _rows(m, probe, "last-token")
        if last:
            ax.plot(
                [last[-1]["depth"]],
                [last[-1]["accuracy"]],
                "o",
                mfc="white",
                mec=color,
                ms=8,
                mew=1.6,
                label=f"{_label(m)} final-input-token probe",
            )
        if i in star_x:
            ci = m.get("p_final_ci95")
            yerr = [[m["p_final"] - ci[0]], [ci[1] - m["p_final"]]] if ci else None
            ax.errorbar([star_x[i]], [m["p_final"]], yerr=yerr, fmt="*", color=color, ms=13, mec="black", mew=0.5,
                        elinewidth=1.0, capsize=2, label=f"{_label(m)} P_final" + (" ± 95% CI" if ci else ""))
        # stage ribbon
        stages: dict[str, list[float]] = {}
        for r in rows:
            stages.setdefault(r["module"], []).append(r["depth"])
        for module, ds in stages.items():
            lo_d, hi_d = min(ds), max(ds)
            width = max(hi_d - lo_d, 0.008)
            rib.broken_barh(
                [(lo_d - 0.004, width + 0.008)], (i - 0.4, 0.8), facecolors=STAGE_COLORS.get(module, "#dddddd")
            )
            rib.text(lo_d + width / 2, i, module, ha="center", va="center", fontsize=7)
    for j, m in enumerate(baselines):
        color = PALETTE[(len(mllms) + j) % len(PALETTE)]
        rows = _rows(m, probe)
        if not rows:
            continue
        chance = chance if chance is not None else rows[0].get("chance")
        curve = [r for r in rows if r["readout"] == "image-mean"]
        if curve:
            ax.plot([r["depth"] for r in curve], [r["accuracy"] for r in curve], "-s", color=color, lw=1.3, ms=3,
                    alpha=0.85, label=f"baseline {_label(m)} (curve)")
        best = max(rows, key=lambda r: r["accuracy"])
        ax.axhline(
            best["accuracy"],
            color=color,
            ls="--",
            lw=1.2,
            label=f"baseline {_label(m)} best ({best['id']}) {best['accuracy']:.3f}",
        )
    if chance is not None:
        ax.axhline(chance, color="#777777", ls=":", lw=1.0, label=f"majority-class chance {chance:.3f}")
    ax.set_ylabel(f"test accuracy ({probe} probe)")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlim(-0.03, max([1.05] + [x + 0.02 for x in star_x.values()]))
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    title = f"Layer-wise probe accuracy ({probe})"
    if report.get("synthetic"):
        title += " — SYNTHETIC: pipeline check only"
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    rib.set_yticks(range(len(mllms)))
    rib.set_yticklabels([_label(m) for m in mllms], fontsize=7)
    rib.set_ylim(-0.6, n_rib - 0.4)
    rib.set_xlabel("relative depth (0 = first probed layer, 1 = last)")
    rib.tick_params(axis="y", length=0)
    return fig


def _errbar(ax: Any, xs: list[float], ys: list[float], cis: list[Any], color: str) -> None:
    """Vertical 95% interval bars where an interval is known (``[lo, hi]``; ``None`` skipped)."""
    for x, y, ci in zip(xs, ys, cis):
        if ci and len(ci) == 2 and None not in ci:
            ax.errorbar([x], [y], yerr=[[y - ci[0]], [ci[1] - y]], fmt="none", ecolor=color, elinewidth=1.0, capsize=3)


def layer_panels_png(report: Mapping[str, Any], probe: str) -> bytes:
    """The per-model panels figure of ``probe`` (see the module docstring) as PNG bytes."""
    return _png(layer_panels_figure(report, probe))


def layer_panels_figure(report: Mapping[str, Any], probe: str, cols: int = 3) -> Figure:
    """One small panel per report row (see the module docstring): x = probed layer index in the
    model's order (tick labels: real layer ids, thinned to at most 12), y = test accuracy in [0, 1]."""
    models = [m for m in report["models"] if _rows(m, probe)]
    n = max(1, len(models))
    cols = max(1, min(cols, n))
    nrows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.1 * nrows))
    baselines = [m for m in report["models"] if m["kind"] == "baseline" and _rows(m, probe)]
    best_base = max((r for b in baselines for r in _rows(b, probe)), key=lambda r: r["accuracy"], default=None)
    best_base_model = next((b for b in baselines if best_base in _rows(b, probe)), None)
    for k, m in enumerate(models):
        ax = fig.add_subplot(nrows, cols, k + 1)
        color = PALETTE[k % len(PALETTE)]
        rows = _rows(m, probe, "image-mean") or _rows(m, probe, _rows(m, probe)[0]["readout"])
        xs = list(range(len(rows)))
        # stage shading behind the curve
        start = 0
        for j in range(1, len(rows) + 1):
            if j == len(rows) or rows[j]["module"] != rows[start]["module"]:
                ax.axvspan(start - 0.5, j - 0.5, color=STAGE_COLORS.get(rows[start]["module"], "#eeeeee"), alpha=0.45,
                           linewidth=0)
                ax.text((start + j - 1) / 2, 0.02, rows[start]["module"], ha="center", va="bottom", fontsize=7)
                start = j
        ax.fill_between(xs, [r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows], color=color, alpha=0.25,
                        linewidth=0)
        ax.plot(xs, [r["accuracy"] for r in rows], "-o", color=color, ms=3, lw=1.5, label=f"{rows[0]['readout']}")
        unused = [x for x, r in zip(xs, rows) if not r["used"]]
        if unused:
            ax.plot(unused, [rows[x]["accuracy"] for x in unused], "o", mfc="white", mec=color, ms=4,
                    label="not passed on")
        last = _rows(m, probe, "last-token")
        if last and rows[0]["readout"] != "last-token":
            ax.plot([len(rows) - 1], [last[-1]["accuracy"]], "D", mfc="white", mec=color, ms=6, label="last-token")
        if m.get("p_final") is not None:
            ci = m.get("p_final_ci95")
            yerr = [[m["p_final"] - ci[0]], [ci[1] - m["p_final"]]] if ci else None
            ax.errorbar([len(rows) - 0.3], [m["p_final"]], yerr=yerr, fmt="*", color=color, ms=11, mec="black",
                        mew=0.5, capsize=2, label="P_final")
        if m["kind"] == "mllm" and best_base is not None:
            ax.axhline(best_base["accuracy"], color="#444444", ls="--", lw=1.0,
                       label=f"best baseline ({best_base_model['title'] if best_base_model else '?'})")
        chance = rows[0].get("chance")
        if chance is not None:
            ax.axhline(chance, color="#777777", ls=":", lw=1.0, label="chance")
        step = max(1, (len(rows) + 11) // 12)
        ticks = xs[::step]
        ax.set_xticks(ticks)
        ax.set_xticklabels([rows[x]["id"] for x in ticks], rotation=60, ha="right", fontsize=6)
        ax.set_xlim(-0.6, len(rows) - 0.4 + (0.5 if m.get("p_final") is not None else 0))
        ax.set_ylim(0.0, 1.05)
        ax.grid(alpha=0.25, axis="y")
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(_label(m) + (f" ({m['kind']})" if m["kind"] != "mllm" else ""), fontsize=8)
        if k % cols == 0:
            ax.set_ylabel(f"test accuracy ({probe})", fontsize=8)
        ax.legend(fontsize=6, loc="lower right", bbox_to_anchor=(1.0, 0.07), frameon=True, framealpha=0.8)
    title = f"Per-model layer curves ({probe} probe)"
    if report.get("synthetic"):
        title += " — SYNTHETIC: pipeline check only"
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def fhs_profiles_png(report: Mapping[str, Any], probe: str) -> bytes:
    """FHS_V -> FHS_C -> FHS_L -> P_final per model under ``probe``, as PNG bytes."""
    return _png(fhs_profiles_figure(report, probe))


def fhs_profiles_figure(report: Mapping[str, Any], probe: str) -> Figure:
    """FHS_V -> FHS_C -> FHS_L -> P_final per model under ``probe`` (y: FHS score, or accuracy
    in [0, 1] for P_final)."""
    labels = ["FHS_V", "FHS_C", "FHS_L", "P_final"]
    fig = Figure(figsize=(8.5, 4.3))
    ax = fig.add_subplot(1, 1, 1)
    for i, m in enumerate(report["models"]):
        prof = m.get("fhs", {}).get(probe)
        if not prof:
            continue
        color = PALETTE[i % len(PALETTE)]
        mods = [prof["vision"], prof["connector"], prof["llm"]]
        vals = [mods[0]["score"], mods[1]["score"], mods[2]["score"], prof.get("p_final")]
        cis = [mod.get("ci95") for mod in mods] + [m.get("p_final_ci95")]
        if m["kind"] == "baseline":
            if vals[0] is not None:
                ax.plot([0], [vals[0]], "D", color=color, ms=7, label=f"{_label(m)} (baseline)")
                _errbar(ax, [0], [vals[0]], [cis[0]], color)
            continue
        xs = [k for k, v in enumerate(vals) if v is not None]
        shift = 0.04 * (i - (len(report["models"]) - 1) / 2)  # keep equal values of different models apart
        ax.plot([k + shift for k in xs], [vals[k] for k in xs], "-o", color=color, lw=1.6, label=_label(m))
        _errbar(ax, [k + shift for k in xs], [vals[k] for k in xs], [cis[k] for k in xs], color)
    ax.set_xticks(range(4))
    ax.set_xticklabels(labels)
    ax.set_ylabel("score (FHS) / accuracy (P_final)")
    ax.grid(alpha=0.3)
    title = f"Feature Health Score profiles ({probe})"
    if report.get("synthetic"):
        title += " — SYNTHETIC"
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return fig
