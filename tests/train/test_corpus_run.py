"""A run on a user's corpus: a JSON-lines file prepared implicitly, a tokenizer.json of the
user's, epoch sampling; the batches are the prepared shards' tokens, each window once an epoch."""

from __future__ import annotations

import json
import os
from collections import Counter

import numpy as np
import pytest
from test_tokenizers import TEXTS, _train_bpe
from train_testutil import tiny

pytest.importorskip("tokenizers")

from train import train_and_evaluate
from train.data import Batcher, load_data
from train.tokenizer import get_tokenizer


def test_jsonl_corpus_with_a_tokenizer_file_and_epoch_sampling(tmp_path) -> None:
    tok_path = _train_bpe(str(tmp_path / "tokenizer.json"))
    corpus = tmp_path / "corpus.jsonl"
    rng = np.random.default_rng(0)
    with open(corpus, "w") as f:
        for i in range(300):
            doc = " ".join(rng.choice(TEXTS, size=3))
            f.write(json.dumps({"text": f"{i}: {doc}", "id": i}) + "\n")
    wd = str(tmp_path / "run")
    cfg = tiny(str(tmp_path), str(corpus), tokenizer=tok_path, sampling="epoch", steps=4,
               eval_interval=4, checkpoint_interval=4)
    s = train_and_evaluate(cfg, wd)
    assert s["steps"] == 4 and np.isfinite(s["final_loss"])
    # the model's vocabulary is the tokenizer's (not the byte tokenizer's 256), its rows padded
    # to a multiple of --vocab-pad-to (64)
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    assert saved["tokenizer"] == tok_path and saved["sampling"] == "epoch"
    tok = get_tokenizer(tok_path)
    assert tok.vocab_size % 64 and tok.vocab_size != 256
    assert s["params"]["wte"]["embedding"].shape[0] == -(-tok.vocab_size // 64) * 64
    # the training tokens are the file's documents through the user's tokenizer (the JSON keys
    # and braces are not text), every window once per epoch
    train, _, desc = load_data(str(corpus), None, tok, cfg["data_cache"], saved["val_fraction"])
    assert "prepared" in desc
    ids = np.concatenate([np.asarray(x) for x in train.shards])
    text = tok.decode(ids[:2000])
    assert '"text"' not in text and '"id"' not in text and "quick brown fox" in text
    b = Batcher(train, seq_len=32, batch_size=2, grad_accum=1, local_devices=8, seed=0,
                sampling="epoch")
    per_epoch = (len(ids) - 1) // 32 // 16
    rows = Counter(map(tuple, np.concatenate([b.batch(t).reshape(-1, 33)
                                              for t in range(per_epoch)])))
    windows = Counter(tuple(ids[32 * k:32 * k + 33]) for k in range((len(ids) - 1) // 32))
    # every row is a non-overlapping window of the shards, none more often than it exists
    assert sum(rows.values()) == 16 * per_epoch and not rows - windows


def test_mixture_logs_validation_loss_per_source(tmp_path) -> None:
    import jax
    import optax

    import models

    # two sources a byte-level model finds very different: one letter repeated, and prose
    rng = np.random.default_rng(1)
    (tmp_path / "flat.txt").write_text("a" * 60_000)
    (tmp_path / "prose.txt").write_text(" ".join(rng.choice(TEXTS, size=3000)))
    spec = f"flat={tmp_path / 'flat.txt'}:1,prose={tmp_path / 'prose.txt'}:1"
    wd = str(tmp_path / "run")
    cfg = tiny(str(tmp_path), spec, steps=4, eval_interval=4, checkpoint_interval=4)
    s = train_and_evaluate(cfg, wd)
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        evals = [r for r in map(json.loads, f) if r.get("val_loss") is not None]
    assert [r["step"] for r in evals] == [4]
    got = {n: evals[0][f"val_loss/{n}"] for n in ("flat", "prose")}
    assert s["source_evals"] == {n: [(4, v)] for n, v in got.items()}
    # each source's loss recomputed outside the trainer: its own validation windows through
    # the final parameters, mean token cross-entropy
    tok = get_tokenizer("byte")
    with open(os.path.join(wd, "config.json")) as f:
        val_fraction = json.load(f)["val_fraction"]
    _, val, _ = load_data(spec, None, tok, cfg["data_cache"], val_fraction)
    assert set(val.parts) == {"flat", "prose"}
    mcfg = models.get_config("gpt2", "tiny", vocab_size=tok.vocab_size, block_size=32)
    model = models.build(mcfg)
    for name, part in val.parts.items():
        b = Batcher(part, seq_len=32, batch_size=2, grad_accum=1,
                    local_devices=jax.local_device_count(), seed=0)  # the run's devices
        rows = np.asarray(b.eval_batch(0)).reshape(-1, 33)
        logits = model.apply({"params": s["params"]}, rows[:, :-1])
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, rows[:, 1:])
        # float32 sums over 64 tokens and 256 classes, in another order than the trainer's
        assert abs(float(np.mean(ce)) - got[name]) < 1e-4 * max(1.0, got[name]), name
    assert got["flat"] < got["prose"] - 0.5  # the per-source values are not the overall one
