"""Tokenizers, token files, and batches as pure functions of (seed, step, process)."""

from __future__ import annotations

import numpy as np
import pytest

from train.data import Batcher, TokenData, load_data, read_bin, write_bin
from train.tokenizer import get_tokenizer


def test_tokenizers_offline() -> None:
    b = get_tokenizer("byte")
    assert b.decode(b.encode("héllo")) == "héllo" and b.vocab_size == 256
    g = get_tokenizer("gpt2")
    ids = g.encode("Hello world")
    assert list(ids) == [15496, 995] and g.decode(ids) == "Hello world"


def test_bin_roundtrip_and_nanogpt(tmp_path) -> None:
    toks = np.arange(1000, dtype=np.uint16) * 7
    write_bin(str(tmp_path / "a.bin"), toks)
    hdr = np.fromfile(tmp_path / "a.bin", dtype=np.int32, count=256)
    assert (hdr[0], hdr[1], hdr[2]) == (20240520, 1, 1000)
    assert np.array_equal(read_bin(str(tmp_path / "a.bin")), toks)
    toks.tofile(tmp_path / "raw.bin")  # nanoGPT layout: no header
    assert np.array_equal(read_bin(str(tmp_path / "raw.bin")), toks)
    with open(tmp_path / "a.bin", "r+b") as f:  # truncated llm.c file
        f.truncate(1024 + 100)
    with pytest.raises(ValueError, match="truncated"):
        read_bin(str(tmp_path / "a.bin"))


def test_shard_dir(tmp_path) -> None:
    write_bin(str(tmp_path / "x_train_000001.bin"), np.arange(500) % 256)
    write_bin(str(tmp_path / "x_train_000002.bin"), np.arange(300) % 256)
    write_bin(str(tmp_path / "x_val_000000.bin"), np.arange(200) % 256)
    tr, va, desc = load_data(str(tmp_path), None, get_tokenizer("byte"), str(tmp_path), 0.1)
    assert tr.num_tokens == 800 and va.num_tokens == 200 and "2 train + 1 val" in desc


def test_text_cached(tmp_path, corpus) -> None:
    tok = get_tokenizer("byte")
    tr, va, _ = load_data(corpus, None, tok, str(tmp_path), 0.1)
    n = tr.num_tokens + va.num_tokens
    assert abs(va.num_tokens - 0.1 * n) <= 1
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert any(c.endswith(".train.bin") for c in cached)
    tr2, _, _ = load_data(corpus, None, tok, str(tmp_path), 0.1)  # from the cache
    assert np.array_equal(np.asarray(tr.shards[0]), np.asarray(tr2.shards[0]))


def test_batches_are_pure_and_split_by_process() -> None:
    data = TokenData([np.arange(5000, dtype=np.uint16) % 256, np.arange(77) % 256], "t")
    kw = dict(seq_len=16, batch_size=2, grad_accum=2, seed=3)
    one = Batcher(data, local_devices=8, **kw)
    b = one.batch(11)
    assert b.shape == (8, 2, 2, 17) and np.array_equal(b, one.batch(11))
    assert not np.array_equal(b, one.batch(12))
    halves = [Batcher(data, local_devices=4, process_index=p, process_count=2, **kw).batch(11)
              for p in range(2)]
    assert np.array_equal(np.concatenate(halves), b)
    # windows are contiguous text
    assert np.all((np.diff(b.astype(int), axis=-1) % 256) == 1)
