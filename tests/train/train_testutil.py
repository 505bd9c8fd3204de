"""Shared helpers for the trainer tests: a tiny config and a small text corpus."""

from __future__ import annotations

import glob
import os
import sysconfig
from typing import Any

#: tiny GPT-2 (2 layers x 64), seq 32, 2 sequences per device; one schedule horizon for all
#: in-process runs so the compiled steps are shared between tests.
TINY: dict[str, Any] = dict(
    model="gpt2", model_size="tiny", seq_len=32, batch_size=2, steps=6, total_steps=20,
    warmup_steps=2, lr=3e-3, lr_scheduler="cosine", eval_interval=3, eval_batches=1,
    log_interval=1, checkpoint_interval=3, keep_checkpoints=3, sample_tokens=0,
    tensorboard=False,
)


def write_corpus(path: str, n_bytes: int = 200_000) -> str:
    """A small text file from the standard library's sources."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))
    out, size = [], 0
    for f in files:
        with open(f, encoding="utf-8", errors="replace") as fh:
            t = fh.read()
        out.append(t)
        size += len(t)
        if size >= n_bytes:
            break
    with open(path, "w") as fh:
        fh.write("".join(out)[:n_bytes])
    return path


def tiny(tmp: str, data: str, **kw: Any) -> dict[str, Any]:
    return {**TINY, "data": data, "data_cache": os.path.join(tmp, "cache"), **kw}
