"""Checkpoints with orbax: asynchronous, atomic, checksummed, the last N kept.

A checkpoint ``<dir>/<step>/`` holds three items: ``state`` (``step``, ``params``,
``opt_state`` and, for float16, ``loss_scale``: the global arrays, in the model's per-layer
tree whatever the layout that wrote them), ``config`` (the effective :class:`TrainConfig` as
JSON, with the schedule's ``to_config``) and ``checksums`` (JSON: the step and, per leaf, a
layout-independent 32-bit checksum of its values (``sum32``, below), its dtype and shape). The
schedule has no state of its own: its step is the optimizer's ``count`` inside ``opt_state``.

* The state is handed over as host NumPy arrays (the pmap engine) or as sharded global
  ``jax.Array`` s (the mesh engine): orbax writes every array's shards from the process that
  holds them (multi-host included), and a restore gives orbax the target layout (abstract
  arrays with their ``NamedSharding``) so that each device reads only its own shard: a
  checkpoint written under one layout restores onto any other, and the full state is never
  gathered on one device or host.
* Saving refuses a state with a non-finite value (``CheckpointError`` naming the leaf) or whose
  ``step`` differs from the checkpoint's step; the finite check and the checksums run where the
  arrays are (on the devices for ``jax.Array`` s: one integer per leaf reaches the host).
* Host-array states of a one-process run (the pmap engine) are saved by the checkpointer's
  writer thread, at a lower CPU priority: the checksums and the finite check, then orbax's
  write and commit, one save at a time; the caller waits only for the free-space check, and
  a refusal or a failed write surfaces at the next ``save``, ``wait`` or ``close``. On a
  machine with few cores, orbax's per-leaf Python work (~0.1 s of CPU for the default
  model's 87 leaves, whatever their size) run at the loop's priority stalled the steps after
  each save by several steps (issue 28; docs/benchmarks.md).
* orbax writes each checkpoint into a temporary directory and renames it when complete, so a
  save killed half-way never looks like a checkpoint (its leftovers are ignored and cleaned up).
* Only a *committed* checkpoint is trusted (:func:`committed_steps`): a step directory with
  orbax's commit marker (``commit_success.txt``, written last, before the rename) and every
  item. orbax itself lists any step-named directory (a copy without the marker, a directory
  holding state metadata without its data), and would count it among the ``keep`` newest, so
  a run that writes checkpoints first moves such a directory aside (``<step>.uncommitted``,
  nothing deleted; ``set_aside=True``).
* Two kinds of checkpoints (``--save-every-minutes``): the step-based ones in ``<dir>/<step>``
  (the last ``keep``) and time-based temporary ones in ``<dir>/temporary/<step>`` (a second
  orbax manager keeping one: orbax deletes the previous one only after the next one is
  committed). A resume takes the newest committed checkpoint of either kind (a step-based one
  on a tie).
* Restoring checks the saved model configuration against the run's before touching any array,
  then the step recorded in the state against the directory's, then every leaf against its
  checksum. Any failure raises :class:`CheckpointError` with one line naming the checkpoint
  (and the leaf); nothing is deleted on a failed restore.
* A failed write (disk full, permissions, ...) raises one ``CheckpointError`` naming the
  checkpoint and the operating system's reason (e.g. ``No space left on device (errno 28)``).
  orbax's background threads log such failures with full tracebacks before re-raising them to
  the caller; those duplicate log records are dropped (:class:`_OrbaxTracebackFilter`), and
  so are tensorstore's late ``Event loop is closed`` reports of the operations orbax abandoned
  after the failure (``sys.unraisablehook``). A save that cannot fit in the free space is
  refused before anything is written.
"""

from __future__ import annotations

import errno as errno_mod
import logging
import os
import re
import shutil
import sys
import threading
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["COMMIT_MARKER", "TEMPORARY", "CheckpointError", "Checkpointer", "committed_steps",
           "host_scalar", "leaf_checksums", "not_committed", "sum32"]

#: config keys that define the parameter shapes: a resumed run must match them.
SHAPE_KEYS = ("model", "model_size", "n_layer", "n_head", "n_embd", "n_kv_head", "seq_len",
              "tokenizer")
