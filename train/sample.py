"""``python -m train.sample RUN_DIR|HF_DIR [--step N] --prompt TEXT | --prompt-file F
[--max-new-tokens --temperature --top-k --top-p --seed --num-samples]``: sample from a run's
checkpoint or a transformers checkpoint folder with ``models.generate`` (KV cache), decode with
the run's tokenizer and print the texts and the tokens/s. Errors are one line.

The tokenizer is the run's (``--tokenizer`` overrides it); for a transformers folder, the GPT-2
BPE when the folder has its ``vocab.json``/``merges.txt`` (what ``train.export`` writes) or the
byte tokenizer for a 256-token vocabulary, else ``--tokenizer`` is required.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

import models

from .run.weights import load_run
from .tokenizer import get_tokenizer

__all__ = ["load_model", "main", "sample"]


def load_model(path: str, step: int | None = None,
               tokenizer: str | None = None) -> tuple[Any, dict, str, str]:
    """``(model config, params, tokenizer name, description)`` of a run directory or a
    transformers checkpoint folder (one with a ``config.json`` holding ``model_type``)."""
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "config.json")) and _is_hf(path):
        if step is not None:
            raise ValueError(f"--step={step} is invalid: {path} is a transformers folder "
                             "(one set of weights)")
        cfg, params = models.load_hf_checkpoint(path)
        if tokenizer is None:
            if all(os.path.isfile(os.path.join(path, f)) for f in ("vocab.json", "merges.txt")):
                tokenizer = "gpt2"
            elif cfg.vocab_size == 256:
                tokenizer = "byte"
            else:
                raise ValueError(f"{path}: no tokenizer the trainer knows (vocab_size="
                                 f"{cfg.vocab_size}); pass --tokenizer")
        return cfg, params, tokenizer, path
    run = load_run(path, step)
    return run.model_config, run.params, tokenizer or run.tokenizer, f"{path} step {run.step}"


def _is_hf(path: str) -> bool:
    import json

    try:
        with open(os.path.join(path, "config.json")) as f:
            return "model_type" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


def sample(cfg: Any, params: dict, prompt: np.ndarray, max_new_tokens: int, seed: int,
           num_samples: int = 1, temperature: float = 0.8, top_k: int | None = None,
           top_p: float | None = None) -> tuple[np.ndarray, float]:
    """``num_samples`` continuations of ``prompt`` (int [T0]) as int [num_samples, N] and the
    new tokens/s of the timed call (after a compiling call on the same shapes)."""
    batch = np.repeat(prompt[None].astype(np.int32), num_samples, axis=0)

    def run(key: jax.Array) -> np.ndarray:
        return np.asarray(models.generate(cfg, params, batch, max_new_tokens, key,
                                          temperature=temperature, top_k=top_k, top_p=top_p))

    run(jax.random.key(seed))  # compiles (same shapes and bucket: the timed call does not)
    t0 = time.perf_counter()
    out = run(jax.random.key(seed))
    dt = time.perf_counter() - t0
    return out[:, prompt.shape[0]:], num_samples * max_new_tokens / max(dt, 1e-9)


def _pos_int(name: str, allow_zero: bool = False) -> Any:
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            v = -1
        if v < (0 if allow_zero else 1):
            rule = ">= 0" if allow_zero else ">= 1"
            raise argparse.ArgumentTypeError(f"{name}={text!r} must be an int {rule}")
        return v
    return parse


def _float(name: str, lo: float, hi: float, lo_open: bool) -> Any:
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            v = float("nan")
        ok = (lo < v if lo_open else lo <= v) and v <= hi
        if not ok:
            rule = f"in {'(' if lo_open else '['}{lo}, {hi}]"
            raise argparse.ArgumentTypeError(f"{name}={text!r} must be a number {rule}")
        return v
    return parse


def parser() -> argparse.ArgumentParser:
    from .__main__ import ArgumentParser

    p = ArgumentParser(prog="python -m train.sample", description=__doc__.splitlines()[0])
    p.add_argument("path", metavar="RUN_DIR|HF_DIR")
    p.add_argument("--step", type=_pos_int("--step", True), default=None,
                   help="checkpoint step of a run (default: latest)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="the prompt text")
    src.add_argument("--prompt-file", help="a UTF-8 file holding the prompt")
    p.add_argument("--max-new-tokens", type=_pos_int("--max-new-tokens"), default=100)
    p.add_argument("--temperature", type=_float("--temperature", 0.0, 100.0, False),
                   default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=_pos_int("--top-k"), default=None)
    p.add_argument("--top-p", type=_float("--top-p", 0.0, 1.0, True), default=None)
    p.add_argument("--seed", type=_pos_int("--seed", True), default=0)
    p.add_argument("--num-samples", type=_pos_int("--num-samples"), default=1)
    p.add_argument("--tokenizer", choices=("byte", "gpt2"), default=None,
                   help="default: the run's")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    prog = "python -m train.sample"
    try:
        if a.prompt_file is not None:
            try:
                with open(a.prompt_file, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeDecodeError) as e:
                raise ValueError(f"--prompt-file={a.prompt_file!r} is unreadable: {e}") from None
        else:
            text = a.prompt
        cfg, params, tok_name, where = load_model(a.path, a.step, a.tokenizer)
        tok = get_tokenizer(tok_name)
        if tok.vocab_size > cfg.vocab_size:
            raise ValueError(f"vocabulary mismatch: tokenizer {tok_name} has {tok.vocab_size} "
                             f"tokens, the model's vocab_size={cfg.vocab_size}")
        if a.top_k is not None and a.top_k > cfg.vocab_size:
            raise ValueError(f"--top-k={a.top_k} must be <= the vocabulary ({cfg.vocab_size})")
        prompt = tok.encode(text).astype(np.int32)
        if prompt.size == 0:
            raise ValueError("the prompt is empty (it encodes to no tokens)")
        if prompt.size >= cfg.block_size:
            prompt = prompt[-(cfg.block_size - 1):]  # the window the model can see
        new, tps = sample(cfg, params, prompt, a.max_new_tokens, a.seed, a.num_samples,
                          a.temperature, a.top_k, a.top_p)
    except (ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    for i, row in enumerate(new):
        if a.num_samples > 1:
            print(f"--- sample {i + 1}/{a.num_samples}")
        print(text + tok.decode(row))
    print(f"--- {where}: {a.num_samples} x {a.max_new_tokens} tokens, {tps:,.1f} tokens/s",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
