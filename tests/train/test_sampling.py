"""Epoch sampling, mixtures, document segment ids, prefetch."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from train.data import (
    Batcher,
    Mixture,
    Prefetcher,
    TokenData,
    is_mixture,
    parse_mixture,
    segment_ids,
)

KW = dict(seq_len=8, batch_size=2, grad_accum=2, seed=5)


def _ramp(n: int, base: int = 0) -> np.ndarray:
    return (np.arange(n, dtype=np.int64) + base).astype(np.uint32)


def test_epoch_sees_every_window_once_per_epoch() -> None:
    # 2 shards: 8*30+1 and 8*18+5 tokens -> 30 + 18 = 48 windows; global batch 4*2*2... = 16
    data = TokenData([_ramp(8 * 30 + 1), _ramp(8 * 18 + 5, base=10_000)], "t")
    b = Batcher(data, local_devices=4, sampling="epoch", **KW)
    assert data.num_windows(9) == 48
    # every non-overlapping window, enumerated independently: start k*8, 9 tokens
    want = {tuple(range(k * 8, k * 8 + 9)) for k in range(30)}
    want |= {tuple(range(10_000 + k * 8, 10_000 + k * 8 + 9)) for k in range(18)}
    for epoch in range(2):
        steps = range(3 * epoch, 3 * epoch + 3)
        seen = [tuple(r) for s in steps for r in b.batch(s).reshape(-1, 9)]
        assert len(seen) == len(set(seen)) == 48 and set(seen) == want
        assert [b.epoch_of(s) for s in range(3 * epoch, 3 * epoch + 3)] == [
            (epoch, 0), (epoch, 16), (epoch, 32)]
    # each token a target exactly once per epoch (targets are rows[..., 1:])
    tg = np.concatenate([b.batch(s)[..., 1:].ravel() for s in range(3)])
    assert len(tg) == len(set(tg.tolist())) == 48 * 8
    assert not np.array_equal(b.batch(0), b.batch(3))  # a new permutation each epoch


def test_epoch_is_a_pure_function_of_seed_and_step() -> None:
    data = TokenData([_ramp(5000)], "t")
    one = Batcher(data, local_devices=4, sampling="epoch", **KW)
    again = Batcher(data, local_devices=4, sampling="epoch", **KW)
    assert np.array_equal(one.batch(57), again.batch(57))  # a fresh (resumed) batcher
    halves = [Batcher(data, local_devices=2, process_index=p, process_count=2,
                      sampling="epoch", **KW).batch(57) for p in range(2)]
    assert np.array_equal(np.concatenate(halves), one.batch(57))  # layout-independent
    other = Batcher(data, local_devices=4, sampling="epoch", **{**KW, "seed": 6})
    assert not np.array_equal(other.batch(57), one.batch(57))
    with pytest.raises(ValueError, match="--sampling='shuffle' is invalid"):
        Batcher(data, local_devices=4, sampling="shuffle", **KW)
    with pytest.raises(ValueError, match="fewer than the 16 rows"):
        Batcher(TokenData([_ramp(100)], "t"), local_devices=4, sampling="epoch", **KW)


def test_mixture_random_rows_follow_weights() -> None:
    a, b = TokenData([_ramp(3000)], "a"), TokenData([_ramp(3000, base=100_000)], "b")
    mix = Mixture([("a", a, 1.0), ("b", b, 3.0)])
    bt = Batcher(mix, local_devices=4, **KW)
    src = np.concatenate([bt.sources(s).ravel() for s in range(200)])
    rows = np.concatenate([bt.batch(s)[..., 0].ravel() for s in range(200)])
    assert np.array_equal(rows >= 100_000, src == 1)  # the content is from the named source
    n = len(src)  # binomial: mean n/4, sd sqrt(n * 3/16) ~ 24 for n = 3200
    assert abs((src == 0).sum() - n / 4) < 5 * np.sqrt(n * 3 / 16)
    halves = [Batcher(mix, local_devices=2, process_index=p, process_count=2, **KW).batch(9)
              for p in range(2)]
    assert np.array_equal(np.concatenate(halves), bt.batch(9))


def test_mixture_epoch_fixed_allocation() -> None:
    a, b = TokenData([_ramp(8 * 64 + 1)], "a"), TokenData([_ramp(8 * 200 + 1, base=100_000)], "b")
    mix = Mixture([("a", a, 1.0), ("b", b, 3.0)])
    assert mix.allocation(16).tolist() == [4, 12] and mix.allocation(10).tolist() == [3, 7]
    bt = Batcher(mix, local_devices=4, sampling="epoch", **KW)
    first_a = []
    for s in range(16):  # source a: 64 windows / 4 per step = one epoch in 16 steps
        rows, src = bt.batch(s).reshape(-1, 9), bt.sources(s).ravel()
        assert (src == 0).sum() == 4 and np.array_equal(rows[:, 0] >= 100_000, src == 1)
        first_a += rows[src == 0, 0].tolist()
    assert sorted(first_a) == [k * 8 for k in range(64)]
    halves = [Batcher(mix, local_devices=2, process_index=p, process_count=2, sampling="epoch",
                      **KW).batch(21) for p in range(2)]
    assert np.array_equal(np.concatenate(halves), bt.batch(21))
    with pytest.raises(ValueError, match="source 'a' gets 0 of the 16 rows"):
        Batcher(Mixture([("a", a, 1.0), ("b", b, 99.0)]), local_devices=4, sampling="epoch",
                **KW)


def test_parse_mixture() -> None:
    assert parse_mixture("data/web:3,code=data/gh:1.5") == [
        ("web", "data/web", 3.0), ("code", "data/gh", 1.5)]
    assert is_mixture("a:1,b:2") and is_mixture("data/x:0.5") and not is_mixture("data/x")
    with pytest.raises(ValueError, match="two sources named 'x'"):
        parse_mixture("a/x:1,b/x:1")
    with pytest.raises(ValueError, match="weight of 'x' must be > 0"):
        parse_mixture("x:0")


def _segments_loop(row, bos, eos):
    seg, pos, cur, p = [], [], 0, 0
    for i, t in enumerate(row):
        if i > 0 and (t == bos or row[i - 1] == eos):
            cur, p = cur + 1, 0
        seg.append(cur)
        pos.append(p)
        p += 1
    return seg, pos


@pytest.mark.parametrize(("bos", "eos"), [(None, 0), (1, None), (1, 0)])
def test_segment_ids_match_a_loop(bos, eos) -> None:
    toks = np.random.default_rng(0).integers(0, 6, size=(3, 2, 40))
    seg, pos = segment_ids(toks, bos, eos)
    assert seg.shape == pos.shape == toks.shape and seg.dtype == np.int32
    for idx in np.ndindex(toks.shape[:-1]):
        want_seg, want_pos = _segments_loop(toks[idx].tolist(), bos, eos)
        assert seg[idx].tolist() == want_seg and pos[idx].tolist() == want_pos


def test_prefetcher_order_depth_restart_and_errors() -> None:
    made, lock = [], threading.Lock()

    def make(t: int) -> int:
        with lock:
            made.append(t)
        if t == 12:
            raise RuntimeError("bad step 12")
        return t * 10

    p = Prefetcher(make, start=3, depth=2, place=lambda x: x + 1)
    assert [p.get(3), p.get(4)] == [31, 41]
    deadline = time.monotonic() + 5
    while max(made) < 6 and time.monotonic() < deadline:  # builds ahead while we wait
        time.sleep(0.01)
    assert max(made) >= 6
    assert p.get(9) == 91  # out of order: restarts there
    assert p.get(10) == 101
    assert p.get(11) == 111
    with pytest.raises(RuntimeError, match="bad step 12"):
        p.get(12)
    p.close()
