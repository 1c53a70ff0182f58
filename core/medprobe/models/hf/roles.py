"""Token-role masks over the sequence an MLLM's language model receives.

The readouts pool LLM-layer activations over positions chosen by role (see
:mod:`medprobe.features.readouts`): ``image`` (the positions the projected image features are scattered
into), ``text`` (every other attended position) and ``last`` (the final attended position of each
row, where the answer is decided). Padding is in no role. Works for left and right padding.
"""

from __future__ import annotations

import torch


def token_roles(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_token_id: int,
) -> dict[str, torch.Tensor]:
    """Boolean (B, T) masks ``image``, ``text`` and ``last`` on the CPU.

    ``input_ids``: (B, T) token ids; ``attention_mask``: (B, T), 1 on real tokens, 0 on padding
    (``None``: every position is attended). ``last`` has exactly one True per row: the attended
    position with the highest index. Raises ``ValueError`` for a row with no attended position.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    ids = input_ids.detach().to("cpu")
    if attention_mask is None:
        attended = torch.ones_like(ids, dtype=torch.bool)
    else:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )
        attended = attention_mask.detach().to("cpu").bool()
    empty = (~attended.any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"rows {empty} have no attended token")
    image = (ids == image_token_id) & attended
    text = attended & ~image
    positions = torch.arange(ids.shape[1]).expand_as(ids)
    last_index = torch.where(attended, positions, torch.full_like(positions, -1)).max(dim=1).values
    last = positions == last_index.unsqueeze(1)
    return {"image": image, "text": text, "last": last}
