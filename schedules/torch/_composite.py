"""``SequentialLR`` and ``ChainedScheduler``: composites of ``schedules.torch`` schedulers
built over the same lr (one optimizer), with the closed forms and exact host replays that
their children's allow."""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .._ops import Ops
from .._validate import FLOAT32_MAX, fail
from ._base import (
    Kind,
    Mode,
    TorchSchedule,
    _check_lr_list,
    _check_schedulers_list,
    _fold,
    _horizon,
    _is_list,
    _lr,
    _per_group_hint,
)
from ._plateau import is_plateau
from ._recurrence import Chain, NoClosedForm


def _group_children(where: str, schedulers: Any, i: int, n: int) -> list[Any]:
    """Group ``i`` of each child (:func:`per_group`: each child is a list of ``n``
    schedulers, one per group)."""
    _check_schedulers_list(where, schedulers)
    for j, s in enumerate(schedulers):
        if not _is_list(s):
            rule = "must be a list of schedulers, one per group (the composite has a list of lrs)"
            raise fail(where, f"schedulers[{j}]", s, rule)
        if len(s) != n:
            raise fail(where, f"schedulers[{j}]", s, f"must have {n} entries (one per group)")
    return [s[i] for s in schedulers]


def _children(where: str, schedulers: Any, lr: Any) -> tuple[TorchSchedule, ...]:
    _check_schedulers_list(where, schedulers)
    out = []
    for i, s in enumerate(schedulers):
        if is_plateau(s):
            raise fail(where, f"schedulers[{i}]", s, "cannot be ReduceLROnPlateau (as in torch)")
        if _is_list(s):
            raise _per_group_hint(where, f"schedulers[{i}]", s)
        if not isinstance(s, TorchSchedule):
            raise fail(
                where,
                f"schedulers[{i}]",
                s,
                "must be a schedules.torch scheduler built with the same lr",
            )
        if lr is not None and not (s.lr == lr):
            raise fail(
                where,
                f"schedulers[{i}].lr",
                s.lr,
                f"must equal the composite's lr={lr!r} (one optimizer)",
            )
        out.append(s)
    return tuple(out)


_UNSET = object()


class _Composite(TorchSchedule):
    """A scheduler of ``schedulers`` (children over the same lr)."""

    schedulers: tuple[TorchSchedule, ...]

    def _concrete(self) -> bool:
        return all(c._host_ok() for c in self.schedulers) and self._host_ok()

    def _closed_exact(self) -> bool:
        return all(c._closed_exact() for c in self.schedulers)

    @classmethod
    def _group_args(cls, a: dict[str, Any], i: int, n: int) -> dict[str, Any]:
        out = super()._group_args(a, i, n)
        out["schedulers"] = _group_children(cls._check.where, a["schedulers"], i, n)
        return out


