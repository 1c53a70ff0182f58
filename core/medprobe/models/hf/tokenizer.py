"""Tiny tokenizers built in-process with the ``tokenizers`` library (no files, no downloads).

Tiny random MLLMs need a real tokenizer so that the family's real processor class can expand
image placeholders, pad batches and apply a chat template. :func:`build_word_tokenizer` makes a
deterministic word-level tokenizer: a fixed vocabulary (core tokens, the family's special tokens,
then plain words), lower-casing, a ``\\w+|[^\\w\\s]+`` pre-tokenizer and ``<unk>`` for everything
else, wrapped in :class:`transformers.PreTrainedTokenizerFast`. The same arguments always give
the same token ids.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

#: plain words every tiny tokenizer knows: the classification question of ``medprobe.prompts``,
#: chat-template role names and a few common words.
BASE_WORDS: tuple[str, ...] = (
    "which", "of", "the", "following", "best", "describes", "this", "image", "options", "answer",
    "with", "one", "option", "what", "is", "shown", "in", "a", "an", "and", "or", "benign",
    "malignant", "normal", "abnormal", "user", "assistant", "system", "model", "you", "are",
    "helpful", "hello", "?", ".", ",", ":",
)


def build_word_tokenizer(
    special_tokens: Sequence[str] = (),
    named_tokens: Mapping[str, str] | None = None,
    words: Sequence[str] = BASE_WORDS,
    *,
    bos_token: str = "<s>",
    eos_token: str = "</s>",
    pad_token: str = "<pad>",
    unk_token: str = "<unk>",
    padding_side: str = "right",
    add_bos: bool = False,
    chat_template: str | None = None,
) -> PreTrainedTokenizerFast:
    """A deterministic word-level tokenizer.

    Token ids: ``pad`` 0, ``bos`` 1, ``eos`` 2, ``unk`` 3, then ``special_tokens`` and the values of
    ``named_tokens`` in order (added as special tokens, never split), then ``words``.
    ``named_tokens`` maps attribute names to tokens (``{"image_token": "<image>"}``) so that
    ``tok.image_token`` / ``tok.image_token_id`` exist, as processors expect. ``add_bos``
    prepends ``bos_token`` when encoding with special tokens (as Llama / Mistral / Gemma
    tokenizers do; Qwen's do not).
    """
    named_tokens = dict(named_tokens or {})
    core = [pad_token, bos_token, eos_token, unk_token]
    specials = list(dict.fromkeys([*core, *special_tokens, *named_tokens.values()]))
    plain = [w for w in dict.fromkeys(words) if w not in specials]
    vocab = {tok: i for i, tok in enumerate([*specials, *plain])}

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk_token))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A", pair=f"{bos_token} $A $B", special_tokens=[(bos_token, vocab[bos_token])]
        )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos_token,
        eos_token=eos_token,
        pad_token=pad_token,
        unk_token=unk_token,
        padding_side=padding_side,
        extra_special_tokens=named_tokens or None,
    )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer
