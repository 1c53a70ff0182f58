"""The training loop: classifier head, optimiser, schedule, loss, early stopping, epoch log.

* **Head**: :class:`ClassifierHead`, ``logits = ((x - mean) / scale) @ W.T + b`` on the pooled
  (B, D) features. ``mean`` / ``scale`` standardise frozen features (training-split statistics);
  they stay 0 / 1 when the backbone trains.
* **Optimiser**: AdamW, two parameter groups: the backbone's trainable parameters at ``lr`` and the
  head at ``head_lr``; weight decay ``weight_decay`` on both; gradient norm clipped at
  ``grad_clip``.
* **Schedule** (per optimiser step): linear warm-up over ``warmup_epochs`` epochs of steps, then
  cosine decay to 0 at the end of ``epochs`` (early stopping does not shorten the schedule).
* **Loss**: cross-entropy with label smoothing ``label_smoothing`` and the inverse-frequency class
  weights of :func:`medprobe.tasks.training.data.class_weights` (the same criterion on validation).
* **Early stopping**: after every epoch the validation split is scored; the best epoch has the
  highest validation accuracy (ties: lower validation loss, then the earlier epoch). Training stops
  after ``patience`` epochs without a new best. The best epoch's weights are kept (CPU copy).
* **Mixed precision**: on CUDA the backbone runs under ``torch.autocast(bfloat16)`` when the GPU
  supports it; the head and the loss stay float32. CPU runs are float32 throughout.
* **Log**: one JSON line per epoch in ``train_log.jsonl``: ``epoch`` (1-based), ``train_loss``,
  ``train_accuracy`` (on the augmented training batches), ``val_loss``, ``val_accuracy``,
  ``val_balanced_accuracy``, ``lr``, ``head_lr`` (at the epoch's end), ``seconds``, ``best``.

Two feature sources feed the same loop: :class:`FrozenFeatures` (the backbone runs once per image,
without augmentation, and the head trains on the cached (N, D) features) and
:class:`LiveFeatures` (every step loads, augments and encodes its images with gradients).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ...analysis.metrics import balanced_accuracy
from .backbones import Backbone
from .data import SplitData, augment, epoch_batches, eval_batches
from .record import TrainError


@dataclass
class Hyper:
    """Resolved hyper-parameters of one run (all recorded in ``train.json``)."""

    epochs: int
    lr: float
    head_lr: float
    batch_size: int
    weight_decay: float
    warmup_epochs: float
    patience: int
    label_smoothing: float
    grad_clip: float
    augment: bool
    eval_batch_size: int
    mixed_precision: bool = False

    def check(self) -> None:
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be at least 1 (got {self.epochs})")
        if self.batch_size < 1 or self.eval_batch_size < 1:
            problems.append(f"batch sizes must be at least 1 (got {self.batch_size}, {self.eval_batch_size})")
        if not (self.lr > 0 and self.head_lr > 0):
            problems.append(f"learning rates must be positive (got lr={self.lr}, head_lr={self.head_lr})")
        if self.patience < 1:
            problems.append(f"patience must be at least 1 (got {self.patience})")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must lie in [0, 1) (got {self.label_smoothing})")
        if self.warmup_epochs < 0 or self.weight_decay < 0:
            problems.append("warmup_epochs and weight_decay must not be negative")
        if problems:
            raise TrainError("invalid hyper-parameters: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ClassifierHead(nn.Module):
    """Standardise then linear: (B, D) -> (B, K) logits. Buffers ``mean`` (D,), ``scale`` (D,);
    parameters ``linear.weight`` (K, D), ``linear.bias`` (K,)."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.linear = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.scale)

    def standardise_on(self, x: torch.Tensor) -> None:
        """Set ``mean`` / ``scale`` from training features (N, D); near-constant columns get scale 1."""
        mean = x.mean(dim=0)
        std = x.std(dim=0, unbiased=False)
        self.mean.copy_(mean)
        self.scale.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def export(self) -> dict[str, torch.Tensor]:
        """``weight`` (K, D), ``bias`` (K,), ``mean`` (D,), ``scale`` (D,) as CPU float32 copies."""
        return {
            "weight": self.linear.weight.detach().to("cpu", torch.float32, copy=True),
            "bias": self.linear.bias.detach().to("cpu", torch.float32, copy=True),
            "mean": self.mean.detach().to("cpu", torch.float32, copy=True),
            "scale": self.scale.detach().to("cpu", torch.float32, copy=True),
        }

    def load_export(self, state: dict[str, torch.Tensor], source: str) -> None:
        want = {"weight": tuple(self.linear.weight.shape), "bias": tuple(self.linear.bias.shape),
                "mean": tuple(self.mean.shape), "scale": tuple(self.scale.shape)}
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            raise TrainError(f"{source}: head tensors {got} do not match the expected {want}")
        with torch.no_grad():
            self.linear.weight.copy_(state["weight"])
            self.linear.bias.copy_(state["bias"])
            self.mean.copy_(state["mean"])
            self.scale.copy_(state["scale"])


