"""medprobe family plugin: timm image models (CNNs, ViTs, MLP-Mixers, hybrids) as baselines.

``plugin`` registers the ``timm`` adapter lazily (imports nothing heavy); ``adapter`` holds it,
``layers`` derives layer maps from an instantiated model, ``weights`` reads local checkpoints;
``api`` is the interface other plugins may import (open_clip's timm-trunk towers use it).
"""
