"""medprobe family plugin: LLaVA in the transformers layout (``LlavaForConditionalGeneration``).

Covers llava-hf checkpoints and original-code LLaVA checkpoints (LLaVA-Med, HuatuoGPT-Vision)
once converted; unconverted original-layout checkpoints are refused with instructions.
``plugin`` registers the adapter lazily; ``adapter`` holds it (imports torch/transformers).
"""
