"""Token data: the built-in corpus, cached token files (:mod:`train.shards`), batches.

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
  ``sampling="epoch"`` instead walks a seeded permutation of the non-overlapping windows (stride
  ``seq_len``, so every training token is a target once per epoch); the epoch and the position in
  it are a pure function of ``(seed, step)`` (:meth:`Batcher.epoch_of`).
* **Prepared folders** (``python -m train.prepare``: ``manifest.json`` + shards) are opened with
  :func:`open_prepared` (memory-mapped; the manifest's tokenizer must be the run's). Raw JSON
  lines / Parquet / dataset folders given to :func:`load_data` are prepared implicitly into
  ``<cache>/prepared-<key>``.
* **Mixtures** (``PATH:WEIGHT,...``, :func:`load_mixture`): each row's source is drawn by weight
  from the same ``(seed, step)`` generator; **document masks** (:func:`segment_ids`) and a
  background **prefetch** thread (:class:`Prefetcher`) sit next to the batches.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import hashlib
import os
import queue
import re
import sys
import sysconfig
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .corpus import is_hf_dataset, prepare_cached
from .shards import MAGIC as MAGIC
from .shards import PreparedData as PreparedData
from .shards import TokenData as TokenData
from .shards import is_prepared as is_prepared
from .shards import open_prepared as open_prepared
from .shards import read_bin as read_bin
from .shards import write_bin as write_bin

__all__ = [
    "MAGIC", "Batcher", "Mixture", "PreparedData", "Prefetcher", "TokenData", "default_cache_dir",
    "default_corpus", "is_mixture", "is_prepared", "load_data", "load_mixture", "open_prepared",
    "parse_mixture", "read_bin", "segment_ids", "tokenizer_spec", "write_bin",
]

_EVAL_STREAM = 0x5EED_E7A1
_EPOCH_STREAM = 0xE90C_4
_MIX_STREAM = 0x317_0
SAMPLINGS = ("random", "epoch")


class Mixture:
    """Named token sources sampled by weight (weights are normalised)."""

    def __init__(self, sources: Sequence[tuple[str, TokenData, float]], name: str = "train"
                 ) -> None:
        if not sources:
            raise ValueError("a mixture needs at least one source")
        for n, _, w in sources:
            if not (w > 0 and np.isfinite(w)):
                raise ValueError(f"mixture weight of {n!r} is {w!r}: must be a finite number > 0")
        self.names = [n for n, _, _ in sources]
        self.sources = [d for _, d, _ in sources]
        w = np.array([w for _, _, w in sources], dtype=np.float64)
        self.weights = w / w.sum()
        self.name = name

    @property
    def num_tokens(self) -> int:
        return sum(d.num_tokens for d in self.sources)

    def check(self, window: int, vocab_size: int) -> None:
        for d in self.sources:
            d.check(window, vocab_size)

    def allocation(self, rows: int) -> np.ndarray:
        """Rows per source in every global batch under epoch sampling (largest remainder)."""
        exact = self.weights * rows
        n = np.floor(exact).astype(np.int64)
        order = np.argsort(-(exact - n), kind="stable")
        n[order[: rows - int(n.sum())]] += 1
        return n


@functools.lru_cache(maxsize=4)
def _permutation(seed: tuple[int, ...], epoch: int, n: int) -> np.ndarray:
    return np.random.default_rng([*seed, _EPOCH_STREAM, epoch]).permutation(n)


def _epoch_ids(n_windows: int, per_step: int, step: int, seed: tuple[int, ...]
               ) -> tuple[np.ndarray, int, int]:
    """(window ids of step's ``per_step`` rows, epoch, first position in the epoch)."""
    steps_per_epoch = n_windows // per_step
    epoch, pos = divmod(int(step), steps_per_epoch)
    first = pos * per_step
    return _permutation(seed, epoch, n_windows)[first : first + per_step], epoch, first


@dataclass(frozen=True)
class Batcher:
    """Batches as pure functions of ``(seed, step, process index)``.

    Layout per process: ``[local_devices, grad_accum, batch_size, seq_len + 1]`` (inputs are
    ``[..., :-1]``, targets ``[..., 1:]``)."""

    data: TokenData | Mixture
    seq_len: int
    batch_size: int
    grad_accum: int
    local_devices: int
    process_index: int = 0
    process_count: int = 1
    seed: int = 0
    sampling: str = "random"
    #: a batch-size ramp (issue 27 item 6): the micro-batches of step t (None: ``grad_accum``
    #: at every step); evaluation batches keep ``grad_accum``
    accum_at: Callable[[int], int] | None = None

    def __post_init__(self) -> None:
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"--sampling={self.sampling!r} is invalid: must be one of "
                             f"{', '.join(SAMPLINGS)}")
        if self.sampling == "epoch":
            for n, d, rows in self._epoch_parts():
                if not rows:
                    raise ValueError(f"--sampling=epoch: mixture source {n!r} gets 0 of the "
                                     f"{self.global_rows} rows of a global batch (raise its "
                                     "weight or the batch)")
                if d.num_windows(self.seq_len + 1) < rows:
                    raise ValueError(
                        f"--sampling=epoch: {n} has {d.num_windows(self.seq_len + 1)} windows "
                        f"of seq_len + 1 tokens, fewer than the {rows} rows it fills per "
                        "global batch (add data or lower --batch-size/--seq-len)")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.local_devices, self.grad_accum, self.batch_size, self.seq_len + 1)

    @property
    def global_rows(self) -> int:
        return self.local_devices * self.grad_accum * self.batch_size * self.process_count

    def _epoch_parts(self) -> list[tuple[str, TokenData, int]]:
        if isinstance(self.data, Mixture):
            alloc = self.data.allocation(self.global_rows)
            return list(zip(self.data.names, self.data.sources, alloc.tolist()))
        return [(self.data.name, self.data, self.global_rows)]

    def _mine(self, rows: np.ndarray) -> np.ndarray:
        local = self.local_devices * self.grad_accum * self.batch_size
        mine = rows[self.process_index * local : (self.process_index + 1) * local]
        return mine.reshape(self.shape)

    def _bounds(self) -> tuple[int, int]:
        local = self.global_rows // self.process_count
        return self.process_index * local, (self.process_index + 1) * local

    def _rows(self, rng: np.random.Generator) -> np.ndarray:
        if isinstance(self.data, Mixture):
            return self._mixture_rows(rng)
        local = self.local_devices * self.grad_accum * self.batch_size
        u = rng.random(local * self.process_count)  # the whole global batch ...
        mine = u[self.process_index * local : (self.process_index + 1) * local]  # ... my slice
        return self.data.windows(mine, self.seq_len + 1).reshape(self.shape)

    def _mixture_rows(self, rng: np.random.Generator) -> np.ndarray:
        lo, hi = self._bounds()
        u = rng.random(self.global_rows)[lo:hi]
        src = self._random_sources(rng)[lo:hi]
        out = np.empty((hi - lo, self.seq_len + 1), dtype=np.int32)
        for k, d in enumerate(self.data.sources):
            sel = np.flatnonzero(src == k)
            if sel.size:
                out[sel] = d.windows(u[sel], self.seq_len + 1)
        return out.reshape(self.shape)

    def _random_sources(self, rng: np.random.Generator) -> np.ndarray:
        src = np.searchsorted(np.cumsum(self.data.weights), rng.random(self.global_rows),
                              side="right")
        return np.minimum(src, len(self.data.sources) - 1)

    def sources(self, step: int) -> np.ndarray:
        """Mixture source index of each row of ``batch(step)`` (this process's rows)."""
        if not isinstance(self.data, Mixture):
            return np.zeros(self.shape[:-1], dtype=np.int32)
        if self.sampling == "epoch":
            src = self._epoch_sources(step)
        else:
            rng = np.random.default_rng([self.seed, int(step)])
            rng.random(self.global_rows)  # the positions come first (see _mixture_rows)
            src = self._random_sources(rng)
        lo, hi = self._bounds()
        return src[lo:hi].reshape(self.shape[:-1]).astype(np.int32)

    def _epoch_sources(self, step: int) -> np.ndarray:
        alloc = self._epoch_parts()
        labels = np.repeat(np.arange(len(alloc)), [r for _, _, r in alloc])
        rng = np.random.default_rng([self.seed, _MIX_STREAM, int(step)])
        return labels[rng.permutation(len(labels))]

    def epoch_of(self, step: int) -> tuple[int, int]:
        """``(epoch, index of the step's first window in the epoch's permutation)`` under
        ``sampling="epoch"`` (of the first mixture source for a mixture)."""
        _, d, rows = self._epoch_parts()[0]
        _, epoch, first = _epoch_ids(d.num_windows(self.seq_len + 1), rows, step,
                                     (self.seed, 0))
        return epoch, first

    def _epoch_batch(self, step: int) -> np.ndarray:
        window = self.seq_len + 1
        if not isinstance(self.data, Mixture):
            ids, _, _ = _epoch_ids(self.data.num_windows(window), self.global_rows, step,
                                   (self.seed, 0))
            local = self.global_rows // self.process_count
            mine = ids[self.process_index * local : (self.process_index + 1) * local]
            return self.data.windows_at(mine, window).reshape(self.shape)
        src = self._epoch_sources(step)
        lo, hi = self._bounds()
        out = np.empty((hi - lo, window), dtype=np.int32)
        for k, (_, d, rows) in enumerate(self._epoch_parts()):
            ids, _, _ = _epoch_ids(d.num_windows(window), rows, step, (self.seed, k))
            rows_k = np.flatnonzero(src == k)  # the k-th source's rows, in order
            keep = (rows_k >= lo) & (rows_k < hi)
            if keep.any():
                out[rows_k[keep] - lo] = d.windows_at(ids[keep], window)
        return out.reshape(self.shape)

    def batch(self, step: int) -> np.ndarray:
        """Training batch of optimizer step ``step``."""
        if self.accum_at is not None:  # this step's global batch: its own accumulation
            accum = self.accum_at(int(step))
            if accum != self.grad_accum:
                return dataclasses.replace(self, grad_accum=accum, accum_at=None).batch(step)
        if self.sampling == "epoch":
            return self._epoch_batch(step)
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
              val_fraction: float) -> tuple[TokenData | Mixture, TokenData, str]:
    """(train, validation, description) for ``--data``/``--val-data``.

    ``data`` may also be a prepared folder (its tokenizer must be ``tokenizer``), raw JSON
    lines / Parquet / a datasets folder (prepared implicitly into ``<cache>/prepared-<key>``)
    or a mixture ``PATH:WEIGHT,...`` (then train is a :class:`Mixture`, validation all
    sources' validation shards; per-source validation: :func:`load_mixture`)."""
    cache = cache_dir or default_cache_dir()
    if data is None:
        desc, files = default_corpus()
        fallback = None if files else _builtin_docs()
        if not files:
            desc = "docstrings of Python's built-in modules (stdlib sources not found)"
        tr, va = _tokenize_cached("stdlib", files, tokenizer, cache, val_fraction, fallback)
        train, val = TokenData([read_bin(tr)], "train"), TokenData([read_bin(va)], "val")
    elif is_mixture(data):
        train, vals, desc = load_mixture(data, tokenizer, cache, val_fraction)
        val = TokenData([s for v in vals.values() for s in v.shards], "val", parts=vals)
    else:
        train, val, desc = _load_path(data, tokenizer, cache, val_fraction)
    if val_data is not None:
        vtrain, vval, _ = _load_path(val_data, tokenizer, cache, val_fraction, whole=True)
        val = TokenData(vtrain.shards + vval.shards, "val")
        desc += f"; validation: {val_data}"
    return train, val, desc


