"""Tokenizer files built on the fly: ids equal the library's own encoding; BOS/EOS placement."""

from __future__ import annotations

import base64
import io
import json
import sys

import numpy as np
import pytest

from train.tokenizer import LLAMA3_SPECIAL, get_tokenizer, save_tokenizer

TEXTS = ["Hello world, the quick brown fox.", "jumps over 12345 lazy dogs!\n\nAnd again",
         "schedax tokenizes documents", "ünïcödé text \t tabs", "numbers 3.14159 and 2718"]


def _train_bpe(path: str, post: str | None = None) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(TEXTS * 20, trainer)
    if post == "bos":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    tok.save(path)
    return path


def test_hf_tokenizer_json_matches_library(tmp_path) -> None:
    from tokenizers import Tokenizer

    path = _train_bpe(str(tmp_path / "tokenizer.json"))
    ref = Tokenizer.from_file(path)
    tok = get_tokenizer(path)
    for t in TEXTS:
        assert tok.encode(t).tolist() == ref.encode(t, add_special_tokens=False).ids
        assert tok.decode(tok.encode(t)) == t
    assert [a.tolist() for a in tok.encode_batch(TEXTS)] == [tok.encode(t).tolist() for t in TEXTS]
    assert tok.vocab_size == ref.get_vocab_size(with_added_tokens=True)
    # no template: the conventional end-of-text token goes after each document
    assert tok.eos_id == ref.token_to_id("<|endoftext|>") and tok.add_eos and not tok.add_bos
    ids = tok.encode("Hello")
    assert tok.delimit(ids).tolist() == [*ids.tolist(), tok.eos_id]
    assert tok.identity.startswith("hf:tokenizer.json:")


def test_hf_tokenizer_bos_from_template_and_config(tmp_path) -> None:
    from tokenizers import Tokenizer

    (tmp_path / "a").mkdir()
    path = _train_bpe(str(tmp_path / "a" / "tokenizer.json"), post="bos")
    ref = Tokenizer.from_file(path)
    tok = get_tokenizer(path)
    assert tok.add_bos and tok.bos_id == ref.token_to_id("<s>") and not tok.add_eos
    # the library's own template places it the same way
    assert tok.delimit(tok.encode("Hello")).tolist() == ref.encode("Hello").ids
    (tmp_path / "b").mkdir()
    path_b = _train_bpe(str(tmp_path / "b" / "tokenizer.json"))
    (tmp_path / "b" / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": {"content": "<|endoftext|>"},
         "add_bos_token": True, "add_eos_token": True}))
    tb = get_tokenizer(path_b)
    assert (tb.add_bos, tb.add_eos) == (True, True)
    assert tb.delimit(np.array([7, 8], np.uint16)).tolist() == [tb.bos_id, 7, 8, tb.eos_id]


def _write_tiktoken_file(path: str, n: int = 1000) -> None:
    """The first ``n`` GPT-2 ranks (a prefix of BPE ranks is itself a valid BPE)."""
    from train.tokenizer import _gpt2_encoding

    ranks = _gpt2_encoding()._mergeable_ranks
    with open(path, "w") as f:
        for tok, r in sorted(ranks.items(), key=lambda kv: kv[1])[:n]:
            f.write(f"{base64.b64encode(tok).decode()} {r}\n")


def test_tiktoken_llama3_file(tmp_path) -> None:
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe

    path = str(tmp_path / "tokenizer.model")
    _write_tiktoken_file(path)
    # LLaMA-3's split pattern, as Meta's llama3/tokenizer.py writes it
    pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
           r"[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    ranks = load_tiktoken_bpe(path)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", *[f"<|reserved_special_token_{i}|>"
                for i in range(4)], "<|start_header_id|>", "<|end_header_id|>",
                "<|reserved_special_token_4|>", "<|eot_id|>",
                *[f"<|reserved_special_token_{i}|>" for i in range(5, 251)]]
    assert specials == LLAMA3_SPECIAL and len(specials) == 256
    ref = tiktoken.Encoding("ref", pat_str=pat, mergeable_ranks=ranks,
                            special_tokens={t: len(ranks) + i for i, t in enumerate(specials)})
    tok = get_tokenizer(path)
    for t in TEXTS:
        assert tok.encode(t).tolist() == ref.encode_ordinary(t)
        assert tok.decode(tok.encode(t)) == t
    assert tok.vocab_size == 1000 + 256 and tok.dtype == np.uint16
    assert (tok.bos_id, tok.eos_id) == (1000, 1001) and tok.add_bos and not tok.add_eos
    assert tok.delimit(tok.encode("hi")).tolist() == [1000, *ref.encode_ordinary("hi")]
    with open(path, "a") as f:
        f.write("not-base64!! x\n")
    with pytest.raises(ValueError, match="line 1001"):
        get_tokenizer(path)


def test_sentencepiece_model(tmp_path) -> None:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(TEXTS * 20), model_writer=model,
                                   vocab_size=60, model_type="bpe")
    path = tmp_path / "sp.model"
    path.write_bytes(model.getvalue())
    ref = spm.SentencePieceProcessor(model_file=str(path))
    tok = get_tokenizer(str(path))
    for t in TEXTS:
        assert tok.encode(t).tolist() == ref.encode(t)
    assert tok.vocab_size == ref.get_piece_size() == 60
    assert tok.bos_id == ref.bos_id() and tok.add_bos and tok.eos_id == ref.eos_id()
    assert tok.identity.startswith("sentencepiece:sp.model:")
    before = tok.identity
    path.write_bytes(model.getvalue() + b"")  # same bytes, same identity
    assert get_tokenizer(str(path)).identity == before


def test_bad_tokenizer_arguments(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="--tokenizer='nope' is invalid"):
        get_tokenizer("nope")
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="cannot load it"):
        get_tokenizer(str(junk))
    monkeypatch.setitem(sys.modules, "sentencepiece", None)  # not installed
    with pytest.raises(ImportError, match=r"schedax\[data\]"):
        get_tokenizer(str(junk))


def test_save_tokenizer_with_a_run(tmp_path) -> None:
    (tmp_path / "src").mkdir()
    path = _train_bpe(str(tmp_path / "src" / "tokenizer.json"), post="bos")
    tok = get_tokenizer(path)
    spec = save_tokenizer(tok, str(tmp_path / "run"))
    again = get_tokenizer(spec)
    assert again.identity == tok.identity and again.bos_id == tok.bos_id
    assert again.encode(TEXTS[1]).tolist() == tok.encode(TEXTS[1]).tolist()
    meta = json.loads((tmp_path / "run" / "tokenizer" / "identity.json").read_text())
    assert meta["identity"] == tok.identity and meta["spec"] == spec
    assert save_tokenizer(get_tokenizer("gpt2"), str(tmp_path / "run2")) == "gpt2"
