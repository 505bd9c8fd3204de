"""transformers checkpoint folders in and out (models.hf_checkpoint): folders written by
transformers itself (single file and sharded) load, the folders we write load in
``AutoModelForCausalLM`` with the same logits, and bad folders fail in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

import models as M
from tests.models.models_testutil import hf_model, random_tokens, torch, transformers

CASES = {
    "gpt2": ("gpt2", {}),
    "gpt2_untied": ("gpt2", {"tie_embeddings": False}),
    "llama_gqa_untied": ("llama3", {}),
    "llama_mqa_tied": ("llama3", {"n_kv_head": 1, "tie_embeddings": True}),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[M.Config, Any, Path]]:
    """Per case: our config, the transformers model and its save_pretrained folder."""
    out = {}
    for name, (model, kw) in CASES.items():
        cfg = M.get_config(model, "tiny", **kw)
        hf = hf_model(cfg, seed=7)
        path = tmp_path_factory.mktemp(name)
        hf.save_pretrained(path)
        out[name] = (cfg, hf, path)
    return out


def hf_logits(hf: Any, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()


@pytest.mark.parametrize("case", list(CASES))
def test_load_transformers_folder(saved: dict, case: str, tmp_path: Path) -> None:
    cfg, hf, path = saved[case]
    got_cfg, params = M.load_hf_checkpoint(path)
    assert got_cfg == cfg
    tokens = random_tokens(cfg, 2, 12, seed=1)
    logits = np.asarray(jax.jit(M.build(cfg).apply)({"params": params}, tokens))
    # weights of std 0.1 (hf_model): the tolerance of tests/models/test_models_hf_parity.py
    np.testing.assert_allclose(logits, hf_logits(hf, tokens), rtol=0, atol=1e-4)
    # the same model saved in shards through an index loads to the same arrays
    hf.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    _, sharded = M.load_hf_checkpoint(tmp_path)
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(sharded),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("case", list(CASES))
def test_written_folder_loads_in_transformers(case: str, tmp_path: Path) -> None:
    model, kw = CASES[case]
    cfg = M.get_config(model, "tiny", **kw)
    params = M.init_params(cfg, jax.random.key(3))  # the trainer's init scale (std 0.02)
    tok_file = tmp_path / "tokenizer.json"
    tok_file.write_text("{}")
    out = tmp_path / "export"
    M.save_hf_checkpoint(cfg, params, out, extra_files=[tok_file])
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json",
                                       "model.safetensors", "tokenizer.json"]
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        out, attn_implementation="eager", dtype=torch.float32).eval()
    tokens = random_tokens(cfg, 2, 20, seed=2)
    logits = np.asarray(jax.jit(M.build(cfg).apply)({"params": params}, tokens))
    np.testing.assert_allclose(logits, hf_logits(hf, tokens), rtol=0, atol=1e-5)
    # and it reads back to the same config and the same arrays
    back_cfg, back = M.load_hf_checkpoint(out)
    assert back_cfg == cfg
    for a, b in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(back),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    cfg = M.get_config("gpt2", "tiny")
    params = M.init_params(cfg, jax.random.key(0))
    out = tmp_path / "export"
    M.save_hf_checkpoint(cfg, params, out)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(ValueError, match="exists"):
        M.save_hf_checkpoint(cfg, params, out)
    # a killed earlier write left a temporary sibling: removed, never mistaken for the folder
    (tmp_path / "export.tmp-dead").mkdir()
    other = M.init_params(cfg, jax.random.key(1))
    M.save_hf_checkpoint(cfg, other, out, overwrite=True)
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (out / "model.safetensors").read_bytes() != before
    _, back = M.load_hf_checkpoint(out)
    np.testing.assert_array_equal(np.asarray(back["wte"]["embedding"]),
                                  np.asarray(other["wte"]["embedding"]))


def test_shorter_block_size_crops_gpt2_positions(saved: dict) -> None:
    cfg, hf, path = saved["gpt2"]
    short, params = M.load_hf_checkpoint(path, block_size=16)
    assert short.block_size == 16 and params["wpe"]["embedding"].shape == (16, cfg.n_embd)
    tokens = random_tokens(cfg, 1, 16, seed=3)
    logits = np.asarray(M.build(short).apply({"params": params}, tokens))
    np.testing.assert_allclose(logits, hf_logits(hf, tokens), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="exceeds the checkpoint's context"):
        M.load_hf_checkpoint(path, block_size=cfg.block_size + 1)


def _copy(src: Path, dst: Path, edit: dict | None = None, drop: str | None = None) -> Path:
    dst.mkdir()
    for f in os.listdir(src):
        if f != drop:
            (dst / f).write_bytes((src / f).read_bytes())
    if edit:
        d = json.loads((dst / "config.json").read_text())
        d.update(edit)
        (dst / "config.json").write_text(json.dumps(d))
    return dst


def test_bad_folders_fail_in_one_line(saved: dict, tmp_path: Path) -> None:
    cfg, _, path = saved["llama_gqa_untied"]
    bad = {
        "no config.json": _copy(path, tmp_path / "a", drop="config.json"),
        "no weights": _copy(path, tmp_path / "b", drop="model.safetensors"),
        "unsupported architecture 'MistralForCausalLM'": _copy(
            path, tmp_path / "c", {"model_type": "mistral", "architectures":
                                   ["MistralForCausalLM"]}),
        "unsupported architecture 'LlamaModel'": _copy(
            path, tmp_path / "d", {"architectures": ["LlamaModel"]}),
        "has shape": _copy(path, tmp_path / "e", {"intermediate_size": 96}),
        "vocabulary mismatch: config.json vocab_size=300": _copy(
            path, tmp_path / "f", {"vocab_size": 300}),
    }
    for msg, folder in bad.items():
        with pytest.raises(ValueError) as e:
            M.load_hf_checkpoint(folder)
        assert msg in str(e.value) and "\n" not in str(e.value), (msg, str(e.value))
    with pytest.raises(ValueError, match="the tokenizer has 257 tokens"):
        M.load_hf_checkpoint(path, vocab_size=cfg.vocab_size + 1)
    M.load_hf_checkpoint(path, vocab_size=cfg.vocab_size)  # fits
