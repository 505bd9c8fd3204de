"""Document masking: ``segment_ids`` (and per-document positions) make a packed row compute,
for each document, the logits of that document run alone."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models as M
from models.layers import segment_positions
from tests.models.models_testutil import np_params

# row 0 packs three documents (5, 9 and 2 tokens), row 1 is one document
DOCS = [[5, 9, 2], [16]]
T = 16
EPS = float(np.finfo(np.float32).eps)


def packed(cfg: M.Config) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, (len(DOCS), T), dtype=np.int32)
    seg = np.concatenate([np.repeat(np.arange(len(r)) + 10 * b, r)[None]
                          for b, r in enumerate(DOCS)])
    return tokens, seg.astype(np.int32)


@pytest.fixture(scope="module", params=[
    ("gpt2", {}), ("llama3", {}), ("llama3", {"tie_embeddings": True, "n_kv_head": 1})],
    ids=["gpt2", "llama_gqa", "llama_mqa_tied"])
def case(request: pytest.FixtureRequest) -> tuple[M.Config, dict]:
    model, kw = request.param
    cfg = M.get_config(model, "tiny", **kw)
    return cfg, jax.tree_util.tree_map(jnp.asarray, np_params(cfg, seed=1))


def test_segment_positions() -> None:
    seg = jnp.asarray([[7, 7, 7, 2, 2, 9], [1, 1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(np.asarray(segment_positions(seg)),
                                  [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 4, 5]])


def test_packed_documents_equal_documents_alone(case: tuple) -> None:
    cfg, params = case
    tokens, seg = packed(cfg)
    model = M.build(cfg)
    fwd = jax.jit(lambda p, t, s, pos: model.apply({"params": p}, t, segment_ids=s,
                                                    positions=pos))
    got = np.asarray(fwd(params, tokens, seg, None))
    # explicit positions: the same integers, so the same operations on the same values
    pos = np.asarray(segment_positions(jnp.asarray(seg)))
    np.testing.assert_array_equal(np.asarray(fwd(params, tokens, seg, pos)), got)
    # every document alone, right-padded to T (causal: the padding is invisible to it), in
    # one plain call with the packed rows themselves
    alone_rows, where = [], []
    for b, lengths in enumerate(DOCS):
        start = 0
        for n in lengths:
            alone_rows.append(np.pad(tokens[b, start:start + n], (0, T - n)))
            where.append((b, start, n))
            start += n
    out = np.asarray(jax.jit(lambda p, t: model.apply({"params": p}, t))(
        params, np.concatenate([tokens, np.stack(alone_rows)])))
    plain, alone = out[:len(DOCS)], out[len(DOCS):]
    for j, (b, start, n) in enumerate(where):
        # same products, summed over a different number of exactly-zero attention weights
        # and in other orders: float32 rounding of sums of ~C terms of the logits' scale
        tol = 8 * cfg.n_embd * EPS * float(np.abs(alone[j, :n]).max())
        np.testing.assert_allclose(got[b, start:start + n], alone[j, :n], rtol=0, atol=tol)
    # documents do see each other without segment_ids (the test can fail)
    assert np.abs(plain[0, 5:14] - got[0, 5:14]).max() > 1e-2
    # one segment per row is the plain causal model
    one = np.asarray(fwd(params, tokens, np.zeros_like(seg), None))
    np.testing.assert_allclose(one, plain, rtol=0,
                               atol=8 * cfg.n_embd * EPS * float(np.abs(plain).max()))


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
def test_segments_under_remat(model: str) -> None:
    import dataclasses

    cfg = M.get_config(model, "tiny")
    params = jax.tree_util.tree_map(jnp.asarray, np_params(cfg, seed=2))
    tokens, seg = packed(cfg)
    targets = np.roll(tokens, -1, axis=1)

    def loss(cfg: M.Config, p: dict) -> jax.Array:
        return M.loss_fn(M.build(cfg).apply({"params": p}, tokens, segment_ids=seg), targets)

    plain = jax.jit(jax.value_and_grad(lambda p: loss(cfg, p)))(params)
    rcfg = dataclasses.replace(cfg, remat="full")
    got = jax.jit(jax.value_and_grad(lambda p: loss(rcfg, p)))(params)
    # recompute runs the same forward again inside the backward: values within rounding of
    # a few reordered float32 sums (the gradients are O(1e-1))
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(got),
                    strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-6)
