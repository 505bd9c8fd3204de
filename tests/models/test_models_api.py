"""Configs, validation, counting, FLOPs, decay mask, loss, causality, dropout and sampling."""

from __future__ import annotations

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from models_testutil import hf_model, np_params, random_tokens, torch

import models as M

# --------------------------------------------------------------------------------------
# configs


def test_model_sizes_and_get_config() -> None:
    assert M.MODEL_SIZES == {
        "gpt2": ("tiny", "small", "124m", "350m", "774m", "1.5b"),
        "llama3": ("tiny", "small", "1b", "3b", "8b"),
    }
    for model, sizes in M.MODEL_SIZES.items():
        for size in sizes:
            cfg = M.get_config(model, size)
            assert isinstance(cfg, M.GPT2Config if model == "gpt2" else M.LlamaConfig)
            for field in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dtype"):
                assert hasattr(cfg, field)
            assert cfg.dtype == "float32"
            hash(cfg)  # frozen, usable as a jit static argument
    small = M.get_config("gpt2", "small")
    assert (small.n_layer, small.n_embd) == (6, 384)
    small = M.get_config("llama3", "small")
    assert (small.n_layer, small.n_embd) == (6, 384)


def test_family_registry_dispatch() -> None:
    """One table: name -> sizes, config class -> module, HF model_type -> config reader."""
    assert set(M.FAMILIES) == set(M.MODEL_SIZES)
    for name, fam in M.FAMILIES.items():
        cfg = M.get_config(name, "tiny")
        assert M.family(cfg) is fam and type(M.build(cfg)) is fam.module_cls
        assert M.hf_config(cfg)["model_type"] == fam.hf_model_type
        assert type(M.config_from_hf(M.hf_config(cfg))) is fam.config_cls
    with pytest.raises(TypeError, match="expected a GPT2Config or LlamaConfig, got dict"):
        M.build({})
    with pytest.raises(ValueError, match=r"model_type='bert'; allowed: \['gpt2', 'llama'\]"):
        M.config_from_hf({"model_type": "bert"})
    assert M.count_params is M.num_params  # the old name of the config form, an alias