class SequentialLR(_Composite, name="SequentialLR"):
    """Run ``schedulers[i]`` from ``milestones[i - 1]`` on (torch's ``SequentialLR``).

    As torch: the lr is reset to the initial lr at construction and the first
    scheduler re-runs its initial step; at a milestone the next scheduler
    restarts through its closed form (``_get_closed_form_lr``) at its step 0
    (schedulers without one -- ``MultiplicativeLR`` -- carry on from the
    current lr); the previous one is cut off.

    >>> from schedules import torch as T
    >>> s = T.SequentialLR(1.0, [T.LinearLR(1.0, 0.5, total_iters=2),
    ...                          T.ExponentialLR(1.0, gamma=0.5)], milestones=[3])
    >>> [s(t) for t in range(6)]
    [0.5, 0.75, 1.0, 1.0, 0.5, 0.25]
    """

    _static = frozenset({"milestones", "horizon"})
    kind = Kind.NONE

    def __init__(
        self,
        lr: float,
        schedulers: Sequence[TorchSchedule],
        milestones: Sequence[int],
        horizon: int | None = None,
    ) -> None:
        check = self._check
        lr = _lr(check, lr)
        ch = _children(check.where, schedulers, lr)
        if not _is_list(milestones):
            raise check.fail("milestones", milestones, "must be a list of ints")
        ms = tuple(check.int(f"milestones[{i}]", m) for i, m in enumerate(milestones))
        if len(ms) != len(ch) - 1:
            raise check.fail(
                "milestones",
                milestones,
                f"must have len(schedulers) - 1 = {len(ch) - 1} entries (torch raises)",
            )
        self._set(lr=lr, schedulers=ch, milestones=ms, horizon=_horizon(check, horizon))
        self._check_constructs()

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        if mode is not Mode.CONSTRUCT:
            raise NoClosedForm
        ms = self.milestones
        if any(b > a for a, b in zip(ms[1:], ms)) or any(
            c.kind is Kind.NONE for c in self.schedulers
        ):
            raise NoClosedForm
        meta = self._meta()
        i0 = bisect_right(list(ms), 0)
        out: Any = None
        for i in range(i0, len(self.schedulers)):
            c, sim = self.schedulers[i], meta.sims[i]
            if i == i0:
                v = c._cf(k, ops, meta.g["initial_lr"], sim.base, Mode.FRESH, meta.g)
                out = v
            else:
                v = c._cf(k - ms[i - 1], ops, sim.base, sim.base, Mode.RESTART, meta.g)
                if ops.host:
                    out = v if k >= ms[i - 1] else out
                else:
                    out = ops.where(k >= ms[i - 1], v, out)
        return out

    def _fast_host(self, k: int) -> float | None:
        """The child running at ``k``, from where it (re)started: at step 0 (the replay's
        exact value) or at its milestone (torch's ``_update_lr(0)``: its closed form at 0,
        whatever came before), then its own steps (see :meth:`TorchSchedule._segment`)."""
        ms = self.milestones
        if any(b < a for a, b in itertools.pairwise(ms)):
            return None
        i = bisect_right(list(ms), k)
        cache = self.__dict__.get("_segs")
        if cache is None:
            cache = {}
            object.__setattr__(self, "_segs", cache)
        if i not in cache:
            cache[i] = self._make_segment(i)
        seg = cache[i]
        if seg is None:
            return None
        v = seg(k if i == bisect_right(list(ms), 0) else k - ms[i - 1])
        if v is None:  # beyond one query's budget: the closed form (docs/torch-compat.md)
            return self._closed_or_none(k)
        return v

    def _build_int_fast(self) -> Callable[[int], float | None] | None:
        """:meth:`_fast_host` with its checks done once: the milestones' order, the segment
        cache and the float32 range check of :meth:`TorchSchedule._eval` per value."""
        ms = list(self.milestones)
        if any(b < a for a, b in itertools.pairwise(ms)):
            return None
        first = bisect_right(ms, 0)
        segs = self.__dict__.get("_segs")
        if segs is None:
            segs = {}
            object.__setattr__(self, "_segs", segs)
        make, top = self._make_segment, FLOAT32_MAX

        def fast(k: int) -> float | None:
            if k < 0:
                return None
            i = bisect_right(ms, k)
            seg = segs.get(i, _UNSET)
            if seg is _UNSET:
                seg = segs[i] = make(i)
            if seg is None:
                return None
            v = seg(k if i == first else k - ms[i - 1])
            if v is None or not -top <= v <= top:
                return None  # far out, or a refusal: the full path answers (and raises)
            return v

        return fast

    def _make_segment(self, i: int) -> Callable[[int], float | None] | None:
        child = self.schedulers[i]
        if child.kind not in (Kind.MULT, Kind.COS):
            return None
        sim = self._meta().sims[i]
        if i == bisect_right(list(self.milestones), 0):
            v0 = self._replay(0)
        else:
            if not getattr(sim, "has_closed", False):
                return None
            saved = sim.last_epoch
            try:
                sim.last_epoch = 0
                v0 = float(sim.closed())
            except (ArithmeticError, ValueError):
                return None  # torch raises at the milestone: the replay reports it
            finally:
                sim.last_epoch = saved
        return child._segment(v0, sim.base)


