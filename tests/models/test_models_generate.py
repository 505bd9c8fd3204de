"""KV-cache generation (models.decode): greedy tokens equal to the cache-free loop and to
transformers' generate(do_sample=False); one compile per (prompt bucket, max_new_tokens); the
sampler's temperature / top-k / top-p against transformers' logits warpers; seeding."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models as M
from models import decode
from tests.models.models_testutil import hf_model, random_tokens, torch

CASES = {
    "gpt2": ("gpt2", {}),
    "llama_gqa_untied": ("llama3", {}),  # tiny: 4 heads over 2 kv heads, untied head
    "llama_mqa_tied": ("llama3", {"n_kv_head": 1, "tie_embeddings": True}),
}


@pytest.fixture(scope="module")
def models_by_case() -> dict[str, tuple[Any, Any, Any]]:
    out = {}
    for name, (model, kw) in CASES.items():
        cfg = M.get_config(model, "tiny", **kw)
        hf = hf_model(cfg, seed=3)
        out[name] = (cfg, hf, M.from_hf(cfg, hf.state_dict()))
    return out


def hf_greedy(hf: Any, prompt: np.ndarray, n: int) -> np.ndarray:
    with torch.no_grad():
        ref = hf.generate(torch.tensor(prompt, dtype=torch.long),
                          attention_mask=torch.ones(prompt.shape, dtype=torch.long),
                          max_new_tokens=n, do_sample=False, pad_token_id=0)
    return ref.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_cached_greedy_equals_cache_free_and_hf(models_by_case: dict, case: str) -> None:
    cfg, hf, params = models_by_case[case]
    prompt = random_tokens(cfg, 2, 7, seed=11)
    n = 24
    key = jax.random.key(0)
    cached = np.asarray(M.generate(cfg, params, prompt, n, key, temperature=0.0, use_cache=True))
    plain = np.asarray(M.generate(cfg, params, prompt, n, key, temperature=0.0, use_cache=False))
    assert cached.shape == (2, 7 + n)
    np.testing.assert_array_equal(cached[:, :7], prompt)
    np.testing.assert_array_equal(cached, plain)
    np.testing.assert_array_equal(cached, hf_greedy(hf, prompt, n))


def test_one_compile_per_bucket_and_length(models_by_case: dict) -> None:
    cfg, hf, params = models_by_case["gpt2"]
    key = jax.random.key(1)
    M.generate(cfg, params, random_tokens(cfg, 1, 3), 9, key, temperature=0.0)
    before = decode.generate_cached._cache_size()
    # other prompt lengths of the same bucket (<= 16) and other sampling knobs: no new compile
    for t0, temp, k, p in ((5, 0.0, None, None), (16, 0.7, 5, None), (11, 1.3, None, 0.9)):
        out = M.generate(cfg, params, random_tokens(cfg, 1, t0, seed=t0), 9, key,
                         temperature=temp, top_k=k, top_p=p)
        assert out.shape == (1, t0 + 9)
    assert decode.generate_cached._cache_size() == before
    # the next bucket compiles once more, and its greedy tokens still match HF
    prompt = random_tokens(cfg, 1, 17, seed=2)
    out = np.asarray(M.generate(cfg, params, prompt, 9, key, temperature=0.0))
    assert decode.generate_cached._cache_size() == before + 1
    np.testing.assert_array_equal(out, hf_greedy(hf, prompt, 9))


def test_seeded_sampling(models_by_case: dict) -> None:
    cfg, _, params = models_by_case["llama_gqa_untied"]
    prompt = random_tokens(cfg, 2, 4, seed=4)

    def gen(seed: int, **kw: Any) -> np.ndarray:
        return np.asarray(M.generate(cfg, params, prompt, 12, jax.random.key(seed), **kw))

    a, b, c = gen(7, temperature=1.5), gen(7, temperature=1.5), gen(8, temperature=1.5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() < cfg.vocab_size
    # top_k=1 and a tiny top_p keep only the most likely token: greedy
    greedy = gen(0, temperature=0.0)
    np.testing.assert_array_equal(gen(9, temperature=2.0, top_k=1), greedy)
    np.testing.assert_array_equal(gen(9, temperature=2.0, top_p=1e-6), greedy)
    with pytest.raises(ValueError, match="use_cache=True needs"):
        M.generate(cfg, params, prompt, cfg.block_size, jax.random.key(0), use_cache=True)
    with pytest.raises(ValueError, match="top_p"):
        M.generate(cfg, params, prompt, 2, jax.random.key(0), top_p=0.0)


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.7, None, 0.6), (1.0, 6, 0.95),
                                                     (1.3, 4, None)])
def test_sampler_support_matches_hf_warpers(temperature: float, top_k: int | None,
                                            top_p: float | None) -> None:
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    V, draws = 64, 4000
    logits = np.random.default_rng(0).normal(size=(1, V)).astype(np.float32) * 2.0
    t = torch.tensor(logits)
    ids = torch.zeros((1, 1), dtype=torch.long)
    t = TemperatureLogitsWarper(temperature)(ids, t)
    if top_k is not None:
        t = TopKLogitsWarper(top_k)(ids, t)
    if top_p is not None:
        t = TopPLogitsWarper(top_p)(ids, t)
    ref = torch.softmax(t, -1).numpy()[0]  # HF's sampling distribution
    allowed = set(np.flatnonzero(ref > 0).tolist())
    assert 2 <= len(allowed) < V  # the case filters something and leaves a choice

    tokens = np.asarray(decode.sample_logits(
        jnp.asarray(np.repeat(logits, draws, axis=0)), jax.random.key(5),
        jnp.float32(temperature), jnp.int32(V if top_k is None else top_k),
        jnp.float32(1.0 if top_p is None else top_p)))
    assert set(tokens.tolist()) <= allowed
    # frequencies: within 5 binomial standard deviations of HF's probabilities
    freq = np.bincount(tokens, minlength=V) / draws
    sd = np.sqrt(ref * (1 - ref) / draws)
    assert np.all(np.abs(freq - ref) <= 5 * sd + 1e-12)