def test_get_config_overrides() -> None:
    cfg = M.get_config("gpt2", "124m", vocab_size=256, block_size=128, n_layer=2, dtype="bfloat16")
    assert (cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd) == (256, 128, 2, 768)
    assert cfg.dtype == "bfloat16"
    cfg = M.get_config("llama3", "8b", rope_scaling={"factor": 2.0, "rope_type": "llama3"})
    assert cfg.rope_scaling == M.RopeScaling(factor=2.0)
    assert M.get_config("llama3", "1b", rope_scaling=None).rope_scaling is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_layer = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("bert",), {}, r"unknown model 'bert'; allowed: \['gpt2', 'llama3'\]"),
        (("gpt2", "7b"), {}, r"unknown gpt2 size '7b'; allowed: \['tiny', 'small', '124m'"),
        (("llama3", "tiny"), {"n_kv": 2}, r"unknown LlamaConfig field\(s\) \['n_kv'\]; allowed"),
        (("gpt2", "tiny"), {"n_kv_head": 2}, r"unknown GPT2Config field.*allowed: \['vocab_size'"),
    ],
)
def test_get_config_unknown_names(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        M.get_config(*args, **kwargs)


@pytest.mark.parametrize(
    ("model", "overrides", "match"),
    [
        ("gpt2", {"n_head": 5}, r"GPT2Config\.n_head=5 .*n_head must divide n_embd=64"),
        ("gpt2", {"n_layer": 0}, r"GPT2Config\.n_layer=0 .*positive int"),
        ("gpt2", {"vocab_size": -3}, r"vocab_size=-3 .*positive int"),
        ("gpt2", {"block_size": 8.0}, r"block_size=8\.0 .*positive int"),
        ("gpt2", {"n_embd": True}, r"n_embd=True .*positive int"),
        ("gpt2", {"dropout": 1.0}, r"dropout=1\.0 .*\[0, 1\)"),
        ("gpt2", {"dtype": "float8"}, r"dtype='float8' .*one of"),
        ("gpt2", {"dtype": "int32"}, r"dtype='int32' .*one of"),
        ("gpt2", {"layer_norm_eps": 0.0}, r"layer_norm_eps=0\.0 .*> 0"),
        ("gpt2", {"attn_implementation": "flash"}, r"attn_implementation='flash'"),
        ("llama3", {"n_kv_head": 3}, r"LlamaConfig\.n_kv_head=3 .*n_kv_head must divide n_head=4"),
        ("llama3", {"n_kv_head": 0}, r"n_kv_head=0 .*positive int"),
        ("llama3", {"intermediate_size": None}, r"intermediate_size=None .*positive int"),
        ("llama3", {"n_head": 64}, r"n_embd=64 .*even for RoPE"),
        ("llama3", {"rope_theta": -1.0}, r"rope_theta=-1\.0 .*> 0"),
        ("llama3", {"rms_norm_eps": float("nan")}, r"rms_norm_eps=nan"),
        ("llama3", {"tie_embeddings": 1}, r"tie_embeddings=1 .*bool"),
        ("llama3", {"rope_scaling": 8.0}, r"rope_scaling=8\.0 .*RopeScaling"),
        ("llama3", {"rope_scaling": {"factor": 0}}, r"RopeScaling\.factor=0 .*> 0"),
        (
            "llama3",
            {"rope_scaling": {"low_freq_factor": 4.0, "high_freq_factor": 4.0}},
            r"RopeScaling\.high_freq_factor=4\.0 .*> low_freq_factor=4\.0",
        ),
        (
            "llama3",
            {"rope_scaling": {"original_max_position_embeddings": 0}},
            r"original_max_position_embeddings=0 .*positive int",
        ),
    ],
)
def test_config_validation(model: str, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        M.get_config(model, "tiny", **overrides)


# --------------------------------------------------------------------------------------
# counting and FLOPs


PUBLISHED = {
    ("gpt2", "124m"): 124_439_808,
    ("llama3", "1b"): 1_235_814_400,
    ("llama3", "3b"): 3_212_749_824,
    ("llama3", "8b"): 8_030_261_248,
}


def _hf_num_params(cfg: M.Config) -> int:
    return hf_model(cfg, device="meta").num_parameters()


@pytest.mark.parametrize(
    ("model", "size", "overrides"),
    [
        ("gpt2", "tiny", {}),
        ("gpt2", "tiny", {"n_head": 4, "n_layer": 3, "vocab_size": 77}),
        ("gpt2", "small", {}),
        ("gpt2", "124m", {}),
        ("gpt2", "350m", {}),
        ("gpt2", "774m", {}),
        ("gpt2", "1.5b", {}),
        ("llama3", "tiny", {}),
        ("llama3", "tiny", {"tie_embeddings": True, "n_kv_head": 1}),
        ("llama3", "small", {}),
        ("llama3", "1b", {}),
        ("llama3", "3b", {}),
        ("llama3", "8b", {}),
    ],
)
def test_param_count_matches_hf(model: str, size: str, overrides: dict) -> None:
    cfg = M.get_config(model, size, **overrides)
    n = M.num_params(cfg)
    assert n == _hf_num_params(cfg)
    if (model, size) in PUBLISHED and not overrides:
        assert n == PUBLISHED[model, size]
    V, C, L, S = cfg.vocab_size, cfg.n_embd, cfg.n_layer, cfg.block_size
    if model == "gpt2":
        assert n == V * C + S * C + L * (12 * C * C + 13 * C) + 2 * C
    else:
        Q, K, I = cfg.head_dim, cfg.n_kv_head, cfg.intermediate_size
        per_layer = 2 * C * cfg.n_head * Q + 2 * C * K * Q + 3 * C * I + 2 * C
        assert n == V * C * (1 if cfg.tie_embeddings else 2) + L * per_layer + C


def _hand_count_flops(cfg: M.Config, T: int) -> int:
    """Forward matmul FLOPs per token, one matmul at a time, times 3 for fwd + bwd."""
    C = cfg.n_embd
    mm = lambda n_in, n_out: 2 * n_in * n_out  # noqa: E731
    fwd = 0
    for _ in range(cfg.n_layer):
        if isinstance(cfg, M.GPT2Config):
            fwd += mm(C, 3 * C) + mm(C, C) + mm(C, 4 * C) + mm(4 * C, C)
        else:
            kv = cfg.n_kv_head * cfg.head_dim
            fwd += mm(C, C) + 2 * mm(C, kv) + mm(C, C)
            fwd += 3 * mm(C, cfg.intermediate_size)
        fwd += cfg.n_head * (2 * T * cfg.head_dim)  # scores q.k for T keys, every head
        fwd += cfg.n_head * (2 * T * cfg.head_dim)  # weighted sum of T values
    fwd += mm(C, cfg.vocab_size)  # output head
    return 3 * fwd


@pytest.mark.parametrize(
    ("model", "size"), [("gpt2", "tiny"), ("gpt2", "124m"), ("llama3", "tiny"), ("llama3", "8b")]
)
@pytest.mark.parametrize("T", [1, 64, 1024])
def test_flops_per_token_hand_count(model: str, size: str, T: int) -> None:
    cfg = M.get_config(model, size)
    assert M.flops_per_token(cfg, T) == _hand_count_flops(cfg, T)


def test_flops_6n_relation() -> None:
    """6·N with N = matmul weights counted from the params tree (kernels + tied head)."""
    for model in ("gpt2", "llama3"):
        cfg = M.get_config(model, "small")
        shapes = M.param_shapes(cfg)
        mask = M.decay_mask(shapes)
        n_kernels = sum(
            int(np.prod(x.shape))
            for x, m in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(mask))
            if m
        )
        tied = cfg.vocab_size * cfg.n_embd if model == "gpt2" or cfg.tie_embeddings else 0
        attn = 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * 256
        assert M.flops_per_token(cfg, 256) == 6 * (n_kernels + tied) + attn


# --------------------------------------------------------------------------------------
# decay mask and loss


@pytest.mark.parametrize(("model", "tie"), [("gpt2", True), ("llama3", False), ("llama3", True)])
def test_decay_mask(model: str, tie: bool) -> None:
    kw = {} if model == "gpt2" else {"tie_embeddings": tie}
    cfg = M.get_config(model, "tiny", **kw)
    params = M.param_shapes(cfg)
    mask = M.decay_mask(params)
    assert jax.tree_util.tree_structure(mask) == jax.tree_util.tree_structure(params)
    flat = {
        "/".join(p.key for p in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)
    }
    for name, decayed in flat.items():
        leaf = name.rsplit("/", 1)[-1]
        assert decayed == (leaf == "kernel"), name
    if model == "gpt2":
        assert flat["h_0/attn/c_attn/kernel"] and not flat["h_0/attn/c_attn/bias"]
        assert not flat["wte/embedding"] and not flat["wpe/embedding"]
        assert not flat["ln_f/scale"] and not flat["h_1/ln_2/bias"]
    else:
        assert flat["layers_1/mlp/down_proj/kernel"] and not flat["embed_tokens/embedding"]
        assert not flat["norm/scale"] and not flat["layers_0/input_layernorm/scale"]
        assert ("lm_head/kernel" in flat) == (not tie)
        assert flat.get("lm_head/kernel", True)


def test_loss_fn() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 11)).astype(np.float32)
    targets = rng.integers(0, 11, (2, 5))
    ref = torch.nn.functional.cross_entropy(
        torch.tensor(logits).reshape(-1, 11), torch.tensor(targets).reshape(-1)
    )
    loss = M.loss_fn(jnp.asarray(logits, jnp.bfloat16).astype(jnp.float32), targets)
    assert loss.dtype == jnp.float32 and loss.shape == ()
    assert abs(float(M.loss_fn(logits, targets)) - float(ref)) < 1e-6
    mask = np.ones((2, 5))
    mask[1, 2:] = 0
    ref_masked = torch.nn.functional.cross_entropy(
        torch.tensor(logits[mask > 0]), torch.tensor(targets[mask > 0])
    )
    assert abs(float(M.loss_fn(logits, targets, mask)) - float(ref_masked)) < 1e-6


