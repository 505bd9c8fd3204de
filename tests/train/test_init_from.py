"""``--init-from``: a transformers folder (built here by transformers: a tied GPT-2 and an
untied LLaMA with GQA) or another run's checkpoint as a fresh run's weights, on pmap and on a
sharded mesh layout (ZeRO-3); the model flags that contradict the source, in one line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from train_testutil import tiny

import models
from train import TrainConfig
from train import train_and_evaluate as run
from train.data import Batcher, load_data
from train.engine.mesh import mesh_engine
from train.engine.step import init_state
from train.run.setup import prepare_run
from train.run.weights import load_init_params, load_run, parse_init_from
from train.tokenizer import get_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT = 300, 64  # the byte tokenizer's 256 ids fit; a context longer than --seq-len


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random transformers checkpoints saved as folders (no download)."""
    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    gpt2 = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=4,
        tie_word_embeddings=True))
    llama = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=CONTEXT,
        tie_word_embeddings=False))
    out = {}
    for name, m in (("gpt2", gpt2), ("llama", llama)):
        m.save_pretrained(root / name)
        out[name] = root / name
    return out


def hf_loss(folder: Path, batch: np.ndarray) -> float:
    """transformers' next-token loss over the global batch ``[..., T + 1]`` (float32)."""
    m = transformers.AutoModelForCausalLM.from_pretrained(
        folder, attn_implementation="eager", dtype=torch.float32).eval()
    rows = torch.tensor(batch.reshape(-1, batch.shape[-1]), dtype=torch.long)
    with torch.no_grad():
        logits = m(rows[:, :-1]).logits
        return float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), rows[:, 1:].reshape(-1)))


def first_batch(cfg: dict, n_devices: int) -> np.ndarray:
    """The rows of step 0 as the run draws them (the Batcher over the same data)."""
    data, _, _ = load_data(cfg["data"], None, get_tokenizer("byte"), cfg["data_cache"], 0.05)
    return Batcher(data, seq_len=cfg["seq_len"], batch_size=cfg["batch_size"], grad_accum=1,
                   local_devices=n_devices, seed=0).batch(0)


def cfg_for(tmp: Path, corpus: str, **kw: Any) -> dict:
    # --model / --model-size at their defaults: the source decides the architecture
    return tiny(str(tmp), corpus, **{"model": "gpt2", "model_size": "micro", "steps": 1, **kw})


# The tolerance: both sides run the same float32 math in another operation order; the
# models' logits match transformers within ~1e-6 (tests/models), the mean cross-entropy over
# 512 positions of values ~ln(300) adds a few float32 ulps of 5.7 (~5e-7 each).
TOL = 1e-5


@pytest.mark.parametrize("which,layout", [("gpt2", {}), ("llama", {"zero_stage": 3})])
def test_first_loss_equals_transformers(hf_dirs, tmp_path, corpus, which, layout) -> None:
    cfg = cfg_for(tmp_path, corpus, init_from=str(hf_dirs[which]), **layout)
    out = run(cfg, str(tmp_path / "run"))
    ref = hf_loss(hf_dirs[which], first_batch(cfg, jax.device_count()))
    assert abs(out["first_loss"] - ref) < TOL, (out["first_loss"], ref)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["init_from"] == str(hf_dirs[which])
    assert saved["model"] == ("gpt2" if which == "gpt2" else "llama3")
    if layout:  # each device holds only its shard of the (ZeRO-3) parameters
        setup = prepare_run(TrainConfig.from_dict({**cfg, "resume": "auto"}),
                            str(tmp_path / "probe"))
        params = load_init_params(setup.init, setup.model_cfg, 256)
        eng = mesh_engine(setup.model_cfg, setup.cfg, setup.schedule, params, setup.layout)
        state = eng.put_state(init_state(params, eng.tx))
        leaves = jax.tree.leaves(state["params"])
        total = sum(x.nbytes for x in leaves)
        dev0 = jax.devices()[0]
        on_dev0 = sum(s.data.nbytes for x in leaves for s in x.addressable_shards
                      if s.device == dev0)
        assert on_dev0 < total / 4, (on_dev0, total)  # 8-way: about an eighth (norms whole)
    # a resume continues from the run's own checkpoint (the folder is not needed any more)
    os.rename(hf_dirs[which], str(hf_dirs[which]) + ".moved")
    try:
        again = run({**cfg, "steps": 2, "resume": True}, str(tmp_path / "run"))
    finally:
        os.rename(str(hf_dirs[which]) + ".moved", hf_dirs[which])
    assert again["start_step"] == 1 and again["steps"] == 2


