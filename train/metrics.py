"""Metrics output: a JSON-lines file, TensorBoard events, and the console (bar or log lines).

Only process 0 writes anything. ``metrics.jsonl`` gets one object per logged step
(``{"step", "loss", "lr", "grad_norm", "tokens_per_s", "time"}``, the loss at full float
precision) and one per evaluation (``{"step", "val_loss"}``); a resumed run appends to it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, TextIO

__all__ = ["Console", "MetricsWriter", "fmt_duration"]


class MetricsWriter:
    """Appends JSON lines to ``<dir>/metrics.jsonl`` and scalars to TensorBoard (``<dir>/tb``)."""

    def __init__(self, directory: str, tensorboard: bool = True, enabled: bool = True) -> None:
        self.directory = os.path.abspath(directory)
        self.path = os.path.join(self.directory, "metrics.jsonl")
        self.enabled = enabled
        self._f: TextIO | None = None
        self._tb: Any = None
        if not enabled:
            return
        os.makedirs(self.directory, exist_ok=True)
        self._f = open(self.path, "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(self.directory, "tb"))

    def write(self, step: int, **values: float) -> None:
        if not self.enabled or self._f is None:
            return
        rec = {"step": int(step), **{k: _json_float(v) for k, v in values.items()}}
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self._tb.add_scalar(f"train/{k}" if k != "val_loss" else "eval/loss", v, step)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def fmt_duration(s: float) -> str:
    s = max(0, round(s))
    if s >= 3600:
        return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


class Console:
    """Progress on the terminal: a one-line bar when ``stream`` is a TTY, else plain log lines.

    Every update shows the step, the loss and the learning rate used at that step."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True,
                 stream: TextIO | None = None, bar: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.enabled = enabled
        self.total = total
        self.start_step = start
        self.bar = self.stream.isatty() if bar is None else bar
        self.t0 = time.perf_counter()
        self._bar_shown = False

    def print(self, msg: str = "") -> None:
        if not self.enabled:
            return
        if self._bar_shown:
            self.stream.write("\r\033[K")
            self._bar_shown = False
        self.stream.write(msg + "\n")
        self.stream.flush()

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float,
               grad_norm: float | None = None) -> None:
        """Report optimizer step ``step`` (0-based; ``lr`` is the schedule at that step)."""
        if not self.enabled:
            return
        done = step + 1 - self.start_step
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - step - 1) if done > 0 else float("nan")
        eta_s = fmt_duration(eta) if math.isfinite(eta) else "?"
        stats = f"loss {loss:.4f} | lr {lr:.3e} | {tokens_per_s:,.0f} tok/s"
        if self.bar:
            width = 24
            filled = int(width * (step + 1) / max(self.total, 1))
            bar = "#" * filled + "-" * (width - filled)
            self.stream.write(f"\r\033[K[{bar}] {step + 1}/{self.total} | {stats} | "
                              f"{fmt_duration(elapsed)}<{eta_s}")
            self.stream.flush()
            self._bar_shown = True
        else:
            gn = f" | grad norm {grad_norm:.3f}" if grad_norm is not None else ""
            self.print(f"step {step:>6}/{self.total} | {stats}{gn} | eta {eta_s}")

    def close(self) -> None:
        if self.enabled and self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False
