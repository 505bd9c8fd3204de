"""A corpus's documents, streamed: text files and folders (one file = one document), JSON
lines (``.jsonl``, ``.jsonl.gz``, ``.jsonl.zst``; one line = one document), Parquet (read by
row group) and local HuggingFace datasets (a ``datasets.save_to_disk`` folder); never a
download. Each source is fingerprinted so that a prepared folder knows what it was made from.
Errors are one line naming the file (and the line of a JSON-lines file)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from .tokenizer import missing_extra

#: a shard's file name in a prepared folder (``train_000003.bin``, ``.partial`` while written)
SHARD_NAME = re.compile(r"(train|val)_(\d{6})\.bin(\.partial)?")

__all__ = ["SHARD_NAME", "PrepareError", "Source", "find_sources", "fingerprint", "is_hf_dataset",
           "iter_documents"]


class PrepareError(ValueError):
    """Bad input or arguments; its message is the one line the CLI prints."""


# -- sources --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    path: str
    kind: str  # text | jsonl | parquet | hf-dataset
    size: int


def is_hf_dataset(d: str) -> bool:
    return (os.path.isfile(os.path.join(d, "dataset_dict.json"))
            or (os.path.isfile(os.path.join(d, "state.json"))
                and os.path.isfile(os.path.join(d, "dataset_info.json"))))


def _is_prepared_output(d: str) -> bool:
    return any(os.path.isfile(os.path.join(d, n)) for n in ("manifest.json", "progress.json")) \
        and any(SHARD_NAME.fullmatch(n) for n in os.listdir(d))


def _kind(path: str) -> str:
    p = path.lower()
    if p.endswith((".jsonl", ".jsonl.gz", ".jsonl.zst", ".ndjson")):
        return "jsonl"
    if p.endswith(".parquet"):
        return "parquet"
    return "text"


def _dir_size(d: str) -> int:
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(d) for f in fs)


def find_sources(inputs: Sequence[str], exclude: str | None = None) -> list[Source]:
    """The input files in order: each input as given, folders walked in sorted order
    (hidden entries, ``*.bin`` and the folder ``exclude`` (the output) skipped; a dataset
    folder is one source)."""
    out: list[Source] = []
    skip = os.path.abspath(exclude) if exclude else None
    for inp in inputs:
        if not os.path.exists(inp):
            raise PrepareError(f"{inp}: no such file or directory")
        if os.path.isdir(inp):
            if is_hf_dataset(inp):
                out.append(Source(inp, "hf-dataset", _dir_size(inp)))
                continue
            for root, dirs, files in os.walk(inp):
                keep = []
                for d in sorted(dirs):
                    if d.startswith("."):
                        continue
                    full = os.path.join(root, d)
                    if os.path.abspath(full) == skip or _is_prepared_output(full):
                        continue
                    if is_hf_dataset(full):
                        out.append(Source(full, "hf-dataset", _dir_size(full)))
                    else:
                        keep.append(d)
                dirs[:] = keep
                for f in sorted(files):
                    if f.startswith(".") or f.endswith((".bin", ".partial")):
                        continue
                    full = os.path.join(root, f)
                    out.append(Source(full, _kind(full), os.path.getsize(full)))
        else:
            out.append(Source(inp, _kind(inp), os.path.getsize(inp)))
    return out


def fingerprint(src: Source) -> dict:
    """Path, kind, size, mtime and a hash of the first and last MiB (of every file of a folder)."""
    h = hashlib.sha256()
    paths = [src.path] if os.path.isfile(src.path) else sorted(
        os.path.join(r, f) for r, _, fs in os.walk(src.path) for f in fs)
    mtime = 0
    try:
        for p in paths:
            st = os.stat(p)
            mtime = max(mtime, st.st_mtime_ns)
            with open(p, "rb") as f:
                h.update(f.read(1 << 20))
                if st.st_size > 2 << 20:
                    f.seek(-(1 << 20), os.SEEK_END)
                    h.update(f.read())
            h.update(str(st.st_size).encode())
    except OSError as e:
        raise PrepareError(f"{src.path}: cannot read ({e.strerror or e})") from None
    return {"path": os.path.abspath(src.path), "kind": src.kind, "size": src.size,
            "mtime_ns": mtime, "sha256": h.hexdigest()[:16]}


# -- documents ------------------------------------------------------------------------------


def _open_lines(path: str):  # -> (line iterator, raw file for progress)
    raw = open(path, "rb")  # noqa: SIM115 (closed by the caller)
    if path.lower().endswith(".gz"):
        return gzip.GzipFile(fileobj=raw), raw
    if path.lower().endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raw.close()
            raise missing_extra("zstandard") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw)), raw
    return raw, raw


def _jsonl(src: Source, field: str, done: int) -> Iterator[tuple[str, int]]:
    stream, raw = _open_lines(src.path)
    with raw:
        lineno = 0
        for line in stream:
            lineno += 1
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
                raise PrepareError(f"{src.path}:{lineno}: not JSON ({msg})") from None
            if not isinstance(obj, dict) or field not in obj:
                keys = ", ".join(list(obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
                raise PrepareError(f"{src.path}:{lineno}: no field {field!r} (has: {keys}); "
                                   "set --text-field")
            text = obj[field]
            if not isinstance(text, str):
                raise PrepareError(f"{src.path}:{lineno}: field {field!r} is "
                                   f"{type(text).__name__}, not text")
            yield text, done + raw.tell()


def _parquet(src: Source, field: str, done: int) -> Iterator[tuple[str, int]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise missing_extra("pyarrow") from None
    try:
        pf = pq.ParquetFile(src.path)
    except Exception as e:
        raise PrepareError(f"{src.path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise PrepareError(f"{src.path}: no column {field!r} (has: {', '.join(names[:8])}); "
                           "set --text-field")
    n = max(pf.num_row_groups, 1)
    for rg in range(pf.num_row_groups):
        for i, text in enumerate(pf.read_row_group(rg, columns=[field]).column(0).to_pylist()):
            if not isinstance(text, str):
                raise PrepareError(f"{src.path}: row group {rg} row {i}: column {field!r} is "
                                   f"{type(text).__name__}, not text")
            yield text, done + src.size * (rg + 1) // n


def _hf_dataset(src: Source, field: str, done: int) -> Iterator[tuple[str, int]]:
    try:
        import datasets
    except ImportError:
        raise missing_extra("datasets") from None
    ds = datasets.load_from_disk(src.path)
    parts = [ds[k] for k in sorted(ds)] if isinstance(ds, datasets.DatasetDict) else [ds]
    total = sum(len(p) for p in parts) or 1
    seen = 0
    for part in parts:
        if field not in part.column_names:
            raise PrepareError(f"{src.path}: no column {field!r} (has: "
                               f"{', '.join(part.column_names[:8])}); set --text-field")
        for batch in part.select_columns([field]).iter(batch_size=1000):
            for text in batch[field]:
                seen += 1
                if not isinstance(text, str):
                    raise PrepareError(f"{src.path}: row {seen - 1}: column {field!r} is "
                                       f"{type(text).__name__}, not text")
                yield text, done + src.size * seen // total


def iter_documents(sources: Sequence[Source], text_field: str = "text"
                   ) -> Iterator[tuple[str, int]]:
    """``(text, input bytes consumed so far)`` for every document of ``sources``, in order."""
    done = 0
    for src in sources:
        try:
            if src.kind == "text":
                with open(src.path, "rb") as f:
                    yield f.read().decode("utf-8", errors="replace"), done + src.size
            elif src.kind == "jsonl":
                yield from _jsonl(src, text_field, done)
            elif src.kind == "parquet":
                yield from _parquet(src, text_field, done)
            else:
                yield from _hf_dataset(src, text_field, done)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            raise PrepareError(f"{src.path}: cannot read "
                               f"({getattr(e, 'strerror', None) or e})") from None
        except PrepareError:
            raise
        except ImportError:
            raise
        except Exception as e:  # decompressors' own errors (e.g. zstd)
            raise PrepareError(f"{src.path}: cannot read ({type(e).__name__}: {e})") from None
        done += src.size
