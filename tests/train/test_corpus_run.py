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
    # the model's vocabulary is the tokenizer's (not the byte tokenizer's 256)
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    assert saved["tokenizer"] == tok_path and saved["sampling"] == "epoch"
    tok = get_tokenizer(tok_path)
    assert s["params"]["wte"]["embedding"].shape[0] == tok.vocab_size != 256
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
