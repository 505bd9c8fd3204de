"""Megatron-LM's learning rate (``OptimizerParamScheduler.get_lr``), written out in plain Python
from its formula, independently of :mod:`schedules.megatron`: the reference the tests compare
the product's schedule and the trainer's ``--lr-decay-style`` flags against."""

from __future__ import annotations

import math

__all__ = ["get_lr"]


def get_lr(n: int, *, init: float, mx: float, mn: float, W: int, D: int, style: str,
           wsd: int | None, wsd_style: str | None) -> float:
    """Megatron-LM's ``OptimizerParamScheduler.get_lr`` at ``num_steps = n`` (samples)."""
    if W > 0 and n <= W:
        return init + (mx - init) * n / W
    if style in ("constant", "none"):
        return mx
    if n > D:
        return mn
    if style == "inverse-square-root":
        return max(mn, mx * math.sqrt(max(W, 1)) / math.sqrt(max(n, 1)))
    ratio = (n - W) / (D - W)
    if style == "linear":
        coeff = 1 - ratio
    elif style == "cosine":
        coeff = 0.5 * (math.cos(math.pi * ratio) + 1)
    else:
        start = D - wsd
        if n <= start:
            coeff = 1.0
        else:
            r = (n - start) / wsd
            coeff = {"linear": 1 - r, "cosine": 0.5 * (math.cos(math.pi * r) + 1),
                     "exponential": 2 * 0.5 ** r - 1, "minus_sqrt": 1 - math.sqrt(r)}[wsd_style]
    return mn + coeff * (mx - mn)
