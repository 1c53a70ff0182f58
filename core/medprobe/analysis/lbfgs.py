"""Batched L-BFGS: many independent smooth problems minimised together, one history each.

The linear probe solves one L2-regularised multinomial logistic regression per (layer, head),
where a head is one (label set, C) pair. The problems share nothing but the data layout, so this
solver keeps a separate L-BFGS state per problem -- its own curvature pairs, its own backtracking
(Armijo) step, its own stopping test -- while every function evaluation computes all problems in
one batched pass (one ``torch.bmm`` per layer chunk). Problems that have converged are frozen;
heads in which every layer has converged, and layers in which every head has converged, are
dropped from the batch ("compaction"), so a few slow, weakly regularised problems do not make all
the others pay for their iterations.

Shapes: parameters ``theta`` are (L, H, P): L layers, H heads, P parameters per problem.
``fun(theta, rows, cols)`` evaluates layers ``rows`` and heads ``cols`` (index tensors into the
original L and H) for a ``theta`` of shape (len(rows), len(cols), P) and returns
``(f (len(rows), len(cols)), grad (len(rows), len(cols), P))``.

Stopping rules per problem, after scipy's L-BFGS-B as scikit-learn calls it: ``max|grad| <=
gtol`` (scikit-learn's ``tol``), or a relative decrease of f below ``ftol`` (float32 precision),
or ``max_iter`` iterations, or a failed line search (recorded as not converged).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

Fun = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class LBFGSResult:
    """``theta`` (L, H, P) solutions, ``f`` (L, H) final objectives, ``n_iter`` (L, H) iterations,
    ``converged`` (L, H) bool (gradient or relative-decrease test met)."""

    theta: torch.Tensor
    f: torch.Tensor
    n_iter: torch.Tensor
    converged: torch.Tensor


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-problem inner product over the last axis: (L, H, P) x (L, H, P) -> (L, H)."""
    return (a * b).sum(-1)