def _load_path(path: str, tokenizer, cache: str, val_fraction: float,
               whole: bool = False) -> tuple[TokenData, TokenData, str]:
    if is_prepared(path) or _needs_prepare(path):
        if not is_prepared(path):
            path = _implicit_prepare(path, tokenizer, cache, 0.0 if whole else val_fraction)
        p = open_prepared(path, tokenizer)
        if whole:
            return TokenData(p.train.shards + p.val.shards, "val"), TokenData([], "val"), path
        if p.val.num_tokens == 0:  # prepared without --val-fraction: hold out a tail
            *head, last = p.train.shards
            tr, va = _split(last, val_fraction)
            return (TokenData([*head, tr], "train"), TokenData([va], "val"),
                    f"{p.describe()}; no val split: the last {val_fraction:g} of the last "
                    "train shard held out")
        return p.train, p.val, p.describe()
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


# -- prepared folders (python -m train.prepare) ---------------------------------------------


_RAW_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson", ".parquet")


def _needs_prepare(path: str) -> bool:
    """Raw JSON lines / Parquet / a datasets folder (plain text keeps the legacy cache)."""
    if os.path.isfile(path):
        return path.lower().endswith(_RAW_SUFFIXES)
    if not os.path.isdir(path):
        return False
    if is_hf_dataset(path):
        return True
    return any(f.lower().endswith(_RAW_SUFFIXES) for _, _, fs in os.walk(path) for f in fs)


