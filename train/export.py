"""``python -m train.export RUN_DIR [--step N] --out DIR [--overwrite]``: a run's checkpoint as a
transformers checkpoint folder (``config.json``, ``model.safetensors``, ``generation_config.json``
and the run's tokenizer files: GPT-2's ``vocab.json``/``merges.txt``, a ``tokenizer.json``...),
written atomically; ``AutoModelForCausalLM.from_pretrained(DIR)`` loads it. The run directory
is only read (nothing in it is created or changed).

The checkpoint is read with :class:`train.checkpoint.Checkpointer` (only the parameters, each
checked against its checksum), whatever the layout that wrote it. Errors are one line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from .run.weights import (
    RunCheckpoint,
    export_hf,
    load_run,
    model_config_from_run,
    tokenizer_files,
)

__all__ = ["RunCheckpoint", "export_run", "load_run", "main", "model_config_from_run",
           "tokenizer_files"]


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, step: int | None = None,
               overwrite: bool = False) -> tuple[str, int]:
    """Write the run's checkpoint at ``step`` (default latest) as a transformers folder ``out``
    (atomic; an existing ``out`` is a ``ValueError`` unless ``overwrite``). Returns
    ``(out, step)``."""
    out = os.path.abspath(os.fspath(out))
    if os.path.exists(out) and not overwrite:  # before reading any array
        raise ValueError(f"{out} exists (pass --overwrite to replace it)")
    run = load_run(run_dir, step)  # read-only: the run directory is never modified
    return export_hf(run.model_config, run.params, run.tokenizer, out,
                     overwrite=overwrite), run.step


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
