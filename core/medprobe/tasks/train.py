"""``medprobe train``: traditional baselines and MLLM vision towers trained as classifiers.

::

    from medprobe.tasks.train import train
    run = train("resnet18", "synthetic:lesions", "runs/resnet18-ft", recipe="finetune", tiny=True, epochs=3)
    run.metrics["test"]["accuracy"], run.metrics["test"]["ci95"], run.best_epoch

Recipes (defaults in :data:`RECIPE_DEFAULTS`; every resolved value is recorded in ``train.json``):

``finetune``
    A baseline card (timm, open_clip, hf_clip): pretrained weights (or ``tiny`` / ``random_init`` /
    ``weights=PATH``), a new linear head for the dataset's classes on the pooled features
    (``encode_images``), the whole image backbone trained. AdamW (backbone ``lr`` 1e-4, head
    ``head_lr`` 1e-3, weight decay 0.05), 1 warm-up epoch then cosine, label smoothing 0.1,
    inverse-frequency class weights, light augmentation on the training split, batch 32, at most
    30 epochs, early stopping on validation accuracy with patience 5.
``linear``
    The same backbone frozen: every image is encoded once (no augmentation), the features are
    standardised on the training split and a linear head is trained on them (AdamW, head lr 1e-3,
    weight decay 1e-4, batch 64, at most 100 epochs, patience 15, same loss and early stopping).
``vision-tower``
    An MLLM card: its vision encoder alone, cut at the layer that feeds the connector and
    mean-pooled over image tokens (:mod:`medprobe.tasks.training.backbones`), plus a linear head, trained
    with cross-entropy: tower ``lr`` 1e-5, head 1e-3, weight decay 0.05, batch 16, at most 10
    epochs, patience 3, same loss, augmentation and schedule. ``freeze=True`` trains the head only
    (cached features, as ``linear``).

The test split is scored once, with the best epoch's checkpoint read back from the run's
safetensors files. Run directory layout and ``train.json`` fields: :mod:`medprobe.tasks.training.record`.
With ``probe_layers=True`` the trained model's layers are extracted into ``RUN/layers/`` (the
feature store of :mod:`medprobe.features.extract`) so ``medprobe report RUN`` also shows its layer probes.

The global torch seed is set to ``seed`` (head initialisation, dropout); batch order and
augmentation use numpy generators seeded from ``seed``.
"""

from __future__ import annotations

import datetime as _dt
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from ..models.prepare import LoadOptions, options_of

from .training.record import (
    BACKBONE_FILE,
    CHECKPOINT_DIR,
    HEAD_FILE,
    LAYERS_DIR,
    LOG_FILE,
    SPLITS,
    TRAIN_FILE,
    TRAIN_FORMAT,
    TrainError,
    TrainRun,
    split_metrics,
    write_record,
)

__all__ = ["train", "TrainRun", "TrainError", "RECIPES", "RECIPE_DEFAULTS"]

RECIPES = ("finetune", "linear", "vision-tower")
#: defaults per recipe; "frozen" applies to ``linear`` and ``vision-tower`` with ``freeze=True``
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "finetune": dict(epochs=30, lr=1e-4, head_lr=1e-3, batch_size=32, weight_decay=0.05, warmup_epochs=1.0,
                     patience=5, label_smoothing=0.1, grad_clip=1.0, augment=True, eval_batch_size=64),
    "vision-tower": dict(epochs=10, lr=1e-5, head_lr=1e-3, batch_size=16, weight_decay=0.05, warmup_epochs=1.0,
                         patience=3, label_smoothing=0.1, grad_clip=1.0, augment=True, eval_batch_size=32),
    "frozen": dict(epochs=100, lr=1e-3, head_lr=1e-3, batch_size=64, weight_decay=1e-4, warmup_epochs=0.0,
                   patience=15, label_smoothing=0.1, grad_clip=1.0, augment=False, eval_batch_size=64),
}


def resolve_hyper(recipe: str, frozen: bool, overrides: Mapping[str, Any], device: str) -> Any:
    """The recipe's defaults with the given overrides (``None`` values ignored). For frozen
    backbones ``lr`` is the head's learning rate (``head_lr`` follows it unless given)."""
    import torch

    from .training.loop import Hyper

    values = dict(RECIPE_DEFAULTS["frozen" if frozen else recipe])
    given = {k: v for k, v in overrides.items() if v is not None}
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise TrainError(f"unknown hyper-parameter(s) {unknown}; known: {sorted(values)}")
    values.update(given)
    if frozen and "lr" in given and "head_lr" not in given:
        values["head_lr"] = values["lr"]
    values["mixed_precision"] = bool(device.startswith("cuda") and torch.cuda.is_bf16_supported())
    hyper = Hyper(**values)
    hyper.check()
    return hyper


