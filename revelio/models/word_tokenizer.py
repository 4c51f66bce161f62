"""A CLIP tokenizer made offline from a word list: each listed word is one token, anything else
falls back to bytes.

Small text-to-image models trained here need a tokenizer no download can give; with whole-word
tokens a prompt word is one position the text encoder (and a reader of its attention) can find.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTokenizer

END_OF_WORD = "</w>"


def whole_word_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges that join each word left to right into one end-of-word token."""
    merges: list[tuple[str, str]] = []
    for word in words:
        pieces = list(word[:-1]) + [word[-1] + END_OF_WORD]
        merged = pieces[0]
        for piece in pieces[1:]:
            if (merged, piece) not in merges:
                merges.append((merged, piece))
            merged += piece
    return merges


def word_tokenizer(words: list[str], max_length: int) -> CLIPTokenizer:
    """A byte-level CLIP BPE tokenizer whose vocabulary holds ``words`` whole; prompts are padded
    or cut to ``max_length`` tokens (start and end included).

    The byte alphabet is sorted so ids do not depend on set order. It loads through
    ``from_pretrained`` from written files, the one way transformers 5 reads vocab and merges.
    """
    words = sorted({word for phrase in words for word in phrase.lower().split()})
    alphabet = sorted(ByteLevel.alphabet())
    merges = whole_word_merges(words)
    tokens = alphabet + [char + END_OF_WORD for char in alphabet] + ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(tokens)}), encoding="utf-8")
        lines = ["#version: 0.2"] + [" ".join(pair) for pair in merges]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return CLIPTokenizer.from_pretrained(folder, model_max_length=max_length)