def test_init_from_a_run_dir(hf_dirs, tmp_path, corpus) -> None:
    """Run A from the GPT-2 folder, run B from A's checkpoint: B's weights are A's, bit for
    bit, its optimizer fresh at step 0; config.json records the origin."""
    a = cfg_for(tmp_path, corpus, init_from=str(hf_dirs["gpt2"]))
    run(a, str(tmp_path / "a"))
    src = load_run(tmp_path / "a", 1)
    init = parse_init_from(f"{tmp_path / 'a'}:1")
    loaded = load_init_params(init, src.model_config)
    for x, y in zip(jax.tree.leaves(src.params), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(x, y)
    b = cfg_for(tmp_path, corpus, init_from=str(tmp_path / "a"), seq_len=16)
    out = run(b, str(tmp_path / "b"))
    assert out["start_step"] == 0
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["init_from"] == f"{tmp_path / 'a'}:1"
    # the loss of B's first step is A's weights' loss on B's batch (a shorter --seq-len: the
    # position table cropped)
    batch = first_batch(b, jax.device_count())
    mc = dataclasses.replace(src.model_config, block_size=16)
    wpe = src.params["wpe"]["embedding"][:16]
    params = {**src.params, "wpe": {"embedding": wpe}}
    rows = batch.reshape(-1, batch.shape[-1])
    logits = models.build(mc).apply({"params": params}, rows[:, :-1])
    ref = float(models.loss_fn(logits, rows[:, 1:]))
    assert abs(out["first_loss"] - ref) < TOL


def test_errors_one_line(hf_dirs, tmp_path, corpus) -> None:
    gpt2 = str(hf_dirs["gpt2"])
    cases = [
        ({"init_from": str(tmp_path / "missing")}, "is not a directory"),
        ({"init_from": gpt2, "n_layer": 3}, "--n-layer=3 contradicts --init-from="),
        ({"init_from": gpt2, "model": "llama3"}, "--model=llama3 contradicts"),
        ({"init_from": str(hf_dirs["llama"]), "model": "llama3", "n_kv_head": 4},
         "its n_kv_head is 2"),
        ({"init_from": gpt2, "seq_len": 128}, f"longer than the context of --init-from={gpt2} "
                                              f"({CONTEXT})"),
        ({"init_from": gpt2, "tokenizer": "gpt2"}, "do not fit the vocabulary"),
        ({"init_from": f"{tmp_path}:7"}, "no checkpoints"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError) as e:
            run(cfg_for(tmp_path, corpus, **kw), str(tmp_path / "err"))
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "err" / "checkpoints").exists()


def test_tokenizer_of_the_folder(hf_dirs, tmp_path, corpus) -> None:
    """The folder's tokenizer.json is the run's when --tokenizer is left at its default."""
    tokenizers = pytest.importorskip("tokenizers")
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(
        {f"w{i}": i for i in range(VOCAB)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    folder = tmp_path / "withtok"
    import shutil

    shutil.copytree(hf_dirs["gpt2"], folder)
    tok.save(str(folder / "tokenizer.json"))
    setup = prepare_run(TrainConfig.from_dict(cfg_for(tmp_path, corpus, init_from=str(folder))),
                        str(tmp_path / "t"), "plan")
    assert setup.cfg.tokenizer == str(folder / "tokenizer.json")
    assert setup.tok.vocab_size == VOCAB and setup.model_cfg.vocab_size == VOCAB