def _check_out(out: Path, overwrite: bool) -> None:
    """Before loading: refuse a folder that holds a trained run unless ``overwrite``."""
    if (out / TRAIN_FILE).exists() and not overwrite:
        raise TrainError(f"{out} already holds a trained run ({TRAIN_FILE}); choose another --out or pass --overwrite")


def _prepare_out(out: Path, overwrite: bool) -> None:
    """After the model loaded and every option was checked: clear an old run (``overwrite``)."""
    _check_out(out, overwrite)
    if out.exists() and overwrite:
        for name in (TRAIN_FILE, LOG_FILE, CHECKPOINT_DIR, LAYERS_DIR):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _load(ref: str, recipe: str, opts: "LoadOptions", device: str) -> Any:
    """Load the model a recipe trains (see :func:`train`) on the resolved ``device``."""
    from ..models.zoo import get_card
    from ..models.prepare import load_model

    card = get_card(ref)
    if recipe == "vision-tower" and card.kind != "mllm":
        raise TrainError(f"model '{card.id}' is a {card.kind}; the vision-tower recipe takes an MLLM card (finetune or linear train baselines)")
    if recipe != "vision-tower" and card.kind != "baseline":
        raise TrainError(f"model '{card.id}' is an MLLM; train its vision encoder with --recipe vision-tower")
    if opts.tiny:
        given = [k for k in opts.to_dict() if k not in ("tiny", "seed", "device", "dtype")]
        if given:
            flags = ["--" + k.replace("_", "-") for k in given]
            raise TrainError(f"--tiny builds the card's tiny random model; it takes no {', '.join(flags)}")
        loaded = load_model(ref, tiny=True, seed=opts.seed)
        loaded.model.to(device)
        loaded.device = device
        return loaded
    options = opts.replace(device=device, dtype=opts.dtype or ("auto" if recipe == "vision-tower" else "fp32"))
    if card.kind == "mllm":
        if opts.random_init:
            raise TrainError(f"model '{card.id}': --random-init is for baselines; MLLMs load a checkpoint (--weights DIR)")
        if opts.weights is not None:  # an MLLM's trained-from weights are a checkpoint directory
            options = options.replace(source=opts.source or opts.weights, weights=None)
    loaded = load_model(ref, options)
    ignored = loaded.extra.get("ignored_options") or []
    if "image_size" in ignored:
        raise TrainError(f"model '{card.id}': family '{card.family}' does not take --image-size")
    return loaded


