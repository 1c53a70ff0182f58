"""The ``mlp`` probe: the paper's two-layer MLP head, all layers (and label sets) trained at once.

Recipe (the feature-probing protocol of arXiv 2604.08333): Linear(D, H) -> ReLU -> Dropout(0.1) -> Linear(H, K),
AdamW (lr 1e-4, weight decay 0.01 = torch's default, the paper states none), cosine schedule with
linear warmup over the first 5% of steps (as ``transformers.get_cosine_schedule_with_warmup``),
20 epochs, mini-batches of 4, backbone frozen. Choices the paper leaves open, made here:

* hidden width H = 256 (``hidden=``);
* features standardised with the train rows' mean and std (LLM residual streams carry a few
  huge-magnitude channels that otherwise dominate a lr-1e-4 head); ``standardize=False`` turns
  it off;
* model selection: after every epoch the val accuracy of every head is measured and the epoch
  with the best val accuracy (ties -> lowest val loss) is kept; test is scored once with it;
* initialisation as ``torch.nn.Linear`` (uniform in +-1/sqrt(fan_in)), drawn per layer from a
  generator seeded with the run seed and the feature key (:func:`init_heads`); the sample order of
  each epoch comes from ``numpy.random.default_rng(seed)`` and is shared by all layers. The
  per-layer reference loop uses the same draws and order, so with ``dropout=0`` the two agree to
  float rounding; with dropout only the masks differ.

That is recipe ``paper`` (the default, kept exactly). Recipe ``tuned`` trains the same model once
per lr of ``tuned_lrs`` (1e-4, 1e-3, 1e-2) for ``tuned_epochs`` (40) epochs and lets every head
keep the (lr, epoch) with its best val accuracy (ties -> lowest val loss). Either way a layer whose
chosen epoch is the last one gets the warning "chosen epoch is the last one". Under the ``cv``
protocol "train" / "val" / "test" are a plan's inner training folds, selection fold and scored
fold (:mod:`.protocol`); plans are trained one after the other.

Batching: a chunk of L layers and S label sets (real, control, permutations) is trained as
L x S independent MLPs. First layers are one (L, D, S*H) tensor applied with ``torch.baddbmm``;
second layers are (L*S, H, K). The loss is the sum over heads of each head's mean cross-entropy, so
every head receives exactly its own gradient, and AdamW (element-wise) updates each head exactly as
a separate optimiser would. All heads see the same 4 samples per step; dropout masks are drawn
independently per element.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .linear import standardizer
from .probes import LayerOutput, Probe, ProbeData, layer_seed


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup from 0 over ``warmup`` steps, then cosine decay to 0 at ``total`` steps."""
    if step < warmup:
        return step / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def init_heads(gen: torch.Generator, S: int, D: int, H: int, K: int):
    """Initial parameters of S heads, as ``torch.nn.Linear`` draws them (uniform in
    +-1/sqrt(fan_in)), head after head from ``gen``: W1 (S, D, H), b1 (S, H), W2 (S, H, K), b2 (S, K).
    Head s does not depend on how many heads follow it; the per-layer reference uses the same draws."""
    a1, a2 = 1.0 / math.sqrt(D), 1.0 / math.sqrt(H)
    W1, b1, W2, b2 = torch.empty(S, D, H), torch.empty(S, H), torch.empty(S, H, K), torch.empty(S, K)
    for s in range(S):
        W1[s].uniform_(-a1, a1, generator=gen)
        b1[s].uniform_(-a1, a1, generator=gen)
        W2[s].uniform_(-a2, a2, generator=gen)
        b2[s].uniform_(-a2, a2, generator=gen)
    return W1, b1, W2, b2