def test_dense_dot_general_is_dot_general() -> None:
    from models.layers import dense_dot_general

    rng = np.random.default_rng(0)
    w = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    for shape in [(4, 6), (3, 4, 6), (2, 3, 4, 6)]:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        d = (((x.ndim - 1,), (0,)), ((), ()))
        ref = jax.lax.dot_general(x, w, d)
        np.testing.assert_allclose(dense_dot_general(x, w, d), ref, rtol=1e-6, atol=1e-6)
        gx, gw = jax.grad(lambda x, w, d=d: jnp.sum(dense_dot_general(x, w, d) ** 2),
                          argnums=(0, 1))(x, w)
        rx, rw = jax.grad(lambda x, w, d=d: jnp.sum(jax.lax.dot_general(x, w, d) ** 2),
                          argnums=(0, 1))(x, w)
        np.testing.assert_allclose(gx, rx, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(gw, rw, rtol=1e-5, atol=1e-5)
    # other contractions are passed through unchanged
    x = jnp.asarray(rng.normal(size=(6, 3)), jnp.float32)
    d = (((0,), (0,)), ((), ()))
    np.testing.assert_array_equal(dense_dot_general(x, w, d), jax.lax.dot_general(x, w, d))


# --------------------------------------------------------------------------------------
# causality, dropout


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
def test_causality(model: str) -> None:
    cfg = M.get_config(model, "tiny")
    params = np_params(cfg, seed=1)
    apply = jax.jit(M.build(cfg).apply)
    T = 24
    tokens = random_tokens(cfg, 2, T)
    base = np.asarray(apply({"params": params}, tokens))
    for t in (0, 5, T - 1):
        changed = tokens.copy()
        changed[:, t:] = (changed[:, t:] + 1 + np.arange(T - t)) % cfg.vocab_size
        out = np.asarray(apply({"params": params}, changed))
        np.testing.assert_allclose(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert np.abs(out[:, t] - base[:, t]).max() > 1e-4


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
def test_dropout(model: str) -> None:
    cfg = M.get_config(model, "tiny", dropout=0.3)
    nodrop_cfg = dataclasses.replace(cfg, dropout=0.0)
    params = np_params(cfg)
    tokens = random_tokens(cfg, 2, 16)
    changed = tokens.copy()
    changed[:, 10:] = (changed[:, 10:] + 1) % cfg.vocab_size

    # "rbg" keys: XLA compiles RngBitGenerator much faster than threefry on CPU
    key = partial(jax.random.key, impl="rbg")

    @jax.jit
    def run(params: dict) -> tuple[jax.Array, ...]:
        train = partial(M.build(cfg).apply, {"params": params}, deterministic=False)
        nodrop = M.build(nodrop_cfg).apply({"params": params}, tokens)
        det = M.build(cfg).apply({"params": params}, tokens, deterministic=True)
        a = train(tokens, rngs={"dropout": key(1)})
        b = train(tokens, rngs={"dropout": key(2)})
        c = train(changed, rngs={"dropout": key(1)})
        return nodrop, det, a, b, c

    nodrop, det, a, b, c = run(params)
    np.testing.assert_array_equal(np.asarray(det), np.asarray(nodrop))
    assert a.dtype == jnp.float32
    assert float(jnp.abs(a - det).max()) > 1e-3 and float(jnp.abs(a - b).max()) > 1e-3
    # still causal with dropout on (same dropout key => same masks)
    np.testing.assert_allclose(np.asarray(c[:, :10]), np.asarray(a[:, :10]), atol=1e-6)


def test_too_long_sequence_raises() -> None:
    cfg = M.get_config("gpt2", "tiny")
    params = M.param_shapes(cfg)
    with pytest.raises(ValueError, match="exceeds block_size=64"):
        M.build(cfg).apply({"params": params}, jnp.zeros((1, 65), jnp.int32))


# --------------------------------------------------------------------------------------
# sampling


# greedy generation against transformers (with and without the KV cache):
# tests/models/test_models_generate.py


def test_generate_crops_context_and_samples() -> None:
    cfg = M.get_config("gpt2", "tiny", block_size=12)
    params = np_params(cfg)
    T0, n, W = 9, 8, 12
    prompt = random_tokens(cfg, 2, T0)
    greedy = np.asarray(M.generate(cfg, params, prompt, n, jax.random.key(0), temperature=0.0))
    assert greedy.shape == (2, T0 + n) and greedy.dtype == np.int32
    np.testing.assert_array_equal(greedy[:, :T0], prompt)
    # reference (nanoGPT): token t is the argmax after the context cropped to the last W
    # tokens; all windows have length W (causal: a longer window gives the same logit at t - 1)
    starts = [max(0, t - W) for t in range(T0, T0 + n)]
    windows = np.concatenate([greedy[:, s : s + W] for s in starts])
    logits = np.asarray(jax.jit(M.build(cfg).apply)({"params": params}, windows))
    for j, t in enumerate(range(T0, T0 + n)):
        last = logits[2 * j : 2 * j + 2, t - 1 - starts[j]]
        np.testing.assert_array_equal(greedy[:, t], last.argmax(-1))
    # top_k=1 sampling is greedy
    top1 = M.generate(cfg, params, prompt, n, jax.random.key(3), temperature=0.7, top_k=1)
    np.testing.assert_array_equal(np.asarray(top1), greedy)
    # sampling is reproducible per key, varies with the key and stays in the vocabulary
    s1 = M.generate(cfg, params, prompt, n, jax.random.key(1), temperature=2.0, top_k=50)
    s2 = M.generate(cfg, params, prompt, n, jax.random.key(1), temperature=2.0, top_k=50)
    s3 = M.generate(cfg, params, prompt, n, jax.random.key(2), temperature=2.0)
    np.testing.assert_array_equal(np.asarray(s1), np.asarray(s2))
    assert not np.array_equal(np.asarray(s1), np.asarray(s3))
    assert int(s1.min()) >= 0 and int(s1.max()) < cfg.vocab_size
    # top_k restricts sampling to the k most likely tokens (first sampled position)
    allowed = np.argsort(-logits[:2, T0 - 1], axis=-1)[:, :3]
    for seed in range(5):
        s = M.generate(cfg, params, prompt, n, jax.random.key(seed), temperature=5.0, top_k=3)
        assert all(int(s[b, T0]) in allowed[b] for b in range(2))
    # a 1-D prompt gives a 1-D result; max_new_tokens=0 returns the prompt
    one = M.generate(cfg, params, prompt[0], n, jax.random.key(0), temperature=0.0)
    np.testing.assert_array_equal(np.asarray(one), greedy[0])
    assert M.generate(cfg, params, prompt, 0, jax.random.key(0)).shape == (2, T0)
    with pytest.raises(ValueError, match="top_k"):
        M.generate(cfg, params, prompt, 2, jax.random.key(0), top_k=0)
