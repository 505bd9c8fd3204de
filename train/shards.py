"""Token files: llm.c ``.bin`` shards (a 256-int32 header: magic 20240520, version 1 = uint16 /
2 = uint32 tokens, token count; then the tokens), nanoGPT ``.bin`` (raw uint16), the token
arrays they hold (:class:`TokenData`, memory-mapped) and the folders ``python -m
train.prepare`` writes (``manifest.json`` + shards: :func:`open_prepared`). Written atomically
(temporary name, rename)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["FORMAT", "HEADER_INTS", "MAGIC", "VERSION", "PreparedData", "TokenData",
           "is_prepared", "open_prepared", "read_bin", "write_bin"]

MAGIC = 20240520
HEADER_INTS = 256
#: a prepared folder's manifest ``format`` and ``version``
FORMAT = "schedax.prepared"
VERSION = 1


def write_bin(path: str, tokens: np.ndarray) -> None:
    """Write ``tokens`` in the llm.c layout, atomically (temp file + rename)."""
    tokens = np.asarray(tokens)
    big = tokens.size and int(tokens.max()) >= 2**16
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = MAGIC, 2 if big else 1, tokens.size
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint32 if big else np.uint16).tobytes())
    os.replace(tmp, path)


def read_bin(path: str) -> np.ndarray:
    """Memory-map a token file: llm.c layout (header checked) or raw uint16 (nanoGPT)."""
    size = os.path.getsize(path)
    if size >= HEADER_INTS * 4:
        header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
        if header[0] == MAGIC:
            version, n = int(header[1]), int(header[2])
            if version not in (1, 2):
                raise ValueError(f"{path}: unsupported llm.c token file version {version}")
            dtype = np.uint16 if version == 1 else np.uint32
            need = HEADER_INTS * 4 + n * np.dtype(dtype).itemsize
            if size < need:
                raise ValueError(f"{path}: truncated llm.c token file ({size} bytes, header "
                                 f"says {n} tokens = {need} bytes)")
            return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_INTS * 4, shape=(n,))
    if size % 2:
        raise ValueError(f"{path}: not an llm.c token file and not raw uint16 (odd size)")
    return np.memmap(path, dtype=np.uint16, mode="r")


class TokenData:
    """Shards of tokens viewed as one sequence of fixed-length windows; ``parts`` names the
    sources the shards came from (a mixture's validation data: one entry per source)."""

    def __init__(self, shards: Sequence[np.ndarray], name: str,
                 parts: Mapping[str, TokenData] | None = None) -> None:
        self.shards = [s for s in shards if len(s) > 0]
        self.name = name
        self.parts: dict[str, TokenData] = dict(parts or {})
        self.sizes = np.array([len(s) for s in self.shards], dtype=np.int64)

    @property
    def num_tokens(self) -> int:
        return int(self.sizes.sum())

    def check(self, window: int, vocab_size: int) -> None:
        """Raise ``ValueError`` if no shard holds a window or token ids exceed the vocab."""
        if not self.shards or int(self.sizes.max()) < window:
            raise ValueError(f"{self.name}: {self.num_tokens} tokens; needs a shard of at least "
                             f"seq_len + 1 = {window} tokens (lower --seq-len or add data)")
        for s in self.shards:
            head = np.asarray(s[: 1 << 20])
            if head.size and int(head.max()) >= vocab_size:
                raise ValueError(f"{self.name}: token id {int(head.max())} >= vocab size "
                                 f"{vocab_size} (wrong --tokenizer for these token files?)")

    def windows(self, u: np.ndarray, window: int) -> np.ndarray:
        """Windows of ``window`` tokens at uniform positions ``u`` in [0, 1): int32 [n, window].

        A position is mapped to a shard (weighted by the number of valid starts) and an offset."""
        valid = np.maximum(self.sizes - window + 1, 0)
        cum = np.cumsum(valid)
        pos = np.minimum((u * cum[-1]).astype(np.int64), cum[-1] - 1)
        shard = np.searchsorted(cum, pos, side="right")
        off = pos - (cum[shard] - valid[shard])
        out = np.empty((len(u), window), dtype=np.int32)
        for i, (s, o) in enumerate(zip(shard, off)):
            out[i] = self.shards[s][o : o + window]
        return out

    def num_windows(self, window: int) -> int:
        """Non-overlapping windows (stride ``window - 1``: each token a target once)."""
        return int(np.maximum((self.sizes - 1) // (window - 1), 0).sum()) if window > 1 else 0

    def windows_at(self, ids: np.ndarray, window: int) -> np.ndarray:
        """The non-overlapping windows numbered ``ids`` (shard by shard): int32 [n, window]."""
        per = np.maximum((self.sizes - 1) // (window - 1), 0)
        cum = np.cumsum(per)
        shard = np.searchsorted(cum, ids, side="right")
        off = (ids - (cum[shard] - per[shard])) * (window - 1)
        out = np.empty((len(ids), window), dtype=np.int32)
        for i, (s, o) in enumerate(zip(shard, off)):
            out[i] = self.shards[s][o : o + window]
        return out


@dataclass(frozen=True)
class PreparedData:
    """A prepared folder: its splits (memory-mapped shards) and manifest."""

    path: str
    train: TokenData
    val: TokenData
    manifest: dict

    @property
    def bos_id(self) -> int | None:
        return self.manifest["tokenizer"]["bos_id"] if self.manifest["tokenizer"]["bos"] else None

    @property
    def eos_id(self) -> int | None:
        return self.manifest["tokenizer"]["eos_id"] if self.manifest["tokenizer"]["eos"] else None

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["tokenizer"]["vocab_size"])

    def describe(self) -> str:
        sp = self.manifest["splits"]
        return (f"{len(sp['train']['shards'])} train + {len(sp['val']['shards'])} val prepared "
                f"shards in {self.path} ({sp['train']['docs']:,} + {sp['val']['docs']:,} docs)")


def is_prepared(path: str) -> bool:
    """Whether ``path`` is a folder written by ``python -m train.prepare`` (has a manifest)."""
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "manifest.json"))


def open_prepared(path: str, tokenizer: Any = None, vocab_size: int | None = None
                  ) -> PreparedData:
    """Open a prepared folder: shards memory-mapped, never read whole.

    Raises ``ValueError`` (one line) when the manifest names another tokenizer than
    ``tokenizer`` (compared by ``identity``), when its vocabulary exceeds ``vocab_size`` (the
    model's), or when a shard is missing or does not hold the tokens the manifest records."""
    man_path = os.path.join(path, "manifest.json")
    try:
        with open(man_path) as f:
            man = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"--data={path!r}: cannot read manifest.json ({e})") from None
    if man.get("format") != "schedax.prepared":
        raise ValueError(f"--data={path!r}: manifest.json is not a train.prepare manifest")
    tm = man["tokenizer"]
    if tokenizer is not None and tm["identity"] != tokenizer.identity:
        raise ValueError(f"--data={path!r} was prepared with tokenizer {tm['identity']} but this "
                         f"run uses {tokenizer.identity} (pass --tokenizer for that one or "
                         "prepare the data again)")
    if vocab_size is not None and tm["vocab_size"] > vocab_size:
        raise ValueError(f"--data={path!r} has vocabulary size {tm['vocab_size']} > the model's "
                         f"{vocab_size}")
    splits = {}
    for split in ("train", "val"):
        shards = []
        for sh in man["splits"][split]["shards"]:
            f = os.path.join(path, sh["file"])
            if not os.path.isfile(f):
                raise ValueError(f"--data={path!r}: shard {sh['file']} is missing")
            arr = read_bin(f)
            if len(arr) != sh["tokens"]:
                raise ValueError(f"--data={path!r}: shard {sh['file']} holds {len(arr)} tokens, "
                                 f"the manifest says {sh['tokens']}")
            shards.append(arr)
        splits[split] = TokenData(shards, split)
    return PreparedData(path, splits["train"], splits["val"], man)
