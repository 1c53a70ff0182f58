"""The ``linear`` probe: standardised multinomial logistic regression, all layers batched.

Protocol (per layer, and per label set that gets its own selection -- real and control):

1. Standardise with the train rows' mean and standard deviation (zero-variance columns keep
   scale 1, as scikit-learn's ``StandardScaler`` does).
2. Fit L2-regularised multinomial logistic regression on train for every C of the coarse grid
   (default 1e-4 ... 1e2, one per decade) and score each on val.
3. Fine grid around the best coarse C: ``C_best * 10**s`` for s in (-0.5, -0.25, +0.25, +0.5);
   the selected C is the one with the highest val accuracy among the coarse best and the fine
   values (ties: lowest val log-loss).
4. Refit on train+val (standardised with train+val statistics) at the selected C; score test once.

Permutation-null heads are fitted at the real task's selected C (step 4 only).

That is the ``split`` protocol. Under ``cv`` (:mod:`.protocol`) the same steps run for every plan
(seed x fold) at once, as heads of one batched solve per layer group (:meth:`LinearProbe.train_design`):

1. Standardise with the mean and std of the cv rows (label-free, shared by every fold). Where
   D > n_cv the layer is re-expressed exactly in the n_cv-dimensional span of its cv rows
   (:func:`span_features`): with an L2 penalty the optimal weights of any fit on a subset of those
   rows lie in that span, so logits, penalty and solution are unchanged and every evaluation costs
   O(n x n_cv) instead of O(n x D).
2. Coarse then fine C grid on each fold's inner training folds, scored on its inner selection fold
   (heads = plans x C values; a head's rows carry weight 1/n_fit or 0).
3. Refit on the k - 1 training folds at the selected C: one head per plan for the real labels and
   one per (plan, permutation) for the permutations routed to that plan's seed; score the fold.

The objective is scikit-learn's, so C means the same thing: ``mean_i CE_i + ||W||^2 / (2 C n)``
for K > 2 classes (penalty on every class's weights, intercepts unpenalised), and for K = 2 the
binary logistic objective ``mean_i logloss_i + ||w||^2 / (2 C n)`` -- reached here with a two-column
softmax whose penalty is doubled (at the optimum ``w_0 = -w_1``, so the two are the same model).

Batching: a chunk of L layers of width D is one (L, N, D) tensor; each phase fits L x H problems
(H heads = label sets x C values) with :func:`~.lbfgs.batched_lbfgs`, every evaluation one
``torch.bmm`` of (L, n, D) by (L, D, H*K). Stopping follows scikit-learn's lbfgs (``tol`` on the
max-abs gradient, ``max_iter``), in float32. Warm starts: fine heads start from the coarse best,
the refit from the selected train fit.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .lbfgs import batched_lbfgs
from .probes import LayerOutput, Probe, ProbeData

DEFAULT_COARSE_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
DEFAULT_FINE_STEPS = (-0.5, -0.25, 0.25, 0.5)


def standardizer(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer column mean and std (population) of X (L, n, D) -> (L, D), (L, D); std 0 -> 1."""
    var, mean = torch.var_mean(X, dim=1, correction=0)
    std = var.sqrt()
    std = torch.where(std > 1e-7 * mean.abs().clamp_min(1.0), std, torch.ones_like(std))
    return mean, std


