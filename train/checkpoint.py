"""Checkpoints with orbax: asynchronous, atomic, checksummed, the last N kept.

A checkpoint ``<dir>/<step>/`` holds three items: ``state`` (``step``, ``params``,
``opt_state`` and, for float16, ``loss_scale``, as NumPy arrays), ``config`` (the effective
:class:`TrainConfig` as JSON, with the schedule's ``to_config``) and ``checksums`` (JSON: the
step and, per leaf, the CRC-32 of its bytes, its dtype and shape). The schedule has no state of
its own: its step is the optimizer's ``count`` inside ``opt_state``.

* Saving refuses a state with a non-finite value (``CheckpointError`` naming the leaf) or whose
  ``step`` differs from the checkpoint's step; the checksums are computed on the host arrays
  that are handed to orbax (one pass over them, CRC-32 at memory speed).
* orbax writes each checkpoint into a temporary directory and renames it when complete, so a
  save killed half-way never looks like a checkpoint (its leftovers are ignored and cleaned up).
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
import zlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["CheckpointError", "Checkpointer", "leaf_checksums"]

#: config keys that define the parameter shapes: a resumed run must match them.
SHAPE_KEYS = ("model", "model_size", "n_layer", "n_head", "n_embd", "n_kv_head", "seq_len",
              "tokenizer")
ITEMS = ("state", "config", "checksums")


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


def _is_float(a: np.ndarray) -> bool:
    return a.dtype.kind in "fc" or a.dtype.name in ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def leaf_checksums(tree: Any, *, check_finite: bool = False,
                   where: str = "") -> dict[str, dict[str, Any]]:
    """``{leaf path: {"crc32", "dtype", "shape"}}`` of a pytree of host arrays.

    With ``check_finite``, raise :class:`CheckpointError` (naming ``where`` and the leaf) if a
    floating-point leaf holds a NaN or an infinity."""
    out: dict[str, dict[str, Any]] = {}
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        a = np.asarray(leaf)
        name = _leaf_name(path)
        if check_finite and _is_float(a):
            bad = int(a.size - np.count_nonzero(np.isfinite(a.astype(np.float64, copy=False))))
            if bad:
                raise CheckpointError(
                    f"refusing to save {where}: {name} has {bad} non-finite value(s) "
                    "(NaN/inf); every checkpoint on disk stays finite")
        out[name] = {"crc32": _crc32(a), "dtype": a.dtype.name, "shape": list(a.shape)}
    return out


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
    """Thin wrapper over ``ocp.CheckpointManager`` (one per run, on every process)."""

    def __init__(self, directory: str, keep: int, async_save: bool = True) -> None:
        _install_filter()
        _install_unraisable_filter()
        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,
        )
        self._in_flight: int | None = None  # the step of the last save handed to orbax
        self._failed: CheckpointError | None = None
        try:
            self.manager = ocp.CheckpointManager(self.directory, options=options,
                                                 item_names=ITEMS)
        except Exception as e:
            raise CheckpointError(f"cannot use checkpoint directory {self.directory}: "
                                  f"{_reason(e)}") from e

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def path(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    def _write_error(self, e: BaseException) -> CheckpointError:
        step = self._in_flight
        where = self.path(step) if step is not None else self.directory
        err = CheckpointError(f"cannot write checkpoint {where}: {_reason(e)}")
        self._failed = err
        return err

    def save(self, step: int, state: dict, config: dict[str, Any]) -> None:
        """Start saving ``state`` (host NumPy arrays) and ``config`` at ``step`` (asynchronous).

        Raises :class:`CheckpointError` if ``state`` holds a non-finite value, if its ``step``
        is not ``step``, or if this or an earlier (asynchronous) write failed."""
        if self._failed is not None:
            raise self._failed
        where = self.path(step)
        saved_step = int(np.asarray(state["step"]))
        if saved_step != step:
            raise CheckpointError(f"refusing to save {where}: the state is at step {saved_step}")
        sums = {"step": int(step), "leaves": leaf_checksums(state, check_finite=True,
                                                            where=where)}
        self._check_space(step, state)
        try:
            self.manager.save(
                step,
                args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                        config=ocp.args.JsonSave(config),
                                        checksums=ocp.args.JsonSave(sums)),
                force=True,
            )
        except Exception as e:  # an earlier asynchronous save may surface here
            raise self._write_error(e) from e
        self._in_flight = step

    def _check_space(self, step: int, state: dict) -> None:
        """Refuse a save that cannot fit: the uncompressed size of ``state`` (plus one more
        for a save still in flight, plus 1 MiB) against the free space of the directory.
        A write that fails half-way makes tensorstore print tracebacks from its threads that
        no Python hook can catch; checking first keeps the common disk-full case to one line."""
        need = sum(np.asarray(x).nbytes for x in jax.tree.leaves(state))
        need = need * (2 if self._in_flight is not None else 1) + (1 << 20)
        try:
            free = shutil.disk_usage(self.directory).free
        except OSError:
            return
        if free < need:
            code = errno_mod.ENOSPC
            err = CheckpointError(
                f"cannot write checkpoint {self.path(step)}: {os.strerror(code)} (errno {code}, "
                f"ENOSPC): it needs up to {need / 2**20:.1f} MiB, {free / 2**20:.1f} MiB free")
            self._failed = err
            raise err

    def read_config(self, step: int) -> dict[str, Any]:
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
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
            out = self.manager.restore(
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
        """Restore the state saved at ``step`` into the structure of ``target`` (NumPy arrays).

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
        abstract = jax.tree.map(lambda x: np.zeros(np.shape(x), np.asarray(x).dtype), target)
        try:
            out = self.manager.restore(
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
        for name, rec in sums.items():
            g = got[name]
            if (g["crc32"], g["dtype"], g["shape"]) != (rec["crc32"], rec["dtype"],
                                                       list(rec["shape"])):
                raise CheckpointError(
                    f"checkpoint {where} is corrupted: leaf {name} does not match its checksum "
                    f"(crc32 saved {rec['crc32']:#010x}, read {g['crc32']:#010x})")
        if int(np.asarray(state["step"])) != step:
            raise CheckpointError(f"checkpoint {where} holds the state of step "
                                  f"{int(np.asarray(state['step']))}, not {step}; refusing it")
        return state

    def wait(self) -> None:
        """Block until pending saves are written; raise :class:`CheckpointError` on failure."""
        if self._failed is not None:
            raise self._failed
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise self._write_error(e) from e

    def close(self) -> None:
        """Wait for pending saves and release orbax's threads. A write failure raises one
        :class:`CheckpointError` (once: not again after ``save``/``wait`` reported it)."""
        reported = self._failed is not None
        err: CheckpointError | None = None
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            err = self._write_error(e)
        try:
            self.manager.close()
        except Exception as e:
            err = err or self._write_error(e)
        if err is not None and not reported:
            raise err
