"""The closed-set classification question asked to MLLMs (captured at the final input token).

Adapters wrap the question in their chat template with the image placeholder; the question
itself is the same for every model so their final-input-token features are comparable.
"""

from __future__ import annotations

from typing import Sequence

DEFAULT_TEMPLATE = (
    "Which of the following best describes this image? Options: {options}. "
    "Answer with one option."
)


def classification_question(classes: Sequence[str], template: str | None = None) -> str:
    """``classes`` = ["benign", "malignant", "normal"] -> the question listing them in order."""
    options = ", ".join(c.replace("_", " ") for c in classes)
    return (template or DEFAULT_TEMPLATE).format(options=options)