ITEMS = ("state", "config", "checksums")
#: orbax's commit marker: written into a checkpoint's directory last, before the rename
COMMIT_MARKER = "commit_success.txt"
#: the subdirectory of the time-based (temporary) checkpoints
TEMPORARY = "temporary"
_ASIDE = ".uncommitted"


def not_committed(path: str) -> str | None:
    """Why the step directory ``path`` is not a committed checkpoint (None: it is)."""
    if not os.path.isfile(os.path.join(path, COMMIT_MARKER)):
        return f"no commit marker ({COMMIT_MARKER})"
    missing = [i for i in ITEMS if not os.path.isdir(os.path.join(path, i))]
    if missing:
        return f"no {', '.join(missing)} item"
    return None


def _step_dirs(directory: str) -> list[tuple[int, str]]:
    if not os.path.isdir(directory):
        return []
    return sorted((int(d), os.path.join(directory, d)) for d in os.listdir(directory)
                  if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def committed_steps(directory: str) -> tuple[dict[int, str], list[tuple[str, str]]]:
    """``({step: path}, [(path, reason), ...])``: the committed checkpoints in ``directory``,
    step-based and temporary (a step-based one wins a tie), and the step directories that are
    not committed, with the reason."""
    good: dict[int, str] = {}
    bad: list[tuple[str, str]] = []
    for where in (os.path.join(directory, TEMPORARY), directory):  # step-based ones last: win
        for step, path in _step_dirs(where):
            why = not_committed(path)
            if why is None:
                good[step] = path
            else:
                bad.append((path, why))
    return dict(sorted(good.items())), bad


def _set_aside(directory: str) -> list[str]:
    """Rename every uncommitted step directory to ``<step>.uncommitted[-N]`` (process 0;
    nothing deleted); returns the new paths."""
    moved = []
    for path, _ in committed_steps(directory)[1]:
        dest, n = path + _ASIDE, 1
        while os.path.lexists(dest):
            n += 1
            dest = f"{path}{_ASIDE}-{n}"
        os.rename(path, dest)
        moved.append(dest)
    return moved


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used or written (incompatible with this run, corrupted,
    unreadable, or the disk refused the write)."""


class _OrbaxTracebackFilter(logging.Filter):
    """Drops orbax's ERROR log records that carry a traceback: orbax logs a failure of its
    background save threads there and re-raises the same exception to the caller, which
    :class:`Checkpointer` turns into one ``CheckpointError`` line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_orbax = f"{os.sep}orbax{os.sep}" in (record.pathname or "")
        return not (from_orbax and record.levelno >= logging.ERROR and record.exc_info)


_FILTER = _OrbaxTracebackFilter()


def _install_filter() -> None:
    for name in ("absl", ""):
        lg = logging.getLogger(name)
        if _FILTER not in lg.filters:
            lg.addFilter(_FILTER)


def _is_closed_loop_noise(exc: BaseException | None, tb: Any) -> bool:
    """``RuntimeError('Event loop is closed')`` from ``asyncio``'s ``call_soon_threadsafe``:
    tensorstore completing reads/writes of an operation that orbax already abandoned (its event
    loop closed after the first failure, which the caller gets as a ``CheckpointError``)."""
    if not isinstance(exc, RuntimeError) or str(exc) != "Event loop is closed":
        return False
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(
        os.path.join("asyncio", "base_events.py"))


def _install_unraisable_filter() -> None:
    """tensorstore reports those through ``sys.unraisablehook`` (a bare traceback per pending
    operation, after the clear error); drop them, pass everything else to the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_loop_noise", False):
        return

    def hook(u: Any) -> None:
        if _is_closed_loop_noise(u.exc_value, u.exc_traceback):
            return
        previous(u)

    hook._drops_closed_loop_noise = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _leaf_name(path: tuple) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _crc32(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _is_float(a: Any) -> bool:
    dt = np.dtype(a.dtype)
    return dt.kind in "fc" or dt.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


# -- the layout-independent checksum ------------------------------------------------------------
#
# ``sum32`` of a leaf: each element's bit pattern ``u`` (as an unsigned integer, widened to 32
# bits) and its flat index ``i`` in the *global* array are mixed by a bijective 32-bit hash,
# ``h(u, i) = mix(u * K1 + i * K2)`` (odd multipliers and xor-shifts: a bijection of ``u`` for a
# fixed ``i``), and the hashes are summed modulo 2^32. Integer addition modulo 2^32 is exact,
# associative and commutative, so the value does not depend on how the array is sharded or in
# which order the devices reduce it: it is computed where the shards live (one uint32 per leaf
# leaves the device) and equals the NumPy value of the whole host array. Changing any one
# element (one flipped bit) changes its hash, hence the sum.

_K1, _K2, _K3, _K4 = 0x9E3779B1, 0x85EBCA77, 0x7FEB352D, 0x846CA68B


def _np_bits(a: np.ndarray) -> np.ndarray:
    """Flat uint32 bit patterns of ``a`` (64-bit elements: two words each)."""
    a = np.ascontiguousarray(a).reshape(-1)
    size = a.dtype.itemsize
    if a.dtype == np.bool_:
        return a.astype(np.uint32)
    if size == 8:
        return a.view(np.uint32)
    return a.view({1: np.uint8, 2: np.uint16, 4: np.uint32}[size]).astype(np.uint32)


#: elements hashed at a time on the host: the working buffers stay in the CPU's cache (a save
#: of a 20M-value state spent ~4x longer in whole-array passes through memory, the loop waiting)
_CHUNK = 1 << 16


def sum32(a: np.ndarray) -> int:
    """A leaf's checksum on the host: the sum modulo 2^32 of a mixed hash of each element's
    bits and its index (the XLA twin, on sharded arrays, gives the same number)."""
    u = _np_bits(np.asarray(a))
    m = min(_CHUNK, u.size)
    h, t = np.empty(m, np.uint32), np.empty(m, np.uint32)
    total = 0
    with np.errstate(over="ignore"):
        ik2 = np.arange(m, dtype=np.uint32) * np.uint32(_K2)  # the index term, chunk-relative
        for s in range(0, u.size, _CHUNK):
            k = min(_CHUNK, u.size - s)
            hk, tk = h[:k], t[:k]
            np.multiply(u[s:s + k], np.uint32(_K1), out=hk)
            hk += ik2[:k]
            hk += np.uint32((s * _K2) & 0xFFFFFFFF)  # (s + i) * K2 = s * K2 + i * K2 mod 2^32
            np.right_shift(hk, np.uint32(16), out=tk)
            hk ^= tk
            hk *= np.uint32(_K3)
            np.right_shift(hk, np.uint32(15), out=tk)
            hk ^= tk
            hk *= np.uint32(_K4)
            np.right_shift(hk, np.uint32(16), out=tk)
            hk ^= tk
            total += int(np.sum(hk, dtype=np.uint32))
    return total & 0xFFFFFFFF


def _host_nonfinite(a: np.ndarray) -> int:
    """NaN and infinite elements of a float array, chunk by chunk (NumPy's own float types
    directly, the others (bfloat16, float8) through float64)."""
    flat = np.ascontiguousarray(a).reshape(-1)
    native = flat.dtype in (np.float16, np.float32, np.float64, np.complex64, np.complex128)
    bad = 0
    for s in range(0, flat.size, _CHUNK):
        part = flat[s:s + _CHUNK]
        part = part if native else part.astype(np.float64)
        bad += part.size - int(np.count_nonzero(np.isfinite(part)))
    return bad


def _jnp_sum32(x: jax.Array) -> jax.Array:
    """:func:`sum32` in XLA (exact uint32 arithmetic), on a sharded global array."""
    import jax.numpy as jnp

    dt = np.dtype(x.dtype)
    if dt == np.bool_:
        u = x.astype(jnp.uint32)
    elif dt.itemsize == 4:
        u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    elif dt.itemsize in (1, 2):
        u = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[dt.itemsize]
                                         ).astype(jnp.uint32)
    else:
        raise TypeError(f"no device checksum for {dt} (64-bit) leaves")
    i = jnp.zeros(x.shape, jnp.uint32)
    stride = 1
    for d in range(x.ndim - 1, -1, -1):
        i = i + jax.lax.broadcasted_iota(jnp.uint32, x.shape, d) * jnp.uint32(stride % 2**32)
        stride *= x.shape[d]
    h = u * jnp.uint32(_K1) + i * jnp.uint32(_K2)
    h = h ^ (h >> 16)
    h = h * jnp.uint32(_K3)
    h = h ^ (h >> 15)
    h = h * jnp.uint32(_K4)
    h = h ^ (h >> 16)
    return jnp.sum(h, dtype=jnp.uint32)


def _nonfinite(x: jax.Array) -> jax.Array:
    import jax.numpy as jnp

    return jnp.sum(~jnp.isfinite(x), dtype=jnp.int32) if _is_float(x) else jnp.int32(0)


@jax.jit
def _device_sums(tree: Any) -> tuple[Any, Any]:
    """(sum32, non-finite count) per leaf, computed where the shards live (one compile per
    tree structure, shapes and shardings)."""
    return jax.tree.map(_jnp_sum32, tree), jax.tree.map(_nonfinite, tree)


def host_scalar(x: Any) -> int:
    """A replicated scalar's value (host or ``jax.Array``, also one spanning processes), read
    on this process (no cross-process gather)."""
    if isinstance(x, jax.Array):
        x = x.addressable_data(0)
    return int(np.asarray(x))


def leaf_checksums(tree: Any, *, check_finite: bool = False,
                   where: str = "") -> dict[str, dict[str, Any]]:
    """``{leaf path: {"sum32", "dtype", "shape"}}`` of a pytree of host arrays or (sharded,
    possibly multi-process) ``jax.Array`` s: the same value for the same global array whatever
    its layout (see ``sum32`` above). ``jax.Array`` leaves are checked on their devices: only
    one integer per leaf reaches the host.

    With ``check_finite``, raise :class:`CheckpointError` (naming ``where`` and the leaf) if a
    floating-point leaf holds a NaN or an infinity."""
    paths = jax.tree_util.tree_leaves_with_path(tree)
    groups: dict[tuple, list[int]] = {}  # one jitted call per device set (pipeline stages)
    for i, (_, x) in enumerate(paths):
        if isinstance(x, jax.Array):
            ids = tuple(sorted(d.id for d in x.sharding.device_set))
            groups.setdefault(ids, []).append(i)
    dev: dict[int, tuple[Any, Any]] = {}
    for idx in groups.values():
        sums, bads = _device_sums([paths[i][1] for i in idx])
        dev.update({i: (s, b) for i, s, b in zip(idx, sums, bads)})
    out: dict[str, dict[str, Any]] = {}
    for k, (path, leaf) in enumerate(paths):
        name = _leaf_name(path)
        if k in dev:
            s, b = dev[k]
            total, bad = host_scalar(s), host_scalar(b)
            dtype, shape = np.dtype(leaf.dtype).name, list(leaf.shape)
        else:
            a = np.asarray(leaf)
            bad = 0
            if check_finite and _is_float(a):
                bad = _host_nonfinite(a)
            total, dtype, shape = sum32(a), a.dtype.name, list(a.shape)
        if check_finite and bad:
            raise CheckpointError(
                f"refusing to save {where}: {name} has {bad} non-finite value(s) "
                "(NaN/inf); every checkpoint on disk stays finite")
        out[name] = {"sum32": total, "dtype": dtype, "shape": shape}
    return out


def _legacy_crc32(leaf: Any) -> int:
    """CRC-32 of a leaf's host bytes: only for checkpoints written before ``sum32``."""
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
        raise CheckpointError("this checkpoint's CRC-32 checksums (an older version) need the "
                              "whole array on one host; resume it on one process")
    return _crc32(np.asarray(jax.device_get(leaf)))


def _local_bytes(x: Any) -> int:
    """Bytes this process writes for a leaf (its shards, one copy of each)."""
    if isinstance(x, jax.Array):
        return sum(s.data.nbytes for s in x.addressable_shards if s.replica_id == 0)
    return int(np.asarray(x).nbytes)


def _abstract(x: Any) -> Any:
    """A restore target leaf: ``jax.ShapeDtypeStruct`` with the sharding of a (possibly
    abstract) ``jax.Array``, else a NumPy placeholder (restored as a host array)."""
    sharding = getattr(x, "sharding", None)
    if sharding is not None:
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
    return np.zeros(np.shape(x), np.asarray(x).dtype)


def _save_args(state: dict, config: dict[str, Any], sums: dict[str, Any]) -> Any:
    return ocp.args.Composite(state=ocp.args.StandardSave(state),
                              config=ocp.args.JsonSave(config),
                              checksums=ocp.args.JsonSave(sums))


#: how much nicer than the process the writer thread runs (Linux: nice is per thread, and the
#: threads it starts, orbax's, inherit it): a save's CPU time (orbax's per-leaf Python,
#: tensorstore) goes to the cores the training steps leave idle instead of slowing the steps
#: that follow it
WRITER_NICE = 10


def _lower_priority() -> None:
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid,
                       min(19, os.getpriority(os.PRIO_PROCESS, tid) + WRITER_NICE))
    except (AttributeError, OSError):  # not Linux, or not permitted: the process's priority
        pass


