"""Metrics output: a JSON-lines file, TensorBoard events, and the console (bar or log lines).

Only process 0 writes anything. ``metrics.jsonl`` gets one object per logged step
(``{"step", "loss", "lr", "grad_norm", "tokens_per_s", "time"}``, the loss at full float
precision; ``tokens_per_s`` is ``null`` until a steady-state step has been timed, i.e. for
the compiling first step) and one per evaluation (``{"step", "val_loss"}``); a resumed run
appends to it. Non-finite numbers are written as ``null`` (strict JSON).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

__all__ = ["Console", "MetricsWriter", "fmt_duration", "iter_records", "param_summary",
           "read_metrics", "settings_text"]


class MetricsWriter:
    """Appends JSON lines to ``<dir>/metrics.jsonl`` and scalars to TensorBoard (``<dir>/tb``).

    ``sinks``: more receivers of every written record ``(step, values)`` (the experiment
    trackers, ``train.run.tracking``), so that whatever reaches metrics.jsonl reaches them."""

    def __init__(self, directory: str, tensorboard: bool = True, enabled: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, "metrics.jsonl")
        self.enabled = enabled
        self.sinks: list[Callable[[int, dict[str, Any]], None]] = []
        self._f: TextIO | None = None
        self._tb: Any = None
        if not enabled:
            return
        os.makedirs(self.directory, exist_ok=True)
        self._f = open(self.path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.directory, "tb"))

    def write(self, step: int, **values: float | None) -> None:
        """One JSON line; ``None`` and non-finite floats become ``null``."""
        if not self.enabled or self._f is None:
            return
        rec = {"step": int(step), **{k: _json_float(v) for k, v in values.items()}}
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and v is not None and math.isfinite(v):
                    tag = ("eval/loss" + k[len("val_loss"):] if k.partition("/")[0] == "val_loss"
                           else f"train/{k}")
                    self._tb.add_scalar(tag, v, step)
        for sink in self.sinks:
            sink(int(step), values)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        """A text entry (the config, the schedule, the sample) for TensorBoard, if it is on."""
        if self._tb is not None:
            self._tb.add_text(tag, text, step)

    def curve(self, tag: str, rows: list[tuple[int, float]]) -> None:
        """A whole curve ``[(step, value)]`` (the lr schedule) as TensorBoard scalars."""
        if self._tb is not None:
            for t, v in rows:
                self._tb.add_scalar(tag, v, t)
            self._tb.flush()

    @property
    def tensorboard(self) -> bool:
        return self._tb is not None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN/inf: null (docs/training.md, "Metrics")
    return v


def fmt_duration(s: float) -> str:
    s = max(0, round(s))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Console:
    """Progress on the terminal: a one-line bar when ``stream`` is a TTY, else plain log lines.

    Every update shows the step (1-based: ``step k/N`` = ``k`` updates done, in the bar and
    the log lines alike), the loss and the learning rate used at that step. The ETA comes
    from steady-state steps only: the loop calls :meth:`steady` once the first (compiling)
    step is done, and the time per step is measured from there."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.total = total
        self.start_step = start
        self.bar = self.stream.isatty() if bar is None else bar
        self.t0 = time.perf_counter()
        self._steady: tuple[int, float] | None = None  # (updates done, time) at steady state
        self._bar_shown = False

    def print(self, msg: str = "") -> None:
        if not self.enabled:
            return
        if self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(msg + "\n")
        self.stream.flush()

    def steady(self, done: int, t: float | None = None) -> None:
        """Mark that ``done`` updates are complete and compilation is over (at time ``t``)."""
        self._steady = (done, time.perf_counter() if t is None else t)

    def eta(self, done: int, now: float | None = None) -> float:
        """Seconds left after ``done`` updates, from the steady-state pace (NaN before)."""
        if self._steady is None:
            return float("nan")
        d0, t0 = self._steady
        if done <= d0:
            return float("nan")
        now = time.perf_counter() if now is None else now
        return (now - t0) / (done - d0) * max(self.total - done, 0)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float | None,
               grad_norm: float | None = None, mfu: float | None = None) -> None:
        """Report optimizer step ``step`` (0-based; ``lr`` is the schedule at that step),
        shown as ``step + 1`` of ``total``."""
        if not self.enabled:
            return
        done = step + 1
        elapsed = time.perf_counter() - self.t0
        eta = self.eta(done)
        eta_s = fmt_duration(eta) if math.isfinite(eta) else "?"
        tps = "? tok/s" if tokens_per_s is None else f"{tokens_per_s:,.0f} tok/s"
        stats = f"loss {loss:.4f} | lr {lr:.3e} | {tps}"
        if mfu is not None and math.isfinite(mfu):
            stats += f" | mfu {100 * mfu:.1f}%"
        if self.bar:
            width = 24
            filled = int(width * done / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r\033[K[{bar}] {done}/{self.total} | {stats} | "
                              f"{fmt_duration(elapsed)}<{eta_s}")
            self.stream.flush()
            self._bar_shown = True
        else:
            gn = f" | grad norm {grad_norm:.3f}" if grad_norm is not None else ""
            self.print(f"step {done:>{len(str(self.total))}}/{self.total} | {stats}{gn} | "
                       f"eta {eta_s}")

    def close(self) -> None:
        if self.enabled and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


def param_summary(rows: list[tuple[str, int, bool, float | str]]) -> str:
    """A few lines on the parameters, grouped by layer type: ``rows`` are ``(path, count,
    weight decay, lr multiplier or the ``--group`` giving its own schedule)`` per tensor; the
    layer index of a path (``h_3``, ``layers_3``) is replaced by ``*`` and paths are grouped
    by their first two components inside repeated layers, by their first one elsewhere."""
    groups: dict[str, list] = {}
    for path, n, decay, mult in rows:
        parts = path.split("/")
        layered = bool(re.fullmatch(r".*?_?\d+", parts[0]))
        key = "/".join([re.sub(r"\d+$", "*", parts[0]), *parts[1:2]] if layered else parts[:1])
        g = groups.setdefault(key, [0, 0, 0, set(), set()])
        g[0] += 1
        g[1] += n
        g[2] += n if decay else 0
        g[3].add(mult)
        g[4].add(parts[0])
    total = sum(r[1] for r in rows)
    dec = sum(r[1] for r in rows if r[2])
    w = max(len(k) for k in groups)
    lines = [f"parameters: {total:,} in {len(rows)} tensors; weight decay on {dec:,}, none on "
             f"{total - dec:,} (--verbose lists every tensor)"]
    for key, (nt, n, d, mults, layers) in sorted(groups.items()):
        nums = sorted(m for m in mults if not isinstance(m, str))
        own = sorted(m for m in mults if isinstance(m, str))  # a --group's own schedule
        lr = ", ".join(([f"x {','.join(f'{m:g}' for m in nums)}"] if nums else []) + own)
        lay = f" x {len(layers)} layers" if len(layers) > 1 else ""
        lines.append(f"  {key:<{w}} {n:>12,} params{lay:<12} {nt:>3} tensors, decay "
                     f"{'on ' + format(d, ',') if d else 'off'}, lr {lr}")
    return "\n".join(lines)


def iter_records(path: str) -> Iterator[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl file, in file order, one per line that holds one.

    Tolerant, because the file is read while (or after) a run that may be killed mid-write
    appends to it: a blank line, a line that is not JSON (the torn last line of a killed run,
    a byte sequence cut inside a character) or a JSON value that is not an object is skipped,
    never an error. Opening the file is not tolerated: ``OSError`` reaches the caller at the
    first ``next``. What a record must hold (``step``, ``loss``, ``member``...) is the
    caller's to check.

    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "metrics.jsonl")
    >>> _ = open(p, "w").write('{"step": 0, "loss": 2.5}\\n\\n[1]\\n{"step": 1, "lo')
    >>> list(iter_records(p))
    [{'step': 0, 'loss': 2.5}]
    """
    # bytes: a torn multi-byte character fails in json.loads (a ValueError), not in the
    # file's text decoding, which would end the whole read
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # blank, or a line cut short by a killed run
            if isinstance(rec, dict):
                yield rec


def read_metrics(path: str) -> tuple[dict[int, dict[str, Any]], dict[int, float]]:
    """(train records by step, validation loss by step) from a metrics.jsonl file."""
    train: dict[int, dict[str, Any]] = {}
    val: dict[int, float] = {}
    for rec in iter_records(path):
        if "member" in rec or rec.get("step") is None:
            continue  # a population's rows (read by train.run.ranking)
        if "val_loss" in rec:  # null (a non-finite value) reads as NaN
            val[int(rec["step"])] = _nan_if_none(rec["val_loss"])
        elif "loss" in rec:
            train[int(rec["step"])] = rec
    return train, val


def _nan_if_none(v: Any) -> float:
    return math.nan if v is None else float(v)


def settings_text(m: Mapping[str, Any]) -> str:
    """A member's swept settings as ``lr=0.001 warmup_steps=50``."""
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in m.items())
