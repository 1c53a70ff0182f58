"""The text an MLLM receives with each image: the question in a prompt around the image placeholder.

Order of precedence:

1. the card's ``prompt_template``: a plain string in which ``{question}`` is replaced by the
   question and ``{image}`` by the family's image placeholder (``<image>``,
   ``<|vision_start|><|image_pad|><|vision_end|>``, ``<start_of_image>``); the template may also
   spell the placeholder out literally. A template with neither raises.
2. the processor's (or its tokenizer's) chat template, applied to one user turn holding the
   image and the question, with the generation prompt appended. A text-only template (a
   language model's own, as a checkpoint built around an LLM carries: SmolLM2, Llama) takes
   string content only and fails on, or drops, the image item; it is then given
   ``"{placeholder}\n{question}"`` as the turn's text;
3. ``"{placeholder}\\n{question}"``.

Replacement is literal (``str.replace``), so templates may contain other braces (Jinja, JSON).
"""

from __future__ import annotations

from typing import Any

from ...adapter import AdapterError
from ...cards import ModelCard

#: asked when the caller gives no question (feature extraction without a task)
DEFAULT_QUESTION = "What is shown in this image?"


def user_turn(question: str) -> list[dict[str, Any]]:
    """One user message with an image and the question, in the transformers chat format."""
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]


def chat_template_of(processor: Any) -> str | None:
    """The chat template the processor (or its tokenizer) carries, if any."""
    template = getattr(processor, "chat_template", None)
    if not template:
        template = getattr(getattr(processor, "tokenizer", None), "chat_template", None)
    return template or None


def render_prompt(card: ModelCard, processor: Any, question: str | None, placeholder: str) -> str:
    """The prompt text for one image (see the module docstring for the precedence)."""
    question = question if question else DEFAULT_QUESTION
    template = card.prompt_template
    if template:
        if "{image}" not in template and placeholder not in template:
            raise AdapterError(
                f"card '{card.id}': prompt_template has no image placeholder; write '{{image}}' "
                f"(or '{placeholder}') where the image goes"
            )
        return template.replace("{image}", placeholder).replace("{question}", question)
    if chat_template_of(processor) is not None:
        try:
            rendered = _apply(processor, user_turn(question))
        except (TypeError, ValueError, _template_error()):  # a text-only template cannot take content items
            rendered = ""
        if placeholder not in rendered:
            rendered = _apply(processor, [{"role": "user", "content": f"{placeholder}\n{question}"}])
        if placeholder not in rendered:
            raise AdapterError(
                f"card '{card.id}': the processor's chat template did not insert the image placeholder "
                f"'{placeholder}'; set prompt_template on the card"
            )
        return rendered
    return f"{placeholder}\n{question}"


def _apply(processor: Any, messages: list[dict[str, Any]]) -> str:
    """The chat template applied to ``messages`` with the generation prompt, as text."""
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    if isinstance(rendered, list):  # batched form of some versions
        rendered = rendered[0]
    return str(rendered)


def _template_error() -> type[Exception]:
    """jinja2's template error class (the chat templates' engine)."""
    from jinja2 import TemplateError

    return TemplateError
