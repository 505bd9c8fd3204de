"""``python -m train.export`` and ``python -m train.sample``: a run's checkpoint (written with
the trainer's Checkpointer, and by a real tiny run) exported as a transformers folder that
``AutoModelForCausalLM`` loads with the same logits; sampling from a run and from a folder."""

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
from train import export as E
from train import sample as S
from train.checkpoint import Checkpointer
from train.tokenizer import get_tokenizer

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

STEPS = (3, 5)


def write_run(run_dir: Path, cfg: Any, tokenizer: str) -> dict[int, dict]:
    """A run directory as the trainer lays it out (config.json, checkpoints/<step>/ with the
    state's params and the effective config's model), one parameter set per step."""
    run_dir.mkdir()
    saved = {"model": "gpt2" if isinstance(cfg, models.GPT2Config) else "llama3",
             "tokenizer": tokenizer, "checkpoint_dir": None,
             "model_config": dataclasses.asdict(cfg)}
    (run_dir / "config.json").write_text(json.dumps(saved))
    ckpt = Checkpointer(str(run_dir / "checkpoints"), keep=5, async_save=False)
    by_step = {}
    for step in STEPS:
        params = jax.tree_util.tree_map(np.asarray, models.init_params(cfg, jax.random.key(step)))
        state = {"step": np.int32(step), "params": params,
                 "opt_state": {"mu": jax.tree_util.tree_map(np.zeros_like, params)}}
        ckpt.save(step, state, saved)
        by_step[step] = params
    ckpt.close()
    return by_step


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict]:
    cfg = models.get_config("llama3", "tiny", tie_embeddings=False)
    run_dir = tmp_path_factory.mktemp("runs") / "run"
    return run_dir, cfg, write_run(run_dir, cfg, "byte")


def logits(cfg: Any, params: dict, tokens: np.ndarray) -> np.ndarray:
    return np.asarray(jax.jit(models.build(cfg).apply)({"params": params}, tokens))


def test_export_latest_and_step(run: tuple, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir, cfg, by_step = run
    out = tmp_path / "hf"
    assert E.main([str(run_dir), "--out", str(out)]) == 0
    assert f"exported step 5 of {run_dir}" in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["config.json", "generation_config.json",
                                       "model.safetensors"]  # byte tokenizer: no HF files
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        out, attn_implementation="eager", dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 24), dtype=np.int32)
    with torch.no_grad():
        ref = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(logits(cfg, by_step[5], tokens), ref, rtol=0, atol=1e-5)
    # --step picks an older checkpoint; --overwrite replaces the folder
    assert E.main([str(run_dir), "--step", "3", "--out", str(out), "--overwrite"]) == 0
    _, params = models.load_hf_checkpoint(out)
    for a, b in zip(jax.tree_util.tree_leaves(by_step[3]), jax.tree_util.tree_leaves(params),
                    strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))


def test_export_errors_one_line(run: tuple, tmp_path: Path,
                                capsys: pytest.CaptureFixture) -> None:
    run_dir, _, _ = run
    (tmp_path / "taken").mkdir()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        ([str(run_dir), "--out", str(tmp_path / "taken")], "exists (pass --overwrite"),
        ([str(run_dir), "--step", "4", "--out", str(tmp_path / "x")],
         "no checkpoint at step 4 (saved steps: 3, 5)"),
        ([str(empty), "--out", str(tmp_path / "y")], "no checkpoints"),
        ([str(tmp_path / "missing"), "--out", str(tmp_path / "z")], "no such run directory"),
    ]
    for argv, msg in cases:
        assert E.main(argv) == 1
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "x").exists() and sorted(os.listdir(tmp_path / "taken")) == []


def test_sample_run_and_exported_folder(run: tuple, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    run_dir, cfg, by_step = run
    tok = get_tokenizer("byte")
    prompt = "def f(x):"
    ids = tok.encode(prompt).astype(np.int32)
    greedy = np.asarray(models.generate(cfg, by_step[5], ids, 12, jax.random.key(0),
                                        temperature=0.0))[len(ids):]
    argv = ["--prompt", prompt, "--max-new-tokens", "12", "--temperature", "0"]
    assert S.main([str(run_dir), *argv]) == 0
    captured = capsys.readouterr()
    assert captured.out == prompt + tok.decode(greedy) + "\n"
    assert "tokens/s" in captured.err and "step 5" in captured.err
    # the exported folder samples the same tokens (byte tokenizer from its 256-token vocab)
    out = tmp_path / "hf"
    E.export_run(run_dir, out)
    assert S.main([str(out), *argv]) == 0
    assert capsys.readouterr().out == prompt + tok.decode(greedy) + "\n"
    # seeded sampling: the same seed gives the same texts, from a prompt file
    pf = tmp_path / "prompt.txt"
    pf.write_text(prompt)
    texts = []
    for _ in range(2):
        assert S.main([str(run_dir), "--step", "3", "--prompt-file", str(pf), "--seed", "4",
                       "--num-samples", "2", "--top-p", "0.9", "--max-new-tokens", "8"]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].count("--- sample") == 2
    # errors: one line
    for bad, msg in ((["--step", "4", "--prompt", "a"], "no checkpoint at step 4"),
                     (["--prompt", "a", "--top-k", "999"], "--top-k=999 must be <=")):
        assert S.main([str(run_dir), *bad]) == 1
        err = capsys.readouterr().err
        assert msg in err and err.count("\n") == 1, err


def test_export_gpt2_tokenizer_files(tmp_path: Path) -> None:
    cfg = models.get_config("gpt2", "tiny", vocab_size=50257, n_layer=1, n_embd=32)
    write_run(tmp_path / "run", cfg, "gpt2")
    out, step = E.export_run(tmp_path / "run", tmp_path / "hf")
    assert step == 5
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "Weights in and out of the trainer, 2026."
    assert hf_tok(text)["input_ids"] == get_tokenizer("gpt2").encode(text).tolist()
    gen = json.loads((Path(out) / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 50256


def test_real_run_exports(tmp_path: Path, corpus: str) -> None:
    """A checkpoint the trainer wrote (6 steps of the tiny GPT-2) exports with equal logits."""
    from train import TrainConfig
    from train import train_and_evaluate as train_run

    work = tmp_path / "run"
    summary = train_run(TrainConfig(**tiny(str(tmp_path), corpus)), str(work))
    out, step = E.export_run(work, tmp_path / "hf")
    assert step == summary["last_checkpoint"] == 6
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        out, attn_implementation="eager", dtype=torch.float32).eval()
    cfg, _ = models.load_hf_checkpoint(out)
    tokens = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, 32), dtype=np.int32)
    with torch.no_grad():
        ref = hf(torch.tensor(tokens, dtype=torch.long)).logits.numpy()
    final = jax.tree_util.tree_map(np.asarray, summary["params"])
    np.testing.assert_allclose(logits(cfg, final, tokens), ref, rtol=0, atol=1e-5)
