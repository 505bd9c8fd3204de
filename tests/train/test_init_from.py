"""``--init-from`` and ``--export-hf-every``: a transformers folder (built here by
transformers: a tied GPT-2 with its own ``tokenizer.json``, an untied LLaMA with GQA) or another
run's checkpoint as a fresh run's weights, on pmap and on a sharded mesh layout (ZeRO-3); the
exports during training; the model flags that contradict the source, in one line.

CI time: one GPT-2 run (2 steps, exporting every step) serves the loss, export, resume and
RUN_DIR tests; the compiled pmap step is shared by the resume and the run from its directory
(same shapes)."""

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
from train.resume import read_saved_config
from train.run.setup import prepare_run
from train.run.weights import load_init_params, load_run, parse_init_from
from train.sample import load_model, sample
from train.tokenizer import get_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

VOCAB, CONTEXT = 300, 64  # a context longer than --seq-len (the position table is cropped)


def bpe_json(path: Path, corpus: str) -> Path:
    """A byte-level BPE of at most VOCAB tokens trained on the corpus (GPT-2's scheme)."""
    from tokenizers import decoders, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([Path(corpus).read_text()[:50_000]], trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return path


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory, corpus: str) -> dict[str, Path]:
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
    bpe_json(out["gpt2"] / "tokenizer.json", corpus)
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


def batches(cfg: dict, tokenizer: str) -> Batcher:
    """The batches the run draws (the same Batcher over the same data, one row block per
    data-parallel replica): ``.batch(t)``."""
    replicas = (cfg.get("devices") or jax.device_count()) // (
        (cfg.get("tensor_parallel") or 1) * (cfg.get("pipeline_parallel") or 1))
    data, _, _ = load_data(cfg["data"], None, get_tokenizer(tokenizer), cfg["data_cache"], 0.05)
    return Batcher(data, seq_len=cfg["seq_len"], batch_size=cfg["batch_size"],
                   grad_accum=cfg.get("grad_accum", 1),
                   local_devices=replicas, seed=0)


def cfg_for(tmp: Path, corpus: str, **kw: Any) -> dict:
    # --model / --model-size at their defaults: the source decides the architecture
    return tiny(str(tmp), corpus, **{"model": "gpt2", "model_size": "micro", "steps": 1, **kw})


# The tolerance: both sides run the same float32 math in another operation order; the
# models' logits match transformers within ~1e-6 (tests/models), the mean cross-entropy over
# 512 positions of values ~ln(300) adds a few float32 ulps of 5.7 (~5e-7 each).
TOL = 1e-5


@pytest.fixture(scope="module")
def gpt2_run(hf_dirs, tmp_path_factory, corpus) -> tuple[dict, Path, dict]:
    """(config, run directory, summary) of 2 steps from the GPT-2 folder on pmap, saving and
    exporting a transformers folder after each step."""
    tmp = tmp_path_factory.mktemp("gpt2run")
    cfg = cfg_for(tmp, corpus, init_from=str(hf_dirs["gpt2"]), steps=2, checkpoint_interval=1,
                  export_hf_every=1)
    return cfg, tmp / "run", run(cfg, str(tmp / "run"))


