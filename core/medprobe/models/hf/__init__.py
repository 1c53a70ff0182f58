"""Shared Hugging Face code for the MLLM family adapters (LLaVA, Qwen-VL, Gemma 3, Hulu-Med).

Modules (each imported only by adapter modules, never on the CLI path):

``medprobe.models.hf.tokenizer``
    tiny word-level tokenizers built in-process (no downloads) for tiny random models.
``medprobe.models.hf.loading``
    ``from_pretrained`` keyword arguments (revision, dtype, device map, offline mode, remote
    code), the honest ``weights`` label, and reading a checkpoint's ``config.json``.
``medprobe.models.hf.roles``
    token-role masks (``image`` / ``text`` / ``last``) over the sequence the LLM receives.
``medprobe.models.hf.prompting``
    the question wrapped in the card's prompt template or the processor's chat template.
``medprobe.models.hf.tiny``
    seeding and labelling of tiny random models.
``medprobe.models.hf.stock``
    :class:`~medprobe.models.hf.stock.StockMLLMAdapter`, the base of adapters whose model class
    ships with transformers.

This package's ``__init__`` imports nothing heavy (no torch, no transformers).
"""
