"""Token data: the built-in corpus, cached token files (llm.c ``.bin`` layout), batches.

* **Built-in corpus** (``--data`` unset): the top-level ``*.py`` modules of the running Python's
  standard library (``sysconfig.get_paths()["stdlib"]``, sorted by name, about 4.7 MB on
  CPython 3.11), so every machine has it without a download. If the sources are missing (a
  stripped install) the docstrings of the built-in modules are used instead.
* **Text** (a file or a directory, read recursively, ``*.bin`` excluded) is tokenized once into
  ``<cache>/<name>-<tokenizer>-<hash>.{train,val}.bin``; the last ``--val-fraction`` of the
  tokens is the held-out validation split. Cache files are written atomically.
* **Token files**: llm.c ``.bin`` (a 256-int32 header: magic 20240520, version 1 = uint16 /
  2 = uint32 tokens, token count; then the tokens) and nanoGPT ``.bin`` (raw uint16, no header)
  are memory-mapped and read directly. In a directory, files whose name contains ``val`` are
  the validation shards, the others training shards; a single file is split like text.
* **Batches**: the batch for step ``t`` is a pure function of ``(seed, t, process index)``:
  ``numpy.random.default_rng([seed, t])`` draws the start offsets of the whole global batch and
  each process takes its own contiguous slice, so a resumed run needs only the step counter and
  the global batch does not depend on how the devices are split across processes.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MAGIC", "Batcher", "TokenData", "default_cache_dir", "default_corpus", "load_data",
    "read_bin", "write_bin",
]

MAGIC = 20240520
HEADER_INTS = 256
_EVAL_STREAM = 0x5EED_E7A1


# -- token files ----------------------------------------------------------------------------


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
    """Shards of tokens viewed as one sequence of fixed-length windows."""

    def __init__(self, shards: Sequence[np.ndarray], name: str) -> None:
        self.shards = [s for s in shards if len(s) > 0]
        self.name = name
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


@dataclass(frozen=True)
class Batcher:
    """Batches as pure functions of ``(seed, step, process index)``.

    Layout per process: ``[local_devices, grad_accum, batch_size, seq_len + 1]`` (inputs are
    ``[..., :-1]``, targets ``[..., 1:]``)."""

    data: TokenData
    seq_len: int
    batch_size: int
    grad_accum: int
    local_devices: int
    process_index: int = 0
    process_count: int = 1
    seed: int = 0

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.local_devices, self.grad_accum, self.batch_size, self.seq_len + 1)

    def _rows(self, rng: np.random.Generator) -> np.ndarray:
        local = self.local_devices * self.grad_accum * self.batch_size
        u = rng.random(local * self.process_count)  # the whole global batch ...
        mine = u[self.process_index * local : (self.process_index + 1) * local]  # ... my slice
        return self.data.windows(mine, self.seq_len + 1).reshape(self.shape)

    def batch(self, step: int) -> np.ndarray:
        """Training batch of optimizer step ``step``."""
        return self._rows(np.random.default_rng([self.seed, int(step)]))

    def eval_batch(self, i: int) -> np.ndarray:
        """The ``i``-th fixed evaluation batch (the same at every evaluation)."""
        return self._rows(np.random.default_rng([self.seed, _EVAL_STREAM, int(i)]))


# -- corpora and caching --------------------------------------------------------------------


def default_cache_dir() -> str:
    return os.environ.get("SCHEDAX_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "schedax")


def default_corpus() -> tuple[str, list[str]]:
    """The built-in corpus: (description, list of file paths) — may be empty (see docs)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
    return f"Python {sys.version.split()[0]} standard library sources ({stdlib}/*.py)", files


def _builtin_docs() -> str:
    parts = []
    for name in sorted(sys.builtin_module_names):
        try:
            mod = __import__(name)
        except Exception:
            continue
        for attr in sorted(dir(mod)):
            doc = getattr(getattr(mod, attr, None), "__doc__", None)
            if isinstance(doc, str):
                parts.append(f"{name}.{attr}\n{doc}\n")
    return "\n".join(parts)


def _text_files(path: str) -> list[str]:
    if os.path.isfile(path):
        return [path]
    out = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out.extend(os.path.join(root, f) for f in sorted(files)
                   if not f.startswith(".") and not f.endswith(".bin"))
    return out


