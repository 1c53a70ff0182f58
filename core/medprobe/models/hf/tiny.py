"""Tiny random models: seeded construction and the labels that mark them synthetic.

``with seeded(seed): model = Cls(config)`` initialises every weight from ``torch.manual_seed(seed)``
inside a forked RNG, so the same seed gives bit-identical weights and the caller's global RNG
state is left as it was.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch


def tiny_weights(seed: int) -> str:
    """The ``LoadedModel.weights`` label of a tiny random model (flagged synthetic in reports)."""
    return f"tiny-random(seed={seed})"


def tiny_resolved_against(class_name: str, seed: int) -> str:
    """The ``LayerMap.resolved_against`` text of a map resolved on a tiny random model."""
    return f"tiny random {class_name} (seed={seed})"


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator for the block, restoring the previous state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