def batched_lbfgs(
    fun: Fun,
    theta0: torch.Tensor,
    *,
    max_iter: int = 1000,
    gtol: float = 1e-4,
    ftol: float = 2e-7,
    history: int = 10,
    c1: float = 1e-4,
    max_backtracks: int = 30,
    compact_heads_below: float = 0.75,
    compact_layers_below: float = 0.5,
    h0_inv: torch.Tensor | None = None,
) -> LBFGSResult:
    """Minimise L x H independent problems from ``theta0`` (L, H, P); see the module docstring.

    ``h0_inv`` (L, H, P), optional: a fixed diagonal inverse-Hessian estimate used as the initial
    matrix of every two-loop recursion (preconditioned L-BFGS) instead of the scalar
    ``s.y / y.y`` scaling; the first step then starts at length 1."""
    L, H, P = theta0.shape
    device, dtype = theta0.device, theta0.dtype
    out_theta = theta0.clone()
    out_f = torch.zeros(L, H, dtype=dtype, device=device)
    out_iter = torch.zeros(L, H, dtype=torch.long, device=device)
    out_conv = torch.zeros(L, H, dtype=torch.bool, device=device)

    rows = torch.arange(L, device=device)
    cols = torch.arange(H, device=device)
    x = theta0.clone()
    f, g = fun(x, rows, cols)
    active = g.abs().amax(-1) > gtol
    out_conv |= ~active
    n_iter = torch.zeros(L, H, dtype=torch.long, device=device)
    S = torch.zeros(history, L, H, P, dtype=dtype, device=device)
    Y = torch.zeros_like(S)
    rho = torch.zeros(history, L, H, dtype=dtype, device=device)
    gamma = torch.ones(L, H, dtype=dtype, device=device)
    hinv = h0_inv
    n_pairs = 0
    head = 0  # ring position of the next pair

    def flush() -> None:
        """Copy the current state of every problem still in the batch into the outputs."""
        r, c = rows[:, None], cols[None, :]
        out_theta[r, c] = x
        out_f[r, c] = f
        out_iter[r, c] = n_iter

    for it in range(max_iter):
        if not bool(active.any()):
            break
        # -- compaction: drop heads (layers) in which no problem is still active ------------------
        head_alive = active.any(0)
        layer_alive = active.any(1)
        drop_heads = float(head_alive.float().mean()) < compact_heads_below
        drop_layers = float(layer_alive.float().mean()) < compact_layers_below
        if drop_heads or drop_layers:
            flush()
            kr = layer_alive if drop_layers else torch.ones_like(layer_alive)
            kc = head_alive if drop_heads else torch.ones_like(head_alive)
            rows, cols = rows[kr], cols[kc]
            x, f, g = x[kr][:, kc], f[kr][:, kc], g[kr][:, kc]
            active, n_iter, gamma = active[kr][:, kc], n_iter[kr][:, kc], gamma[kr][:, kc]
            S, Y, rho = S[:, kr][:, :, kc], Y[:, kr][:, :, kc], rho[:, kr][:, :, kc]
            if hinv is not None:
                hinv = hinv[kr][:, kc]

        # -- two-loop recursion: d = -H g -------------------------------------------------------
        q = g.clone()
        order = [(head - 1 - k) % history for k in range(min(n_pairs, history))]
        alphas = {}
        for i in order:  # newest first
            a = rho[i] * _dot(S[i], q)
            alphas[i] = a
            q -= a.unsqueeze(-1) * Y[i]
        r = hinv * q if hinv is not None else gamma.unsqueeze(-1) * q
        for i in reversed(order):  # oldest first
            beta = rho[i] * _dot(Y[i], r)
            r += S[i] * (alphas[i] - beta).unsqueeze(-1)
        d = -r
        gd = _dot(g, d)
        bad = ~(gd < 0)
        if bool(bad.any()):  # not a descent direction: fall back to steepest descent
            d = torch.where(bad.unsqueeze(-1), -g, d)
            gd = _dot(g, d)
        d = d * active.unsqueeze(-1)
        gd = gd * active

        # -- batched backtracking line search (Armijo) -----------------------------------------
        if it == 0 and hinv is None:
            t = torch.clamp(1.0 / g.abs().sum(-1).clamp_min(1e-12), max=1.0)
        else:
            t = torch.ones_like(f)
        pending = active.clone()
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_backtracks):
            trial = x + (t * pending).unsqueeze(-1) * d
            f_t, g_t = fun(trial, rows, cols)
            ok = pending & torch.isfinite(f_t) & (f_t <= f + c1 * t * gd)
            x_new = torch.where(ok.unsqueeze(-1), trial, x_new)
            f_new = torch.where(ok, f_t, f_new)
            g_new = torch.where(ok.unsqueeze(-1), g_t, g_new)
            pending &= ~ok
            if not bool(pending.any()):
                break
            t = torch.where(pending, t * 0.5, t)
        failed = pending  # no acceptable step: stop these problems where they are

        moved = active & ~failed
        s = x_new - x
        y = g_new - g
        sy = _dot(s, y)
        yy = _dot(y, y)
        valid = moved & (sy > 1e-10 * yy.clamp_min(1e-30))
        S[head] = torch.where(valid.unsqueeze(-1), s, torch.zeros_like(s))
        Y[head] = torch.where(valid.unsqueeze(-1), y, torch.zeros_like(y))
        rho[head] = torch.where(valid, 1.0 / sy.clamp_min(1e-30), torch.zeros_like(sy))
        gamma = torch.where(valid, sy / yy.clamp_min(1e-30), gamma)
        head = (head + 1) % history
        n_pairs += 1

        decrease = f - f_new
        small = moved & (decrease <= ftol * torch.maximum(torch.maximum(f.abs(), f_new.abs()), torch.ones_like(f)))
        x, f, g = x_new, f_new, g_new
        n_iter = n_iter + active.long()
        grad_ok = g.abs().amax(-1) <= gtol
        conv_now = active & ((grad_ok & moved) | small)
        out_conv[rows[:, None], cols[None, :]] |= conv_now
        active = active & ~conv_now & ~failed

    flush()
    return LBFGSResult(theta=out_theta, f=out_f, n_iter=out_iter, converged=out_conv)