class ChainedScheduler(_Composite, name="ChainedScheduler"):
    """Step every scheduler in order, each over the running lr (``ChainedScheduler``).

    Not a product of closed forms: order matters, and a scheduler that sets the
    lr absolutely (``LambdaLR``, ``CyclicLR``, ``OneCycleLR``,
    ``CosineAnnealingWarmRestarts``) overrides the ones before it.

    >>> from schedules import torch as T
    >>> s = T.ChainedScheduler([T.ConstantLR(1.0, factor=0.5, total_iters=2),
    ...                         T.ExponentialLR(1.0, gamma=0.5)])
    >>> [s(t) for t in range(4)]
    [0.5, 0.25, 0.25, 0.125]
    """

    kind = Kind.NONE

    def __init__(
        self,
        schedulers: Sequence[TorchSchedule],
        lr: float | None = None,
        horizon: int | None = None,
    ) -> None:
        check = self._check
        ch = _children(check.where, schedulers, None)
        lr = ch[0].lr if lr is None else _lr(check, lr)  # torch: the children's optimizer
        self._set(
            schedulers=_children(check.where, schedulers, lr),
            lr=lr,
            horizon=_horizon(check, horizon),
        )
        self._check_constructs()

    @classmethod
    def _n_groups(cls, a: dict[str, Any]) -> int | None:
        if _is_list(a.get("lr")):
            _check_lr_list(cls._check.where, a["lr"])
            return len(a["lr"])
        ss = a.get("schedulers")
        if _is_list(ss) and ss and _is_list(ss[0]):
            if len(ss[0]) < 1:
                raise fail(
                    cls._check.where,
                    "schedulers[0]",
                    ss[0],
                    "must not be empty (one scheduler per param group)",
                )
            return len(ss[0])
        return None

    def _cf(self, k: Any, ops: Ops, start: Any, base: Any, mode: Mode, g: Any = None) -> Any:
        if mode is not Mode.CONSTRUCT:
            raise NoClosedForm
        kinds = [c.kind for c in self.schedulers]
        last_abs = max((i for i, kd in enumerate(kinds) if kd is Kind.ABS), default=None)
        tail = kinds[(last_abs + 1) if last_abs is not None else 0 :]
        if any(kd is not Kind.MULT for kd in tail):
            raise NoClosedForm
        meta = self._meta()
        if last_abs is None:
            out = self.lr
            if not ops.host:  # every power in ONE exponential (accurate in float32)
                pairs: list[tuple[Any, Any]] = []
                for c, sim in zip(self.schedulers, meta.sims):
                    coef, ps = c._cf_pows(k, ops, 1.0, sim.base, Mode.CONSTRUCT, meta.g)
                    out = out * coef
                    pairs += ps
                return _fold(out, pairs, ops)
            for c, sim in zip(self.schedulers, meta.sims):
                out = out * c._cf(k, ops, 1.0, sim.base, Mode.CONSTRUCT, meta.g)
            return out
        c = self.schedulers[last_abs]
        sim = meta.sims[last_abs]
        out = c._cf(
            k, ops, self.lr, getattr(sim, "construct_base", sim.base), Mode.CONSTRUCT, meta.g
        )
        for c in self.schedulers[last_abs + 1 :]:
            out = out * c._tick(k, ops)
        return out

    def _fast_host(self, k: int) -> float | None:
        """Multiplicative children only: each step multiplies the running lr by every
        child's factor in turn, a :class:`Chain` with one column per child."""
        ch = self.__dict__.get("_chain", False)
        if ch is False:
            ch = self._make_chain()
            object.__setattr__(self, "_chain", ch)
        if ch is None:
            return None
        try:
            return ch.value(k)
        except ValueError:  # beyond one query's budget: the closed form
            return self._closed_or_none(k)

    def _make_chain(self) -> Chain | None:
        kids = self.schedulers
        if not all(c.kind is Kind.MULT for c in kids):
            return None
        if any(c._step_factors(np.ones(1)) is None for c in kids):
            return None

        def factors(a: int, b: int) -> np.ndarray:
            ks = np.arange(a, b, dtype=np.float64)
            return np.stack([np.asarray(c._step_factors(ks), np.float64) for c in kids], axis=1)

        lasts = [c._mult_last() for c in kids]
        endless = [c._mult_period() for c, la in zip(kids, lasts) if la is None]
        last = None if endless else max(lasts, default=0)
        steady = max([la for la in lasts if la is not None], default=0)
        period = math.lcm(*endless) if endless and None not in endless else None
        return Chain(self._replay(0), factors, last=last, steady=steady, period=period)
