"""Shared helpers for the trainer tests: a tiny config and a small text corpus."""

from __future__ import annotations

import glob
import os
import socket
import sys
import sysconfig
from typing import Any

#: the checkout's root: the working directory and import path of ``python -m train`` subprocesses
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

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


def cpu_env(devices: int, cache: str | None = None) -> dict[str, str]:
    """The environment of a ``python -m train`` subprocess (run with ``cwd=ROOT``): JAX on
    ``devices`` simulated CPU devices, importing this checkout. ``cache``: a directory for JAX's
    persistent compilation cache, every program cached, so that the runs of one test that
    share it compile once."""
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def two_process_argvs(wd: str, flags: list[str]) -> list[list[str]]:
    """The command lines of ``python -m train --workdir wd flags`` as the 2 processes of one
    JAX run (ids 0 and 1, their coordinator on a free local port); unbuffered, so that a test
    can read process 0's lines as they come. Run each with :func:`cpu_env`'s environment."""
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    return [[sys.executable, "-u", "-m", "train", "--workdir", wd, *flags,
             f"--coordinator-address=localhost:{port}", "--num-processes=2",
             f"--process-id={pid}"] for pid in range(2)]


def find_state(tree: Any, type_name: str) -> Any:
    """The first optax state of type ``type_name`` (e.g. ``"ScaleByAdamState"``) in a tree."""
    if type(tree).__name__ == type_name:
        return tree
    children = tree.values() if isinstance(tree, dict) else (
        tree if isinstance(tree, list | tuple) else ())
    for c in children:
        r = find_state(c, type_name)
        if r is not None:
            return r
    return None


def adamw_applied_lr(before: dict, after: dict, b1: float, b2: float, eps: float) -> float:
    """The learning rate one optax AdamW update applied, recovered from two train states.

    optax: ``p' = p - lr * (m^ / (sqrt(v^) + eps) + wd * p)`` (decay on matrices only), with
    ``m^ = mu / (1 - b1**n)``, ``v^ = nu / (1 - b2**n)`` and ``n`` the count after the update
    (``mu``, ``nu`` from ``after``). On the leaves without weight decay (biases, norms,
    embeddings) ``lr = (p - p') / u`` elementwise, ``u = m^ / (sqrt(v^) + eps)``; the median over
    elements with ``|u| > 0.1`` (float32 rounding of ``p - p'`` is ~1e-7 |p|, far below)."""
    import jax
    import numpy as np

    import models

    adam = find_state(after["opt_state"], "ScaleByAdamState")
    n = int(adam.count)
    mask = jax.tree.leaves(models.decay_mask(before["params"]))
    ratios = []
    for p0, p1, mu, nu, decayed in zip(jax.tree.leaves(before["params"]),
                                       jax.tree.leaves(after["params"]),
                                       jax.tree.leaves(adam.mu), jax.tree.leaves(adam.nu), mask):
        if decayed:
            continue
        u = (mu / (1 - b1**n)) / (np.sqrt(nu / (1 - b2**n)) + eps)
        sel = np.abs(u) > 0.1
        ratios.append(((np.asarray(p0, np.float64) - p1)[sel] / u[sel]).ravel())
    return float(np.median(np.concatenate(ratios)))
