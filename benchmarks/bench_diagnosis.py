"""Benchmark: calibration of the failure-mode diagnosis on simulated per-sample outcomes (known truth).

    python benchmarks/bench_diagnosis.py                     # the recorded grid (about 30 CPU-minutes)
    python benchmarks/bench_diagnosis.py --reps 50 --ns 780  # a quick look

SIMULATED DATA ONLY. Every replicate draws an MLLM-shaped model with
:func:`medprobe.analysis.simulation.simulate_model` (32 vision layers, the last feeding the
connector; one connector layer; 28 LLM layers plus the final-token readout; P_final; a 4-layer
reference baseline; 3 probe seeds with a 1-point seed SD; Gaussian-copula correlation ``rho``
between layers) and runs the diagnosis code itself (:func:`medprobe.analysis.diagnosis.diagnose`,
default thresholds, alpha 0.05, B = 2000 paired-bootstrap draws) on it.

Null cells: every layer, P_final and the baseline at the same true accuracy (0.8); the fraction
of replicates in which each mode is reported present is its false-positive rate (target <= 5%).
Power cells: a planted 10-point drop at the connector (``connector_drop``), at the LLM entry
(``entry_drop``), through the LLM (``llm_drop``: linear decline over the 28 layers), plus a
10-point baseline gap (``vision_gap``) and a 10-point answer loss (``semantic_drop``); the
fraction present for the planted mode is the power (target >= 80% at N = 780), the other modes'
rates are reported as cross-talk. Monte-Carlo standard error of a rate p over R replicates:
sqrt(p (1 - p) / R) (1.1 points at p = 5%, R = 400).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

from medprobe.analysis.diagnosis import MODES
from medprobe.analysis.simulation import PLANTED_MODE, run_cell

SHORT = {"visual_representation": "visual", "connector_fidelity": "connector", "llm_entry": "entry",
         "llm_comprehension": "llm", "semantic_mapping": "semantic"}  # fmt: skip


def fhs_coverage(n: int, rho: float, reps: int) -> dict[str, dict[str, float]]:
    """Coverage of the true FHS by the report's interval (``fhs_profile`` with a paired bootstrap,
    default B) and by the plain percentile interval, on the ``llm_drop`` layout (32 flat vision
    layers at 0.8, one connector, 28 LLM layers declining 0.8 -> 0.7). SIMULATED."""
    import numpy as np

    from medprobe.analysis.fhs import fhs_draws, fhs_profile, module_fhs
    from medprobe.analysis.inference import PairedBootstrap
    from medprobe.analysis.simulation import scenario, simulate_model

    truth = scenario("llm_drop")
    true = {"vision": module_fhs(truth.vision).score, "connector": truth.connector, "llm": module_fhs(truth.llm).score}
    acc = {m: {"basic": 0, "percentile": 0, "est": 0.0} for m in true}
    for r in range(reps):
        model = simulate_model(truth, n=n, rho=rho, rng=np.random.default_rng([7, r]))
        boot = PairedBootstrap(model["outcomes"], seed=r)
        pts = [dict(p, accuracy=boot.point(f"{p['id']}/{p['readout']}")) for p in model["points"]]
        prof = fhs_profile(pts, bootstrap=boot)
        for m, mod in prof.modules().items():
            keys = [f"{i}/image-mean" for i in mod.layers]
            lo, hi = np.quantile(fhs_draws(np.stack([boot.draws(k) for k in keys], axis=1)), [0.025, 0.975])
            acc[m]["basic"] += mod.ci95[0] <= true[m] <= mod.ci95[1]
            acc[m]["percentile"] += lo <= true[m] <= hi
            acc[m]["est"] += mod.score / reps
    return {m: {"true": true[m], "mean_estimate": a["est"], "coverage_basic": a["basic"] / reps,
                "coverage_percentile": a["percentile"] / reps} for m, a in acc.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ns", default="780,5856", help="sample sizes of the null cells")
    ap.add_argument("--rhos", default="0,0.5,0.8,0.95", help="inter-layer correlations")
    ap.add_argument("--reps", type=int, default=400, help="replicates per null cell")
    ap.add_argument("--power-reps", type=int, default=200, help="replicates per power cell")
    ap.add_argument("--power-n", type=int, default=780)
    ap.add_argument("--scenarios", default=",".join(PLANTED_MODE), help="planted scenarios for the power table")
    ap.add_argument("--fhs-reps", type=int, default=0, help="replicates of the FHS-interval coverage check (0: skip)")
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.ns.split(",") if x]
    rhos = [float(x) for x in args.rhos.split(",") if x]
    print(f"# bench_diagnosis (SIMULATED outcomes) python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")  # fmt: skip
    out: dict[str, list] = {"null": [], "power": []}
    t0 = time.time()
    print("\n## False-positive rate (null: every layer at 0.8), % of replicates present\n")
    print("| N | rho | reps | " + " | ".join(SHORT[m] for m in MODES) + " | max MC SE |")
    print("|---:|---:|---:|" + "---:|" * len(MODES) + "---:|")
    for n in ns:
        for rho in rhos:
            r = run_cell("null", n=n, rho=rho, reps=args.reps)
            se = max(math.sqrt(max(p, 0.05) * (1 - max(p, 0.05)) / args.reps) for p in r.values())
            out["null"].append({"n": n, "rho": rho, "reps": args.reps, "rates": r})
            print(f"| {n} | {rho} | {args.reps} | " + " | ".join(f"{100 * r[m]:.1f}" for m in MODES)
                  + f" | {100 * se:.1f} |", flush=True)  # fmt: skip
    print(f"\n## Power (planted 10-point effect, N = {args.power_n}), % of replicates present\n")
    print("| scenario | planted mode | rho | reps | " + " | ".join(SHORT[m] for m in MODES) + " |")
    print("|---|---|---:|---:|" + "---:|" * len(MODES))
    for name in [s for s in args.scenarios.split(",") if s]:
        for rho in rhos:
            r = run_cell(name, n=args.power_n, rho=rho, reps=args.power_reps)
            out["power"].append({"scenario": name, "planted": PLANTED_MODE[name], "n": args.power_n, "rho": rho,
                                 "reps": args.power_reps, "rates": r})  # fmt: skip
            cells = [f"**{100 * r[m]:.1f}**" if m == PLANTED_MODE[name] else f"{100 * r[m]:.1f}" for m in MODES]
            print(f"| {name} | {PLANTED_MODE[name]} | {rho} | {args.power_reps} | " + " | ".join(cells) + " |",
                  flush=True)  # fmt: skip
    if args.fhs_reps:
        print(f"\n## FHS interval coverage (llm_drop layout, N = {args.power_n}, rho = 0.8, {args.fhs_reps} reps)\n")
        print("| module | true FHS | mean estimate | coverage, basic (reported) | coverage, percentile |")
        print("|---|---:|---:|---:|---:|")
        cov = fhs_coverage(args.power_n, 0.8, args.fhs_reps)
        out["fhs_coverage"] = cov  # type: ignore[assignment]
        for m, c in cov.items():
            print(f"| {m} | {c['true']:.3f} | {c['mean_estimate']:.3f} | {100 * c['coverage_basic']:.0f}% | "
                  f"{100 * c['coverage_percentile']:.0f}% |", flush=True)  # fmt: skip
    elapsed = time.time() - t0
    print(f"\nelapsed {elapsed:.0f} s wall, {time.process_time():.0f} s CPU")
    worst_fp = max((v for c in out["null"] for v in c["rates"].values()), default=0.0)
    worst_power = min(c["rates"][c["planted"]] for c in out["power"]) if out["power"] else None
    print((f"worst null rate {100 * worst_fp:.1f}% (target <= 5%); " if out["null"] else "")
          + (f"lowest power {100 * worst_power:.1f}% (target >= 80%)" if worst_power is not None else ""))  # fmt: skip
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({**out, "elapsed_s": elapsed, "argv": sys.argv[1:]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