def adamw(params, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """``torch.optim.AdamW`` with the fused kernel where torch has one for these tensors (one pass
    over memory per step instead of ~10; same update rule), else the multi-tensor one."""
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


class MLPProbe(Probe):
    """Two-layer MLP probe, the paper's training recipe, batched over layers and label sets."""

    name = "mlp"
    recipes = ("paper", "tuned")
    TUNED_LRS = (1e-4, 1e-3, 1e-2)
    TUNED_EPOCHS = 40

    def __init__(
        self,
        hidden: int = 256,
        dropout: float = 0.1,
        lr: float = 1e-4,
        weight_decay: float = 0.01,
        epochs: int = 20,
        batch_size: int = 4,
        warmup_ratio: float = 0.05,
        standardize: bool = True,
        eval_rows: int = 2048,
        recipe: str = "paper",
        tuned_lrs: Sequence[float] = TUNED_LRS,
        tuned_epochs: int = TUNED_EPOCHS,
    ):
        if recipe not in self.recipes:
            raise ValueError(f"mlp probe recipes: {', '.join(self.recipes)}; got {recipe!r}")
        self.recipe = recipe
        self.tuned_lrs = tuple(float(x) for x in tuned_lrs)
        self.tuned_epochs = int(tuned_epochs)
        if recipe == "tuned":
            self.permutation_selection = "re-selected per permutation: each head picks its own (lr, epoch) on its inner split"
        else:
            self.permutation_selection = "each permutation head picks its own epoch on its (permuted) inner-val labels"
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.epochs = int(epochs)
        self.batch_size = int(batch_size)
        self.warmup_ratio = float(warmup_ratio)
        self.standardize = bool(standardize)
        self.eval_rows = int(eval_rows)

    def hyper_selection(self) -> str:
        if self.recipe == "tuned":
            return (f"(lr, epoch) on the inner split: lr in {list(self.tuned_lrs)}, epochs 1..{self.tuned_epochs}, "
                    "highest inner-val accuracy (ties -> lowest loss); scored with the selected epoch's weights")
        return (f"epoch on the inner split (paper recipe, lr {self.lr}, {self.epochs} epochs): highest inner-val "
                "accuracy (ties -> lowest loss); scored with that epoch's weights")

    def settings(self) -> dict[str, Any]:
        return {
            "probe": self.name,
            "recipe": self.recipe,
            "tuned_lrs": list(self.tuned_lrs) if self.recipe == "tuned" else None,
            "tuned_epochs": self.tuned_epochs if self.recipe == "tuned" else None,
            "model": f"Linear(D, {self.hidden}) -> ReLU -> Dropout({self.dropout}) -> Linear({self.hidden}, K)",
            "hidden": self.hidden,
            "dropout": self.dropout,
            "optimizer": f"AdamW(lr={self.lr}, weight_decay={self.weight_decay}, fused where available)",
            "schedule": f"cosine with linear warmup over {self.warmup_ratio:.0%} of steps",
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "standardize": self.standardize,
            "selection": "epoch with the best val accuracy (ties -> lowest val loss); test scored once",
        }

    def state_bytes_per_layer(self, width: int, data: ProbeData) -> int:
        per_head = (width * self.hidden + self.hidden + self.hidden * data.n_classes + data.n_classes) * 4
        return data.n_sets * per_head * 7

    def _forward(self, xb, W1, b1, W2, b2, S, mask=None):
        """xb (L, b, D) standardised -> logits (L*S, b, K)."""
        L, b, _ = xb.shape
        h = torch.relu(torch.baddbmm(b1, xb, W1))  # (L, b, S*H)
        if mask is not None:
            h = h * mask
        h = h.view(L, b, S, self.hidden).transpose(1, 2).reshape(L * S, b, self.hidden)
        return torch.baddbmm(b2, h, W2)

    def _eval_logits(self, g: "_Group", rows: slice, params: Sequence[torch.Tensor], S: int) -> torch.Tensor:
        """Logits (L*S, n_rows, K) on rows of the group's X, standardisation folded into W1."""
        W1, b1, W2, b2 = params
        W1f = W1 * g.inv_std.unsqueeze(-1)
        b1f = b1 - torch.bmm(g.mean.unsqueeze(1), W1f)
        parts = []
        for r0 in range(rows.start, rows.stop, self.eval_rows):
            xr = g.X[:, r0 : min(rows.stop, r0 + self.eval_rows)]
            parts.append(self._forward(xr, W1f, b1f, W2, b2, S))
        return torch.cat(parts, dim=1)

    def train_chunk(self, groups, data: ProbeData, seed: int) -> list[LayerOutput]:
        """``paper``: one training at (lr, epochs) of the recipe; ``tuned``: one per lr of
        ``tuned_lrs`` for ``tuned_epochs``, every head (layer x label set) keeping the (lr, epoch)
        with its best val accuracy (ties -> lowest val loss)."""
        runs = [(self.lr, self.epochs)] if self.recipe == "paper" else [(lr, self.tuned_epochs) for lr in self.tuned_lrs]
        best: list[dict[str, Any]] | None = None
        for lr, epochs in runs:
            cur = [self._collect(g, data, lr) for g in self._train_once(groups, data, seed, lr, epochs)]
            if best is None:
                best = cur
                continue
            for b, c in zip(best, cur):
                better = (c["acc"] > b["acc"] + 1e-9) | ((c["acc"] >= b["acc"] - 1e-9) & (c["loss"] < b["loss"]))
                for name in ("acc", "loss", "epoch", "lr"):
                    b[name] = np.where(better, c[name], b[name])
                b["proba"] = np.where(better[:, :, None, None], c["proba"], b["proba"])
                b["weights"] = [cw if better[i, 0] else bw for i, (bw, cw) in enumerate(zip(b["weights"], c["weights"]))]
        last = runs[0][1]
        outs: list[LayerOutput] = []
        for b in best or []:
            for i, key in enumerate(b["keys"]):
                hyper = {"epoch": int(b["epoch"][i, 0]), "val_accuracy": float(b["acc"][i, 0]),
                         "val_loss": float(b["loss"][i, 0])}
                if self.recipe == "tuned":
                    hyper["lr"] = float(b["lr"][i, 0])
                control = None
                if data.has_control:
                    control = {"epoch": int(b["epoch"][i, 1]), "val_accuracy": float(b["acc"][i, 1])}
                warnings = []
                if hyper["epoch"] == last:
                    warnings.append(f"chosen epoch is the last one ({last} of {last}): the probe may still be improving")
                outs.append(LayerOutput(key=key, test_proba=b["proba"][i], hyper=hyper, control_hyper=control,
                                        weights=b["weights"][i], warnings=warnings))
        return outs

    def _collect(self, g: "_Group", data: ProbeData, lr: float) -> dict[str, Any]:
        """Best-epoch state of one trained group: acc / loss / epoch / lr (L, S), test proba
        (L, S, n_test, K) and the real head's weights per layer."""
        S, K, Hd = data.n_sets, data.n_classes, self.hidden
        with torch.no_grad():
            zt = self._eval_logits(g, data.test_slice, g.best, S)  # (L*S, n_te, K)
            proba = torch.softmax(zt, dim=-1).view(g.L, S, data.n_test, K).cpu().numpy()
            bW1, bb1, bW2, bb2 = (p.cpu() for p in g.best)
            mean, std = g.mean.cpu(), (1.0 / g.inv_std).cpu()
            weights = [
                {
                    "W1": bW1[i, :, :Hd].numpy().copy(),  # (D, H)
                    "b1": bb1[i, 0, :Hd].numpy().copy(),
                    "W2": bW2[i * S].numpy().copy(),  # (H, K)
                    "b2": bb2[i * S, 0].numpy().copy(),
                    "mean": mean[i].numpy().copy(),
                    "scale": std[i].numpy().copy(),
                }
                for i in range(g.L)
            ]
        acc = g.best_acc.cpu().numpy()
        return {"keys": g.keys, "acc": acc, "loss": g.best_loss.cpu().numpy(), "epoch": g.best_epoch.cpu().numpy(),
                "lr": np.full(acc.shape, lr), "proba": proba, "weights": weights}

    def _train_once(self, groups, data: ProbeData, seed: int, lr: float, epochs: int) -> list["_Group"]:
        """Train every group (one per width) in one step loop: one backward and one optimiser
        step per mini-batch for all layers and label sets of the chunk. Returns the groups with
        their best-epoch copies."""
        S, K, Hd = data.n_sets, data.n_classes, self.hidden
        n_tr, n_va = data.n_train, data.n_val
        dev = groups[0][1].device
        gs = [_Group(keys, X, self, data, seed) for keys, X in groups]
        opt = adamw([p for g in gs for p in g.params], lr=lr, weight_decay=self.weight_decay)

        labels = torch.from_numpy(data.label_sets).to(dev)  # (S, N)
        y_tr = labels[:, :n_tr]
        y_va = labels[:, n_tr : n_tr + n_va]  # (S, n_va)
        steps_per_epoch = math.ceil(n_tr / self.batch_size)
        total = epochs * steps_per_epoch
        warmup = math.ceil(self.warmup_ratio * total)
        rng = np.random.default_rng(seed)
        drop_gen = torch.Generator(device=dev).manual_seed(layer_seed(seed, "dropout/" + gs[0].keys[0]))
        keep = 1.0 - self.dropout
        step = 0
        for epoch in range(epochs):
            perm = torch.from_numpy(rng.permutation(n_tr)).to(dev)
            for s in range(steps_per_epoch):
                idx = perm[s * self.batch_size : (s + 1) * self.batch_size]
                b = idx.numel()
                loss = None
                for g in gs:
                    xb = (g.X[:, idx] - g.mean.unsqueeze(1)) * g.inv_std.unsqueeze(1)  # (L, b, D)
                    mask = None
                    if self.dropout > 0:
                        mask = (torch.rand(g.L, b, S * Hd, generator=drop_gen, device=dev) < keep).float() / keep
                    z = self._forward(xb, *g.params, S, mask)  # (L*S, b, K)
                    yb = y_tr[:, idx].repeat(g.L, 1)  # (L*S, b)
                    part = F.cross_entropy(z.reshape(-1, K), yb.reshape(-1), reduction="sum") / b
                    loss = part if loss is None else loss + part
                for group in opt.param_groups:
                    group["lr"] = lr * lr_factor(step, warmup, total)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
            with torch.no_grad():
                for g in gs:
                    zv = self._eval_logits(g, slice(n_tr, n_tr + n_va), g.params, S)
                    yv = y_va.repeat(g.L, 1)
                    lv = (
                        F.cross_entropy(zv.reshape(-1, K), yv.reshape(-1), reduction="none").view(g.L, S, n_va).mean(-1)
                    )
                    av = (zv.argmax(-1) == yv).float().mean(-1).view(g.L, S)
                    g.keep_best(av, lv, epoch + 1)

        return gs


class _Group:
    """One width group of a chunk: its features, standardiser, heads and best-epoch copies.

    Shapes (L layers, S label sets, H hidden, K classes): W1 (L, D, S*H), b1 (L, 1, S*H),
    W2 (L*S, H, K), b2 (L*S, 1, K); head (l, s) uses W1[l][:, s*H:(s+1)*H] and W2[l*S + s].
    """

    def __init__(self, keys: Sequence[str], X: torch.Tensor, probe: MLPProbe, data: ProbeData, seed: int):
        self.keys, self.X = list(keys), X
        L, _, D = X.shape
        S, K, Hd = data.n_sets, data.n_classes, probe.hidden
        self.L, self.S, self.D, self.H = L, S, D, Hd
        dev = X.device
        if probe.standardize:
            self.mean, std = standardizer(X[:, : data.n_train])
        else:
            self.mean, std = torch.zeros(L, D, device=dev), torch.ones(L, D, device=dev)
        self.inv_std = 1.0 / std
        # nn.Linear-style init, per layer from (seed, key), head by head (see init_heads)
        W1, b1 = torch.empty(L, D, S * Hd), torch.empty(L, 1, S * Hd)
        W2, b2 = torch.empty(L * S, Hd, K), torch.empty(L * S, 1, K)
        for i, key in enumerate(self.keys):
            w1, c1, w2, c2 = init_heads(torch.Generator().manual_seed(layer_seed(seed, key)), S, D, Hd, K)
            W1[i] = w1.permute(1, 0, 2).reshape(D, S * Hd)
            b1[i, 0] = c1.reshape(S * Hd)
            W2[i * S : (i + 1) * S] = w2
            b2[i * S : (i + 1) * S, 0] = c2
        self.params = [p.to(dev).requires_grad_(True) for p in (W1, b1, W2, b2)]
        self.best = [p.detach().clone() for p in self.params]
        self.best_acc = torch.full((L, S), -1.0, device=dev)
        self.best_loss = torch.full((L, S), math.inf, device=dev)
        self.best_epoch = torch.zeros(L, S, dtype=torch.long, device=dev)

    def keep_best(self, acc: torch.Tensor, loss: torch.Tensor, epoch: int) -> None:
        """Keep the parameters of heads whose val accuracy (ties: val loss) improved; (L, S) inputs."""
        L, S, D, Hd = self.L, self.S, self.D, self.H
        better = (acc > self.best_acc + 1e-9) | ((acc >= self.best_acc - 1e-9) & (loss < self.best_loss))
        self.best_acc = torch.where(better, acc, self.best_acc)
        self.best_loss = torch.where(better, loss, self.best_loss)
        self.best_epoch = torch.where(better, torch.full_like(self.best_epoch, epoch), self.best_epoch)
        W1, b1, W2, b2 = (p.detach() for p in self.params)
        m1 = better.view(L, 1, S, 1)
        self.best[0] = torch.where(m1, W1.view(L, D, S, Hd), self.best[0].view(L, D, S, Hd)).view(L, D, S * Hd)
        self.best[1] = torch.where(m1, b1.view(L, 1, S, Hd), self.best[1].view(L, 1, S, Hd)).view(L, 1, S * Hd)
        m2 = better.view(L * S, 1, 1)
        self.best[2] = torch.where(m2, W2, self.best[2])
        self.best[3] = torch.where(m2, b2, self.best[3])
