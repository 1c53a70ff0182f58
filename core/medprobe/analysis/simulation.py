"""Simulated per-sample probe outcomes with known truth, for calibrating the diagnosis.

SIMULATED DATA ONLY: nothing here comes from a model. :func:`simulate_model` builds the inputs
:func:`medprobe.analysis.diagnosis.diagnose` takes -- points, ``outcomes`` key -> correct (S, N)
bool, the answers' correctness (N,) and a reference baseline -- for an MLLM-shaped layout
(``n_vision`` vision blocks, the last feeding the connector; one connector layer; ``n_llm`` LLM
layers with ``image-mean`` readouts and a ``last-token`` readout at the last one; P_final) whose
true accuracies are chosen by the caller (:func:`scenario`).

Correlated correctness (a Gaussian copula per sample): sample i has a latent difficulty
``g_i ~ N(0, 1)`` shared by every layer; layer l has its own ``h_li``; probe seed s of layer l
adds ``e_lsi``; all independent standard normals. The latent score is::

    u_lsi = sqrt(rho) g_i + sqrt(1 - rho) (sqrt(rho_seed) h_li + sqrt(1 - rho_seed) e_lsi)

and sample i is correct at (l, s) iff ``u_lsi < Phi^-1(a_l + delta_ls)``, with ``a_l`` the
layer's true accuracy and ``delta_ls ~ N(0, seed_sd)`` a per-fit accuracy shift (what changing
the probe seed does to a layer's accuracy). So every layer's expected accuracy is exactly ``a_l``,
the latent correlation between two layers is ``rho`` (between two seeds of one layer
``rho + (1 - rho) rho_seed``), and the correctness of two layers is correlated by the copula.
P_final and the baseline's layers are drawn the same way (one seed for P_final).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtri

from .diagnosis import BaselineRef

SCENARIOS = ("null", "connector_drop", "entry_drop", "llm_drop", "vision_gap", "semantic_drop")
#: the mode each planted scenario should make present
PLANTED_MODE = {
    "connector_drop": "connector_fidelity",
    "entry_drop": "llm_entry",
    "llm_drop": "llm_comprehension",
    "vision_gap": "visual_representation",
    "semantic_drop": "semantic_mapping",
}


@dataclass
class TrueAccuracies:
    """True accuracy per part of the layout (lists in pipeline order)."""

    vision: list[float]
    connector: float
    llm: list[float]
    last_token: float
    p_final: float
    baseline: list[float] = field(default_factory=list)


def scenario(name: str, *, base: float = 0.8, drop: float = 0.10, n_vision: int = 32, n_llm: int = 28,
             n_baseline: int = 4) -> TrueAccuracies:  # fmt: skip
    """True accuracies of a named scenario (:data:`SCENARIOS`): ``null`` -- every layer, P_final
    and the baseline at ``base``; the others plant one ``drop`` (10 points by default):
    ``connector_drop`` (connector and everything after it at base - drop), ``entry_drop`` (the LLM
    from its first layer on), ``llm_drop`` (the LLM image tokens decline linearly from base at the
    first layer to base - drop at the last; last token and P_final at base - drop),
    ``vision_gap`` (the baseline at base + drop), ``semantic_drop`` (P_final at base - drop)."""
    lo = base - drop
    v, c, llm, t, pf, b = [base] * n_vision, base, [base] * n_llm, base, base, [base] * n_baseline
    if name == "null":
        pass
    elif name == "connector_drop":
        c, llm, t, pf = lo, [lo] * n_llm, lo, lo
    elif name == "entry_drop":
        llm, t, pf = [lo] * n_llm, lo, lo
    elif name == "llm_drop":
        llm = list(np.linspace(base, lo, n_llm))
        t, pf = lo, lo
    elif name == "vision_gap":
        b = [base + drop] * n_baseline
    elif name == "semantic_drop":
        pf = lo
    else:
        raise ValueError(f"unknown scenario {name!r}; one of {SCENARIOS}")
    return TrueAccuracies(v, c, llm, t, pf, b)


def _correct(g: np.ndarray, acc: float, n_seeds: int, rho: float, rho_seed: float, seed_sd: float,
             rng: np.random.Generator) -> np.ndarray:  # fmt: skip
    """(S, N) bool for one layer (see the module docstring)."""
    n = g.size
    h = rng.standard_normal(n)
    e = rng.standard_normal((n_seeds, n))
    u = np.sqrt(rho) * g + np.sqrt(1 - rho) * (np.sqrt(rho_seed) * h + np.sqrt(1 - rho_seed) * e)
    shift = rng.normal(0.0, seed_sd, size=(n_seeds, 1)) if seed_sd > 0 else np.zeros((n_seeds, 1))
    thr = ndtri(np.clip(acc + shift, 1e-6, 1 - 1e-6))
    return u < thr


def simulate_model(
    truth: TrueAccuracies,
    *,
    n: int,
    n_seeds: int = 3,
    rho: float = 0.5,
    rho_seed: float = 0.9,
    seed_sd: float = 0.01,
    chance: float = 0.5,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One simulated MLLM (and its reference baseline) -> the keyword arguments of ``diagnose``
    (``points``, ``outcomes``, ``p_final_correct``, ``p_final_method``, ``baseline``).
    Points carry the simulated accuracies and ``chance``; ``p_final_method`` is ``"score"``."""
    g = rng.standard_normal(n)
    points: list[dict[str, Any]] = []
    outcomes: dict[str, np.ndarray] = {}

    def add(lid: str, stage: str, depth: float, acc: float, readout: str = "image-mean", **kw: Any) -> None:
        c = _correct(g, acc, n_seeds, rho, rho_seed, seed_sd, rng)
        key = f"{lid}/{readout}"
        outcomes[key] = c
        a = float(c.mean())
        points.append({"id": lid, "stage": stage, "depth": depth, "readout": readout, "accuracy": a,
                       "ci95": [a, a], "chance": chance, **kw})  # fmt: skip

    nv, nl = len(truth.vision), len(truth.llm)
    total = nv + 1 + nl
    for i, a in enumerate(truth.vision):
        add(f"vision.{i:02d}", "vision", i / total, a, feeds_connector=(i == nv - 1))
    add("connector", "connector", nv / total, truth.connector)
    for i, a in enumerate(truth.llm):
        add(f"llm.{i:02d}", "llm", (nv + 1 + i) / total, a)
    add(f"llm.{nl - 1:02d}", "llm", (total - 1) / total, truth.last_token, readout="last-token")
    p_final_correct = _correct(g, truth.p_final, 1, rho, rho_seed, 0.0, rng)[0]
    baseline = None
    if truth.baseline:
        b_out = {f"stage.{i}/image-mean": _correct(g, a, n_seeds, rho, rho_seed, seed_sd, rng)
                 for i, a in enumerate(truth.baseline)}  # fmt: skip
        best = max(b_out, key=lambda k: b_out[k].mean())
        acc = float(b_out[best].mean())
        baseline = BaselineRef("sim-baseline", best.split("/")[0], "image-mean", acc, (acc, acc), outcomes=b_out)
    return {
        "points": points,
        "outcomes": outcomes,
        "p_final_correct": p_final_correct,
        "p_final_method": "score",
        "baseline": baseline,
    }


def run_cell(
    name: str, *, n: int, rho: float, reps: int, seed: int = 0, n_seeds: int = 3, n_vision: int = 32,
    n_llm: int = 28, n_boot: int | None = None, **sim: Any,
) -> dict[str, float]:  # fmt: skip
    """Diagnose ``reps`` simulated models of scenario ``name``; returns mode -> fraction present."""
    from . import diagnosis

    truth = scenario(name, n_vision=n_vision, n_llm=n_llm)
    counts = dict.fromkeys(diagnosis.MODES, 0)
    kw = {} if n_boot is None else {"n_boot": n_boot}
    for r in range(reps):
        rng = np.random.default_rng([seed, r, int(rho * 1000), n])
        model = simulate_model(truth, n=n, n_seeds=n_seeds, rho=rho, rng=rng, **sim)
        pts = model.pop("points")
        for v in diagnosis.diagnose(pts, seed=r, **model, **kw):
            counts[v.mode] += v.verdict == diagnosis.PRESENT
    return {m: counts[m] / reps for m in counts}
