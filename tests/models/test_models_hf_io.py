"""Weight import/export: round trips, safetensors files, transformers checkpoints, errors."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from models_testutil import hf_model, np_params, random_tokens, torch, transformers

import models as M

safetensors_numpy = pytest.importorskip("safetensors.numpy")
safetensors_torch = pytest.importorskip("safetensors.torch")

CONFIGS = {
    "gpt2": M.get_config("gpt2", "tiny", n_head=4),
    "llama_untied": M.get_config("llama3", "tiny"),
    "llama_tied": M.get_config("llama3", "tiny", tie_embeddings=True, rope_scaling=None),
}


def _assert_trees_equal(a: dict, b: dict) -> None:
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _hf_weights(model: object) -> dict[str, np.ndarray]:
    """What ``save_pretrained`` writes: the state dict without tied duplicates."""
    sd = model.state_dict()
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    return {k: v.numpy() for k, v in sd.items()}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_round_trip_exact(name: str, tmp_path: os.PathLike) -> None:
    cfg = CONFIGS[name]
    params = np_params(cfg, 0)
    sd = M.to_hf(cfg, params)
    assert all(v.dtype == np.float32 for v in sd.values())
    _assert_trees_equal(M.from_hf(cfg, sd), params)  # params -> HF -> params

    hf = hf_model(cfg, seed=1)
    ref = _hf_weights(hf)
    back = M.to_hf(cfg, M.from_hf(cfg, hf.state_dict()))  # HF -> params -> HF
    assert back.keys() == ref.keys()
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k])

    # file and directory forms; our files are readable by the safetensors library
    file = M.save_hf(cfg, params, tmp_path / "w.safetensors")
    _assert_trees_equal(M.from_hf(cfg, file), params)
    loaded = safetensors_numpy.load_file(file)
    assert loaded.keys() == sd.keys()
    for k in sd:
        np.testing.assert_array_equal(loaded[k], sd[k])
    M.save_hf(cfg, params, tmp_path / "ckpt")
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["config.json", "model.safetensors"]
    _assert_trees_equal(M.from_hf(cfg, tmp_path / "ckpt"), params)
    assert M.config_from_hf(tmp_path / "ckpt") == cfg


@pytest.mark.parametrize("name", list(CONFIGS))
def test_save_hf_loads_in_transformers(name: str, tmp_path: os.PathLike) -> None:
    cfg = CONFIGS[name]
    params = np_params(cfg, 2)
    M.save_hf(cfg, params, tmp_path)
    cls = transformers.GPT2LMHeadModel if name == "gpt2" else transformers.LlamaForCausalLM
    hf = cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    tokens = random_tokens(cfg, 2, 20)
    with torch.no_grad():
        ref = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    logits = jax.jit(M.build(cfg).apply)({"params": params}, tokens)
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_from_transformers_save_pretrained(name: str, tmp_path: os.PathLike) -> None:
    """A directory written by transformers (tied weights deduplicated) loads, config included."""
    cfg = CONFIGS[name]
    hf = hf_model(cfg, seed=4)
    hf.save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        loaded_cfg = M.config_from_hf(json.load(f))
    assert loaded_cfg == cfg
    params = M.from_hf(cfg, tmp_path)
    ref = _hf_weights(hf)
    out = M.to_hf(cfg, params)
    for k in ref:
        np.testing.assert_array_equal(out[k], ref[k])


def test_bf16_and_sharded_checkpoints(tmp_path: os.PathLike) -> None:
    """bf16 tensors are read (as float32) and several shards in a directory are merged."""
    cfg = CONFIGS["llama_untied"]
    hf = hf_model(cfg, seed=6)
    sd = {k: v.to(torch.bfloat16).contiguous() for k, v in hf.state_dict().items()}
    names = sorted(sd)
    d = tmp_path / "sharded"
    d.mkdir()
    safetensors_torch.save_file(
        {k: sd[k] for k in names[::2]}, d / "model-00001-of-00002.safetensors"
    )
    safetensors_torch.save_file(
        {k: sd[k] for k in names[1::2]}, d / "model-00002-of-00002.safetensors"
    )
    params = M.from_hf(cfg, d)
    out = M.to_hf(cfg, params)
    for k in names:
        np.testing.assert_array_equal(out[k], sd[k].float().numpy())
    # a torch state dict (bf16 tensors) directly
    _assert_trees_equal(M.from_hf(cfg, sd), params)


def test_gpt2_openai_style_names() -> None:
    """Original OpenAI GPT-2 checkpoints have no ``transformer.`` prefix and mask buffers."""
    cfg = CONFIGS["gpt2"]
    params = np_params(cfg, 0)
    sd = {k.removeprefix("transformer."): v for k, v in M.to_hf(cfg, params).items()}
    sd["h.0.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.float32))
    sd["lm_head.weight"] = sd["wte.weight"]
    _assert_trees_equal(M.from_hf(cfg, sd), params)


def test_from_hf_errors(tmp_path: os.PathLike) -> None:
    cfg = CONFIGS["llama_untied"]
    sd = M.to_hf(cfg, np_params(cfg, 0))
    missing = dict(sd)
    del missing["model.layers.1.mlp.up_proj.weight"]
    with pytest.raises(ValueError, match=r"missing keys.*layers\.1\.mlp\.up_proj"):
        M.from_hf(cfg, missing)
    extra = dict(sd, **{"model.layers.2.mlp.up_proj.weight": sd["model.norm.weight"]})
    with pytest.raises(ValueError, match=r"unexpected keys.*layers\.2"):
        M.from_hf(cfg, extra)
    with pytest.raises(ValueError, match=r"model\.embed_tokens\.weight has shape \(256, 64\)"):
        M.from_hf(M.get_config("llama3", "tiny", vocab_size=300), sd)
    with pytest.raises(ValueError, match=r"missing keys.*lm_head"):
        tied_sd = M.to_hf(CONFIGS["llama_tied"], np_params(CONFIGS["llama_tied"]))
        M.from_hf(CONFIGS["llama_untied"], tied_sd)
    with pytest.raises(FileNotFoundError):
        M.from_hf(cfg, tmp_path / "nope.safetensors")
    with pytest.raises(FileNotFoundError):
        M.from_hf(cfg, tmp_path)


def test_config_from_hf_published_style() -> None:
    """The Llama-3.1-8B / 3.2-1B ``config.json`` fields map onto our published configs."""
    llama31_8b = {
        "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
        "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
        "num_key_value_heads": 8, "max_position_embeddings": 131072, "rms_norm_eps": 1e-05,
        "rope_theta": 500000.0, "tie_word_embeddings": False, "hidden_act": "silu",
        "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    }  # fmt: skip
    assert M.config_from_hf(llama31_8b) == M.get_config("llama3", "8b")
    v5_style = {k: v for k, v in llama31_8b.items() if k not in ("rope_theta", "rope_scaling")}
    v5_style["rope_parameters"] = dict(llama31_8b["rope_scaling"], rope_theta=500000.0)
    assert M.config_from_hf(v5_style, n_layer=2) == M.get_config("llama3", "8b", n_layer=2)
    for size in ("1b", "3b"):
        cfg = M.get_config("llama3", size)
        assert M.config_from_hf(M.hf_config(cfg)) == cfg
    gpt2 = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 1600,
            "n_layer": 48, "n_head": 25, "activation_function": "gelu_new"}  # fmt: skip
    assert M.config_from_hf(gpt2) == M.get_config("gpt2", "1.5b")
    with pytest.raises(ValueError, match="model_type"):
        M.config_from_hf({"model_type": "bert"})


def test_safetensors_reader_writer_interop(tmp_path: os.PathLike) -> None:
    """Our minimal safetensors implementation against the safetensors library."""
    ref = {
        "bf16": torch.linspace(-2, 2, 7).to(torch.bfloat16),
        "scalar": torch.tensor(3.5, dtype=torch.float16),
        "empty": torch.zeros((0, 3)),
        "ints": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    safetensors_torch.save_file(ref, tmp_path / "ref.safetensors")
    ours = M.read_safetensors(tmp_path / "ref.safetensors")
    assert ours.keys() == ref.keys()
    for k, v in ref.items():
        assert ours[k].shape == tuple(v.shape)
        np.testing.assert_array_equal(ours[k].astype(np.float64), v.double().numpy())
    extra = {"strided_be": np.arange(6, dtype=">f4").reshape(2, 3)[:, ::2]}
    M.write_safetensors(tmp_path / "ours.safetensors", {**ours, **extra})
    back = safetensors_torch.load_file(tmp_path / "ours.safetensors")
    for k, v in ref.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert torch.equal(back[k], v)
    np.testing.assert_array_equal(back["strided_be"].numpy(), [[0, 2], [3, 5]])
