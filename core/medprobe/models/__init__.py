"""Models as the zoo gives them: card lookup, loading and preparing a model, LoRA application, HF helpers."""
