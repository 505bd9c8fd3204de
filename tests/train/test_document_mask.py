"""``--document-mask``: the trainer's loss on a packed row equals the loss of each document run
alone (segments from the tokenizer's BOS/EOS, as the data's manifest records them), for both
models and the mesh engine's vocabulary-parallel loss; a real pmap run on a JSONL corpus; the
pipeline (the segment ids travel with each micro-batch between stages) and a population
(each member's loss a single run's) against the pmap engine; the settings it refuses, in one
line.

The models' own masking (segment ids -> the logits of each document alone) is tested in
tests/models/test_models_segments.py; here, what the trainer feeds them."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from train_testutil import tiny

import models
from train import sweep as run_population
from train import train_and_evaluate as run
from train.data import Batcher, load_data, segment_ids
from train.engine.step import document_segments, model_loss
from train.resume import ResumeMismatchError, read_saved_config
from train.run.weights import model_config_from_run
from train.tokenizer import get_tokenizer

EOS, BOS = 7, 3


def per_document_loss(cfg: models.Config, params: dict, tokens: np.ndarray, bos: int | None,
                      eos: int | None) -> float:
    """Mean next-token loss over ``tokens [B, T + 1]`` with each document of each row's inputs
    run alone (right-padded to T in one batch: causal attention never reads the padding)."""
    x, y = tokens[:, :-1], tokens[:, 1:]
    seg, _ = segment_ids(x, bos, eos)  # NumPy, the data module's reference
    T = x.shape[1]
    docs, where = [], []
    for b in range(x.shape[0]):
        for s in np.unique(seg[b]):
            idx = np.flatnonzero(seg[b] == s)
            docs.append(np.pad(x[b, idx], (0, T - len(idx))))
            where.append((b, idx))
    logits = np.asarray(jax.jit(models.build(cfg).apply)({"params": params}, np.stack(docs)),
                        np.float64)
    total, n = 0.0, 0
    for row, (b, idx) in zip(logits, where, strict=True):
        lg = row[: len(idx)]
        lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
        total += float((lse - lg[np.arange(len(idx)), y[b, idx]]).sum())
        n += len(idx)
    return total / n


def test_segments_match_the_data_module() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 12, (4, 40)).astype(np.int32)
    for bos, eos in ((None, EOS), (BOS, None), (BOS, EOS)):
        want, _ = segment_ids(x, bos, eos)
        np.testing.assert_array_equal(np.asarray(document_segments(x, (bos, eos))), want)


# float32 logits of two paths that group the same sums differently (masked attention over T
# keys vs T' < T keys): ~1e-6 relative; a mean cross-entropy of ~ln(V) ~ 6: a few 1e-6
TOL = 2e-5


@pytest.mark.parametrize("model", ["gpt2", "llama3"])
def test_loss_equals_each_document_alone(model: str) -> None:
    cfg = models.get_config(model, "tiny", n_layer=2, n_embd=32, block_size=32, vocab_size=64)
    params = jax.device_get(models.init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(1)
    tokens = rng.integers(8, cfg.vocab_size, (3, 33)).astype(np.int32)
    tokens[0, [5, 17]] = EOS  # three documents
    tokens[1, [0, 20]] = BOS  # a BOS opens the row, another a second document
    tokens[2, 31] = EOS  # the last input ends a document: its target starts the next
    module = models.build(cfg)
    want = per_document_loss(cfg, params, tokens, BOS, EOS)
    for vp in (False, True):  # the pmap engine's loss and the mesh engine's
        got = float(jax.jit(model_loss(module, vocab_parallel=vp, documents=(BOS, EOS)))(
            params, tokens, None))
        assert abs(got - want) < TOL, (vp, got, want)
    plain = float(jax.jit(model_loss(module))(params, tokens, None))
    assert abs(plain - want) > 10 * TOL  # the mask changes the loss (not vacuous)


def bpe_json(path: Path, text: str) -> str:
    """A small byte-level BPE (300 tokens) with GPT-2's ``<|endoftext|>``: placed after each
    document (train.tokenizer's convention for a tokenizer.json without a template)."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory, corpus: str) -> tuple[str, str, str]:
    """(folder, a JSONL corpus of ~20-30-token documents, a tokenizer.json placing
    <|endoftext|> after each document): most rows of a batch pack several documents."""
    tmp = tmp_path_factory.mktemp("packed")
    text = Path(corpus).read_text()
    docs = [text[i: i + 60] for i in range(0, 30_000, 60)]
    data = tmp / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    return str(tmp), str(data), bpe_json(tmp / "tokenizer.json", text[:40_000])


def first_batch(cfg: dict, tok_file: str, local_devices: int) -> np.ndarray:
    """The rows of step 0's global batch ``[rows, T + 1]`` (the pmap layout's: any layout
    with the same global batch trains on the same rows)."""
    tok = get_tokenizer(tok_file)
    train_data, _, _ = load_data(cfg["data"], None, tok, cfg["data_cache"], 0.05)
    batch = Batcher(train_data, seq_len=cfg["seq_len"], batch_size=cfg["batch_size"],
                    grad_accum=cfg.get("grad_accum", 1), local_devices=local_devices,
                    seed=cfg.get("seed", 0)).batch(0)
    return batch.reshape(-1, batch.shape[-1])


def init_of(workdir: str, step: int) -> tuple[models.Config, dict]:
    """A run's model config (from its checkpoint at ``step``) and its initial params (seed 0)."""
    mc = model_config_from_run(read_saved_config(str(Path(workdir) / "checkpoints"), step))
    return mc, jax.device_get(models.init_params(mc, jax.random.key(0)))


#: one model and global batch for the module's runs, so that one pmap run is the reference of
#: the JSONL test, the pipeline and a population's member: LLaMA-3 (its rotary positions
#: restart per document), 4 layers (PP=2 x vPP=2), 8 replicas x 2 micro-batches x 1 row;
#: eps 1e-6 as tests/train/test_parallel.py's pipeline rows (Adam would otherwise amplify the
#: rounding of a near-zero gradient entry summed in another order)
RUN = dict(model="llama3", model_size="tiny", n_layer=4, n_head=4, n_kv_head=2, n_embd=32,
           document_mask=True, steps=3, eval_interval=3, checkpoint_interval=3, grad_accum=2,
           batch_size=1, eps=1e-6)


@pytest.fixture(scope="module")
def ref(packed: tuple[str, str, str]) -> tuple[dict, dict, float]:
    """The pmap run with --document-mask (config, summary) and the loss its initial params
    have on step 0's batch WITHOUT the mask."""
    tmp, data, tok_file = packed
    cfg = tiny(tmp, data, tokenizer=tok_file, **RUN)
    out = run(cfg, str(Path(tmp) / "ref"))
    mc, params = init_of(str(Path(tmp) / "ref"), cfg["steps"])
    rows = first_batch(cfg, tok_file, jax.device_count())
    plain = float(jax.jit(model_loss(models.build(mc)))(params, rows, None))
    return cfg, out, plain


def test_run_on_a_jsonl_corpus(packed: tuple[str, str, str], ref: tuple) -> None:
    """A pmap run with --document-mask on a JSONL corpus (a tokenizer.json placing
    <|endoftext|> after each document): its first loss is the per-document loss of its
    initial params on batch 0; the config records the mask."""
    tmp, _, tok_file = packed
    cfg, out, plain = ref
    tok = get_tokenizer(tok_file)
    assert tok.add_eos and not tok.add_bos
    rows = first_batch(cfg, tok_file, jax.device_count())
    assert (rows[:, :-1] == tok.eos_id).any(axis=1).mean() > 0.5  # most rows pack documents
    mc, params = init_of(str(Path(tmp) / "ref"), cfg["steps"])
    want = per_document_loss(mc, params, rows, None, tok.eos_id)
    assert abs(out["first_loss"] - want) < TOL, (out["first_loss"], want)
    assert abs(plain - want) > 10 * TOL  # the mask changes this batch's loss
    saved = json.loads((Path(tmp) / "ref" / "config.json").read_text())
    assert saved["document_mask"] is True


def test_lr_range_test_trains_with_the_mask(ref: tuple) -> None:
    """The LR range test of the same config starts from the same init on the same batch: its
    first loss is the run's masked first loss, not the unmasked one."""
    from train.run.lr_finder import lr_range_test

    cfg, out, plain = ref
    res = lr_range_test(cfg, lr_min=1e-6, lr_max=1e-5, steps=3)
    assert abs(res.losses[0] - out["first_loss"]) < TOL, (res.losses[0], out["first_loss"])
    assert abs(res.losses[0] - plain) > 10 * TOL


#: the pipeline against pmap: tests/train/test_parallel.py's F32_RTOL (the layouts sum the
#: same numbers in other orders)
F32_RTOL = 1e-5


def test_pipeline_equals_pmap(packed: tuple[str, str, str], ref: tuple) -> None:
    """LLaMA-3 under PP=2 x vPP=2 (4 replicas x 2 micro-batches x 2 rows: the same global
    batch) with --document-mask: the pmap run's losses at every step and its validation
    loss, not the unmasked loss (the segment ids reached every stage and virtual chunk)."""
    tmp, _, _ = packed
    cfg, want, plain = ref
    got = run({**cfg, "batch_size": 2, "pipeline_parallel": 2, "virtual_pipeline_parallel": 2},
              str(Path(tmp) / "pp"))
    losses = [x for _, x in got["losses"]]
    np.testing.assert_allclose(losses, [x for _, x in want["losses"]], rtol=F32_RTOL)
    np.testing.assert_allclose(got["val_loss"], want["val_loss"], rtol=F32_RTOL)
    assert abs(losses[0] - plain) > 10 * TOL, (losses[0], plain)


def test_pipeline_loss_gpt2_is_each_document_alone() -> None:
    """GPT-2 (positions from its table, read once in the embeddings; the mask in every stage)
    through ``pipeline_loss`` at PP=2 x vPP=2 with segment ids: the loss of each document run
    alone (the forward only: the end-to-end pipeline run above is LLaMA-3's)."""
    from jax.sharding import Mesh

    from train.parallel.pipeline import pipeline_loss

    cfg = models.get_config("gpt2", "tiny", n_layer=4, n_head=4, n_embd=32, block_size=32,
                            vocab_size=64)
    params = jax.device_get(models.init_params(cfg, jax.random.key(0)))
    rng = np.random.default_rng(2)
    batch = rng.integers(8, cfg.vocab_size, (2, 2, 17)).astype(np.int32)  # [m, B, T + 1]
    batch[rng.random(batch.shape) < 0.15] = EOS
    segs = jax.vmap(lambda t: document_segments(t[:, :-1], (None, EOS)))(batch)
    mesh = Mesh(np.array(jax.devices()[:2]).reshape(1, 2), ("data", "pipe"))
    with jax.set_mesh(mesh):
        got = float(jax.jit(lambda p: pipeline_loss(cfg, p, batch, 2, 2, segment_ids=segs))(
            params))
    flat = batch.reshape(-1, batch.shape[-1])
    want = per_document_loss(cfg, params, flat, None, EOS)
    assert abs(got - want) < TOL, (got, want)
    plain = float(jax.jit(model_loss(models.build(cfg)))(params, flat, None))
    assert abs(plain - want) > 10 * TOL


def test_population_members_equal_single_runs(packed: tuple[str, str, str], ref: tuple) -> None:
    """--sweep lr=... (K=2) with --document-mask: member 0's losses and validation loss are
    the module's pmap run's (its lr; tests/train/test_sweep.py's 1e-6). Member 1 starts from
    the same parameters on the same batch: its first loss is that run's masked one too (not
    the unmasked loss), then its own lr takes it elsewhere (that a member's lr is its single
    run's is test_sweep.py's; a second single run would cost CI another compile). Resuming
    the population without the mask is refused (the mask is part of its trajectory)."""
    tmp, _, _ = packed
    cfg, want, plain = ref
    lrs = [cfg["lr"], cfg["lr"] / 3]
    s = run_population(cfg, str(Path(tmp) / "pop"), grid={"lr": lrs})
    m0, m1 = s["results"]
    np.testing.assert_allclose([x for _, x in m0["losses"]], [x for _, x in want["losses"]],
                               rtol=1e-6, atol=0)
    np.testing.assert_allclose(m0["val_loss"], want["val_loss"], rtol=1e-6)
    np.testing.assert_allclose(m1["losses"][0][1], want["first_loss"], rtol=1e-6, atol=0)
    assert abs(m1["losses"][0][1] - plain) > 10 * TOL
    assert m1["losses"][-1][1] != m0["losses"][-1][1]
    with pytest.raises(ResumeMismatchError, match="document_mask"):
        run_population({**cfg, "document_mask": False, "resume": True, "steps": 4},
                       str(Path(tmp) / "pop"), grid={"lr": lrs})


def test_refused_in_one_line(tmp_path: Path, corpus: str) -> None:
    for entry in (run, run_population):  # a population checks its tokenizer as a run
        with pytest.raises(ValueError) as e:
            entry(tiny(str(tmp_path), corpus, document_mask=True, tokenizer="byte",
                       sweep_seeds=2 if entry is run_population else 0), str(tmp_path / "x"))
        msg = "--document-mask is invalid with --tokenizer=byte"
        assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)
