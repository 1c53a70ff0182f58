"""A checkpoint built around a language model carries that LLM's own chat template, which takes
string content only (``'\\n' + message['content']``). The prompt renderer must then put the image
placeholder into the text instead of failing on the image item (seen first with SmolLM2's
template; checked here on a tiny LLaVA so it runs without the real weights)."""

from __future__ import annotations

import dataclasses

import pytest

from medprobe.adapter import AdapterError
from medprobe.models.hf.prompting import render_prompt
from medprobe.models.prepare import load_model

#: the structure of SmolLM2-135M-Instruct's template (GGUF metadata): string content only
TEXT_ONLY = (
    "{% for message in messages %}{{ '<s>' + message['role'] + '\\n' + message['content'] + '</s>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<s>assistant\\n' }}{% endif %}"
)


@pytest.fixture
def tiny_llava():
    loaded = load_model("llava-1.5-7b", tiny=True)
    loaded.card = dataclasses.replace(loaded.card, prompt_template=None)  # the chat template decides
    return loaded


def test_text_only_template_gets_the_placeholder_in_the_text(tiny_llava):
    processor = tiny_llava.processor
    processor.chat_template = TEXT_ONLY
    processor.tokenizer.chat_template = TEXT_ONLY
    text = render_prompt(tiny_llava.card, processor, "Is this normal?", "<image>")
    assert text == "<s>user\n<image>\nIs this normal?</s>\n<s>assistant\n"
    batch = tiny_llava.adapter.preprocess(tiny_llava, [_image()], "Is this normal?")
    assert int(batch.roles["image"].sum()) == tiny_llava.model.config.image_seq_length


def test_a_template_that_drops_the_image_everywhere_still_fails_clearly(tiny_llava):
    drops = "{% for message in messages %}{{ message['role'] }}: question{% endfor %}"
    tiny_llava.processor.chat_template = drops
    tiny_llava.processor.tokenizer.chat_template = drops
    with pytest.raises(AdapterError, match="did not insert the image placeholder"):
        render_prompt(tiny_llava.card, tiny_llava.processor, "Is this normal?", "<image>")


def _image():
    from medprobe.testing import synthetic_images

    return synthetic_images(1, size=64)[0]
