"""``--vocab-pad-to`` in the trainer: a run saved before the flag existed (no ``vocab_pad_to`` in
its configs: unpadded rows) resumes unpadded, and refuses a resume that would pad it; the flag
is validated. (A padded run from a transformers folder, its loss and its exports:
tests/train/test_init_from.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from train_testutil import tiny

pytest.importorskip("tokenizers")

from test_tokenizers import _train_bpe

from train import TrainConfig
from train import train_and_evaluate as run
from train.resume import ResumeMismatchError
from train.tokenizer import get_tokenizer


def _strip(path: Path) -> None:
    """Remove ``vocab_pad_to`` from a saved config (as a run from before the field wrote it)."""
    d = json.loads(path.read_text())
    d.pop("vocab_pad_to")
    if "model_config" in d:
        d["model_config"].pop("vocab_pad_to")
    path.write_text(json.dumps(d))


def test_a_run_saved_before_padding_resumes_unpadded(tmp_path: Path, corpus: str) -> None:
    tok = _train_bpe(str(tmp_path / "tokenizer.json"))
    n = get_tokenizer(tok).vocab_size
    assert n % 64  # padding would change the shapes
    wd = tmp_path / "run"
    cfg = tiny(str(tmp_path), corpus, tokenizer=tok, steps=2, checkpoint_interval=2)
    first = run({**cfg, "vocab_pad_to": 1}, str(wd))
    assert first["params"]["wte"]["embedding"].shape[0] == n
    _strip(wd / "config.json")
    _strip(wd / "checkpoints" / "2" / "config" / "metadata")
    # the flag left out: the saved config without it means no padding
    again = run({**cfg, "steps": 3, "resume": True}, str(wd))
    assert again["start_step"] == 2 and again["params"]["wte"]["embedding"].shape[0] == n
    saved = json.loads((wd / "checkpoints" / "3" / "config" / "metadata").read_text())
    assert saved["vocab_pad_to"] == saved["model_config"]["vocab_pad_to"] == 1
    # asking to pad it is a change of the parameters' shapes: refused in one message
    with pytest.raises(ResumeMismatchError, match=r"vocab_pad_to: checkpoint 1, now 64"):
        run({**cfg, "steps": 4, "resume": True, "vocab_pad_to": 64}, str(wd))


@pytest.mark.parametrize("bad", [0, -64, 2.5, True])
def test_vocab_pad_to_is_validated(bad: object) -> None:
    with pytest.raises(ValueError, match=rf"--vocab-pad-to={bad!r} is invalid: must be an int "
                                         r">= 1"):
        TrainConfig(vocab_pad_to=bad).validate()


def test_tensor_parallel_divides_the_padded_vocabulary() -> None:
    """A vocabulary of 402 tokens is sharded as its 448 padded rows: TP=4 fits; unpadded it
    does not (one line naming the flag and the number)."""
    import dataclasses

    import models
    from train.parallel.layout import make_layout

    cfg = TrainConfig(model_size="tiny", tensor_parallel=4, n_head=4)
    padded = models.get_config("gpt2", "tiny", vocab_size=402, vocab_pad_to=64, n_head=4)
    assert make_layout(cfg, padded, 8).tensor == 4
    with pytest.raises(ValueError, match=r"--tensor-parallel=4 is invalid: it must divide the "
                                         r"model's padded vocabulary \(402\)"):
        make_layout(cfg, dataclasses.replace(padded, vocab_pad_to=1), 8)