def train(
    model: str,
    dataset: str | Any,
    out: str | Path,
    *,
    recipe: str = "finetune",
    epochs: int | None = None,
    lr: float | None = None,
    head_lr: float | None = None,
    batch_size: int | None = None,
    patience: int | None = None,
    weight_decay: float | None = None,
    freeze: bool = False,
    layer: str | None = None,
    probe_layers: bool = False,
    probe_layer_patterns: str | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    load: LoadOptions | None = None,
    **load_fields: Any,
) -> TrainRun:
    """Train a classifier and write the run directory ``out``; returns the :class:`TrainRun`.

    Args:
        model: a card id / alias / ``family:NAME`` (a baseline for ``finetune`` / ``linear``, an
            MLLM for ``vision-tower``).
        dataset: a dataset spec (``synthetic:lesions``, ``busi:/data/BUSI``) or an opened Dataset.
        out: the run directory (created; an existing trained run needs ``overwrite=True``).
        recipe: ``finetune``, ``linear`` or ``vision-tower`` (see the module docstring).
        epochs, lr, head_lr, batch_size, patience, weight_decay: override the recipe's defaults.
        freeze: train the head only on a frozen backbone (implied by ``linear``).
        layer: vision-tower only: the vision layer to pool (default: the one feeding the connector).
        probe_layers: extract the trained model's layers into ``out/layers/`` for the report
            (``probe_layer_patterns`` selects them; default all layers, ``vision`` for vision-tower).
        on_epoch: called with each epoch's log entry.
        load: which model, how (:class:`~medprobe.models.prepare.LoadOptions`); ``load_fields`` are
            its fields as keywords, as for :func:`medprobe.features.extract.extract` (``tiny=True``,
            ``device="cuda:0"``, ``seed`` -- also the training seed --, ``weights``, ``random_init``,
            ``image_size``, ``source``, ``dtype`` ...). ``tiny``: the card's seeded tiny random model
            (offline pipeline check; flagged synthetic), with no other weights option. ``weights``:
            baselines, a file or folder as ``extract --weights``; MLLMs, a checkpoint directory (taken
            as ``source``). ``random_init``: random weights on purpose (baselines). ``image_size``:
            real / random-init / local-weight baselines (timm, open_clip) and Qwen-VL MLLMs. ``dtype``
            unset: ``fp32`` for baselines, ``auto`` for vision-tower.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from ..datasets import open_dataset
    from ..features.provenance import synthetic_reasons
    from ..progress import progress_bar
    from ..runtime import git_hash, package_versions, resolve_device, torch_dtype
    from ..features.store import ensure_writable, sha256_file
    from .training.backbones import EncoderBackbone, VisionTowerBackbone
    from .training.data import AUGMENT, CLASS_WEIGHTING, SplitData, class_weights
    from .training.loop import ClassifierHead, FrozenFeatures, LiveFeatures, fit, predict

    t_start = time.perf_counter()
    opts = options_of(load if load is not None else LoadOptions(dtype=None), load_fields)
    seed = opts.seed
    if recipe not in RECIPES:
        raise TrainError(f"unknown recipe '{recipe}'; choose one of {list(RECIPES)}")
    if layer is not None and recipe != "vision-tower":
        raise TrainError("--layer applies to the vision-tower recipe only")
    frozen = recipe == "linear" or freeze
    if frozen and probe_layers:
        raise TrainError(
            "--probe-layers needs a trained backbone; with a frozen backbone (linear, --freeze) its layers are those of "
            "`medprobe extract` on the same weights"
        )
    if probe_layers:
        from ..layermap import check_patterns

        check_patterns(probe_layer_patterns, model)
    ds = open_dataset(dataset) if isinstance(dataset, str) else dataset
    data = SplitData.from_dataset(ds)
    weights_per_class = class_weights(data.labels["train"], ds.classes)
    dev = resolve_device(opts.device)
    hyper = resolve_hyper(recipe, frozen, {"epochs": epochs, "lr": lr, "head_lr": head_lr, "batch_size": batch_size,
                                           "patience": patience, "weight_decay": weight_decay}, dev)
    out = Path(out)
    ensure_writable(out, "the trained run (train.json, checkpoint/)", "choose a writable --out")
    _check_out(out, overwrite)

    loaded = _load(model, recipe, opts, dev)
    patterns = probe_layer_patterns or ("vision" if recipe == "vision-tower" else None)
    if probe_layers:
        loaded.layer_map.select(patterns)  # a pattern this model lacks is refused before training, not after
    _prepare_out(out, overwrite)
    adapter = loaded.adapter
    backbone = VisionTowerBackbone(loaded, adapter, layer) if recipe == "vision-tower" else EncoderBackbone(loaded, adapter)
    torch.manual_seed(seed)
    probe_images = data.images("train", [0, 1] if len(data.samples["train"]) > 1 else [0])
    if frozen:
        backbone.freeze()
    else:
        backbone.select_trainable(probe_images)
    with torch.no_grad():
        backbone.train(False)
        dim = int(backbone.features(backbone.inputs(probe_images[:1])).shape[1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ClassifierHead(dim, data.n_classes)
    head.to(dev)

    if frozen:
        bar = progress_bar(total=len(ds.samples), desc=f"encode {loaded.card.id}", enabled=progress)
        source = FrozenFeatures(backbone, data, hyper, dev, progress=bar.update)
        bar.close()
        head.standardise_on(source.cache["train"])
    else:
        source = LiveFeatures(backbone, data, hyper, dev)

    bar = progress_bar(total=hyper.epochs, desc=f"train {loaded.card.id} ({recipe})", enabled=progress)

    def epoch_done(entry: dict[str, Any]) -> None:
        bar.update(1)
        bar.set_postfix(loss=f"{entry['train_loss']:.3f}", val_acc=f"{entry['val_accuracy']:.3f}")
        if on_epoch is not None:
            on_epoch(entry)

    result = fit(source, head, weights_per_class, seed=seed, log_path=out / LOG_FILE, on_epoch=epoch_done)
    bar.close()

    # the best epoch's checkpoint, written and read back: test is scored once, with these weights
    ckpt = out / CHECKPOINT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    checkpoint: dict[str, Any] = {"head": f"{CHECKPOINT_DIR}/{HEAD_FILE}", "backbone": None, "sha256": {}}
    save_file(result.head_state, str(ckpt / HEAD_FILE), metadata={"format": TRAIN_FORMAT, "part": "head"})
    head.load_export(load_file(str(ckpt / HEAD_FILE)), str(ckpt / HEAD_FILE))
    checkpoint["sha256"]["head"] = sha256_file(ckpt / HEAD_FILE)
    if result.backbone_state is not None:
        save_file(result.backbone_state, str(ckpt / BACKBONE_FILE),
                  metadata={"format": TRAIN_FORMAT, "part": "backbone", "model": loaded.card.id})
        backbone.load_checkpoint_state(load_file(str(ckpt / BACKBONE_FILE), device="cpu"), str(ckpt / BACKBONE_FILE))
        checkpoint["backbone"] = f"{CHECKPOINT_DIR}/{BACKBONE_FILE}"
        checkpoint["sha256"]["backbone"] = sha256_file(ckpt / BACKBONE_FILE)

    metrics = {}
    for split in SPLITS:
        proba, _ = predict(source, head, split)
        metrics[split] = split_metrics(data.labels[split], proba, train_labels=data.labels["train"],
                                       n_classes=data.n_classes, seed=seed)

    trained_weights = loaded.weights
    if result.backbone_state is not None:
        trained_weights = f"{loaded.weights}+trained({recipe}):{(ckpt / BACKBONE_FILE).resolve()}"
    reasons = synthetic_reasons(loaded, ds)
    record: dict[str, Any] = {
        "format": TRAIN_FORMAT,
        "recipe": recipe,
        "frozen_backbone": frozen,
        "model": {
            "card": loaded.card.to_dict(),
            "weights": loaded.weights,
            "trained_weights": trained_weights,
            "adapter": adapter.family,
            "adapter_version": adapter.version,
            "feature_layer": backbone.layer.id if backbone.layer else None,
            "feature_dim": dim,
            "backbone": backbone.describe(),
            "trainable_parameters": int(sum(p.numel() for p in backbone.trainable.values())),
            "image_size": loaded.extra.get("image_size"),
        },
        "hyper": hyper.to_dict(),
        "seed": seed,
        "dataset": {
            "spec": ds.spec,
            "name": ds.name,
            "classes": list(ds.classes),
            "fingerprint": ds.fingerprint(),
            "synthetic": bool(getattr(ds, "synthetic", False)),
            "counts": data.counts(),
            "split_method": getattr(ds, "split_method", None),
        },
        "class_weights": {c: float(w) for c, w in zip(ds.classes, weights_per_class)},
        "class_weighting": CLASS_WEIGHTING,
        "preprocessing": {
            "eval": "the adapter's own preprocessing (pretrained config of the checkpoint)",
            "train_augmentation": ({k: list(v) if isinstance(v, tuple) else v for k, v in AUGMENT.items()}
                                   if hyper.augment and not frozen else None),
        },
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "best_val_accuracy": metrics["val"]["accuracy"],
        "metrics": metrics,
        "checkpoint": checkpoint,
        "log": LOG_FILE,
        "layers_run": None,
        "synthetic": bool(reasons),
        "synthetic_reasons": reasons,
        "device": dev,
        "versions": package_versions(),
        "git": git_hash(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
    }

    if probe_layers:
        from ..features.extract import extract

        # the layers of the trained backbone, in the dtype the model was loaded in
        loaded.model.to(dtype=torch_dtype(loaded.dtype))
        loaded.weights = trained_weights
        layers_run = extract(loaded, ds, out / LAYERS_DIR, layers=patterns, batch_size=hyper.eval_batch_size,
                             device=dev, seed=seed, progress=progress)
        record["layers_run"] = str(layers_run.path.relative_to(out))
    record["elapsed_s"] = time.perf_counter() - t_start
    write_record(out, record)
    return TrainRun.open(out)


def format_epoch(entry: Mapping[str, Any]) -> str:
    """One line of per-epoch progress: ``epoch 3: loss 0.912 acc 0.610 | val loss 0.951 acc 0.600 *``."""
    star = " *" if entry.get("best") else ""
    return (f"epoch {entry['epoch']:>3}: loss {entry['train_loss']:.4f} acc {entry['train_accuracy']:.3f} | "
            f"val loss {entry['val_loss']:.4f} acc {entry['val_accuracy']:.3f} | lr {entry['lr']:.2e}"
            f" ({entry['seconds']:.1f}s){star}")
