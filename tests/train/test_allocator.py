"""The host allocator setting (train/allocator.py): XLA:CPU's per-step temporary buffer is
kept by glibc for the next step instead of being mapped and page-faulted in anew.

The effect is measured on a real jitted gradient step whose temporaries (48 MiB)
are above glibc's 32 MiB mmap threshold: the page faults of 5 steps, counted by
the kernel (``ru_minflt``), with the setting and without it, each in a fresh process pinned to
one CPU (the setting acts before JAX starts)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

import train.allocator as A
from train.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"

PROBE = """
import os, resource
os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
from train.allocator import tune_host_allocator
mode = tune_host_allocator()
import jax, jax.numpy as jnp
def loss(w, x):
    return jnp.mean(jnp.tanh(jnp.tanh(x * w[0]) * w[1]) ** 2)
step = jax.jit(jax.grad(loss))
w = jnp.full((2, 1024), 0.5)
x = jax.random.normal(jax.random.PRNGKey(0), (12288, 1024))  # 48 MiB a temporary
for _ in range(5):  # the heap reaches its steady size
    jax.block_until_ready(step(w, x))
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    jax.block_until_ready(step(w, x))
print(mode, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 5)
"""


def _probe(**env: str) -> tuple[str, float]:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUN"))}
    e.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
             **env)
    e.pop("XLA_FLAGS", None)
    p = subprocess.run([sys.executable, "-c", PROBE], env=e, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    mode, faults = p.stdout.split()
    return mode, float(faults)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_reuse_keeps_the_step_buffers_mapped() -> None:
    """Without the setting every step faults its temporaries in again (48 MiB each, 12,288
    pages); with it, the steady state takes (almost) none."""
    mode, plain = _probe(SCHEDAX_HOST_ALLOCATOR="system")
    assert mode == "system"
    assert plain > 6000, plain
    mode, kept = _probe(SCHEDAX_HOST_ALLOCATOR="reuse")
    assert mode == "reuse"
    assert kept < 0.1 * plain, (kept, plain)


@pytest.mark.parametrize("var", ["MALLOC_ARENA_MAX", "GLIBC_TUNABLES", "LD_PRELOAD"])
def test_the_users_own_settings_win(var: str, monkeypatch) -> None:
    """A glibc setting or a preloaded allocator in the environment: nothing is changed (the
    backend check is taken out of the way, so only the environment decides; ``mallopt`` is a
    recorder, so that a wrong answer would not touch this process's allocator)."""
    calls: list[tuple[int, int]] = []

    class _Libc:
        def mallopt(self, p: int, v: int) -> int:
            calls.append((p, v))
            return 1

    monkeypatch.setattr(A, "_applied", None)
    monkeypatch.setattr(A, "_backend_started", lambda: False)
    monkeypatch.setattr(A.ctypes, "CDLL", lambda name: _Libc())
    monkeypatch.setenv(A.ENV, "reuse")
    monkeypatch.setenv(var, "2")
    assert A.tune_host_allocator() == "system"
    assert calls == []


def test_a_started_backend_is_left_alone(monkeypatch) -> None:
    """In a process whose JAX already runs (this test process), nothing is changed."""
    import jax

    jax.devices()
    monkeypatch.setattr(A, "_applied", None)
    monkeypatch.setenv(A.ENV, "reuse")
    assert A.tune_host_allocator() == "system"


def test_bad_value_is_a_one_line_error(monkeypatch, capsys) -> None:
    monkeypatch.setenv(A.ENV, "jemalloc")
    with pytest.raises(ValueError, match=r"SCHEDAX_HOST_ALLOCATOR='jemalloc' is invalid: must "
                                         r"be one of reuse, system"):
        A.tune_host_allocator()
    with pytest.raises(SystemExit) as e:
        main(["--steps=1"])
    assert e.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith(
        "python -m train: error: SCHEDAX_HOST_ALLOCATOR='jemalloc' is invalid"), lines
