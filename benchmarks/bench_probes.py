"""Benchmark: batched probes vs the per-layer reference loop, measured side by side in one run.

    python benchmarks/bench_probes.py            # 60 layers, N = 5000, D 1024-4096 (needs ~10 GB RAM, long on CPU)
    python benchmarks/bench_probes.py --small    # 60 layers, N = 1000, D 64-256: about a minute on 2 cores
    python benchmarks/bench_probes.py --busi     # BUSI-shaped 7B run, --protocol cv, 3 seeds, 100 permutations

``--busi`` (issue 12, item 9): N = 780, K = 3; 32 vision layers of width 1,280, the connector and
28 LLM layers with two readouts each of width 3,584 (90 feature keys); ``linear`` under the cv
protocol (k = 5, seeds 0 1 2, 100 permutations) -- timed on all 90 keys, or on every
``--busi-stride``-th key and extrapolated by key count (said so in the output). The scikit-learn
loop doing the same protocol (:func:`medprobe.analysis.reference.reference_linear_design`, same
folds and permuted labels) runs on ``--sklearn-layers`` keys (one per width by default), for one
seed and ``--sklearn-permutations`` permutations, with its selection and permutation time
measured separately and extrapolated to 3 seeds, 100 permutations and 90 keys (marked
extrapolated). Both run in this one process, side by side.

Features are synthetic with a planted signal: each layer holds K class means in a random
8-dimensional subspace of its D dimensions, plus unit Gaussian noise, plus a large per-column
offset and scale (as LLM residual streams have); the signal strength rises through the "vision"
layers, dips at the "connector" and falls slowly through the "LLM" layers, so accuracies spread
between chance and ~1 instead of all saturating. Each layer is generated from its own seed and
written to a ``.npy`` memmap in a temporary folder *before* any timing starts, so both sides read
the same memory-mapped files, as they would read a medprobe feature store; generation is not timed.

For each probe (``--probes linear,mlp``) it prints the wall time of the batched implementation
(``medprobe.analysis.probes.probe_layers`` with controls off) and of the per-layer reference
(``medprobe.analysis.reference``: scikit-learn for ``linear``, a per-layer AdamW loop for
``mlp``), the speed ratio, and the test-accuracy differences layer by layer (mean / max absolute,
in accuracy points), plus for ``linear`` how often the chosen C is equal or adjacent on the grid.
``--mlp-layers`` limits the per-layer MLP reference to the first layers (its time is then
extrapolated linearly and marked so), because the reference is the slow side.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping

import numpy as np


class SyntheticFeatures(Mapping):
    """key -> (N, D) float32 generated on access from (seed, layer index)."""

    def __init__(self, n_layers: int, n: int, widths: list[int], labels: np.ndarray, n_classes: int, seed: int = 0):
        self.n_layers, self.n, self.widths, self.labels, self.k, self.seed = (
            n_layers,
            n,
            widths,
            labels,
            n_classes,
            seed,
        )
        self.keys_ = [f"layer.{i:02d}/image-mean" for i in range(n_layers)]

    def strength(self, i: int) -> float:
        t = i / max(1, self.n_layers - 1)
        if t < 0.35:  # vision: rising
            return 0.25 + 0.9 * t / 0.35
        if t < 0.4:  # connector: a dip
            return 0.8
        return 1.05 - 0.6 * (t - 0.4) / 0.6  # LLM: slowly falling

    def width(self, i: int) -> int:
        t = i / max(1, self.n_layers - 1)
        return self.widths[0] if t < 0.35 else self.widths[1] if t < 0.4 else self.widths[2]

    def __getitem__(self, key: str) -> np.ndarray:
        i = self.keys_.index(key)
        rng = np.random.default_rng([self.seed, i])
        d = self.width(i)
        basis = np.linalg.qr(rng.normal(size=(d, 8)))[0].T  # (8, d) orthonormal rows
        means = rng.normal(size=(self.k, 8)) * self.strength(i) / math.sqrt(2)
        x = rng.standard_normal((self.n, d), dtype=np.float32)
        x += (means @ basis)[self.labels].astype(np.float32)
        x *= rng.uniform(0.5, 20.0, size=d).astype(np.float32)
        x += rng.normal(scale=50.0, size=d).astype(np.float32)
        return x

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self) -> int:
        return self.n_layers


def materialize(feats: SyntheticFeatures, folder: str) -> dict[str, np.ndarray]:
    """Write every layer to ``folder/<i>.npy`` and return key -> read-only np.memmap."""
    out = {}
    for i, key in enumerate(feats):
        path = os.path.join(folder, f"{i:03d}.npy")
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(feats.n, feats.width(i)))
        arr[:] = feats[key]
        arr.flush()
        del arr
        out[key] = np.load(path, mmap_mode="r")
    return out


class Subset(Mapping):
    def __init__(self, base: Mapping, keys: list[str]):
        self.base, self.keys_ = base, keys

    def __getitem__(self, key):
        return self.base[key]

    def __iter__(self):
        return iter(self.keys_)

    def __len__(self):
        return len(self.keys_)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="N = 1000, D 64-256 (about a minute on 2 cores)")
    ap.add_argument("--layers", type=int, default=60)
    ap.add_argument("--n", type=int, default=None, help="samples (default 5000, --small 1000)")
    ap.add_argument(
        "--widths", default=None, help="vision,connector,llm widths (default 1024,2048,4096; --small 64,128,256)"
    )
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--probes", default="linear,mlp")
    ap.add_argument(
        "--mlp-layers",
        type=int,
        default=None,
        help="run the per-layer MLP reference on the first layers only (time extrapolated; --small: 6)",
    )
    ap.add_argument("--linear-layers", type=int, default=None, help="same for the scikit-learn reference")
    ap.add_argument(
        "--linear-permutations",
        type=int,
        default=20,
        help="also compare with controls on: control task + this many permutations (-1: skip)",
    )
    ap.add_argument(
        "--mlp-permutations",
        type=int,
        default=-1,
        help="also compare the MLP with controls on (default -1: skip; slow on CPU)",
    )
    ap.add_argument("--mlp-epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tmp", default=None, help="folder for the feature memmaps (default: a temporary folder)")
    ap.add_argument("--busi", action="store_true", help="the BUSI-shaped 7B cv benchmark (see the docstring)")
    ap.add_argument("--busi-stride", type=int, default=1, help="--busi: time every n-th key and extrapolate")
    ap.add_argument("--sklearn-layers", type=int, default=2, help="--busi: keys of the scikit-learn loop (1 per width)")
    ap.add_argument("--sklearn-permutations", type=int, default=3, help="--busi: permutations of the scikit-learn loop")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.busi:
        return busi(args)

    import torch

    from medprobe.analysis.probes import probe_layers
    from medprobe.analysis.reference import reference_linear, reference_mlp

    n = args.n or (1000 if args.small else 5000)
    if args.small and args.mlp_layers is None:
        args.mlp_layers = 6
    widths = [int(w) for w in (args.widths or ("64,128,256" if args.small else "1024,2048,4096")).split(",")]
    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, args.classes, size=n)
    splits = np.array(["train"] * int(0.6 * n) + ["val"] * int(0.2 * n) + ["test"] * (n - int(0.6 * n) - int(0.2 * n)))
    pairs = np.arange(n) // 2
    synth = SyntheticFeatures(args.layers, n, widths, labels, args.classes, args.seed)
    tmp = tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_probes_")
    t0 = time.perf_counter()
    feats = materialize(synth, tmp.name)
    keys_all = list(feats)
    print(f"# features written to memmaps in {time.perf_counter() - t0:.1f} s (not timed below)")
    print(
        f"# bench_probes: {args.layers} layers, N={n} (train/val/test {int(0.6 * n)}/{int(0.2 * n)}/{n - int(0.8 * n)}), "
        f"widths {widths}, K={args.classes}"
    )
    print(
        f"# python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"numpy {np.__version__}, cpu count {os.cpu_count()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}"
    )
    # warm-up: imports and one-time optimizer / solver set-up outside the timings
    small = Subset(feats, keys_all[:1])
    probe_layers(small, labels, splits, probe="linear", protocol="split", controls=False)
    probe_layers(small, labels, splits, probe="mlp", protocol="split", controls=False, epochs=1)
    reference_linear(small, labels, splits, coarse_grid=(1.0,), fine_steps=())

    runs = []
    for probe in [p.strip() for p in args.probes.split(",") if p.strip()]:
        runs.append((probe, False, 0))
        if probe == "linear" and args.linear_permutations >= 0:
            runs.append((probe, True, args.linear_permutations))
        if probe == "mlp" and args.mlp_permutations >= 0:
            runs.append((probe, True, args.mlp_permutations))
    for probe, controls, n_perm in runs:
        hyper = {"epochs": args.mlp_epochs} if probe == "mlp" else {}
        t0, c0 = time.perf_counter(), time.process_time()
        # the held-out split protocol, one seed; groups of two rows make the control task informative
        res = probe_layers(
            feats, labels, splits, probe=probe, protocol="split", seeds=(args.seed,), controls=controls,
            n_permutations=n_perm, groups=pairs, **hyper
        )
        t_batched, c_batched = time.perf_counter() - t0, time.process_time() - c0
        keys = keys_all
        limit = args.mlp_layers if probe == "mlp" else args.linear_layers
        if limit:
            keys = keys[:limit]
        ref_kw = {"controls": controls, "n_permutations": n_perm, "seed": args.seed, "groups": pairs}
        t0, c0 = time.perf_counter(), time.process_time()
        if probe == "linear":
            ref = reference_linear(Subset(feats, keys), labels, splits, **ref_kw)
        else:
            ref = reference_mlp(Subset(feats, keys), labels, splits, epochs=args.mlp_epochs, **ref_kw)
        t_ref, c_ref = time.perf_counter() - t0, time.process_time() - c0
        scale = len(keys_all) / len(keys)
        t_ref_all, c_ref_all = t_ref * scale, c_ref * scale
        diffs = np.array([res[k].accuracy - ref[k]["accuracy"] for k in keys])
        acc_b = np.mean([res[k].accuracy for k in keys])
        acc_r = np.mean([ref[k]["accuracy"] for k in keys])
        extrap = "" if len(keys) == len(keys_all) else f" (measured on {len(keys)} layers, extrapolated)"
        what = f"probe + control task + {n_perm} permutations" if controls else "probe only"
        print(f"\n## {probe}: {what}")
        print(f"batched   : {t_batched:8.1f} s wall, {c_batched:8.1f} s CPU for {len(keys_all)} layers")
        print(f"per-layer : {t_ref_all:8.1f} s wall, {c_ref_all:8.1f} s CPU for {len(keys_all)} layers{extrap}")
        print(f"speed-up  : {t_ref_all / t_batched:8.1f}x wall, {c_ref_all / c_batched:.1f}x CPU")
        print(
            f"accuracy  : batched mean {acc_b:.4f}, per-layer mean {acc_r:.4f}; |difference| mean "
            f"{100 * np.abs(diffs).mean():.2f} points, max {100 * np.abs(diffs).max():.2f} points (n_test={n - int(0.8 * n)})"
        )
        if controls:
            dc = np.array([res[k].control_accuracy - ref[k]["control_accuracy"] for k in keys])
            nb = np.mean([res[k].permutation_null["mean"] for k in keys]) if n_perm else float("nan")
            nr = np.mean([np.mean(ref[k]["null"]) for k in keys]) if n_perm else float("nan")
            print(
                f"controls  : control accuracy |difference| mean {100 * np.abs(dc).mean():.2f} points; "
                f"permutation-null mean accuracy batched {nb:.4f}, per-layer {nr:.4f}"
            )
        if probe == "linear":
            cb = np.array([res[k].hyper["C"] for k in keys])
            cr = np.array([ref[k]["hyper"]["C"] for k in keys])
            step = np.abs(np.log10(cb) - np.log10(cr))
            print(
                f"chosen C  : equal {np.mean(step < 1e-6):.0%}, within one fine step (10^0.25) {np.mean(step <= 0.25 + 1e-6):.0%}"
            )
        if probe == "mlp":
            eb = [res[k].hyper["epoch"] for k in keys]
            er = [ref[k]["hyper"]["epoch"] for k in keys]
            print(
                f"epochs    : chosen epoch batched median {int(np.median(eb))}, per-layer median {int(np.median(er))}"
            )
        sys.stdout.flush()
    return 0


class BusiFeatures(SyntheticFeatures):
    """The BUSI-shaped 7B layout: 32 vision keys (1,280), connector + 28 LLM layers x 2 readouts (3,584)."""

    def __init__(self, n: int, labels: np.ndarray, seed: int = 0):
        super().__init__(90, n, [1280, 3584, 3584], labels, 3, seed)
        self.keys_ = [f"vision.{i:02d}/image-mean" for i in range(32)]
        for lid in ["connector"] + [f"llm.{i:02d}" for i in range(28)]:
            self.keys_ += [f"{lid}/image-mean", f"{lid}/last-token"]

    def width(self, i: int) -> int:
        return 1280 if i < 32 else 3584


def busi(args) -> int:
    import torch

    from medprobe.analysis.probes import probe_layers
    from medprobe.analysis.protocol import ProbeSettings, make_design
    from medprobe.analysis.reference import reference_linear_design

    n, K = 780, 3
    rng = np.random.default_rng(args.seed)
    labels = rng.integers(0, K, size=n)
    splits = np.array(["train"] * 546 + ["val"] * 117 + ["test"] * 117)[rng.permutation(n)]
    synth = BusiFeatures(n, labels, args.seed)
    tmp = tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench_busi_")
    t0 = time.perf_counter()
    feats = materialize(synth, tmp.name)
    keys_all = list(feats)
    print(f"# features written to memmaps in {time.perf_counter() - t0:.1f} s (not timed below)")
    settings = ProbeSettings(protocol="cv", k=5, seeds=(0, 1, 2), n_permutations=100)
    print(f"# bench_probes --busi: {len(keys_all)} keys (32 x 1280, 58 x 3584), N={n}, K={K}; linear, cv k=5, "
          f"seeds 0 1 2, 100 permutations")
    print(f"# python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"numpy {np.__version__}, cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    probe_layers(Subset(feats, keys_all[:1]), labels, splits, probe="linear", k=3, seeds=(0,), n_permutations=1)
    keys = keys_all[:: args.busi_stride]
    t0, c0 = time.perf_counter(), time.process_time()
    res = probe_layers(Subset(feats, keys), labels, splits, probe="linear", settings=settings)
    t_b, c_b = time.perf_counter() - t0, time.process_time() - c0
    scale = len(keys_all) / len(keys)
    extrap = "" if len(keys) == len(keys_all) else f" (measured on {len(keys)} keys, extrapolated x{scale:.2f})"
    print(f"\n## linear, cv k=5, 3 seeds, 100 permutations")
    print(f"batched   : {t_b * scale:8.1f} s wall, {c_b * scale:8.1f} s CPU for {len(keys_all)} keys{extrap}; "
          f"measured {t_b:.1f} s wall on {len(keys)} keys")
    # the scikit-learn loop: one key per width, one seed, a few permutations; extrapolated
    sk_keys = [keys_all[0], keys_all[-1]][: max(1, args.sklearn_layers)]
    sub = ProbeSettings(protocol="cv", k=5, seeds=(0,), n_permutations=args.sklearn_permutations)
    design = make_design(labels, splits, sub)
    t_sk = 0.0
    per_width: dict[int, tuple[float, float]] = {}
    factor = 100 / max(1, args.sklearn_permutations)
    for key in sk_keys:
        tim: dict[str, float] = {}
        ref = reference_linear_design(feats, design, keys=[key], timings=tim)
        width = feats[key].shape[1]
        full = 3 * tim["select"] + factor * tim.get("permutations", 0.0)
        full_cpu = 3 * tim["select_cpu"] + factor * tim.get("permutations_cpu", 0.0)
        per_width[width] = (full, full_cpu)
        t_sk += tim["select"] + tim.get("permutations", 0.0)
        batched_seed0 = f"{res[key].seed_accuracies[0]:.3f}" if key in res.layers else "(key not in the batched subset)"
        print(f"sklearn   : {key} (D={width}): selection + real refit {tim['select']:.1f} s wall / {tim['select_cpu']:.1f} s "
              f"CPU (1 seed, 5 folds), {args.sklearn_permutations} permutations {tim.get('permutations', 0.0):.1f} s wall "
              f"-> {full:.1f} s wall / {full_cpu:.1f} s CPU per key for 3 seeds + 100 permutations (extrapolated); "
              f"seed-0 accuracy {ref[key]['accuracy']:.3f}, batched seed 0 {batched_seed0}")
    widths = [feats[k].shape[1] for k in keys_all]
    est = sum(per_width.get(w, per_width[max(per_width)])[0] for w in widths)
    est_cpu = sum(per_width.get(w, per_width[max(per_width)])[1] for w in widths)
    t_all, c_all = t_b * scale, c_b * scale
    print(f"sklearn   : {est:8.1f} s wall, {est_cpu:8.1f} s CPU for {len(keys_all)} keys (extrapolated from "
          f"{len(sk_keys)} keys, 1 seed, {args.sklearn_permutations} permutations; measured {t_sk:.1f} s wall)")
    print(f"speed-up  : {est / t_all:8.1f}x wall, {est_cpu / c_all:.1f}x CPU (extrapolated)")
    print(f"target    : <= 300 s batched: {'met' if t_all <= 300 else 'NOT met'} on wall, "
          f"{'met' if c_all <= 300 else 'NOT met'} on CPU time; >= 20x: {'met' if est / t_all >= 20 else 'NOT met'} "
          f"on wall, {'met' if est_cpu / c_all >= 20 else 'NOT met'} on CPU time")
    accs = [res[k].accuracy for k in keys]
    warn = sum(1 for k in keys if res[k].warnings)
    print(f"accuracy  : batched mean {np.mean(accs):.3f} (range {min(accs):.3f}-{max(accs):.3f}); "
          f"{warn} of {len(keys)} keys carry warnings")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
