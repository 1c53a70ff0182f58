"""The weights condition of a loaded model, and random-weights twins.

A *random-weights twin* is the same architecture and config as a model, with seeded random
initialisation instead of the trained weights, extracted and probed exactly like it: the accuracy
its layers reach is the floor that architecture + probe capacity give without any training
(issue 12, item 4a). Every family loads one with ``random_init=True`` (``medprobe extract
--random-init``); full-size MLLMs take the config of the same checkpoint (``--source`` or the
card's hub id) through the same load path and never read its weights.

:func:`weights_condition` classifies ``LoadedModel.weights`` into the ``condition`` block of a run
manifest::

    {"weights": "pretrained" | "random" | "tiny-random",
     "source": "hub:org/name@main" | "local:/dir" | None,   # where weights or config came from
     "seed": 0 | None,                                        # of the random initialisation
     "lora": None | {"path": ..., "sha256": ..., "merged": ...},
     "redrawn_zero_init": [...]}                              # only on twins where it applies

:func:`random_init_label` / :func:`parse_weights` write and read the weights label
``random-init(seed=S):<source label>`` of a twin. No torch at import.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

WEIGHTS_CONDITIONS = ("pretrained", "random", "tiny-random")
_RANDOM = re.compile(r"^random-init(?:\(seed=(?P<seed>-?\d+)\))?(?::(?P<source>.*))?$")
_TINY = re.compile(r"^tiny-random\(seed=(?P<seed>-?\d+)\)$")


def random_init_label(seed: int, source: str | None) -> str:
    """``LoadedModel.weights`` of a twin: ``random-init(seed=0):hub:org/name@main``."""
    return f"random-init(seed={int(seed)})" + (f":{source}" if source else "")


def parse_weights(weights: str) -> dict[str, Any]:
    """``{"weights": condition, "source": ..., "seed": ...}`` of a ``LoadedModel.weights`` label."""
    m = _TINY.match(weights or "")
    if m:
        return {"weights": "tiny-random", "source": None, "seed": int(m["seed"])}
    m = _RANDOM.match(weights or "")
    if m:
        return {"weights": "random", "source": m["source"] or None,
                "seed": int(m["seed"]) if m["seed"] is not None else None}
    return {"weights": "pretrained", "source": weights or None, "seed": None}


def weights_condition(weights: str, adapter_lora: Mapping[str, Any] | None = None,
                      redrawn: list[str] | None = None) -> dict[str, Any]:
    """The manifest's ``condition`` block (module doc) from the weights label and LoRA identity;
    a twin whose zero-initialised matrices were redrawn (:func:`build_random`) lists them under
    ``redrawn_zero_init``."""
    out = parse_weights(weights)
    out["lora"] = dict(adapter_lora) if adapter_lora else None
    if redrawn:
        out["redrawn_zero_init"] = list(redrawn)
    return out


def is_random_twin(condition: Mapping[str, Any] | None) -> bool:
    return bool(condition) and condition.get("weights") == "random"


def build_random(cls: Any, config: Any, *, seed: int, dtype: Any, device: str = "cpu", make: Any = None) -> tuple[Any, list[str]]:
    """``cls`` built from ``config`` with weights drawn from ``torch.manual_seed(seed)`` (the
    class's own ``_init_weights``), on the CPU (so the draw does not depend on the device), in
    ``dtype``, then moved to ``device``. ``make(config, dtype)`` replaces ``cls._from_config`` (e.g.
    ``AutoModelForCausalLM.from_config`` for remote-code families).

    A weight matrix (>= 2 dims) the class initialises to all zeros (Gemma 3's
    ``mm_input_projection_weight``) would make every later layer see a constant image: such
    matrices are redrawn from N(0, initializer_range^2) in the same seeded stream, and their names
    returned so the manifest can say so. Returns ``(module in eval mode, redrawn names)``."""
    import torch

    from .hf.tiny import seeded

    with seeded(seed):
        model = make(config, dtype) if make is not None else cls._from_config(config, dtype=dtype)
        std = _initializer_range(config)
        redrawn = []
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.ndim >= 2 and p.is_floating_point() and not bool(p.any()):
                    p.normal_(0.0, std)
                    redrawn.append(name)
    return model.to(device).eval(), redrawn


def _initializer_range(config: Any) -> float:
    for cfg in (config, getattr(config, "text_config", None), getattr(config, "vision_config", None)):
        value = getattr(cfg, "initializer_range", None) if cfg is not None else None
        if isinstance(value, (int, float)) and value > 0:
            return float(value)
    return 0.02
