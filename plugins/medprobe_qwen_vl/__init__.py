"""medprobe family plugin: Qwen2-VL and Qwen2.5-VL (stock transformers classes).

``plugin`` registers the adapters lazily; ``adapter`` holds them (imports torch/transformers).
"""