def test_gpt2_first_loss_tokenizer_and_exports(hf_dirs, gpt2_run) -> None:
    cfg, run_dir, out = gpt2_run
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["init_from"] == str(hf_dirs["gpt2"]) and saved["model"] == "gpt2"
    # the folder's tokenizer.json (--tokenizer unset), copied into the run
    tok_file = run_dir / "tokenizer" / "tokenizer.json"
    assert saved["tokenizer"] == str(tok_file)
    assert tok_file.read_bytes() == (hf_dirs["gpt2"] / "tokenizer.json").read_bytes()
    batcher = batches(cfg, str(tok_file))
    batch = batcher.batch(0)
    assert batch.max() >= 256  # the BPE's merges, not bytes
    ref = hf_loss(hf_dirs["gpt2"], batch)
    assert abs(out["first_loss"] - ref) < TOL, (out["first_loss"], ref)
    # --export-hf-every=1: hf/step_1, hf/step_2 (no temporary folder left) with the run's
    # tokenizer file; step_2 holds the final params exactly (float32 both ways)
    assert sorted(os.listdir(run_dir / "hf")) == ["step_1", "step_2"]
    last = run_dir / "hf" / "step_2"
    assert (last / "tokenizer.json").read_bytes() == tok_file.read_bytes()
    hf_cfg, params = models.load_hf_checkpoint(last)
    assert hf_cfg.block_size == cfg["seq_len"]
    # the run's vocabulary rows are padded (--vocab-pad-to=64: 300 -> 320), with zeros from
    # the folder's 300 rows, which stay zero (their logits are masked: no gradient); the
    # export drops them
    wte = np.asarray(out["params"]["wte"]["embedding"])
    assert wte.shape[0] == 320 and not np.any(wte[VOCAB:])
    assert hf_cfg.vocab_size == VOCAB == params["wte"]["embedding"].shape[0]
    for a, b in zip(jax.tree.leaves(models.pad_vocab(hf_cfg, out["params"])),
                    jax.tree.leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # transformers reads step_1: its loss on the batch of step 1 is the run's loss there (the
    # weights after one update)
    (t, loss1) = out["losses"][1]
    assert t == 1 and abs(hf_loss(run_dir / "hf" / "step_1", batcher.batch(1)) - loss1) < TOL
    assert abs(loss1 - ref) > 10 * TOL  # the update changed the weights


def test_init_from_a_run_dir(gpt2_run, tmp_path, corpus) -> None:
    """Run B from step 1 of run A: B's weights are A's, bit for bit, its optimizer fresh at
    step 0 (its first loss is A's step-1 weights' loss on B's batch); config.json records the
    origin; A's directory is left exactly as it was."""
    _, a_dir, _ = gpt2_run
    before = {p: p.stat().st_mtime_ns for p in a_dir.rglob("*")}
    src = load_run(a_dir, 1)
    loaded = load_init_params(parse_init_from(f"{a_dir}:1"), src.model_config)
    for x, y in zip(jax.tree.leaves(src.params), jax.tree.leaves(loaded), strict=True):
        np.testing.assert_array_equal(x, y)
    # into a run without padding (--vocab-pad-to=1): A's padding rows dropped
    unpadded = dataclasses.replace(src.model_config, vocab_pad_to=1)
    cut = load_init_params(parse_init_from(f"{a_dir}:1"), unpadded)
    assert cut["wte"]["embedding"].shape[0] == VOCAB
    np.testing.assert_array_equal(cut["wte"]["embedding"],
                                  src.params["wte"]["embedding"][:VOCAB])
    # train.sample on A (padded to 320 rows): only real ids come out
    mc, params, _, _ = load_model(str(a_dir), 1)
    assert mc.padded_vocab_size == 320
    new, _ = sample(mc, params, np.arange(5, dtype=np.int32), 8, 0, num_samples=4,
                    temperature=1.0)
    assert new.shape == (4, 8) and new.max() < VOCAB
    b = cfg_for(tmp_path, corpus, init_from=f"{a_dir}:1")
    out = run(b, str(tmp_path / "b"))
    assert out["start_step"] == 0
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["init_from"] == f"{a_dir}:1" and saved["tokenizer"] == str(
        tmp_path / "b" / "tokenizer" / "tokenizer.json")  # A's tokenizer, copied
    # B's first loss is A's step-1 weights' loss on batch 0 (transformers, on A's export)
    ref = hf_loss(a_dir / "hf" / "step_1", batches(b, saved["tokenizer"]).batch(0))
    assert abs(out["first_loss"] - ref) < TOL, (out["first_loss"], ref)
    origin = read_saved_config(str(tmp_path / "b" / "checkpoints"), 1)["init_origin"]
    assert origin == {"kind": "run", "path": str(a_dir), "step": 1}
    assert {p: p.stat().st_mtime_ns for p in a_dir.rglob("*")} == before


def test_resume_needs_no_source(hf_dirs, gpt2_run) -> None:
    """A resumed --init-from run continues from its own checkpoint and tokenizer copy: the
    transformers folder may be gone."""
    cfg, run_dir, _ = gpt2_run  # after test_init_from_a_run_dir (it reads step 1 of it)
    moved = Path(str(hf_dirs["gpt2"]) + ".moved")
    os.rename(hf_dirs["gpt2"], moved)
    try:
        again = run({**cfg, "steps": 3, "resume": True}, str(run_dir))
    finally:
        os.rename(moved, hf_dirs["gpt2"])
    assert again["start_step"] == 2 and again["steps"] == 3
    assert sorted(os.listdir(run_dir / "hf")) == ["step_1", "step_2", "step_3"]


def test_llama_zero3_first_loss_and_shards(hf_dirs, tmp_path, corpus) -> None:
    cfg = cfg_for(tmp_path, corpus, init_from=str(hf_dirs["llama"]), zero_stage=3)
    out = run(cfg, str(tmp_path / "run"))
    ref = hf_loss(hf_dirs["llama"], batches(cfg, "byte").batch(0))  # no tokenizer in the folder
    assert abs(out["first_loss"] - ref) < TOL, (out["first_loss"], ref)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"] == "llama3" and saved["tokenizer"] == "byte"
    # each device holds only its shard of the (ZeRO-3) parameters
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


def test_errors_one_line(hf_dirs, tmp_path, corpus) -> None:
    gpt2, llama = str(hf_dirs["gpt2"]), str(hf_dirs["llama"])
    cases = [
        ({"init_from": str(tmp_path / "missing")}, "is not a directory"),
        ({"init_from": gpt2, "n_layer": 3}, f"--n-layer=3 contradicts --init-from={gpt2}: its "
                                            "n_layer is 2"),
        ({"init_from": gpt2, "model": "llama3"}, "--model=llama3 contradicts"),
        ({"init_from": llama, "model": "llama3", "n_kv_head": 4}, "its n_kv_head is 2"),
        ({"init_from": gpt2, "seq_len": 128}, f"longer than the context of --init-from={gpt2} "
                                              f"({CONTEXT})"),
        ({"init_from": llama, "tokenizer": "gpt2"}, "do not fit the vocabulary"),
        ({"init_from": f"{tmp_path}:7"}, "no checkpoints"),
        ({"init_from": f"{gpt2}:3"}, "is a transformers folder"),
        ({"export_hf_every": -1}, "--export-hf-every=-1 is invalid: must be an int >= 0"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError) as e:
            run(cfg_for(tmp_path, corpus, **kw), str(tmp_path / "err"))
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
    assert not (tmp_path / "err" / "config.json").exists()
    assert not os.listdir(tmp_path / "err" / "checkpoints")


def test_lr_finder_and_plan_start_from_the_source(hf_dirs, tmp_path, corpus) -> None:
    """The LR range test with ``--init-from``: its first loss is transformers' loss of the
    folder's weights on the first batch (the run's loading path), not that of a random init of
    the same architecture. ``--plan`` plans the source's model: its parameter bytes (one
    device) are the folder's parameters, vocabulary rows padded to 64, in float32."""
    from train.lr_finder import lr_range_test
    from train.run.memplan import plan_run

    # the folder's GPT-2 with its embedding (tied: the logits too) scaled up: a loss far from
    # ln(vocab), where any random init of this size starts
    src = tmp_path / "gpt2_scaled"
    m = transformers.GPT2LMHeadModel.from_pretrained(hf_dirs["gpt2"])
    with torch.no_grad():
        m.transformer.wte.weight.mul_(30.0)
    m.save_pretrained(src)
    tok = src / "tokenizer.json"
    tok.write_bytes((hf_dirs["gpt2"] / "tokenizer.json").read_bytes())
    cfg = cfg_for(tmp_path, corpus, init_from=str(src), devices=1)
    lines: list[str] = []
    r = lr_range_test(cfg, lr_min=1e-4, lr_max=1e-3, steps=3, log=lines.append)
    ref = hf_loss(src, batches(cfg, str(tok)).batch(0))
    assert abs(r.losses[0] - ref) < TOL, (r.losses[0], ref)
    assert f"init: weights from the transformers folder {src}" in lines
    rand = lr_range_test({**cfg, "init_from": None, "tokenizer": str(tok), "n_layer": 2,
                          "n_head": 4, "n_embd": 32}, lr_min=1e-4, lr_max=1e-3, steps=3)
    assert abs(rand.losses[0] - np.log(VOCAB)) < 0.5 < abs(rand.losses[0] - ref)

    llama = transformers.LlamaForCausalLM.from_pretrained(hf_dirs["llama"])
    rows = 320 - VOCAB  # --vocab-pad-to=64: embedding and (untied) head rows
    want = 4 * (sum(p.numel() for p in llama.parameters()) + 2 * rows * 32)
    plan = cfg_for(tmp_path, corpus, init_from=str(hf_dirs["llama"]), devices=1)
    p = plan_run(TrainConfig.from_dict(plan), str(tmp_path / "plan"))
    assert p["devices"] == 1 and p["params"] == want, (p["params"], want)