def tokenizer_spec(tokenizer: Any) -> str:
    """What ``get_tokenizer`` needs to rebuild ``tokenizer``: its file, or its name."""
    return getattr(tokenizer, "path", None) or tokenizer.name


def _implicit_prepare(path: str, tokenizer: Any, cache: str, val_fraction: float,
                      workers: int = 1) -> str:
    return prepare_cached([path], tokenizer_spec(tokenizer), cache, val_fraction=val_fraction,
                          workers=workers)


# -- mixtures -------------------------------------------------------------------------------

_WEIGHT = re.compile(r"^(.+):([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


def is_mixture(spec: str | None) -> bool:
    """Whether ``--data`` is a mixture ``PATH:WEIGHT[,PATH:WEIGHT...]``."""
    return bool(spec) and all(_WEIGHT.match(p.strip()) for p in spec.split(","))


def parse_mixture(spec: str) -> list[tuple[str, str, float]]:
    """``"a=PATH:3,PATH2:1"`` -> ``[(name, path, weight), ...]``; a name defaults to the path's
    base name. Raises ``ValueError`` naming the entry."""
    out, names = [], set()
    for part in spec.split(","):
        m = _WEIGHT.match(part.strip())
        if not m:
            raise ValueError(f"--data={spec!r} is invalid: {part!r} is not PATH:WEIGHT")
        target, w = m.group(1), float(m.group(2))
        name, _, p = target.partition("=") if "=" in target else ("", "", target)
        name = name or os.path.basename(os.path.normpath(p)) or p
        if w <= 0:
            raise ValueError(f"--data={spec!r} is invalid: weight of {name!r} must be > 0")
        if name in names:
            raise ValueError(f"--data={spec!r} is invalid: two sources named {name!r} "
                             "(name them: NAME=PATH:WEIGHT)")
        names.add(name)
        out.append((name, p, w))
    return out


def load_mixture(spec: str, tokenizer: Any, cache_dir: str | None, val_fraction: float
                 ) -> tuple[Mixture, dict[str, TokenData], str]:
    """(training mixture, validation data per source name, description) for a mixture spec."""
    cache = cache_dir or default_cache_dir()
    train, vals, descs = [], {}, []
    for name, path, w in parse_mixture(spec):
        tr, va, _ = _load_path(path, tokenizer, cache, val_fraction)
        train.append((name, tr, w))
        vals[name] = va
        descs.append(f"{name} ({w:g}): {path}")
    return Mixture(train), vals, "mixture " + ", ".join(descs)


# -- document masks -------------------------------------------------------------------------


def segment_ids(tokens: np.ndarray, bos_id: int | None = None, eos_id: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """``(segment ids, positions)`` of packed ``tokens [..., T]``, both int32 ``[..., T]``.

    A document starts at a BOS token and right after an EOS token (the EOS ends its
    document); segment ids count documents from 0 in each row, positions restart at 0 at each
    document start. Pass the model's inputs (``batch[..., :-1]``).

    >>> seg, pos = segment_ids(np.array([5, 6, 0, 7, 8, 0, 9]), eos_id=0)
    >>> seg.tolist(), pos.tolist()
    ([0, 0, 0, 1, 1, 1, 2], [0, 1, 2, 0, 1, 2, 0])
    """
    tokens = np.asarray(tokens)
    start = np.zeros(tokens.shape, dtype=bool)
    if bos_id is not None:
        start |= tokens == bos_id
    if eos_id is not None:
        start[..., 1:] |= tokens[..., :-1] == eos_id
    start[..., 0] = False
    seg = np.cumsum(start, axis=-1, dtype=np.int32)
    idx = np.broadcast_to(np.arange(tokens.shape[-1], dtype=np.int32), tokens.shape)
    last = np.maximum.accumulate(np.where(start, idx, 0), axis=-1)
    return seg, (idx - last).astype(np.int32)


# -- prefetch -------------------------------------------------------------------------------


class Prefetcher:
    """Builds ``make(step)`` (then ``place(...)``, e.g. a device put) for the next steps in a
    background thread, ``depth`` ahead; :meth:`get` returns them in order.

    The content is whatever ``make`` returns (a pure function of the step), so prefetching
    changes nothing but timing. Asking for a step out of order restarts the thread there.

    >>> with Prefetcher(lambda t: t * t, start=3) as p:
    ...     [p.get(3), p.get(4), p.get(5)]
    [9, 16, 25]
    """

    def __init__(self, make: Callable[[int], Any], start: int = 0, depth: int = 2,
                 place: Callable[[Any], Any] | None = None) -> None:
        if depth < 1:
            raise ValueError(f"prefetch depth={depth!r} is invalid: must be >= 1")
        self.make, self.place, self.depth = make, place, depth
        self._start(start)

    def _start(self, step: int) -> None:
        self.next = step
        self._q: queue.Queue = queue.Queue(maxsize=self.depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(step, self._q, self._stop),
                                        daemon=True, name="batch-prefetch")
        self._thread.start()

    def _run(self, step: int, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item = self.make(step)
                if self.place is not None:
                    item = self.place(item)
                res = (step, item, None)
            except BaseException as e:  # handed to the consumer
                res = (step, None, e)
            while not stop.is_set():
                try:
                    q.put(res, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if res[2] is not None:
                return
            step += 1

    def get(self, step: int) -> Any:
        """The item of ``step``."""
        if step != self.next:
            self.close()
            self._start(step)
        s, item, err = self._q.get()
        if err is not None:
            raise err
        assert s == step
        self.next = step + 1
        return item

    def __iter__(self) -> Iterator[Any]:
        while True:
            yield self.get(self.next)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