def _autocast(device: str, enabled: bool) -> Any:
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.startswith("cuda"))


class FeatureSource:
    """Pooled features for rows of a split; see the module docstring."""

    def __init__(self, backbone: Backbone, data: SplitData, hyper: Hyper, device: str):
        self.backbone = backbone
        self.data = data
        self.hyper = hyper
        self.device = device

    def train_features(self, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        raise NotImplementedError

    def eval_features(self, split: str, index: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def set_train(self, mode: bool) -> None:
        """Put the backbone in train (``True``) or eval mode."""


class FrozenFeatures(FeatureSource):
    """Encode every image once (eval mode, no augmentation, no gradients) and serve the cache."""

    def __init__(self, backbone: Backbone, data: SplitData, hyper: Hyper, device: str, progress: Callable[[int], None] | None = None):
        super().__init__(backbone, data, hyper, device)
        backbone.train(False)
        self.cache: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for split, samples in data.samples.items():
                parts = []
                for idx in eval_batches(len(samples), hyper.eval_batch_size):
                    with _autocast(device, hyper.mixed_precision):
                        parts.append(backbone.features(backbone.inputs(data.images(split, idx))).float())
                    if progress is not None:
                        progress(len(idx))
                self.cache[split] = torch.cat(parts).to(device)

    def train_features(self, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        return self.cache["train"][torch.as_tensor(index, device=self.device)]

    def eval_features(self, split: str, index: np.ndarray) -> torch.Tensor:
        return self.cache[split][torch.as_tensor(index, device=self.device)]


class LiveFeatures(FeatureSource):
    """Load, (augment,) preprocess and encode images at every step, with gradients in training."""

    def train_features(self, index: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        images = self.data.images("train", index)
        if self.hyper.augment:
            images = [augment(im, rng) for im in images]
        with _autocast(self.device, self.hyper.mixed_precision):
            return self.backbone.features(self.backbone.inputs(images)).float()

    def eval_features(self, split: str, index: np.ndarray) -> torch.Tensor:
        with _autocast(self.device, self.hyper.mixed_precision):
            return self.backbone.features(self.backbone.inputs(self.data.images(split, index))).float()

    def set_train(self, mode: bool) -> None:
        self.backbone.train(mode)


@dataclass
class FitResult:
    """What :func:`fit` returns: the best epoch (1-based), the epochs run, whether early stopping
    ended training, the best epoch's weights (CPU) and the per-epoch log."""

    best_epoch: int
    epochs_run: int
    stopped_early: bool
    backbone_state: dict[str, torch.Tensor] | None
    head_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]] = field(default_factory=list)


def predict(source: FeatureSource, head: ClassifierHead, split: str, criterion: nn.Module | None = None) -> tuple[np.ndarray, float | None]:
    """Class probabilities (n, K) float64 of every row of ``split`` (eval mode, no gradients) and
    the mean ``criterion`` loss (None without a criterion)."""
    source.set_train(False)
    head.eval()
    n = len(source.data.samples[split])
    labels = torch.as_tensor(source.data.labels[split], device=source.device)
    probs, loss_sum = [], 0.0
    with torch.no_grad():
        for idx in eval_batches(n, source.hyper.eval_batch_size):
            logits = head(source.eval_features(split, idx))
            probs.append(torch.softmax(logits, dim=1).double().cpu())
            if criterion is not None:
                loss_sum += float(criterion(logits, labels[torch.as_tensor(idx, device=source.device)])) * len(idx)
    return torch.cat(probs).numpy(), (loss_sum / n if criterion is not None else None)


def _schedule(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        progress = min(1.0, (step - warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def fit(
    source: FeatureSource,
    head: ClassifierHead,
    class_weights: np.ndarray,
    *,
    seed: int,
    log_path: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``head`` (and the backbone's trainable parameters) on the training split with early
    stopping on validation; see the module docstring. Appends one line per epoch to ``log_path``."""
    hyper, data, device = source.hyper, source.data, source.device
    backbone_params = [p for p in source.backbone.trainable.values()] if isinstance(source, LiveFeatures) else []
    groups = [{"params": list(head.parameters()), "lr": hyper.head_lr, "name": "head"}]
    if backbone_params:
        groups.insert(0, {"params": backbone_params, "lr": hyper.lr, "name": "backbone"})
    optimizer = torch.optim.AdamW(groups, weight_decay=hyper.weight_decay)
    rng = np.random.default_rng([seed, 7])
    n_train = len(data.samples["train"])
    steps_per_epoch = len(epoch_batches(n_train, hyper.batch_size, np.random.default_rng(0)))
    total = hyper.epochs * steps_per_epoch
    warmup = int(round(hyper.warmup_epochs * steps_per_epoch))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(total, warmup))
    weight = torch.as_tensor(class_weights, dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(weight=weight, label_smoothing=hyper.label_smoothing)
    train_labels = torch.as_tensor(data.labels["train"], device=device)
    trainable = backbone_params + list(head.parameters())

    best: tuple[float, float] | None = None
    best_epoch, since_best, stopped = 0, 0, False
    backbone_state: dict[str, torch.Tensor] | None = None
    head_state: dict[str, torch.Tensor] = head.export()
    history: list[dict[str, Any]] = []
    log_path.write_text("")
    epoch = 0
    for epoch in range(1, hyper.epochs + 1):
        t0 = time.perf_counter()
        source.set_train(True)
        head.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for idx in epoch_batches(n_train, hyper.batch_size, rng):
            y = train_labels[torch.as_tensor(idx, device=device)]
            logits = head(source.train_features(idx, rng))
            loss = criterion(logits, y)
            if not torch.isfinite(loss):
                raise TrainError(
                    f"epoch {epoch}: the training loss is {float(loss)}; lower --lr (now {hyper.lr}) or check the inputs"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if hyper.grad_clip > 0:
                nn.utils.clip_grad_norm_(trainable, hyper.grad_clip)
            optimizer.step()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += len(idx)
        val_proba, val_loss = predict(source, head, "val", criterion)
        val_pred = val_proba.argmax(axis=1)
        val_acc = float(np.mean(val_pred == data.labels["val"]))
        key = (val_acc, -float(val_loss))
        improved = best is None or key > best
        if improved:
            best, best_epoch, since_best = key, epoch, 0
            head_state = head.export()
            if backbone_params:
                backbone_state = source.backbone.checkpoint_state()
        else:
            since_best += 1
        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
        entry = {
            "epoch": epoch,
            "train_loss": loss_sum / max(1, seen),
            "train_accuracy": correct / max(1, seen),
            "val_loss": val_loss,
            "val_accuracy": val_acc,
            "val_balanced_accuracy": balanced_accuracy(data.labels["val"], val_pred),
            "lr": lrs.get("backbone", lrs["head"]),
            "head_lr": lrs["head"],
            "seconds": time.perf_counter() - t0,
            "best": improved,
        }
        history.append(entry)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
        if on_epoch is not None:
            on_epoch(entry)
        if since_best >= hyper.patience:
            stopped = epoch < hyper.epochs
            break
    return FitResult(
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped,
        backbone_state=backbone_state,
        head_state=head_state,
        history=history,
    )
