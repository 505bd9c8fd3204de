"""A padded vocabulary (``vocab_pad_to``): the logits, loss and gradients of the real rows are
those of the unpadded model holding the same rows, the padding ids are never sampled (even when
their rows would win), and the transformers conversion drops / adds the padding rows."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models as M

V, PAD_TO, VP = 250, 64, 256  # 250 real tokens in 256 rows
U = 2.0**-24  # float32 unit roundoff
CASES = {"gpt2_tied": ("gpt2", {}, "ln_f"),
         "llama_untied": ("llama3", {"tie_embeddings": False}, "norm")}


def configs(model: str, kw: dict) -> tuple[Any, Any]:
    cp = M.get_config(model, "tiny", vocab_size=V, vocab_pad_to=PAD_TO, n_layer=1,
                      block_size=16, **kw)
    return cp, dataclasses.replace(cp, vocab_pad_to=1)


def head_rows(cfg: Any, params: Any) -> np.ndarray:
    """The output head as [rows, C]."""
    if "wte" in params:
        return np.asarray(params["wte"]["embedding"])
    if cfg.tie_embeddings:
        return np.asarray(params["embed_tokens"]["embedding"])
    return np.asarray(params["lm_head"]["kernel"]).T


def with_pad_rows(cfg: Any, params: Any, rows: np.ndarray) -> Any:
    """``params`` whose head rows V.. are ``rows`` (and so is the tied embedding)."""
    p = jax.tree.map(np.array, params)
    if "wte" in p:
        p["wte"]["embedding"][V:] = rows
    elif cfg.tie_embeddings:
        p["embed_tokens"]["embedding"][V:] = rows
    else:
        p["lm_head"]["kernel"][:, V:] = rows.T
    return p


def forward(cfg: Any, params: Any, tokens: np.ndarray, norm: str) -> tuple[np.ndarray, np.ndarray]:
    """(logits, the final norm's output: the head's input)."""
    logits, state = M.build(cfg).apply({"params": params}, tokens, capture_intermediates=True,
                                        mutable=["intermediates"])
    return np.asarray(logits), np.asarray(state["intermediates"][norm]["__call__"][0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_padded_model_is_the_unpadded_model(case: str) -> None:
    model, kw, norm = CASES[case]
    cp, cu = configs(model, kw)
    assert (cp.padded_vocab_size, cu.padded_vocab_size) == (VP, V)
    pp = M.init_params(cp, jax.random.key(0))
    pp = with_pad_rows(cp, pp, np.full((VP - V, cp.n_embd), 50.0, np.float32))  # huge rows
    pu = M.pad_vocab(cu, pp)  # the real rows only
    assert head_rows(cu, pu).shape == (V, cu.n_embd)
    tokens = np.random.default_rng(0).integers(0, V, (2, 17), dtype=np.int32)
    x, y = tokens[:, :-1], tokens[:, 1:]
    lp, h = forward(cp, pp, x, norm)
    lu, _ = forward(cu, pu, x, norm)
    assert lp.shape == (2, 16, VP) and lu.shape == (2, 16, V)
    assert np.all(lp[..., V:] == -np.inf)
    # the same hidden states (the layers never see the vocabulary); the head's dot products of
    # C terms differ only in their GEMM's operation order: |error| <= 2·C·u·(|h| @ |W|ᵀ)
    w = head_rows(cu, pu)
    bound = 2 * cp.n_embd * U * (np.abs(h) @ np.abs(w).T)
    assert np.all(np.abs(lp[..., :V] - lu) <= bound)
    # the pipeline's view of the padded model (embeddings / layers / head): the same logits
    parts = M.model_parts(cp)
    hx, args = parts.embed(pp, x)
    for i in range(cp.n_layer):
        hx = parts.layer(pp[f"{parts.prefix}{i}"], hx, args)
    lparts = np.asarray(parts.head(pp, hx))
    assert np.all(lparts[..., V:] == -np.inf)
    assert np.all(np.abs(lparts[..., :V] - lu) <= 2 * bound)
    # the loss: logits within the bound, then V or VP terms summed (relative error <= VP·u of
    # the normaliser) and a mean over N tokens
    n = y.size
    loss_u = float(M.loss_fn(jnp.asarray(lu), y))
    tol = 2 * float(bound.max()) + 2 * (VP + n) * U * max(1.0, abs(loss_u))
    for xent in (M.loss_fn, M.vocab_parallel_xent):
        assert abs(float(xent(jnp.asarray(lp), y)) - loss_u) <= tol

    def loss(p: Any) -> jax.Array:
        return M.loss_fn(M.build(cp).apply({"params": p}, x), y)

    # the padding rows get exactly zero gradient (their logits are constant -inf)
    g = jax.grad(loss)(jax.tree.map(jnp.asarray, pp))
    assert not np.any(head_rows(cp, g)[V:]) and np.any(head_rows(cp, g)[:V])
    if not cp.tie_embeddings:
        assert not np.any(np.asarray(g["embed_tokens"]["embedding"])[V:])


def test_padding_ids_are_never_sampled() -> None:
    """Padding rows aligned with the head's input score far above every real token before
    the mask; greedy and sampled tokens (cached and windowed) are real ids, the unpadded
    model's tokens."""
    cp, cu = configs("gpt2", {})
    pp = M.init_params(cp, jax.random.key(1))
    prompt = np.random.default_rng(1).integers(0, V, (2, 5), dtype=np.int32)
    _, h = forward(cp, pp, prompt, "ln_f")
    last = h[0, -1] / np.linalg.norm(h[0, -1])
    pp = with_pad_rows(cp, pp, np.tile(100.0 * last, (VP - V, 1)).astype(np.float32))
    raw = h[0, -1] @ head_rows(cp, pp).T  # the head without the mask
    assert raw.argmax() >= V
    pu = M.pad_vocab(cu, pp)
    key = jax.random.key(7)
    for use_cache in (True, False):
        for temperature in (0.0, 1.0):
            got = np.asarray(M.generate(cp, pp, prompt, 6, key, temperature, use_cache=use_cache))
            want = np.asarray(M.generate(cu, pu, prompt, 6, key, temperature,
                                         use_cache=use_cache))
            assert got[:, 5:].max() < V
            np.testing.assert_array_equal(got, want)


def test_transformers_conversion_drops_and_adds_the_padding() -> None:
    cp, cu = configs("llama3", {"tie_embeddings": False})
    pp = M.init_params(cp, jax.random.key(2))
    pu = M.pad_vocab(cu, pp)
    assert M.hf_config(cp)["vocab_size"] == V
    sd = M.to_hf(cp, pp)
    ref = M.to_hf(cu, pu)  # the unpadded model's state dict, exactly
    assert sorted(sd) == sorted(ref)
    for k in ref:
        np.testing.assert_array_equal(sd[k], ref[k])
    assert sd["model.embed_tokens.weight"].shape[0] == sd["lm_head.weight"].shape[0] == V
    back = M.from_hf(cp, sd)  # padded again, with zero rows
    assert head_rows(cp, back).shape[0] == VP and not np.any(head_rows(cp, back)[V:])
    np.testing.assert_array_equal(head_rows(cp, back)[:V], head_rows(cu, pu))
    # the parameter count is of the padded rows (the exported model's is of the real ones)
    C = cp.n_embd
    assert M.num_params(cp) - M.num_params(cu) == 2 * (VP - V) * C
    with pytest.raises(ValueError, match=r"LlamaConfig.vocab_pad_to=0 is invalid"):
        dataclasses.replace(cp, vocab_pad_to=0)
