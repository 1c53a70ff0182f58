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
``fhs_profiles_figure(report, probe)`` (PNG bytes: ``fhs_profiles_png``)
    FHS_V -> FHS_C -> FHS_L -> P_final per model; baselines are shown at FHS_V.
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
            [r["depth"] for r in used], [r["accuracy"] for r in used], "-o", color=color, ms=3, lw=1.6, label=m["title"]
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
                label=f"{m['title']} (vision blocks not passed on)",
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
                label=f"{m['title']} final-input-token probe",
            )
        if m.get("p_final") is not None:
            ax.plot([1.02], [m["p_final"]], "*", color=color, ms=13, label=f"{m['title']} P_final")
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
            ax.plot([r["depth"] for r in curve], [r["accuracy"] for r in curve], "-", color=color, lw=0.9, alpha=0.35)
        best = max(rows, key=lambda r: r["accuracy"])
        ax.axhline(
            best["accuracy"],
            color=color,
            ls="--",
            lw=1.2,
            label=f"baseline {m['title']} best ({best['id']}) {best['accuracy']:.3f}",
        )
    if chance is not None:
        ax.axhline(chance, color="#777777", ls=":", lw=1.0, label=f"majority-class chance {chance:.3f}")
    ax.set_ylabel(f"test accuracy ({probe} probe)")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlim(-0.03, 1.05)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    title = f"Layer-wise probe accuracy ({probe})"
    if report.get("synthetic"):
        title += " — SYNTHETIC: pipeline check only"
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
    rib.set_yticks(range(len(mllms)))
    rib.set_yticklabels([m["title"] for m in mllms], fontsize=7)
    rib.set_ylim(-0.6, n_rib - 0.4)
    rib.set_xlabel("relative depth (0 = first probed layer, 1 = last)")
    rib.tick_params(axis="y", length=0)
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
        vals = [prof["vision"]["score"], prof["connector"]["score"], prof["llm"]["score"], prof.get("p_final")]
        if m["kind"] == "baseline":
            if vals[0] is not None:
                ax.plot([0], [vals[0]], "D", color=color, ms=7, label=f"{m['title']} (baseline)")
            continue
        xs = [k for k, v in enumerate(vals) if v is not None]
        ax.plot(xs, [vals[k] for k in xs], "-o", color=color, lw=1.6, label=m["title"])
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
