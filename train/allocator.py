"""The host allocator: keep the memory XLA:CPU frees at the end of a step for the next one.

XLA:CPU allocates each execution's temporary buffer (a train step's activations and
gradients: 122 MB for bench/bench_train.py's 4 x 128 GPT-2 at 16 x 128 tokens, 680 MB at
width 768) with the C library's ``malloc``, on one of its own threads, and frees it when the
step ends. glibc serves a block that large with a fresh ``mmap`` (its threshold stops at
32 MiB, and a thread's arena falls back to ``mmap`` whatever the settings) and unmaps it on
``free``, so every step page-faults its whole working set in again: 30,000 faults and a
quarter of the step's time at width 128 on the developers' CPU (docs/benchmarks.md).

:func:`tune_host_allocator` makes glibc keep that memory instead (``mallopt``): one arena
for every thread (``M_ARENA_MAX=1``, so XLA's threads allocate from the main heap), large
blocks from the heap rather than ``mmap`` (``M_MMAP_MAX=0``), and free memory at the heap's
top returned to the system only beyond 2 GiB (``M_TRIM_THRESHOLD``). The price: the process
keeps up to 2 GiB of freed memory (its peak resident size stays resident), and threads share
one allocator lock (the step allocates a few large blocks, not many small ones).

Set ``SCHEDAX_HOST_ALLOCATOR=system`` to leave the C library's defaults alone; any of glibc's
own settings in the environment (``MALLOC_ARENA_MAX``, ``GLIBC_TUNABLES``, ...) or an
allocator preloaded with ``LD_PRELOAD`` also wins: nothing is changed then. Other C libraries
(musl, macOS, Windows) are left as they are.

It acts only before JAX starts its backend (``python -m train`` and ``python -m
train.lr_finder`` call it right after parsing their flags): a thread keeps the arena of its
first ``malloc``, so once XLA's threads run, changing the settings would not reach them; a
notebook or a test process that has already used JAX is left as it is.

Example::

    >>> from train.allocator import tune_host_allocator
    >>> tune_host_allocator() in ("reuse", "system")
    True
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

from .devices import _backend_started

__all__ = ["ENV", "MODES", "tune_host_allocator"]

ENV = "SCHEDAX_HOST_ALLOCATOR"
MODES = ("reuse", "system")

# glibc's malloc.h parameter numbers
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
_TRIM_BYTES = 2**31 - 1  # mallopt takes an int
# the user's own glibc settings: leave the allocator to them
_USER_VARS = ("MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_MMAP_MAX_",
              "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
              "GLIBC_TUNABLES")

_applied: str | None = None


def _mode() -> str:
    v = os.environ.get(ENV, "reuse")
    if v not in MODES:
        raise ValueError(f"{ENV}={v!r} is invalid: must be one of {', '.join(MODES)} "
                         "(reuse: keep freed host memory for the next step; system: the C "
                         "library's defaults)")
    return v


def tune_host_allocator() -> str:
    """Make glibc keep freed memory for reuse (see the module docstring); idempotent.

    Returns what applies: ``"reuse"``, or ``"system"`` when it was not changed
    (``SCHEDAX_HOST_ALLOCATOR=system``, a glibc setting or ``LD_PRELOAD`` in the environment,
    not glibc, or ``mallopt`` refused). Raises ``ValueError`` on a bad
    ``SCHEDAX_HOST_ALLOCATOR`` value."""
    global _applied
    mode = _mode()
    if _applied is not None:
        return _applied
    if (mode == "system" or not sys.platform.startswith("linux")
            or platform.libc_ver()[0] != "glibc" or os.environ.get("LD_PRELOAD")
            or any(v in os.environ for v in _USER_VARS) or _backend_started()):
        _applied = "system"
        return _applied
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # pragma: no cover - a glibc without mallopt
        _applied = "system"
        return _applied
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = all(mallopt(p, v) == 1 for p, v in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0),
                                             (_M_TRIM_THRESHOLD, _TRIM_BYTES)))
    _applied = "reuse" if ok else "system"
    return _applied
