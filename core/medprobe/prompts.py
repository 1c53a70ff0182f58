"""The closed-set classification question asked to MLLMs, and the one rule "class name -> answer text".

Adapters wrap the question in their chat template with the image placeholder; the question
itself is the same for every model so their final-input-token features are comparable.
:func:`answer_text` is how a class is written in the question, in ``classify --mode score``'s
candidate answers, in ``finetune``'s training targets and (hyphens also read as spaces) in
zero-shot CLIP prompts: all four call it, so they always agree.
"""

from __future__ import annotations

from typing import Sequence

DEFAULT_TEMPLATE = (
    "Which of the following best describes this image? Options: {options}. "
    "Answer with one option."
)


def answer_text(class_name: str) -> str:
    """A class as the model reads and answers it: its name with ``_`` read as a space
    (``round_lesion`` -> ``round lesion``)."""
    return class_name.replace("_", " ")


def classification_question(classes: Sequence[str], template: str | None = None) -> str:
    """``classes`` = ["benign", "malignant", "normal"] -> the question listing them in order."""
    options = ", ".join(answer_text(c) for c in classes)
    return (template or DEFAULT_TEMPLATE).format(options=options)
