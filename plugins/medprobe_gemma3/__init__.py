"""medprobe family plugin: Gemma 3 / MedGemma (stock ``Gemma3ForConditionalGeneration``).

``plugin`` registers the adapter lazily; ``adapter`` holds it (imports torch/transformers).
"""