def _unpack(theta: torch.Tensor, D: int, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """theta (L, H, K*D + K) -> W (L, H, K, D), b (L, H, K) (views). Weights act on standardised
    features; class k's logit is ``z . W[k] + b[k]``."""
    L, H, _ = theta.shape
    return theta[..., : K * D].reshape(L, H, K, D), theta[..., K * D :]


def logits_t(X: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor, theta: torch.Tensor, K: int) -> torch.Tensor:
    """Logits of every head on standardised X, class-major with samples innermost.

    X (L, n, D), mean / inv_std (L, D), theta (L, H, K*D + K) -> (L, H, K, n). Standardisation is
    folded into the weights (``((x - m) / s) . w = x . (w / s) - m . (w / s)``), so X is never
    copied; samples innermost keeps every element-wise op contiguous.
    """
    L, n, D = X.shape
    H = theta.shape[1]
    W, b = _unpack(theta, D, K)
    Ws = W * inv_std[:, None, None, :]
    offset = b - (Ws * mean[:, None, None, :]).sum(-1)
    Z = torch.bmm(Ws.reshape(L, H * K, D), X.transpose(1, 2)).view(L, H, K, n)
    return Z + offset.unsqueeze(-1)


def fit_heads(
    X: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    y: torch.Tensor,
    C: torch.Tensor,
    K: int,
    *,
    theta0: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    history: int = 10,
):
    """Fit L x H logistic regressions. X (L, n, D) float32; y (n, H) int64 labels per head (shared
    by all layers); C (L, H) inverse regularisation per problem. Returns an ``LBFGSResult`` whose
    ``theta`` is (L, H, K*D + K).

    Objective and gradient are computed in closed form (two ``torch.bmm`` per evaluation)::

        Z = (W / s) X^T + (b - (W / s) m)          logits (K, n) per problem
        f = mean_i CE(Z_i, y_i) + reg / 2 ||W||^2
        G = (softmax(Z) - onehot(y)) / n
        dW = (G X - (sum_i G_i) m) / s + reg W,    db = sum_i G_i

    When layer compaction drops converged layers, the active layers' rows of X are gathered once
    into a smaller tensor (at most half the chunk) and reused until the next compaction.
    """
    L, n, D = X.shape
    H = y.shape[1]
    reg = (2.0 if K == 2 else 1.0) / (C.to(device=X.device, dtype=X.dtype) * n)  # (L, H)
    onehot = torch.nn.functional.one_hot(y.T, K).permute(0, 2, 1).to(X.dtype).contiguous()  # (H, K, n)
    inv_std = 1.0 / std
    cache: dict[str, Any] = {"rows": None}

    def data_for(rows: torch.Tensor):
        if rows.numel() == L:
            return X, mean, inv_std
        if cache["rows"] is None or not torch.equal(cache["rows"], rows):
            cache.clear()  # free the previous subset before gathering the next
            cache.update(rows=rows, X=X.index_select(0, rows), mean=mean[rows], inv=inv_std[rows])
        return cache["X"], cache["mean"], cache["inv"]

    def fun(theta: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Xr, m, inv = data_for(rows)
        Lr, Hc = theta.shape[0], theta.shape[1]
        logp = torch.log_softmax(logits_t(Xr, m, inv, theta, K), dim=2)  # (Lr, Hc, K, n)
        Y = onehot[cols]  # (Hc, K, n)
        W, _ = _unpack(theta, D, K)
        r = reg[rows][:, cols]
        f = -(logp * Y).sum((2, 3)) / n + 0.5 * r * W.pow(2).sum((-2, -1))
        G = logp.exp_().sub_(Y).div_(n)
        gb = G.sum(-1)  # (Lr, Hc, K)
        gW = torch.bmm(G.view(Lr, Hc * K, n), Xr).view(Lr, Hc, K, D)
        gW = (gW - gb.unsqueeze(-1) * m[:, None, None, :]) * inv[:, None, None, :] + r[..., None, None] * W
        return f, torch.cat([gW.reshape(Lr, Hc, K * D), gb], dim=-1)

    if theta0 is None:
        theta0 = torch.zeros(L, H, K * D + K, dtype=X.dtype, device=X.device)
    with torch.no_grad():
        return batched_lbfgs(fun, theta0, max_iter=max_iter, gtol=tol, history=history)


def evaluate(X: torch.Tensor, mean, std, theta, y: torch.Tensor, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean log-loss (L, H) of every head on rows X (L, n, D) with labels y (n, H)."""
    with torch.no_grad():
        logp = torch.log_softmax(logits_t(X, mean, 1.0 / std, theta, K), dim=2)  # (L, H, K, n)
        yt = y.T  # (H, n)
        loss = -logp.gather(2, yt[None, :, None, :].expand(logp.shape[0], -1, 1, -1)).squeeze(2).mean(-1)
        acc = (logp.argmax(2) == yt.unsqueeze(0)).float().mean(-1)
    return acc, loss


def predict_proba(X: torch.Tensor, mean, std, theta, K: int) -> torch.Tensor:
    """Class probabilities (L, H, n, K) of every head on rows X (L, n, D)."""
    with torch.no_grad():
        return torch.softmax(logits_t(X, mean, 1.0 / std, theta, K), dim=2).transpose(2, 3)


def select(acc: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """Index (L,) of the best candidate along axis 1 of (L, M): highest accuracy, ties -> lowest loss."""
    best = acc.max(dim=1, keepdim=True).values
    cand = acc >= best - 1e-9
    return torch.where(cand, loss, torch.full_like(loss, float("inf"))).argmin(dim=1)


def span_features(X: torch.Tensor, fit_rows: torch.Tensor, rel_eig: float = 1e-6) -> torch.Tensor:
    """Standardised features re-expressed in the span of the ``fit_rows``: (L, n, D) -> (L, n, P).

    Columns are standardised with the fit rows' mean and population std (std 0 -> 1). Where
    D > len(fit_rows): with Xf the standardised fit rows and ``Xf Xf^T = U diag(lam) U^T``
    (float64 eigendecomposition), returns ``Xs Xf^T U diag(lam)^{-1/2}`` restricted to eigenvalues
    above ``rel_eig * max(lam)`` (P <= len(fit_rows)). For the fit rows that is ``U
    diag(lam)^{1/2}``: the coordinates in an orthonormal basis of the rows' span, so an L2-penalised
    linear model fitted on any subset of the fit rows has the same logits and penalty in either
    representation. Where D <= len(fit_rows) the standardised features are rotated onto the
    eigenvectors of their covariance (an orthogonal rotation: the L2 penalty and every fit are
    unchanged). Either way the columns are uncorrelated over the fit rows, which is what the
    diagonal preconditioner of :func:`fit_weighted_heads` assumes.
    """
    Xf = X.index_select(1, fit_rows)
    mean, std = standardizer(Xf)
    inv = 1.0 / std
    Xs = (X - mean[:, None, :]) * inv[:, None, :]
    L, n, D = X.shape
    nf = int(fit_rows.numel())
    if D <= nf:
        Xf = Xs.index_select(1, fit_rows)
        cov = torch.bmm(Xf.transpose(1, 2), Xf).double()
        _, V = torch.linalg.eigh(0.5 * (cov + cov.transpose(1, 2)))
        return torch.bmm(Xs, V.to(X.dtype))
    Xf = Xs.index_select(1, fit_rows)
    gram = torch.bmm(Xs, Xf.transpose(1, 2))  # (L, n, nf)
    gf = gram.index_select(1, fit_rows).double()
    gf = 0.5 * (gf + gf.transpose(1, 2))
    lam, U = torch.linalg.eigh(gf)  # ascending
    keep = lam > rel_eig * lam[:, -1:].clamp_min(1e-30)
    P = int(keep.sum(1).max())
    lam, U, keep = lam[:, -P:], U[:, :, -P:], keep[:, -P:]
    scale = torch.where(keep, lam.clamp_min(1e-300).rsqrt(), torch.zeros_like(lam))
    return torch.bmm(gram.double(), U * scale[:, None, :]).to(X.dtype)


def fit_weighted_heads(
    Z: torch.Tensor,
    y: torch.Tensor,
    w: torch.Tensor,
    C: torch.Tensor,
    K: int,
    *,
    theta0: torch.Tensor | None = None,
    max_iter: int = 1000,
    tol: float = 1e-4,
    history: int = 10,
    precondition: bool = True,
):
    """Fit L x H logistic regressions on standardised Z (L, n, P), each on its own rows.

    ``y`` (n, H) int64 labels per head; ``w`` (n, H) float row weights (``1 / n_fit`` on a head's
    fitted rows, 0 elsewhere, so the loss is the mean over its rows); ``C`` (L, H); the penalty is
    ``||W||^2 / (2 C n_fit)`` (doubled for K = 2, as :func:`fit_heads`). theta (L, H, K*P + K):
    W (K, P) then b (K,). Returns an ``LBFGSResult``.

    ``precondition``: L-BFGS starts every recursion from the diagonal inverse-Hessian estimate
    ``1 / (v_j / 4 + reg)`` for the weights of column j (``v_j`` its mean square over the head's
    rows; 1/4 bounds ``p (1 - p)``) and ``4`` for the intercepts -- exact up to the probability
    weights when the columns are uncorrelated (:func:`span_features`), so the solver needs far fewer
    iterations; the optimum is the same.
    """
    L, n, P = Z.shape
    H = y.shape[1]
    n_fit = (w > 0).sum(0).to(Z.dtype)  # (H,)
    reg = (2.0 if K == 2 else 1.0) / (C.to(device=Z.device, dtype=Z.dtype) * n_fit[None, :])
    onehot = torch.nn.functional.one_hot(y.T, K).permute(0, 2, 1).to(Z.dtype).contiguous()  # (H, K, n)
    wt = w.T.to(Z.dtype).contiguous()  # (H, n)
    cache: dict[str, Any] = {"rows": None}

    def data_for(rows: torch.Tensor) -> torch.Tensor:
        if rows.numel() == L:
            return Z
        if cache["rows"] is None or not torch.equal(cache["rows"], rows):
            cache.clear()
            cache.update(rows=rows, Z=Z.index_select(0, rows))
        return cache["Z"]

    def fun(theta: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        Zr = data_for(rows)
        Lr, Hc = theta.shape[0], theta.shape[1]
        W = theta[..., : K * P].reshape(Lr, Hc, K, P)
        b = theta[..., K * P :]
        logits = torch.bmm(W.reshape(Lr, Hc * K, P), Zr.transpose(1, 2)).view(Lr, Hc, K, n) + b.unsqueeze(-1)
        logp = torch.log_softmax(logits, dim=2)
        Y, ww = onehot[cols], wt[cols]  # (Hc, K, n), (Hc, n)
        r = reg[rows][:, cols]
        f = -((logp * Y).sum(2) * ww).sum(-1) + 0.5 * r * W.pow(2).sum((-2, -1))
        G = logp.exp_().sub_(Y).mul_(ww.unsqueeze(1))  # (Lr, Hc, K, n)
        gb = G.sum(-1)
        gW = torch.bmm(G.view(Lr, Hc * K, n), Zr).view(Lr, Hc, K, P) + r[..., None, None] * W
        return f, torch.cat([gW.reshape(Lr, Hc, K * P), gb], dim=-1)

    if theta0 is None:
        theta0 = torch.zeros(L, H, K * P + K, dtype=Z.dtype, device=Z.device)
    h0_inv = None
    if precondition:
        v = torch.bmm(Z.pow(2).transpose(1, 2), wt.T.unsqueeze(0).expand(L, n, H).contiguous())  # (L, P, H)
        hw = 1.0 / (0.25 * v.transpose(1, 2) + reg.unsqueeze(-1))  # (L, H, P)
        h0_inv = torch.cat([hw.unsqueeze(2).expand(L, H, K, P).reshape(L, H, K * P),
                            torch.full((L, H, K), 4.0, dtype=Z.dtype, device=Z.device)], dim=-1)
    with torch.no_grad():
        return batched_lbfgs(fun, theta0, max_iter=max_iter, gtol=tol, history=history, h0_inv=h0_inv)


def proba_weighted(Z: torch.Tensor, theta: torch.Tensor, K: int) -> torch.Tensor:
    """Class probabilities (L, H, n, K) of every head on every row of Z (L, n, P)."""
    L, n, P = Z.shape
    H = theta.shape[1]
    with torch.no_grad():
        W = theta[..., : K * P].reshape(L, H * K, P)
        z = torch.bmm(W, Z.transpose(1, 2)).view(L, H, K, n) + theta[..., K * P :].unsqueeze(-1)
        return torch.softmax(z, dim=2).transpose(2, 3)


def masked_scores(proba: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Accuracy and mean log-loss (L, H) of heads on their own rows: proba (L, H, n, K), y (n, H)
    int64, mask (H, n) bool."""
    yt = y.T  # (H, n)
    p_true = proba.gather(3, yt[None, :, :, None].expand(proba.shape[0], -1, -1, 1)).squeeze(3)
    m = mask.to(proba.dtype)
    cnt = m.sum(-1).clamp_min(1.0)
    acc = ((proba.argmax(3) == yt.unsqueeze(0)).to(proba.dtype) * m).sum(-1) / cnt
    loss = (-(p_true.clamp_min(1e-30).log()) * m).sum(-1) / cnt
    return acc, loss


class LinearProbe(Probe):
    """Standardised multinomial logistic regression with C chosen on the inner split (coarse ->
    fine), refit on the training rows, scored once. Batched over layers, plans, label sets and C
    values; see the module docstring."""

    name = "linear"
    recipes = ("grid",)
    recipe = "grid"

    def __init__(
        self,
        coarse_grid: Sequence[float] = DEFAULT_COARSE_GRID,
        fine_steps: Sequence[float] = DEFAULT_FINE_STEPS,
        max_iter: int = 1000,
        tol: float = 1e-4,
        history: int = 10,
        recipe: str = "grid",
    ):
        if recipe not in self.recipes:
            raise ValueError(f"linear probe recipes: {', '.join(self.recipes)}; got {recipe!r}")
        if not coarse_grid:
            raise ValueError("coarse_grid needs at least one C value")
        self.coarse_grid = tuple(float(c) for c in coarse_grid)
        self.fine_steps = tuple(float(s) for s in fine_steps)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.history = int(history)

    def settings(self) -> dict[str, Any]:
        return {
            "probe": self.name,
            "model": "standardised multinomial logistic regression (L2, scikit-learn's C convention)",
            "coarse_grid": list(self.coarse_grid),
            "fine_steps_log10": list(self.fine_steps),
            "selection": "val accuracy, ties -> lowest val log-loss; refit on train+val at the selected C",
            "solver": f"batched L-BFGS float32, tol={self.tol} (max-abs gradient), max_iter={self.max_iter}, "
            f"history={self.history}",
        }

    def hyper_selection(self) -> str:
        return ("C on the inner split: coarse grid then fine steps, highest inner-val accuracy (ties -> lowest "
                "log-loss); refit on the training rows at the selected C")

    def state_bytes_for_design(self, width: int, design) -> int:
        if design.settings.protocol != "cv":
            return super().state_bytes_for_design(width, design)
        n, K = design.n_rows, design.n_classes
        P = min(width, design.n_scored)
        plans = len(design.plans)
        heads = max(plans * len(self.coarse_grid), plans + sum(len(p.perms) for p in design.plans))
        params = heads * (P + 1) * K * 4
        return params * (2 * self.history + 10) + n * heads * K * 4 * 5 + n * P * 4 * 3 + n * n * 8 * 3

    def state_bytes_per_layer(self, width: int, data: ProbeData) -> int:
        K = data.n_classes
        heads = max(len(self.coarse_grid) * len(data.selection_sets()), data.n_sets)
        params = heads * (width + 1) * K * 4
        gathered = data.n * width * 4 * 3 // 4  # layer compaction: active-layer copies (<= 1/2 + 1/4)
        return params * (2 * self.history + 10) + data.n * heads * K * 4 * 4 + gathered

    def _fit(self, X, mean, std, y, C, K, theta0=None):
        return fit_heads(
            X, mean, std, y, C, K, theta0=theta0, max_iter=self.max_iter, tol=self.tol, history=self.history
        )

    def train_chunk(self, groups, data: ProbeData, seed: int) -> list[LayerOutput]:
        outs: list[LayerOutput] = []
        for keys, X in groups:  # one width at a time: each group is its own batched solve
            outs.extend(self._train_group(X, keys, data))
        return outs

    def _warnings(self, C: float, converged: bool) -> list[str]:
        out = []
        if not converged:
            out.append(f"lbfgs did not converge (max_iter={self.max_iter}, tol={self.tol})")
        lo, hi = min(self.coarse_grid), max(self.coarse_grid)
        steps = [0.0, *self.fine_steps]
        if C <= lo * 10.0 ** min(steps) * (1 + 1e-6) or C >= hi * 10.0 ** max(steps) * (1 - 1e-6):
            out.append("selected C at the edge of the grid")
        return out

    def train_design(self, groups, design):
        """``split``: plan after plan (:meth:`Probe.train_design`). ``cv``: every plan, C value and
        permutation of a width group as heads of one batched solve (see the module docstring)."""
        if design.settings.protocol != "cv":
            yield from super().train_design(groups, design)
            return
        if design.control_labels is not None:
            raise ValueError("internal: the cv protocol never trains an informative control task")
        for keys, X in groups:
            yield from self._train_design_group(keys, X, design)

    def _train_design_group(self, keys, X: torch.Tensor, design):
        dev = X.device
        K = design.n_classes
        plans = design.plans
        Pn, n = len(plans), design.n_rows
        L = X.shape[0]
        Z = span_features(X, torch.from_numpy(design.scored).to(dev))

        def masks(attr: str) -> torch.Tensor:
            m = torch.zeros(Pn, n, dtype=torch.bool)
            for i, p in enumerate(plans):
                m[i, torch.from_numpy(getattr(p, attr))] = True
            return m.to(dev)

        sel_tr, sel_va, fit = masks("sel_train"), masks("sel_val"), masks("fit")
        y = torch.from_numpy(design.y).to(dev)

        def weights(m: torch.Tensor) -> torch.Tensor:  # (H, n) bool -> (n, H) 1/count
            m = m.to(Z.dtype)
            return (m / m.sum(-1, keepdim=True)).T.contiguous()

        def run_grid(hp: torch.Tensor, C: torch.Tensor, theta0=None):
            H = hp.numel()
            yy = y[:, None].expand(n, H).contiguous()
            r = self._fit_w(Z, yy, weights(sel_tr[hp]), C, K, theta0)
            acc, loss = masked_scores(proba_weighted(Z, r.theta, K), yy, sel_va[hp])
            return r, acc, loss

        ar = torch.arange(L, device=dev)
        grid = torch.tensor(self.coarse_grid, dtype=torch.float64, device=dev)
        G = grid.numel()
        hp1 = torch.arange(Pn, device=dev).repeat_interleave(G)
        r1, acc1, loss1 = run_grid(hp1, grid.repeat(Pn).expand(L, Pn * G).clone())
        acc1, loss1 = acc1.view(L, Pn, G), loss1.view(L, Pn, G)
        idx = torch.stack([select(acc1[:, j], loss1[:, j]) for j in range(Pn)], dim=1)  # (L, Pn)

        def pick(t, i):  # t (L, Pn, M, ...) at i (L, Pn)
            return torch.stack([t[ar, j, i[:, j]] for j in range(Pn)], dim=1)

        C_sel = grid[idx]
        theta_sel = pick(r1.theta.view(L, Pn, G, -1), idx)
        conv_sel = pick(r1.converged.view(L, Pn, G), idx)
        val_acc, val_loss = pick(acc1, idx), pick(loss1, idx)
        F = len(self.fine_steps)
        if F:
            steps = torch.tensor(self.fine_steps, dtype=torch.float64, device=dev)
            C2 = (C_sel.unsqueeze(-1) * 10.0**steps).reshape(L, Pn * F)
            t0 = theta_sel.unsqueeze(2).expand(L, Pn, F, theta_sel.shape[-1]).reshape(L, Pn * F, -1).clone()
            r2, acc2, loss2 = run_grid(torch.arange(Pn, device=dev).repeat_interleave(F), C2, t0)
            acc_c = torch.cat([val_acc.unsqueeze(-1), acc2.view(L, Pn, F)], dim=-1)
            loss_c = torch.cat([val_loss.unsqueeze(-1), loss2.view(L, Pn, F)], dim=-1)
            C_c = torch.cat([C_sel.unsqueeze(-1), C2.view(L, Pn, F)], dim=-1)
            th_c = torch.cat([theta_sel.unsqueeze(2), r2.theta.view(L, Pn, F, -1)], dim=2)
            cv_c = torch.cat([conv_sel.unsqueeze(-1), r2.converged.view(L, Pn, F)], dim=-1)
            i2 = torch.stack([select(acc_c[:, j], loss_c[:, j]) for j in range(Pn)], dim=1)
            C_sel, theta_sel, conv_sel = pick(C_c, i2), pick(th_c, i2), pick(cv_c, i2)
            val_acc, val_loss = pick(acc_c, i2), pick(loss_c, i2)

        # refit: per plan its real head, then its permutation heads, at the plan's selected C
        head_plan, head_labels = [], []
        for i, p in enumerate(plans):
            head_plan.append(i)
            head_labels.append(-1)
            for r in p.perms:
                head_plan.append(i)
                head_labels.append(r)
        hp3 = torch.tensor(head_plan, device=dev)
        perm = torch.from_numpy(design.perm_labels).to(dev)
        y3 = torch.stack([y if r < 0 else perm[r] for r in head_labels], dim=1)  # (n, H3)
        C3 = C_sel[:, hp3]
        t3 = torch.zeros(L, hp3.numel(), theta_sel.shape[-1], dtype=Z.dtype, device=dev)
        real_cols = torch.tensor([j for j, r in enumerate(head_labels) if r < 0], device=dev)
        t3[:, real_cols] = theta_sel
        r3 = self._fit_w(Z, y3, weights(fit[hp3]), C3, K, t3)
        proba = proba_weighted(Z, r3.theta, K).cpu().numpy()  # (L, H3, n, K)
        conv3 = r3.converged.cpu()
        C_sel, val_acc, val_loss, conv_sel = C_sel.cpu(), val_acc.cpu(), val_loss.cpu(), conv_sel.cpu()
        n_iter3 = r3.n_iter.cpu()
        col = 0
        for i, p in enumerate(plans):
            cols = list(range(col, col + 1 + len(p.perms)))
            col += 1 + len(p.perms)
            for li, key in enumerate(keys):
                converged = bool(conv3[li, cols[0]]) and bool(conv_sel[li, i])
                C = float(C_sel[li, i])
                hyper = {
                    "C": C,
                    "val_accuracy": float(val_acc[li, i]),
                    "val_log_loss": float(val_loss[li, i]),
                    "n_iter": int(n_iter3[li, cols[0]]),
                    "converged": converged,
                }
                if p.perms:
                    hyper["permutations_converged"] = int(conv3[li, cols[1:]].sum())
                yield i, LayerOutput(
                    key=key,
                    test_proba=proba[li][cols][:, p.score],
                    hyper=hyper,
                    warnings=self._warnings(C, converged),
                )

    def _fit_w(self, Z, y, w, C, K, theta0=None):
        return fit_weighted_heads(Z, y, w, C, K, theta0=theta0, max_iter=self.max_iter, tol=self.tol,
                                  history=self.history)

    def _train_group(self, X: torch.Tensor, keys: Sequence[str], data: ProbeData) -> list[LayerOutput]:
        """X (L, N, D) float32, rows [train | val | test]; see the module docstring for the steps."""
        L, N, D = X.shape
        K = data.n_classes
        dev = X.device
        n_tr, n_va = data.n_train, data.n_val
        labels = torch.from_numpy(data.label_sets).to(dev)  # (S, N)
        sel = data.selection_sets()
        n_sel = len(sel)
        ar = torch.arange(L, device=dev)
        grid = torch.tensor(self.coarse_grid, dtype=torch.float64, device=dev)
        G = grid.numel()
        X_tr, X_va = X[:, :n_tr], X[:, n_tr : n_tr + n_va]
        m_tr, s_tr = standardizer(X_tr)

        def pick(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
            """t (L, n_sel, M, ...) at idx (L, n_sel) -> (L, n_sel, ...)."""
            return torch.stack([t[ar, j, idx[:, j]] for j in range(n_sel)], dim=1)

        def best(acc: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
            return torch.stack([select(acc[:, j], loss[:, j]) for j in range(n_sel)], dim=1)

        # 1. coarse grid on train, scored on val; heads ordered (label set, C)
        y1 = labels[sel, :n_tr].repeat_interleave(G, dim=0).T.contiguous()  # (n_tr, n_sel*G)
        yv1 = labels[sel, n_tr : n_tr + n_va].repeat_interleave(G, dim=0).T.contiguous()
        C1 = grid.repeat(n_sel).expand(L, n_sel * G).clone()
        r1 = self._fit(X_tr, m_tr, s_tr, y1, C1, K)
        acc1, loss1 = evaluate(X_va, m_tr, s_tr, r1.theta, yv1, K)
        acc1, loss1 = acc1.view(L, n_sel, G), loss1.view(L, n_sel, G)
        i1 = best(acc1, loss1)  # (L, n_sel)
        C_sel = grid[i1]
        theta_sel = pick(r1.theta.view(L, n_sel, G, -1), i1)
        val_acc, val_loss = pick(acc1, i1), pick(loss1, i1)

        # 2. fine grid around each layer's coarse best, warm-started from it
        F = len(self.fine_steps)
        if F:
            steps = torch.tensor(self.fine_steps, dtype=torch.float64, device=dev)
            C2 = (C_sel.unsqueeze(-1) * 10.0**steps).reshape(L, n_sel * F)
            y2 = labels[sel, :n_tr].repeat_interleave(F, dim=0).T.contiguous()
            yv2 = labels[sel, n_tr : n_tr + n_va].repeat_interleave(F, dim=0).T.contiguous()
            t0 = theta_sel.unsqueeze(2).expand(L, n_sel, F, theta_sel.shape[-1]).reshape(L, n_sel * F, -1).clone()
            r2 = self._fit(X_tr, m_tr, s_tr, y2, C2, K, theta0=t0)
            acc2, loss2 = evaluate(X_va, m_tr, s_tr, r2.theta, yv2, K)
            # candidates: the coarse best (index 0) and the fine values
            acc_c = torch.cat([val_acc.unsqueeze(-1), acc2.view(L, n_sel, F)], dim=-1)
            loss_c = torch.cat([val_loss.unsqueeze(-1), loss2.view(L, n_sel, F)], dim=-1)
            C_c = torch.cat([C_sel.unsqueeze(-1), C2.view(L, n_sel, F)], dim=-1)
            theta_c = torch.cat([theta_sel.unsqueeze(2), r2.theta.view(L, n_sel, F, -1)], dim=2)
            i2 = best(acc_c, loss_c)
            C_sel, theta_sel = pick(C_c, i2), pick(theta_c, i2)
            val_acc, val_loss = pick(acc_c, i2), pick(loss_c, i2)

        # 3. refit on train+val at the selected C: real, control, permutations (at the real C)
        n_fit = n_tr + n_va
        X_fit = X[:, :n_fit]
        m_fit, s_fit = standardizer(X_fit)
        S = data.n_sets
        C3 = torch.stack([C_sel[:, sel.index(s)] if s in sel else C_sel[:, 0] for s in range(S)], dim=1)
        y3 = labels[:, :n_fit].T.contiguous()  # (n_fit, S)
        t3 = torch.zeros(L, S, K * D + K, dtype=X.dtype, device=dev)
        t3[:, :n_sel] = theta_sel
        r3 = self._fit(X_fit, m_fit, s_fit, y3, C3, K, theta0=t3)
        proba = predict_proba(X[:, n_fit:], m_fit, s_fit, r3.theta, K).cpu().numpy()  # (L, S, n_te, K)

        W, b = _unpack(r3.theta, D, K)
        W, b, m_fit, s_fit = W[:, 0].cpu(), b[:, 0].cpu(), m_fit.cpu(), s_fit.cpu()
        C_sel, val_acc, val_loss = C_sel.cpu(), val_acc.cpu(), val_loss.cpu()
        n_iter, conv = r3.n_iter.cpu(), r3.converged.cpu()
        outs = []
        for i, key in enumerate(keys):
            hyper = {
                "C": float(C_sel[i, 0]),
                "val_accuracy": float(val_acc[i, 0]),
                "val_log_loss": float(val_loss[i, 0]),
                "n_iter": int(n_iter[i, 0]),
                "converged": bool(conv[i, 0]),
            }
            control = None
            if data.has_control:
                control = {
                    "C": float(C_sel[i, 1]),
                    "val_accuracy": float(val_acc[i, 1]),
                    "n_iter": int(n_iter[i, 1]),
                    "converged": bool(conv[i, 1]),
                }
            outs.append(
                LayerOutput(
                    key=key,
                    test_proba=proba[i],
                    hyper=hyper,
                    control_hyper=control,
                    warnings=self._warnings(hyper["C"], hyper["converged"]),
                    weights={
                        "W": W[i].T.numpy().copy(),  # (D, K)
                        "b": b[i].numpy().copy(),
                        "mean": m_fit[i].numpy().copy(),
                        "scale": s_fit[i].numpy().copy(),
                    },
                )
            )
        return outs
