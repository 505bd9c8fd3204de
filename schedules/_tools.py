"""Looking at schedules: ``values`` (a NumPy curve) and ``plot`` (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._core import Schedule, as_schedule
from ._validate import check_int

__all__ = ["MAX_STEPS", "plot", "values"]

#: the longest curve :func:`values` computes (800 MB of float64).
MAX_STEPS = 10**8


def _steps(steps: int | Sequence[int] | np.ndarray) -> np.ndarray:
    if isinstance(steps, (int, np.integer)) and not isinstance(steps, bool):
        n = check_int("values", "steps", steps, gt=0)
        if n > MAX_STEPS:
            raise ValueError(
                f"values: steps={steps!r} must be at most {MAX_STEPS:,} (one float64 per step)"
            )
        return np.arange(n, dtype=np.float64)
    try:
        arr = np.asarray(steps, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        arr = np.zeros((0,))
    if arr.ndim != 1 or not 0 < arr.size <= MAX_STEPS or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"values: steps={steps!r} must be a positive int or a 1-D array of finite steps"
        )
    return arr


def values(schedule: Schedule | float, steps: int | Sequence[int] | np.ndarray) -> np.ndarray:
    """The curve ``[schedule(t) for t in steps]`` as a float64 NumPy array.

    ``steps`` is a count ``n`` (meaning ``0 .. n - 1``) or explicit steps.

    >>> import schedules as S
    >>> values(S.linear(0.0, 1.0, 4), 5).tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    return np.asarray(as_schedule(schedule)(_steps(steps)), dtype=np.float64)


def plot(
    *schedules: Schedule,
    steps: int | Sequence[int] | np.ndarray = 1000,
    labels: Sequence[str] | None = None,
    ax: Any = None,
    logy: bool = False,
    title: str | None = None,
) -> Any:
    """Plot schedules against the step; returns the matplotlib ``Figure``.

    Needs matplotlib (``pip install 'schedax[plot]'``).

    >>> import schedules as S
    >>> fig = S.plot(S.cosine(1.0, 0.0, 100), steps=100)  # doctest: +SKIP
    """
    try:
        import matplotlib

        if ax is None:
            matplotlib.use(matplotlib.get_backend())
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "schedules.plot needs matplotlib: pip install 'schedax[plot]' (or matplotlib)"
        ) from None
    if not schedules:
        raise ValueError("plot: give at least one schedule")
    if labels is not None and len(labels) != len(schedules):
        raise ValueError(f"plot: labels has {len(labels)} entries for {len(schedules)} schedules")
    xs = _steps(steps)
    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    for i, s in enumerate(schedules):
        label = labels[i] if labels is not None else _short(repr(s))
        ax.plot(xs, values(s, xs), label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
