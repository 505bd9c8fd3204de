"""A line-by-line mirror of ``torch/optim/lr_scheduler.py`` (torch 2.13) for one param group.

Read it beside torch's file: each class here is torch's class of the same name, reduced to
one param group ``group`` (a dict: ``"lr"``, ``"initial_lr"``, and OneCycleLR's
``"max_lr"``/``"min_lr"``) and host float64 arithmetic, with the same operations in the
same order (``LRScheduler.__init__``/``_initial_step``/``step``/``_update_lr``, each
``get_lr`` and ``_get_closed_form_lr`` (here ``closed``), ``SequentialLR.__init__``/
``recursive_undo``/``step``, ``ChainedScheduler.step``, ``CosineAnnealingWarmRestarts.step``).
Hyperparameters are read from ``node``, the :mod:`schedules.torch` schedule mirrored.

:func:`replay` runs it: the exact values torch's optimizer holds after 0, 1, 2, ...
calls of ``scheduler.step()``. No torch import.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from typing import Any

from .._ops import PY

__all__ = ["LRScheduler", "build", "replay"]

Group = dict[str, float]


class LRScheduler:
    """``LRScheduler``: ``__init__``, ``_initial_step``, ``step``, ``_update_lr``."""

    has_closed = False  # whether torch defines ``_get_closed_form_lr``

    def __init__(self, group: Group, node: Any) -> None:
        self.node = node
        self.g = group
        group.setdefault("initial_lr", group["lr"])
        self.base = group["initial_lr"]  # base_lrs[0]
        self.last_epoch = -1
        self._is_initial = False
        self._initial_step()

    def _initial_step(self) -> None:
        self._step_count = 0
        self._is_initial = True
        try:
            self.step()
        finally:
            self._is_initial = False

    def step(self) -> None:
        self._step_count += 1
        self._update_lr(None)

    def _update_lr(self, epoch: int | None) -> None:
        if epoch is None:
            self.last_epoch += 1
            v = self.get_lr()
        else:
            self.last_epoch = epoch
            v = self.closed() if self.has_closed else self.get_lr()
        self.g["lr"] = v

    def get_lr(self) -> float:
        raise NotImplementedError(f"{type(self).__name__}.get_lr is not implemented in torch")

    def closed(self) -> float:
        raise NotImplementedError


class LambdaLR(LRScheduler):
    def get_lr(self) -> float:
        return self.base * self.node.lr_lambda(int(self.last_epoch))


class MultiplicativeLR(LRScheduler):
    def get_lr(self) -> float:
        if not self._is_initial:
            return self.g["lr"] * self.node.lr_lambda(int(self.last_epoch))
        return self.g["lr"]


class StepLR(LRScheduler):
    has_closed = True

    def get_lr(self) -> float:
        n = self.node
        if self.last_epoch == 0 or self.last_epoch % n.step_size != 0:
            return self.g["lr"]
        return self.g["lr"] * n.gamma

    def closed(self) -> float:
        return self.base * self.node.gamma ** (self.last_epoch // self.node.step_size)


class MultiStepLR(LRScheduler):
    has_closed = True

    def __init__(self, group: Group, node: Any) -> None:
        self.milestones = Counter(node.milestones)
        self._ordered = sorted(self.milestones.elements())
        super().__init__(group, node)

    def get_lr(self) -> float:
        if self.last_epoch not in self.milestones:
            return self.g["lr"]
        return self.g["lr"] * self.node.gamma ** self.milestones[self.last_epoch]

    def closed(self) -> float:
        return self.base * self.node.gamma ** bisect_right(self._ordered, self.last_epoch)


class ConstantLR(LRScheduler):
    has_closed = True

    def get_lr(self) -> float:
        n = self.node
        if self.last_epoch == 0:
            return self.g["lr"] * n.factor
        if self.last_epoch != n.total_iters:
            return self.g["lr"]
        return self.g["lr"] * (1.0 / n.factor)

    def closed(self) -> float:
        n = self.node
        return self.base * (n.factor + (self.last_epoch >= n.total_iters) * (1 - n.factor))


class LinearLR(LRScheduler):
    has_closed = True

    def get_lr(self) -> float:
        s, e, T = self.node.start_factor, self.node.end_factor, self.node.total_iters
        if self.last_epoch == 0:
            return self.g["lr"] * s
        if self._is_initial or self.last_epoch > T:
            return self.g["lr"]
        return self.g["lr"] * (1.0 + (e - s) / (T * s + (self.last_epoch - 1) * (e - s)))

    def closed(self) -> float:
        s, e, T = self.node.start_factor, self.node.end_factor, self.node.total_iters
        return self.base * (s + (e - s) * min(T, self.last_epoch) / T)


class ExponentialLR(LRScheduler):
    has_closed = True

    def get_lr(self) -> float:
        if self._is_initial:
            return self.g["lr"]
        return self.g["lr"] * self.node.gamma

    def closed(self) -> float:
        return self.base * self.node.gamma**self.last_epoch


class PolynomialLR(LRScheduler):
    has_closed = True

    def get_lr(self) -> float:
        T = self.node.total_iters
        if self._is_initial or self.last_epoch > T:
            return self.g["lr"]
        decay = ((1.0 - self.last_epoch / T) / (1.0 - (self.last_epoch - 1) / T)) ** self.node.power
        return self.g["lr"] * decay

    def closed(self) -> float:
        T = self.node.total_iters
        return self.base * (1.0 - min(T, self.last_epoch) / T) ** self.node.power


class CosineAnnealingLR(LRScheduler):
    has_closed = True

    def get_lr(self) -> float:
        T, eta, k = self.node.T_max, self.node.eta_min, self.last_epoch
        if self._is_initial:
            return self.g["lr"]
        if self._step_count == 1 and k > 0:
            return eta + (self.base - eta) * (1 + math.cos(k * math.pi / T)) / 2
        if (k - 1 - T) % (2 * T) == 0:
            return self.g["lr"] + (self.base - eta) * (1 - math.cos(math.pi / T)) / 2
        return (1 + math.cos(math.pi * k / T)) / (1 + math.cos(math.pi * (k - 1) / T)) * (
            self.g["lr"] - eta
        ) + eta

    def closed(self) -> float:
        T, eta = self.node.T_max, self.node.eta_min
        return eta + (self.base - eta) * (1 + math.cos(math.pi * self.last_epoch / T)) / 2


class CosineAnnealingWarmRestarts(LRScheduler):
    def __init__(self, group: Group, node: Any) -> None:
        self.T_i = node.T_0
        self.T_cur = -1
        super().__init__(group, node)

    def get_lr(self) -> float:
        eta = self.node.eta_min
        return eta + (self.base - eta) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2

    def step(self) -> None:  # torch's override, epoch=None
        if self.last_epoch < 0:
            self.T_i = self.node.T_0
            self.T_cur = 0
            epoch = 0
        else:
            epoch = self.last_epoch + 1
            self.T_cur = self.T_cur + 1
            if self.T_cur >= self.T_i:
                self.T_cur = self.T_cur % self.T_i
                self.T_i = self.T_i * self.node.T_mult
        self.last_epoch = epoch
        self.g["lr"] = self.get_lr()


class CyclicLR(LRScheduler):
    """torch sets the group's lr to ``base_lr`` before ``LRScheduler.__init__`` and
    ``base_lrs`` after it (so the initial step still used ``initial_lr``)."""

    def __init__(self, group: Group, node: Any) -> None:
        group["lr"] = node.base_lr
        super().__init__(group, node)
        self.construct_base = self.base
        self.base = node.base_lr

    def get_lr(self) -> float:
        sf, scale = self.node._phase(float(self.last_epoch), PY)  # torch's operation order
        return self.base + (self.node.max_lr - self.base) * sf * scale


class OneCycleLR(LRScheduler):
    def __init__(self, group: Group, node: Any) -> None:
        grp = node._group()
        for key in ("initial_lr", "max_lr", "min_lr"):
            group[key] = grp[key]
        super().__init__(group, node)

    def get_lr(self) -> float:
        n = self.node
        if self.last_epoch > n.total_steps:
            raise ValueError(
                f"Tried to step {self.last_epoch} times. The specified "
                f"number of total steps is {n.total_steps}"
            )
        return n._value(float(self.last_epoch), PY, self.g)  # torch's phase loop


class SequentialLR(LRScheduler):
    """``SequentialLR.__init__``/``recursive_undo``/``step``."""

    def __init__(self, group: Group, node: Any) -> None:
        self._schedulers = [build(c, group) for c in node.schedulers]
        self._milestones = list(node.milestones)
        self.last_epoch = 0
        self.g = group
        self._is_initial = False
        group["lr"] = group["initial_lr"]
        self.recursive_undo()
        idx = bisect_right(self._milestones, 0)
        self._schedulers[idx]._initial_step()

    def recursive_undo(self, sched: Any = None) -> None:
        s = self if sched is None else sched
        if hasattr(s, "_schedulers"):
            for c in s._schedulers:
                self.recursive_undo(c)
        elif hasattr(s, "last_epoch"):
            s.last_epoch -= 1

    def step(self) -> None:
        self.last_epoch += 1
        idx = bisect_right(self._milestones, self.last_epoch)
        sch = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == self.last_epoch:
            sch._update_lr(0)
        else:
            sch.step()


class ChainedScheduler(LRScheduler):
    """``ChainedScheduler`` (it never calls ``LRScheduler.__init__``)."""

    def __init__(self, group: Group, node: Any) -> None:
        self._schedulers = [build(c, group) for c in node.schedulers]
        self.g = group
        self._is_initial = False

    def step(self) -> None:
        for s in self._schedulers:
            s.step()


_MIRRORS: dict[str, type[LRScheduler]] = {c.__name__: c for c in LRScheduler.__subclasses__()}


def build(node: Any, group: Group) -> LRScheduler:
    """torch's scheduler of ``node``'s class, constructed over ``group`` (its initial step
    runs, as in torch's constructor)."""
    return _MIRRORS[type(node).__name__](group, node)


def replay(node: Any) -> Iterator[float]:
    """The lr torch's optimizer holds after 0, 1, 2, ... ``step()`` calls (infinite); where
    torch raises, ``ValueError`` naming the step."""
    g: Group = {"lr": float(node.lr)}
    name = type(node).__name__
    try:
        sim = build(node, g)
    except (ZeroDivisionError, NotImplementedError, OverflowError, ValueError) as e:
        raise ValueError(f"{name}: torch raises {type(e).__name__} at construction: {e}") from None
    yield float(g["lr"])
    k = 0
    while True:
        k += 1
        try:
            sim.step()
        except (ZeroDivisionError, NotImplementedError, OverflowError, ValueError) as e:
            raise ValueError(f"{name}: torch raises {type(e).__name__} at step {k}: {e}") from None
        yield float(g["lr"])
