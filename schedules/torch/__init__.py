"""PyTorch-exact schedules: every scheduler of ``torch.optim.lr_scheduler`` (torch 2.13).

Each class takes torch's own arguments with the ``optimizer`` replaced by the
base learning rate ``lr`` (the optimizer's initial lr) and *is* a pure
:class:`~schedules.Schedule`: ``s(t)`` is the learning rate torch's optimizer
holds after ``t`` calls of ``scheduler.step()`` -- the lr used by optimizer
step ``t`` (0-based), which is optax's count convention::

    optax.adamw(learning_rate=StepLR(1e-3, step_size=30))

Several param groups: :func:`per_group` builds one schedule per group from torch's
per-group arguments (a list of ``lr``, ``lr_lambda`` lists, ``max_lr`` lists, ...):
``per_group(StepLR, [0.1, 0.01], step_size=2)``; a class itself takes one group's ``lr``.
Composites (:class:`SequentialLR`, :class:`ChainedScheduler`) take children built
here with the same ``lr``. ``ReduceLROnPlateau`` is an optax transformation
(:func:`reduce_on_plateau`), not a schedule: its lr depends on the metric.

Exactness: on the host (Python int steps) values equal torch's to 1e-12
relative (torch's in-place recurrences are replayed exactly, memoized); under
``jit``/``vmap`` closed forms are used (float32), float64 takes the closed form
where it is exact and the exact replay otherwise (see
:mod:`schedules.torch._recurrence` and ``docs/torch-compat.md``). No torch import.

The package reads beside ``torch/optim/lr_scheduler.py``: :mod:`._mirror` is torch's
recurrences line by line (the classes named as torch names them), :mod:`._closed` the
schedulers with their closed forms, :mod:`._composite` ``SequentialLR`` and
``ChainedScheduler``, :mod:`._plateau` ``ReduceLROnPlateau``, :mod:`._recurrence` the
exact-replay machinery, :mod:`._base` the base class and :func:`per_group`.

>>> from schedules import torch as T
>>> s = T.StepLR(0.1, step_size=2, gamma=0.5)
>>> [s(t) for t in range(5)]
[0.1, 0.1, 0.05, 0.05, 0.025]
"""

from __future__ import annotations

from ._base import Kind as Kind
from ._base import Mode as Mode
from ._base import TorchSchedule as TorchSchedule
from ._base import per_group
from ._closed import (
    ConstantLR,
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    CyclicLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    OneCycleLR,
    PolynomialLR,
    StepLR,
)
from ._closed import CyclicMomentum as CyclicMomentum
from ._closed import OneCycleMomentum as OneCycleMomentum
from ._composite import ChainedScheduler, SequentialLR
from ._facade import Scheduler
from ._plateau import PlateauState, ReduceLROnPlateau, reduce_on_plateau

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PlateauState",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "Scheduler",
    "SequentialLR",
    "StepLR",
    "per_group",
    "reduce_on_plateau",
]
