"""The timm plugin's public interface for other plugins (stable; the rest of the package is internal).

Families whose towers *are* timm models (open_clip's timm-trunk towers, e.g. BiomedCLIP's ViT) reuse
the timm layer-map derivation instead of re-declaring it::

    from medprobe_timm.api import plan_timm_layers, probe_forward, with_stage_indices

- :func:`plan_timm_layers` -- layer groups of an instantiated timm model (from its ``feature_info``);
- :func:`probe_forward` -- the forward pass the hooks observe (no classifier head);
- :func:`with_stage_indices` -- per-stage indices for hierarchical models;
- :func:`find_weight_file` -- the weights file of a local checkpoint path (safetensors first);
- :func:`rgb_image` -- a PIL image as 3-channel RGB.

Importing this module imports torch and timm.
"""

from __future__ import annotations

from .adapter import rgb_image
from .layers import plan_timm_layers, probe_forward, with_stage_indices
from .weights import find_weight_file

__all__ = ["plan_timm_layers", "probe_forward", "with_stage_indices", "find_weight_file", "rgb_image"]
