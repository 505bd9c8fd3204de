"""Exactness against the transformers PyTorch models: logits, loss and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models_testutil import hf_logits_loss_grads, hf_model, random_tokens

import models as M

GPT2_CASES = {
    "h3_odd": dict(vocab_size=97, block_size=32, n_layer=2, n_head=3, n_embd=48),
    "h5_c80": dict(vocab_size=131, block_size=48, n_layer=1, n_head=5, n_embd=80),
    "h1_l3": dict(vocab_size=64, block_size=16, n_layer=3, n_head=1, n_embd=32),
}
LLAMA_CASES = {
    # GQA 4:2, llama3 rope scaling (all three frequency bands), untied head
    "gqa2_scaled_untied": dict(),
    # MQA 6:1, plain rope, tied embeddings (LLaMA-3.2 style)
    "mqa_plain_tied": dict(
        vocab_size=101, n_head=6, n_kv_head=1, n_embd=48, intermediate_size=96,
        rope_scaling=None, tie_embeddings=True,
    ),
    # MHA 3:3 with odd head count, scaling on, tied
    "mha3_scaled_tied": dict(
        vocab_size=89, block_size=40, n_layer=3, n_head=3, n_kv_head=3, n_embd=36,
        intermediate_size=70, tie_embeddings=True,
        rope_scaling=M.RopeScaling(factor=4.0, low_freq_factor=2.0, high_freq_factor=8.0,
                                   original_max_position_embeddings=32),
    ),
    # GQA 8:2, theta 10000, eps 1e-6, untied
    "gqa4_theta1e4_untied": dict(
        n_head=8, n_kv_head=2, n_embd=64, rope_theta=10000.0, rope_scaling=None,
        rms_norm_eps=1e-6, block_size=64,
    ),
}  # fmt: skip

CASES = [("gpt2", k, v) for k, v in GPT2_CASES.items()] + [
    ("llama3", k, v) for k, v in LLAMA_CASES.items()
]


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.mark.parametrize(("model", "case", "overrides"), CASES, ids=[c[1] for c in CASES])
def test_logits_loss_grads_match_hf(model: str, case: str, overrides: dict) -> None:
    cfg = M.get_config(model, "tiny", **overrides)
    hf = hf_model(cfg, seed=len(case))
    tokens = random_tokens(cfg, batch=3, seq=cfg.block_size, seed=len(case))
    ref_logits, ref_loss, ref_grads = hf_logits_loss_grads(hf, tokens)

    params = M.from_hf(cfg, hf.state_dict())
    module = M.build(cfg)

    def loss(p: dict) -> tuple[jax.Array, jax.Array]:
        logits = module.apply({"params": p}, jnp.asarray(tokens))
        return M.loss_fn(logits[:, :-1], jnp.asarray(tokens[:, 1:])), logits

    (jax_loss, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    assert logits.dtype == jnp.float32 and logits.shape == (*tokens.shape, cfg.vocab_size)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0, atol=1e-4)
    assert abs(float(jax_loss) - ref_loss) <= 1e-5

    jax_grads = M.to_hf(cfg, grads)
    assert set(jax_grads) == set(ref_grads)
    errs = {n: _rel_err(jax_grads[n], ref_grads[n]) for n in ref_grads}
    worst = max(errs, key=errs.get)
    assert errs[worst] <= 1e-4, (worst, errs[worst])


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
def test_shorter_sequences_match_hf(model: str) -> None:
    """T < block_size (position tables / rope are sliced correctly)."""
    cfg = M.get_config(model, "tiny")
    hf = hf_model(cfg, seed=3)
    tokens = random_tokens(cfg, batch=2, seq=7, seed=3)
    ref_logits, _, _ = hf_logits_loss_grads(hf, tokens)
    logits = jax.jit(M.build(cfg).apply)({"params": M.from_hf(cfg, hf.state_dict())}, tokens)
    np.testing.assert_allclose(np.asarray(logits), ref_logits, rtol=0, atol=1e-4)


def test_rope_inv_freq_matches_hf() -> None:
    from models_testutil import hf_config_obj, transformers

    from models.llama import rope_inv_freq

    from_hf_rope = transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS["llama3"]
    for size in ("tiny", "1b", "8b"):
        cfg = M.get_config("llama3", size)
        ref, _ = from_hf_rope(hf_config_obj(cfg))
        np.testing.assert_allclose(rope_inv_freq(cfg), ref.numpy(), rtol=1e-6, atol=0)


def test_bfloat16_compute_policy() -> None:
    """bf16 compute: params stay float32, logits float32 and close to the float32 model."""
    cfg32 = M.get_config("llama3", "tiny")
    cfg16 = M.get_config("llama3", "tiny", dtype="bfloat16")
    assert cfg16.dtype == "bfloat16"
    params = M.init_params(cfg16, jax.random.key(0))
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    assert M.num_params(params) == M.num_params(cfg16) == M.num_params(M.param_shapes(cfg16))
    tokens = random_tokens(cfg32, 2, 16)
    l16 = jax.jit(M.build(cfg16).apply)({"params": params}, tokens)
    l32 = jax.jit(M.build(cfg32).apply)({"params": params}, tokens)
    assert l16.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(l16 - l32))) < 0.05
    g = M.get_config("gpt2", "tiny", dtype=jnp.bfloat16)
    assert g.dtype == "bfloat16"
    out = jax.eval_shape(M.build(g).apply, {"params": M.param_shapes(g)}, tokens)
    assert out.dtype == jnp.float32