def _reason(e: BaseException) -> str:
    """One line for an orbax/tensorstore/OS error: the OS reason when there is one."""
    code = e.errno if isinstance(e, OSError) and e.errno else None
    text = f"{e}"
    if code is None:
        m = re.search(r"os_error_code='(\d+)'", text)
        code = int(m.group(1)) if m else None
    if code is not None:
        name = errno_mod.errorcode.get(code, "?")
        return f"{os.strerror(code)} (errno {code}, {name})"
    text = text.split(" [tensorstore_spec")[0].strip().splitlines()
    line = text[0] if text else ""
    line = f"{type(e).__name__}: {line}"
    return line if len(line) <= 400 else line[:400] + " ..."


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` (one per run, on every process): the
    step-based checkpoints (the last ``keep``) and, from the first temporary save on, a second
    manager for the temporary ones (the last one). ``set_aside``: first move uncommitted step
    directories out of orbax's sight (a run that writes; see the module docstring)."""

    def __init__(self, directory: str, keep: int, async_save: bool = True,
                 read_only: bool = False, set_aside: bool = False) -> None:
        """``read_only``: a reader of another run's checkpoints (export, sampling,
        ``--init-from``, ``--branch-from``): nothing is created, cleaned up or deleted in
        ``directory``."""
        _install_filter()
        _install_unraisable_filter()
        self.directory = os.path.abspath(directory)
        self.async_save = async_save
        self.read_only = read_only
        self.set_aside: list[str] = []
        if set_aside and not read_only:
            if jax.process_index() == 0:
                self.set_aside = _set_aside(self.directory)
            if jax.process_count() > 1:  # every process lists the directory after the move
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("schedax: uncommitted checkpoints set aside")
        self._in_flight: int | None = None  # the step of the last save handed to orbax
        self._in_flight_where: str | None = None
        self._failed: CheckpointError | None = None
        self._reported = False  # ``_failed`` was raised to the caller once
        self.manager = self._manager(self.directory, keep)
        #: host-array states of a one-process run are written by this thread (created on the
        #: first such save), at a low CPU priority; see :meth:`save`
        self._writer: ThreadPoolExecutor | None = None
        self._job: Future | None = None  # the writer's last save
        self._temp: Any = None  # the temporary checkpoints' manager, made when first needed

    def _manager(self, directory: str, keep: int) -> Any:
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None if self.read_only else keep, create=not self.read_only,
            enable_async_checkpointing=self.async_save and not self.read_only,
            cleanup_tmp_directories=not self.read_only, read_only=self.read_only,
        )
        try:
            return ocp.CheckpointManager(directory, options=options, item_names=ITEMS)
        except Exception as e:
            raise CheckpointError(f"cannot use checkpoint directory {directory}: "
                                  f"{_reason(e)}") from e

    @property
    def temp_directory(self) -> str:
        return os.path.join(self.directory, TEMPORARY)

    def _temp_manager(self) -> Any:
        if self._temp is None:
            self._temp = self._manager(self.temp_directory, 1)
        return self._temp

    def _managers(self) -> list[Any]:
        return [m for m in (self.manager, self._temp) if m is not None]

    def committed(self) -> dict[int, str]:
        """``{step: path}`` of the committed checkpoints of both kinds."""
        return committed_steps(self.directory)[0]

    def latest_step(self) -> int | None:
        steps = self.committed()
        return max(steps) if steps else None

    def all_steps(self) -> list[int]:
        """The committed checkpoints' steps, step-based and temporary."""
        return list(self.committed())

    def permanent_steps(self) -> list[int]:
        """The committed step-based checkpoints' steps."""
        return [s for s, p in self.committed().items()
                if os.path.dirname(p) == self.directory]

    def is_temporary(self, step: int) -> bool:
        p = self.committed().get(step)
        return p is not None and os.path.dirname(p) == self.temp_directory

    def path(self, step: int) -> str:
        return self.committed().get(step) or os.path.join(self.directory, str(step))

    def _for(self, step: int) -> Any:
        """The manager holding committed checkpoint ``step`` (the step-based one by default)."""
        return self._temp_manager() if self.is_temporary(step) else self.manager

    @property
    def failed(self) -> bool:
        """A write failed: every later save and wait raises its error (orbax may have
        abandoned writes half-way; the committed checkpoints are untouched)."""
        return self._failed is not None

    def saving(self) -> bool:
        """A save handed to orbax (or to the writer thread) is still being written."""
        if self._job is not None and not self._job.done():
            return True
        return any(m.is_saving_in_progress() for m in self._managers())

    def _write_error(self, e: BaseException) -> CheckpointError:
        where = self._in_flight_where or self.directory
        err = CheckpointError(f"cannot write checkpoint {where}: {_reason(e)}")
        self._failed, self._reported = err, True
        return err

    def save(self, step: int, state: dict, config: dict[str, Any],
             temporary: bool = False) -> None:
        """Start saving ``state`` and ``config`` at ``step`` (asynchronous); ``temporary``: a
        time-based checkpoint, which replaces the previous temporary one once committed.

        ``state``'s leaves are host NumPy arrays (the pmap engine) or global ``jax.Array`` s
        (the mesh engine: sharded, possibly across processes); orbax writes each array's shards
        from the process that holds them, and nothing is gathered on one device or host (the
        checksums and the finite check run on the devices, see :func:`leaf_checksums`).

        Host-array states of a one-process run are handed to the checkpointer's writer thread
        as they are (the caller must not modify them; the pmap engine's host copy is new at
        each save): there the checksums and the finite check run, then orbax writes and
        commits, all at a lower CPU priority (``WRITER_NICE``), one save at a time, so the loop
        waits only for the free-space check. Per save, orbax spends ~0.1 s of CPU in Python per
        ~90 leaves whatever their size; on a machine with few cores, run at the loop's
        priority, that time was taken from the steps after the save (docs/benchmarks.md).

        Raises :class:`CheckpointError` if ``state``'s ``step`` is not ``step``, if it cannot
        fit in the free space, or if an earlier save failed: its write, or its refusal of a
        non-finite value (the writer thread's refusal surfaces at the next ``save``, ``wait``
        or ``close``; nothing of that state is written, nor anything after it). ``jax.Array``
        states are refused here at once."""
        self._raise_failed()
        where = os.path.join(self.temp_directory if temporary else self.directory, str(step))
        saved_step = host_scalar(state["step"])
        if saved_step != step:
            raise CheckpointError(f"refusing to save {where}: the state is at step {saved_step}")
        if self._threaded(state):
            self._check_space(where, state)
            manager = self._temp_manager() if temporary else self.manager
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, "schedax-save",
                                                  initializer=_lower_priority)
            self._job = self._writer.submit(self._write, manager, step, state, config, where)
            self._in_flight, self._in_flight_where = step, where
            return
        self._settle()
        sums = {"step": int(step), "leaves": leaf_checksums(state, check_finite=True,
                                                            where=where)}
        self._check_space(where, state)
        manager = self._temp_manager() if temporary else self.manager
        earlier = self.saving()  # an earlier save's failure would surface in this one
        try:
            manager.save(step, args=_save_args(state, config, sums), force=True)
        except Exception as e:
            if not earlier:  # nothing else was being written: this save failed
                self._in_flight_where = where
            raise self._write_error(e) from e
        self._in_flight, self._in_flight_where = step, where

    def _threaded(self, state: dict) -> bool:
        """Whether the writer thread saves ``state``: asynchronous saves of host arrays (the
        pmap engine) in a one-process run. ``jax.Array`` s (the mesh engine) are handed to
        orbax by the caller: it copies them to the host before the next step can donate
        them, and several processes write in step (orbax's barriers)."""
        return (self.async_save and not self.read_only and jax.process_count() == 1
                and not any(isinstance(x, jax.Array) for x in jax.tree.leaves(state)))

    def _write(self, manager: Any, step: int, state: dict, config: dict[str, Any],
               where: str) -> None:
        """The writer thread's save (one at a time, in order): the checksums and the finite
        check, then orbax's write; nothing after a failure (refusal included)."""
        if self._failed is not None:
            return
        try:
            sums = {"step": int(step), "leaves": leaf_checksums(state, check_finite=True,
                                                                where=where)}
        except CheckpointError as e:
            self._failed = e
            return
        try:
            manager.save(step, args=_save_args(state, config, sums), force=True)
            manager.wait_until_finished()
        except Exception as e:
            self._failed = CheckpointError(f"cannot write checkpoint {where}: {_reason(e)}")
            self._failed.__cause__ = e

    def _settle(self) -> None:
        """Wait for the writer thread's save, if any; raise its failure."""
        job = self._job
        if job is not None:
            job.result()
        self._raise_failed()

    def _raise_failed(self) -> None:
        if self._failed is not None:
            self._reported = True
            raise self._failed

    def _check_space(self, where: str, state: dict) -> None:
        """Refuse a save that cannot fit: the uncompressed size of ``state`` (plus one more
        for a save still in flight, plus 1 MiB) against the free space of the directory.
        A write that fails half-way makes tensorstore print tracebacks from its threads that
        no Python hook can catch; checking first keeps the common disk-full case to one line.
        Nothing is written, so the checkpointer stays usable (not a sticky failure)."""
        need = sum(_local_bytes(x) for x in jax.tree.leaves(state))
        need = need * (2 if self._in_flight is not None else 1) + (1 << 20)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return
        if free < need:
            code = errno_mod.ENOSPC
            err = CheckpointError(
                f"cannot write checkpoint {where}: {os.strerror(code)} (errno {code}, "
                f"ENOSPC): it needs up to {need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free")
            raise err  # nothing was written: a later save may be tried (a temporary one is)

    def read_config(self, step: int) -> dict[str, Any]:
        try:
            out = self._for(step).restore(
                step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
            cfg = out["config"]
        except Exception as e:
            raise CheckpointError(
                f"checkpoint {self.path(step)} is unreadable or corrupted (its config): "
                f"{_reason(e)}") from e
        if not isinstance(cfg, dict):
            raise CheckpointError(f"checkpoint {self.path(step)}: config is not a mapping")
        return cfg

    def _read_checksums(self, step: int) -> dict[str, Any]:
        where = self.path(step)
        if not os.path.isdir(os.path.join(where, "checksums")):
            raise CheckpointError(f"checkpoint {where} has no checksums item: it is incomplete or "
                                  "was written by an older version; it cannot be verified")
        try:
            out = self._for(step).restore(
                step, args=ocp.args.Composite(checksums=ocp.args.JsonRestore()))
            sums = out["checksums"]
            leaves, saved_step = sums["leaves"], int(sums["step"])
        except Exception as e:
            raise CheckpointError(f"checkpoint {where} is corrupted (its checksums): "
                                  f"{_reason(e)}") from e
        if saved_step != step:
            raise CheckpointError(f"checkpoint {where} holds the state of step {saved_step}, not "
                                  f"{step} (a copied or renamed directory?); refusing it")
        return leaves

    def restore(self, step: int, target: dict, run_config: dict[str, Any]) -> dict:
        """Restore the state saved at ``step`` into the structure of ``target``.

        ``target``'s leaves say where each array goes: a NumPy array (or anything without a
        sharding): a host NumPy array; a ``jax.Array`` or a ``jax.ShapeDtypeStruct`` with a
        ``sharding``: a global ``jax.Array`` with that sharding, each device reading only its
        own shard (any layout, whatever the layout that saved it: the files hold the global
        arrays). The checksums are checked where the arrays land.

        Raises :class:`CheckpointError` if the saved config defines different shapes, the
        arrays cannot be read (corrupted, or a different optimizer structure), the state is
        another step's, or a leaf does not match its recorded checksum."""
        where = self.path(step)
        saved = self.read_config(step)
        diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {run_config.get(k)!r}"
                 for k in SHAPE_KEYS if saved.get(k) != run_config.get(k)]
        if diffs:
            raise CheckpointError(
                f"cannot resume from {where}: the model differs from the one saved "
                f"there ({'; '.join(diffs)}). Use the saved settings or another --checkpoint-dir."
            )
        sums = self._read_checksums(step)
        abstract = jax.tree.map(_abstract, target)
        try:
            out = self._for(step).restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
            state = out["state"]
        except Exception as e:
            raise CheckpointError(
                f"cannot restore {where}: the checkpoint is corrupted or its arrays do "
                f"not match this run (e.g. a changed --lr-mults or --dtype); {_reason(e)}"
            ) from e
        ok = jax.tree.structure(state) == jax.tree.structure(abstract) and all(
            np.shape(a) == np.shape(b)
            for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(abstract)))
        if not ok:
            raise CheckpointError(f"cannot restore {where}: saved arrays have different "
                                  "shapes or structure than this run's")
        got = leaf_checksums(state)
        if sorted(got) != sorted(sums):
            missing = sorted(set(sums) ^ set(got))[:5]
            raise CheckpointError(f"cannot restore {where}: its checksums list other leaves than "
                                  f"this run's state (e.g. {missing})")
        legacy = {_leaf_name(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}
        for name, rec in sums.items():
            g = got[name]
            kind = "sum32" if "sum32" in rec else "crc32"
            value = g["sum32"] if kind == "sum32" else _legacy_crc32(legacy[name])
            if (value, g["dtype"], g["shape"]) != (rec[kind], rec["dtype"], list(rec["shape"])):
                raise CheckpointError(
                    f"checkpoint {where} is corrupted: leaf {name} does not match its checksum "
                    f"({kind} saved {rec[kind]:#010x}, read {value:#010x})")
        if host_scalar(state["step"]) != step:
            raise CheckpointError(f"checkpoint {where} holds the state of step "
                                  f"{host_scalar(state['step'])}, not {step}; refusing it")
        return state

    def restore_part(self, step: int, target: dict) -> dict:
        """Restore only the sub-tree ``target`` (host arrays; its keys as in the saved state,
        e.g. a population's ``{"book": ...}``) of the state saved at ``step``, each leaf checked
        against its checksum; nothing else is read. Raises :class:`CheckpointError`."""
        where = self.path(step)
        sums = self._read_checksums(step)
        abstract = jax.tree.map(_abstract, target)
        try:
            part_args = ocp.args.PyTreeRestore(
                item=abstract, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract),
                partial_restore=True)
            out = self._for(step).restore(step, args=ocp.args.Composite(state=part_args))
            part = out["state"]
        except Exception as e:
            raise CheckpointError(f"cannot read {where}: the checkpoint is corrupted or holds "
                                  f"other arrays; {_reason(e)}") from e
        for name, g in leaf_checksums(part).items():
            rec = sums.get(name)
            if rec is None or (g["sum32"], g["dtype"], g["shape"]) != (
                    rec.get("sum32"), rec["dtype"], list(rec["shape"])):
                raise CheckpointError(f"checkpoint {where} is corrupted: leaf {name} does not "
                                      "match its checksum")
        return part

    def wait(self) -> None:
        """Block until pending saves are written; raise :class:`CheckpointError` on failure."""
        self._settle()
        try:
            for m in self._managers():
                m.wait_until_finished()
        except Exception as e:
            raise self._write_error(e) from e

    def close(self) -> None:
        """Wait for pending saves and release orbax's threads. A write failure raises one
        :class:`CheckpointError` (once: not again after ``save``/``wait`` reported it)."""
        if self._job is not None:
            self._job.result()
        if self._writer is not None:
            self._writer.shutdown()
        reported = self._reported
        err: CheckpointError | None = self._failed
        for m in self._managers():
            try:
                m.wait_until_finished()
            except Exception as e:
                err = err or self._write_error(e)
            try:
                m.close()
            except Exception as e:
                err = err or self._write_error(e)
        if err is not None and not reported:
            raise err
