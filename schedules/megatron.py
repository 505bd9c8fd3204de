"""Megatron-LM's learning-rate schedule (``megatron.core.optimizer_param_scheduler``).

:class:`OptimizerParamScheduler` takes Megatron's own arguments (the optimizer replaced by the
learning rates) and *is* a pure :class:`~schedules.Schedule`. Megatron's scheduler counts
**samples**: after each update it calls ``step(increment=global_batch_size)``, and its warmup
and decay lengths are ``iters * global_batch_size``. ``s(t)`` is the lr Megatron's optimizer
uses for update ``t`` (0-based), i.e. its ``get_lr()`` at ``num_steps = t * increment``; pass
``increment`` = the global batch size (in samples) and the lengths in samples, as Megatron does,
or ``increment=1`` and the lengths in iterations (the same rationals: equal up to rounding).

>>> from schedules.megatron import OptimizerParamScheduler
>>> s = OptimizerParamScheduler(0.0, 1e-3, 1e-4, lr_warmup_steps=10, lr_decay_steps=110,
...                             lr_decay_style="linear")
>>> s(0), s(5), s(10), round(s(60), 12), s(110), s(500)
(0.0, 0.0005, 0.001, 0.00055, 0.0001, 0.0001)
"""

from __future__ import annotations

from typing import Any

from ._core import Schedule
from ._numerics import decay_shape
from ._ops import Ops

__all__ = ["DECAY_STYLES", "WSD_DECAY_STYLES", "OptimizerParamScheduler"]

#: Megatron's ``--lr-decay-style`` values (``none`` is treated as ``constant``).
DECAY_STYLES = ("none", "constant", "linear", "cosine", "inverse-square-root", "WSD")
#: Megatron's ``--lr-wsd-decay-style`` values.
WSD_DECAY_STYLES = ("linear", "cosine", "exponential", "minus_sqrt")