def _fingerprint(files: Sequence[str], extra: str) -> str:
    h = hashlib.sha256(extra.encode())
    for f in files:
        st = os.stat(f)
        h.update(f"{os.path.abspath(f)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:12]


def _tokenize_cached(name: str, files: list[str], tokenizer, cache: str, val_fraction: float,
                     fallback_text: str | None = None) -> tuple[str, str]:
    key = _fingerprint(files, f"{tokenizer.name}|{val_fraction}|{fallback_text is not None}")
    base = os.path.join(cache, f"{name}-{tokenizer.name}-{key}")
    train_path, val_path = base + ".train.bin", base + ".val.bin"
    if os.path.exists(train_path) and os.path.exists(val_path):
        return train_path, val_path
    sep = tokenizer.encode("\n\n") if tokenizer.eot is None else np.array([tokenizer.eot])
    docs: list[np.ndarray] = []
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            docs.append(tokenizer.encode(fh.read()))
        docs.append(np.asarray(sep, dtype=np.uint16))
    if not files and fallback_text is not None:
        docs.append(tokenizer.encode(fallback_text))
    tokens = np.concatenate(docs) if docs else np.zeros(0, np.uint16)
    n_val = max(1, round(len(tokens) * val_fraction))
    write_bin(val_path, tokens[len(tokens) - n_val :])
    write_bin(train_path, tokens[: len(tokens) - n_val])
    return train_path, val_path


def _split(arr: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_val = max(1, round(len(arr) * val_fraction))
    return arr[: len(arr) - n_val], arr[len(arr) - n_val :]


def load_data(data: str | None, val_data: str | None, tokenizer, cache_dir: str | None,
              val_fraction: float) -> tuple[TokenData, TokenData, str]:
    """(train, validation, description) for ``--data``/``--val-data``."""
    cache = cache_dir or default_cache_dir()
    if data is None:
        desc, files = default_corpus()
        fallback = None if files else _builtin_docs()
        if not files:
            desc = "docstrings of Python's built-in modules (stdlib sources not found)"
        tr, va = _tokenize_cached("stdlib", files, tokenizer, cache, val_fraction, fallback)
        train, val = TokenData([read_bin(tr)], "train"), TokenData([read_bin(va)], "val")
    else:
        train, val, desc = _load_path(data, tokenizer, cache, val_fraction)
    if val_data is not None:
        vtrain, vval, _ = _load_path(val_data, tokenizer, cache, val_fraction, whole=True)
        val = TokenData(vtrain.shards + vval.shards, "val")
        desc += f"; validation: {val_data}"
    return train, val, desc


def _load_path(path: str, tokenizer, cache: str, val_fraction: float,
               whole: bool = False) -> tuple[TokenData, TokenData, str]:
    if os.path.isdir(path):
        bins = sorted(glob.glob(os.path.join(path, "**", "*.bin"), recursive=True))
    else:
        bins = [path] if path.endswith(".bin") else []
    if bins:
        vals = [b for b in bins if "val" in os.path.basename(b)]
        trains = [b for b in bins if b not in vals]
        if whole:
            return TokenData([read_bin(b) for b in bins], "val"), TokenData([], "val"), path
        if trains and vals:
            return (TokenData([read_bin(b) for b in trains], "train"),
                    TokenData([read_bin(b) for b in vals], "val"),
                    f"{len(trains)} train + {len(vals)} val token shards in {path}")
        arrs = [read_bin(b) for b in bins]
        splits = [_split(a, val_fraction) for a in arrs]
        return (TokenData([s[0] for s in splits], "train"),
                TokenData([s[1] for s in splits], "val"),
                f"{len(bins)} token file(s) in {path} (last {val_fraction:g} held out)")
    files = _text_files(path)
    if not files:
        raise ValueError(f"--data={path!r} is invalid: no text or .bin files found")
    name = os.path.basename(os.path.normpath(path)) or "data"
    tr, va = _tokenize_cached(name, files, tokenizer, cache, 0.0 if whole else val_fraction)
    train, val = TokenData([read_bin(tr)], "train"), TokenData([read_bin(va)], "val")
    if whole:
        return TokenData(train.shards + val.shards, "val"), TokenData([], "val"), path
    return train, val, f"{len(files)} text file(s) in {path} (last {val_fraction:g} held out)"
