"""Shared fixtures of the baseline-adapter tests: hook a model's modules by path during one
call, and put hooked activations into the (B, C, H, W) form timm/open_clip
``forward_intermediates`` return, so the two can be compared element by element."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Sequence

import pytest
import torch


def run_hooked(model: torch.nn.Module, paths: Sequence[str], fn: Callable[[], Any]) -> dict[str, torch.Tensor]:
    """Call ``fn()`` with a forward hook on each module path; return path -> its output tensor
    (first element of tuple outputs). Fails if a path fires twice or never."""
    outputs: dict[str, torch.Tensor] = {}
    handles = []
    for path in paths:
        def hook(_m, _i, out, path=path):
            assert path not in outputs, f"{path} fired twice"
            outputs[path] = (out[0] if isinstance(out, (tuple, list)) else out).detach().clone()
        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    missing = [p for p in paths if p not in outputs]
    assert not missing, f"hooks never fired: {missing}"
    return outputs


def as_nchw(t: torch.Tensor, layout: str, prefix_tokens: int, hw: tuple[int, int]) -> torch.Tensor:
    """A hooked activation as (B, C, H, W): NCHW as is; NLC without its prefix tokens, the
    remaining tokens laid out row-major on the (H, W) grid."""
    if layout == "NCHW":
        return t
    assert layout == "NLC", layout
    tokens = t[:, prefix_tokens:]
    b, n, c = tokens.shape
    assert n == hw[0] * hw[1], (tuple(t.shape), prefix_tokens, hw)
    return tokens.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)


@pytest.fixture
def hooks() -> SimpleNamespace:
    return SimpleNamespace(run=run_hooked, nchw=as_nchw)
