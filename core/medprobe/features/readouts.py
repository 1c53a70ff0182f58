"""Readouts: how one layer's activation becomes one vector per image.

A readout reduces a hooked activation to (B, D) float32 **inside the hook**, so the full
(B, T, C) tensor is never kept. Which readouts apply depends on the layer's layout and stage:

===============  =====================================================================
readout          meaning
===============  =====================================================================
``image-mean``   mean over the tokens that carry the image: ViT patch tokens (prefix/CLS
                 tokens excluded), CNN global average pool, packed per-image mean (Qwen-VL
                 vision / merger), every connector output token, and in LLM layers the
                 image-token positions of the sequence the LLM receives (paper: "averaged
                 image token embeddings")
``cls``          the first prefix token of a ViT block (only where ``prefix_tokens > 0``)
``last-token``   LLM layers: the final input token of each row (paper: semantic mapping)
``text-mean``    LLM layers: mean over attended text (non-image) positions
===============  =====================================================================

Inputs per layout: ``NCHW`` (B, C, H, W); ``NLC`` (B, T, C); ``packed`` (sum_i T_i, C) with the
per-image token counts T_i; ``NC`` (B, C).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ..layermap import LayerSpec
from ..registry import MedprobeError

if TYPE_CHECKING:  # the names and rules are torch-free: the CLI checks --readout while parsing
    import torch

READOUTS = ("image-mean", "cls", "last-token", "text-mean")
DEFAULT_READOUTS = ("image-mean", "last-token")


class ReadoutError(MedprobeError):
    """A readout cannot be computed for a layer (wrong shape, missing token roles)."""


def parse_readouts(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"image-mean,last-token"`` -> ("image-mean", "last-token"); unknown names raise."""
    if value is None:
        return DEFAULT_READOUTS
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [n for n in names if n not in READOUTS]
    if bad:
        raise ReadoutError(f"unknown readout(s) {bad}; choose from {list(READOUTS)}")
    return tuple(dict.fromkeys(names))


def applicable(layer: LayerSpec, requested: Sequence[str]) -> list[str]:
    """The requested readouts that make sense for ``layer`` (``image-mean`` always does)."""
    out = []
    for name in requested:
        if name == "image-mean":
            out.append(name)
        elif name == "cls" and layer.layout == "NLC" and layer.prefix_tokens > 0:
            out.append(name)
        elif name in ("last-token", "text-mean") and layer.stage == "llm" and layer.layout == "NLC":
            out.append(name)
    return out


def _masked_mean(x: torch.Tensor, mask: torch.Tensor, layer: LayerSpec, role: str) -> torch.Tensor:
    """x (B, T, C), mask (B, T) bool -> (B, C) float32 mean over the True positions."""
    import torch

    if mask.shape != x.shape[:2]:
        raise ReadoutError(
            f"layer '{layer.id}': token-role mask '{role}' has shape {tuple(mask.shape)} but the hook output is "
            f"{tuple(x.shape)}; the adapter's roles must cover the sequence the LLM receives"
        )
    m = mask.to(device=x.device, dtype=torch.bool)
    counts = m.sum(dim=1, keepdim=True).to(torch.float32)
    if bool((counts == 0).any()):
        rows = (counts[:, 0] == 0).nonzero().flatten().tolist()
        raise ReadoutError(f"layer '{layer.id}': rows {rows} have no '{role}' positions")
    # masked_fill (not a multiply) so NaN/Inf at unselected positions cannot leak into the mean
    summed = x.float().masked_fill(~m.unsqueeze(-1), 0.0).sum(dim=1)
    return summed / counts


def reduce(
    layer: LayerSpec,
    x: torch.Tensor,
    readouts: Sequence[str],
    roles: dict[str, torch.Tensor] | None = None,
    packed: Sequence[int] | None = None,
) -> dict[str, torch.Tensor]:
    """Apply ``readouts`` to one hooked activation ``x``; returns name -> (B, D) float32 on CPU.

    The results are fresh tensors (``clone``), never views of ``x``.
    """
    import torch

    out: dict[str, torch.Tensor] = {}
    if layer.layout == "NCHW":
        if x.dim() != 4:
            raise ReadoutError(f"layer '{layer.id}': expected (B, C, H, W), got {tuple(x.shape)}")
        out["image-mean"] = x.mean(dim=(2, 3), dtype=torch.float32)
    elif layer.layout == "NC":
        if x.dim() != 2:
            raise ReadoutError(f"layer '{layer.id}': expected (B, C), got {tuple(x.shape)}")
        out["image-mean"] = x.float()
    elif layer.layout == "packed":
        if x.dim() != 2 or packed is None:
            raise ReadoutError(f"layer '{layer.id}': packed layout needs (sum_T, C) and per-image counts, got {tuple(x.shape)}")
        if sum(packed) != x.shape[0]:
            raise ReadoutError(f"layer '{layer.id}': per-image token counts {list(packed)} do not sum to {x.shape[0]}")
        out["image-mean"] = torch.stack([chunk.mean(dim=0, dtype=torch.float32) for chunk in torch.split(x, list(packed))])
    else:  # NLC
        if x.dim() != 3:
            raise ReadoutError(f"layer '{layer.id}': expected (B, T, C), got {tuple(x.shape)}")
        for name in readouts:
            if name == "image-mean":
                if layer.stage == "llm":
                    if not roles or "image" not in roles:
                        raise ReadoutError(f"layer '{layer.id}': image-mean in an LLM layer needs the 'image' token role")
                    out[name] = _masked_mean(x, roles["image"], layer, "image")
                else:
                    out[name] = x[:, layer.prefix_tokens :].mean(dim=1, dtype=torch.float32)
            elif name == "cls":
                out[name] = x[:, 0].float()
            elif name == "last-token":
                if not roles or "last" not in roles:
                    raise ReadoutError(f"layer '{layer.id}': last-token needs the 'last' token role")
                out[name] = _masked_mean(x, roles["last"], layer, "last")
            elif name == "text-mean":
                if not roles or "text" not in roles:
                    raise ReadoutError(f"layer '{layer.id}': text-mean needs the 'text' token role")
                out[name] = _masked_mean(x, roles["text"], layer, "text")
    return {k: v.detach().to("cpu", torch.float32).clone() for k, v in out.items() if k in readouts}
