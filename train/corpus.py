"""Streaming preparation of a corpus into token shards (``python -m train.prepare`` is its
CLI, :mod:`train.prepare`).

Streams documents from text files and folders (one file = one document), JSON lines
(``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``; one line = one document, ``text_field``), Parquet
(read by row group) and local HuggingFace datasets (a ``datasets.save_to_disk`` folder), never
downloading anything, and writes llm.c-layout shards (``train_000000.bin``, ``val_000000.bin``,
... uint16 tokens when the vocabulary fits, uint32 otherwise) plus ``manifest.json``.

* Documents are delimited as the tokenizer's model expects (GPT-2: ``<|endoftext|>`` after each;
  LLaMA-3: ``<|begin_of_text|>`` before each; see :mod:`train.tokenizer`); a shard holds whole
  documents and is closed at the first document end at or past ``shard_tokens``.
* ``val_fraction`` holds out whole documents, chosen by a hash of the document's index.
* ``workers=N`` tokenizes in N processes; results are consumed in document order, so the
  shards are byte-identical whatever N. At most ``2 N + 2`` chunks of about 1 MB of text are in
  flight, so memory does not grow with the corpus.
* Resumable: shards are written as ``*.bin.partial`` and renamed when complete; after each
  completed shard ``progress.json`` records where to continue. A killed (Ctrl-C, disk full,
  SIGKILL) prepare rerun with the same arguments continues from its last complete shard.
  ``manifest.json`` is written last; readers (:func:`train.shards.open_prepared`) need it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import multiprocessing as mp
import os
import pickle
import signal
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence

import numpy as np

from .shards import FORMAT, HEADER_INTS, MAGIC, VERSION
from .sources import (
    SHARD_NAME,
    PrepareError,
    Source,
    find_sources,
    fingerprint,
    is_hf_dataset,
    iter_documents,
)
from .tokenizer import get_tokenizer

__all__ = ["CHUNK_BYTES", "CHUNK_DOCS", "PrepareError", "Source", "SplitWriter", "encode_chunk",
           "find_sources", "is_hf_dataset", "is_val_document", "iter_documents", "prepare",
           "prepare_cached"]

CHUNK_BYTES = 1 << 20
CHUNK_DOCS = 4096
_VAL_SALT = 0x9E3779B97F4A7C15


def is_val_document(index: int, val_fraction: float) -> bool:
    """Whether document ``index`` is held out: a 64-bit hash (splitmix64) of the index below
    ``val_fraction`` of its range, so the choice needs no state and never cuts a document."""
    if val_fraction <= 0:
        return False
    z = (index + _VAL_SALT) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    z ^= z >> 31
    return z < val_fraction * 2.0**64


# -- tokenizing (in worker processes or in-process) -----------------------------------------

_TOK = None


def _init_worker(tok: object) -> None:
    """``tok``: the parent's tokenizer, pickled (GPT-2's is rebuilt from its ranks in 0.2 s,
    not parsed from the BPE files again in 1-2 s), or its spec where it does not pickle."""
    global _TOK
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    # one thread per worker: the workers are the parallelism (no oversubscription)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _TOK = get_tokenizer(tok) if isinstance(tok, str) else tok


def _worker_arg(tok, spec: str) -> object:
    try:
        pickle.dumps(tok)
    except Exception:  # a tokenizer library without pickling: each worker loads the file
        return spec
    return tok


def _encode_one(tok, text: str, index: int) -> np.ndarray:
    try:
        return tok.encode(text)
    except (UnicodeError, TypeError):
        # lone surrogates (JSON "\ud800" escapes) cannot be UTF-8: U+FFFD, as tiktoken does
        fixed = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        try:
            return tok.encode(fixed)
        except Exception as e:
            raise PrepareError(f"document {index}: cannot tokenize ({type(e).__name__}: "
                               f"{e})") from None


def encode_chunk(texts: list[str], first: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
    """Delimited tokens of ``texts`` (documents ``first``, ``first + 1``, ... of the stream,
    for messages) concatenated, their lengths, and the largest id."""
    tok = _TOK
    try:
        encoded = tok.encode_batch(texts)
    except Exception:  # find the culprit; a repairable one is repaired
        encoded = [_encode_one(tok, t, first + i) for i, t in enumerate(texts)]
    docs = [tok.delimit(ids) for ids in encoded]
    lens = np.fromiter((len(d) for d in docs), dtype=np.int64, count=len(docs))
    flat = np.concatenate(docs) if docs else np.zeros(0, tok.dtype)
    return flat, lens, int(flat.max()) if flat.size else -1


# -- shard writing --------------------------------------------------------------------------


class SplitWriter:
    """One split's shards: appends documents to ``<split>_NNNNNN.bin.partial``; a completed
    shard gets its header and is renamed to ``.bin``."""

    def __init__(self, out: str, split: str, dtype: type, state: dict | None) -> None:
        self.out, self.split, self.dtype = out, split, np.dtype(dtype)
        self.shards: list[dict] = list(state["shards"]) if state else []
        self.tokens = state["partial_tokens"] if state else 0
        self.docs = state["partial_docs"] if state else 0
        self.pending: list[np.ndarray] = []
        self.pending_n = 0
        self.f = None
        done = self.partial[: -len(".partial")]
        if os.path.isfile(done):
            # killed between completing this shard and recording it: reopen it as the partial
            # and cut it back to what progress.json vouches for
            os.replace(done, self.partial)
        for n in os.listdir(out):  # a later shard, in case one was started: not vouched for
            m = SHARD_NAME.fullmatch(n)
            if m and m.group(1) == split and int(m.group(2)) > len(self.shards):
                os.remove(os.path.join(out, n))
        if not self.tokens and os.path.isfile(self.partial):
            os.remove(self.partial)
        if self.tokens:
            need = HEADER_INTS * 4 + self.tokens * self.dtype.itemsize
            if not os.path.isfile(self.partial) or os.path.getsize(self.partial) < need:
                raise PrepareError(f"{self.partial}: shorter than progress.json records; "
                                   f"delete {out} and prepare again")
            self.f = open(self.partial, "r+b")  # noqa: SIM115
            self.f.truncate(need)
            self.f.seek(need)

    @property
    def partial(self) -> str:
        return os.path.join(self.out, f"{self.split}_{len(self.shards):06d}.bin.partial")

    def add(self, ids: np.ndarray) -> None:
        if self.f is None:
            self.f = open(self.partial, "wb")  # noqa: SIM115
            self.f.write(b"\0" * (HEADER_INTS * 4))
        self.pending.append(ids)
        self.pending_n += len(ids)
        self.tokens += len(ids)
        self.docs += 1
        if self.pending_n >= 1 << 20:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.f.write(np.concatenate(self.pending).astype(self.dtype, copy=False).tobytes())
            self.pending, self.pending_n = [], 0
        if self.f is not None:
            self.f.flush()

    def close_shard(self) -> None:
        self.flush()
        header = np.zeros(HEADER_INTS, dtype=np.int32)
        header[:3] = MAGIC, 1 if self.dtype == np.uint16 else 2, self.tokens
        self.f.seek(0)
        self.f.write(header.tobytes())
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        name = os.path.basename(self.partial)[: -len(".partial")]
        os.replace(self.partial, os.path.join(self.out, name))
        self.shards.append({"file": name, "docs": self.docs, "tokens": self.tokens})
        self.f, self.tokens, self.docs = None, 0, 0

    def state(self) -> dict:
        self.flush()
        return {"shards": self.shards, "partial_tokens": self.tokens, "partial_docs": self.docs}

    def rollback(self, state: dict | None) -> None:
        """Cut the partial back to its last checkpoint (frees space after a failed write)."""
        if self.f is not None:
            self.f.close()
            self.f = None
        keep = HEADER_INTS * 4 + (state["partial_tokens"] if state else 0) * self.dtype.itemsize
        if os.path.isfile(self.partial):
            if state and state["partial_tokens"] and len(state["shards"]) == len(self.shards):
                os.truncate(self.partial, keep)
            else:
                os.remove(self.partial)

    def summary(self) -> dict:
        return {"docs": sum(s["docs"] for s in self.shards),
                "tokens": sum(s["tokens"] for s in self.shards), "shards": self.shards}




def _clear_unrecorded(out: str) -> None:
    """Without progress.json no shard is vouched for: a prepare killed before its first
    checkpoint left them. Other token files mean ``out`` is not ours: refuse."""
    names = os.listdir(out)
    foreign = [n for n in names
               if n.endswith((".bin", ".partial")) and not SHARD_NAME.fullmatch(n)]
    if foreign:
        raise PrepareError(f"--out={out!r} already holds token files ({foreign[0]}); choose "
                           "another --out")
    for n in names:
        if SHARD_NAME.fullmatch(n):
            os.remove(os.path.join(out, n))


def _write_json(path: str, obj: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# -- progress -------------------------------------------------------------------------------


class _Progress:
    def __init__(self, total_bytes: int, enabled: bool) -> None:
        self.total, self.enabled = total_bytes, enabled
        self.t0 = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()

    def update(self, docs: int, tokens: int, done: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self.last < (0.5 if self.tty else 10)):
            return
        self.last = now
        dt = max(now - self.t0, 1e-9)
        line = f"prepare: {docs:,} docs, {tokens:,} tokens, {done / dt / 1e6:.1f} MB/s"
        if self.total and 0 < done < self.total and not final:
            line += f", {100 * done / self.total:.0f}%, ETA {_hms((self.total - done) * dt / done)}"
        if final:
            line += f", {_hms(dt)}"
        print(("\r" if self.tty else "") + line + ("\n" if final or not self.tty else ""),
              end="", file=sys.stderr, flush=True)


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# -- the driver -----------------------------------------------------------------------------


def _chunks(docs: Iterator[tuple[str, int]], start: int
            ) -> Iterator[tuple[list[int], list[str], int]]:
    idx: list[int] = []
    texts: list[str] = []
    size = 0
    done = 0
    for i, (text, done) in enumerate(docs):
        if i < start or not text:
            continue
        idx.append(i)
        texts.append(text)
        size += len(text)
        if size >= CHUNK_BYTES or len(texts) >= CHUNK_DOCS:
            yield idx, texts, done
            idx, texts, size = [], [], 0
    if texts:
        yield idx, texts, done


def _key(fps: list[dict], tok, text_field: str, val_fraction: float, shard_tokens: int) -> str:
    blob = json.dumps([VERSION, fps, tok.identity, text_field, val_fraction, shard_tokens])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_args(val_fraction: float, shard_tokens: int, workers: int) -> None:
    if not 0.0 <= val_fraction < 1.0:
        raise PrepareError(f"--val-fraction={val_fraction!r} is invalid: must be in [0, 1)")
    if shard_tokens < 1:
        raise PrepareError(f"--shard-tokens={shard_tokens!r} is invalid: must be >= 1")
    if workers < 1:
        raise PrepareError(f"--workers={workers!r} is invalid: must be >= 1")


def prepare(inputs: Sequence[str], out: str, tokenizer: str = "gpt2", *,
            text_field: str = "text", val_fraction: float = 0.0,
            shard_tokens: int = 100_000_000, workers: int = 1, progress: bool = True) -> dict:
    """Tokenize ``inputs`` into shards in ``out``; returns the manifest (see module doc).

    Raises :class:`PrepareError` (one line) for bad input. Already prepared with the same
    arguments: returns the existing manifest at once."""
    _check_args(val_fraction, shard_tokens, workers)
    if isinstance(inputs, str):
        inputs = [inputs]
    try:
        tok = get_tokenizer(tokenizer)
    except (ValueError, ImportError) as e:
        raise PrepareError(str(e)) from None
    sources = find_sources(inputs, exclude=out)
    fps = [fingerprint(s) for s in sources]
    key = _key(fps, tok, text_field, val_fraction, shard_tokens)
    os.makedirs(out, exist_ok=True)
    man_path, prog_path = os.path.join(out, "manifest.json"), os.path.join(out, "progress.json")
    other = (f"--out={out!r} holds data prepared from other inputs or arguments; choose "
             "another --out or delete it")
    if os.path.isfile(man_path):
        with open(man_path) as f:
            man = json.load(f)
        if man.get("key") != key:
            raise PrepareError(other)
        if progress:
            print(f"prepare: {out} is already prepared ({man['splits']['train']['tokens']:,} "
                  "train tokens)", file=sys.stderr)
        return man
    state = None
    if os.path.isfile(prog_path):
        with open(prog_path) as f:
            state = json.load(f)
        if state.get("key") != key:
            raise PrepareError(other)
    else:
        _clear_unrecorded(out)

    writers = {s: SplitWriter(out, s, tok.dtype, state and state[s]) for s in ("train", "val")}
    start = state["next_doc"] if state else 0
    bar = _Progress(sum(s.size for s in sources), progress)
    counts = {"docs": sum(w.summary()["docs"] + w.docs for w in writers.values()),
              "tokens": sum(w.summary()["tokens"] + w.tokens for w in writers.values())}
    if state and progress:
        print(f"prepare: resuming at document {start:,} ({counts['tokens']:,} tokens in "
              "completed shards)", file=sys.stderr)

    def checkpoint(next_doc: int) -> None:
        nonlocal state
        state = {"key": key, "next_doc": next_doc,
                 **{s: w.state() for s, w in writers.items()}}
        _write_json(prog_path, state)

    chunks = _chunks(iter_documents(sources, text_field), start)
    # the pool's functions live in this importable module (never __main__), so they pickle
    encode = encode_chunk
    pool = None
    if workers > 1:
        # forkserver, not fork: a caller that already runs JAX (the trainer's implicit
        # preparation, a notebook) has threads that a forked child could deadlock on
        pool = _start_pool(workers, tok, tokenizer)
    else:
        _set_tokenizer(tok)
    try:
        results: deque = deque()
        exhausted = False
        done = 0
        while True:
            while not exhausted and len(results) < (2 * workers + 2 if pool else 1):
                try:
                    idx, texts, done_at = next(chunks)
                except StopIteration:
                    exhausted = True
                    break
                res = (pool.apply_async(encode, (texts, idx[0])) if pool
                       else encode(texts, idx[0]))
                results.append((idx, res, done_at))
            if not results:
                break
            idx, res, done = results.popleft()
            flat, lens, top = res.get() if pool else res
            if top >= tok.vocab_size:
                raise PrepareError(f"token id {top} >= vocabulary size {tok.vocab_size} of "
                                   f"{tok.identity} in documents {idx[0]}..{idx[-1]} "
                                   "(a broken tokenizer file?)")
            offs = np.concatenate([[0], np.cumsum(lens)])
            for j, i in enumerate(idx):
                w = writers["val" if is_val_document(i, val_fraction) else "train"]
                w.add(flat[offs[j] : offs[j + 1]])
                if w.tokens >= shard_tokens:
                    w.close_shard()
                    checkpoint(i + 1)
            counts["docs"] += len(idx)
            counts["tokens"] += int(offs[-1])
            bar.update(counts["docs"], counts["tokens"], done)
        for w in writers.values():
            if w.docs:
                w.close_shard()
    except KeyboardInterrupt:
        _abort(pool, writers, state)
        n = sum(len(w.shards) for w in writers.values())
        raise PrepareError(f"interrupted: {n} complete shard(s) kept in {out}; rerun the same "
                           "command to continue") from None
    except OSError as e:
        _abort(pool, writers, state)
        if e.errno == errno.ENOSPC:
            raise PrepareError(f"disk full writing {out}: complete shards kept, the partial one "
                               "removed; free space and rerun to continue") from None
        raise PrepareError(f"cannot write {out}: {e.strerror or e}") from None
    except BaseException:
        _abort(pool, writers, state)
        raise
    if pool:
        pool.close()
        pool.join()
    bar.update(counts["docs"], counts["tokens"], done, final=True)
    splits = {s: w.summary() for s, w in writers.items()}
    if splits["train"]["docs"] + splits["val"]["docs"] == 0:
        raise PrepareError(f"empty corpus: no documents with text in {' '.join(inputs)}")
    man = {"format": FORMAT, "version": VERSION, "key": key, "tokenizer": tok.describe(),
           "dtype": np.dtype(tok.dtype).name, "text_field": text_field,
           "val_fraction": val_fraction, "shard_tokens": shard_tokens, "sources": fps,
           "splits": splits}
    _write_json(man_path, man)
    if os.path.exists(prog_path):
        os.remove(prog_path)
    return man


def _start_pool(workers: int, tok, spec: str):  # -> multiprocessing.pool.Pool
    return mp.get_context("forkserver").Pool(workers, _init_worker, (_worker_arg(tok, spec),))


def _set_tokenizer(tok) -> None:
    global _TOK
    _TOK = tok


def _abort(pool, writers: dict, state: dict | None) -> None:
    if pool is not None:
        pool.terminate()
        pool.join()
    for s, w in writers.items():
        with contextlib.suppress(OSError):
            w.rollback(state and state[s])


def prepare_cached(inputs: Sequence[str], tokenizer: str, cache_dir: str, *,
                   text_field: str = "text", val_fraction: float = 0.0,
                   shard_tokens: int = 100_000_000, workers: int = 1,
                   progress: bool = True) -> str:
    """Prepare ``inputs`` into ``<cache_dir>/prepared-<key>`` (key: the sources' fingerprints,
    the tokenizer's identity and the arguments) unless done already; returns the folder."""
    if isinstance(inputs, str):
        inputs = [inputs]
    _check_args(val_fraction, shard_tokens, workers)
    try:
        tok = get_tokenizer(tokenizer)
    except (ValueError, ImportError) as e:
        raise PrepareError(str(e)) from None
    fps = [fingerprint(s) for s in find_sources(inputs, exclude=cache_dir)]
    out = os.path.join(cache_dir, "prepared-" + _key(fps, tok, text_field, val_fraction,
                                                     shard_tokens))
    prepare(inputs, out, tokenizer, text_field=text_field, val_fraction=val_fraction,
            shard_tokens=shard_tokens, workers=workers, progress=progress)
    return out