class OptimizerParamScheduler(
    Schedule, name="megatron_lr", label="OptimizerParamScheduler"
):
    """Megatron-LM's ``OptimizerParamScheduler.get_lr`` as a schedule (its learning rate only;
    the weight-decay schedule is not part of it).

    With ``n = t * increment`` (Megatron's ``num_steps``), ``W = lr_warmup_steps``,
    ``D = lr_decay_steps``, ``max = max_lr``, ``min = min_lr``, ``init = init_lr``::

        if W > 0 and n <= W:                 lr = init + (max - init) * n / W
        elif style in (constant, none):      lr = max
        elif n > D:                          lr = min
        elif style == inverse-square-root:   lr = max(min, max * sqrt(max(W, 1)) / sqrt(max(n, 1)))
        else:
            ratio = (n - W) / (D - W)
            linear: coeff = 1 - ratio;  cosine: coeff = 0.5 * (cos(pi * ratio) + 1)
            WSD: A = D - wsd_decay_steps; coeff = 1 if n <= A,
                 else with r = (n - A) / wsd_decay_steps: linear 1 - r,
                 cosine 0.5 * (cos(pi r) + 1), exponential 2 * 0.5**r - 1, minus_sqrt 1 - sqrt(r)
            lr = min + coeff * (max - min)

    Megatron's checks are kept: ``0 <= min_lr <= max_lr``, ``D > 0``, ``W < D``, and WSD needs
    ``wsd_decay_steps > 0`` and a ``lr_wsd_decay_style``.

    >>> s = OptimizerParamScheduler(0.0, 1.0, 0.0, lr_warmup_steps=0, lr_decay_steps=100,
    ...                             lr_decay_style="WSD", wsd_decay_steps=20,
    ...                             lr_wsd_decay_style="linear")
    >>> s(0), s(80), s(90), s(100)
    (1.0, 1.0, 0.5, 0.0)
    """

    _static = frozenset({"lr_warmup_steps", "lr_decay_steps", "lr_decay_style",
                         "wsd_decay_steps", "lr_wsd_decay_style", "increment"})

    def __init__(
        self,
        init_lr: float,
        max_lr: float,
        min_lr: float,
        lr_warmup_steps: int,
        lr_decay_steps: int,
        lr_decay_style: str,
        wsd_decay_steps: int | None = None,
        lr_wsd_decay_style: str | None = None,
        increment: int = 1,
    ) -> None:
        check = self._check
        mn = check.float("min_lr", min_lr, ge=0)
        mx = check.float("max_lr", max_lr, ge=0)
        if mx < mn:
            raise check.fail(
                "max_lr", max_lr, f"must be >= min_lr={min_lr!r} (Megatron asserts it)"
            )
        W = check.int("lr_warmup_steps", lr_warmup_steps, ge=0)
        D = check.int("lr_decay_steps", lr_decay_steps, gt=0)
        if W >= D:
            raise check.fail(
                "lr_warmup_steps", W, f"must be < lr_decay_steps={D} (Megatron asserts it)"
            )
        style = check.choice("lr_decay_style", lr_decay_style, DECAY_STYLES)
        if style == "WSD":
            wsd_decay_steps = check.int("wsd_decay_steps", wsd_decay_steps, gt=0)
            lr_wsd_decay_style = check.choice(
                "lr_wsd_decay_style", lr_wsd_decay_style, WSD_DECAY_STYLES
            )
        else:
            if wsd_decay_steps is not None:
                wsd_decay_steps = check.int("wsd_decay_steps", wsd_decay_steps, gt=0)
            if lr_wsd_decay_style is not None:
                check.choice("lr_wsd_decay_style", lr_wsd_decay_style, WSD_DECAY_STYLES)
        self._set(
            init_lr=check.float("init_lr", init_lr, ge=0),
            max_lr=mx,
            min_lr=mn,
            lr_warmup_steps=W,
            lr_decay_steps=D,
            lr_decay_style=style,
            wsd_decay_steps=wsd_decay_steps,
            lr_wsd_decay_style=lr_wsd_decay_style,
            increment=check.int("increment", increment, gt=0),
        )

    def _host_capable(self) -> bool:
        return True

    def _eval(self, t: Any, ops: Ops) -> Any:
        """Megatron's ``get_lr`` written once: on the host (``num_steps`` a Python int) its
        operations in its order, so its values are Megatron's bit for bit; on arrays the same
        closed form, the branches selected by ``where``."""
        W, D, style = self.lr_warmup_steps, self.lr_decay_steps, self.lr_decay_style
        mx, mn, init = self.max_lr, self.min_lr, self.init_lr
        if ops.host:
            n = ops.floor(t) * self.increment if t > 0 else 0
        else:
            n = ops.floor(ops.maximum(t, 0.0)) * self.increment
        # past lr_decay_steps every style holds (max_lr or min_lr): n stops at D + 1 (finite)
        n = ops.minimum(n, D + 1)
        warm = init + ops.div((mx - init) * n, max(W, 1))
        if style in ("constant", "none"):
            after: Any = mx + 0.0 * n
        elif style == "inverse-square-root":
            v = mx * max(W, 1) ** 0.5 / ops.pow(ops.maximum(n, 1), 0.5)
            after = ops.where(n > D, mn, ops.maximum(mn, v))
        else:
            if style == "WSD":
                A = D - self.wsd_decay_steps
                r = ops.div(ops.maximum(n - A, 0), self.wsd_decay_steps)
                coeff = ops.where(n <= A, 1.0, decay_shape(self.lr_wsd_decay_style, r, ops))
            else:
                coeff = decay_shape(style, ops.div(n - W, D - W), ops)
            # float32 rounding of cos/pow can leave coeff a few ulps below 0 at the end of the
            # decay, where Megatron's float64 value is exactly 0: never below min_lr
            after = ops.where(n > D, mn, mn + ops.maximum(coeff, 0.0) * (mx - mn))
        return ops.where(n <= W, warm, after) if W > 0 else after
