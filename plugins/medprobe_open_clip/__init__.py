"""medprobe family plugin: open_clip image towers (OpenAI CLIP, BiomedCLIP, ...) as baselines.

``plugin`` registers the ``open_clip`` adapter lazily (imports nothing heavy); ``adapter``
holds it. timm-trunk towers reuse :mod:`medprobe_timm.layers` for their layer maps.
"""
