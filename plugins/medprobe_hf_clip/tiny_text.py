"""An in-process text tokenizer for the tiny random CLIP / SigLIP text towers (no files, no downloads).

Tiny models (``build_tiny``) have a 99-id text vocabulary, too small for any real CLIP or SigLIP
tokenizer, so :class:`HashedWordTokenizer` maps every word to an id by a stable hash:

* text is lower-cased and split into words and punctuation (``\\w+|[^\\w\\s]``);
* ids: ``bos`` 0, ``pad`` 1, word ids ``3 .. vocab_size - 2`` (``3 + crc32(word) mod
  (vocab_size - 4)``), ``eos`` = ``vocab_size - 1``, the largest id, so CLIP's pooling at the
  arg-max token id lands on the end-of-text token as it does with CLIP's own BPE vocabulary;
* every row is ``[bos, words..., eos]`` truncated to ``max_length`` (keeping ``eos``) and padded
  with ``pad`` to ``max_length`` (SigLIP pools the last position, as with its max-length padding).

The same text always gives the same ids, whatever else is in the batch. Two different words may
share an id (hash collision); on a tiny random model that only changes which random embedding a
word gets.
"""

from __future__ import annotations

import re
import zlib
from typing import Sequence

import torch

_WORDS = re.compile(r"\w+|[^\w\s]")
BOS_ID, PAD_ID = 0, 1
#: ids below this are reserved (bos 0, pad 1, 2 = the tiny config's legacy eos id)
FIRST_WORD_ID = 3


class HashedWordTokenizer:
    """Deterministic word-hash tokenizer; see the module docstring."""

    def __init__(self, vocab_size: int, max_length: int):
        if vocab_size < FIRST_WORD_ID + 2:
            raise ValueError(f"vocab_size {vocab_size} leaves no ids for words")
        if max_length < 3:
            raise ValueError(f"max_length {max_length} cannot hold bos, one word and eos")
        self.vocab_size = int(vocab_size)
        self.max_length = int(max_length)
        self.eos_id = self.vocab_size - 1

    def word_id(self, word: str) -> int:
        return FIRST_WORD_ID + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - FIRST_WORD_ID - 1)

    def encode(self, text: str) -> list[int]:
        """``[bos, word ids..., eos]`` of one text, at most ``max_length`` ids."""
        words = [self.word_id(w) for w in _WORDS.findall(text.lower())]
        return [BOS_ID, *words[: self.max_length - 2], self.eos_id]

    def __call__(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """N texts -> ``input_ids`` and ``attention_mask``, both (N, max_length) int64."""
        ids = torch.full((len(texts), self.max_length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((len(texts), self.max_length), dtype=torch.long)
        for row, text in enumerate(texts):
            seq = self.encode(text)
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}
