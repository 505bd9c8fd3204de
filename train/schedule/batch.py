"""The global batch as a function of the step (issue 27 item 6): Megatron's
``--rampup-batch-size START INCREMENT SAMPLES`` and ``--batch-size-schedule=SPEC``.

A :class:`BatchRamp` is pure data: the steps where the global batch changes, the batch from
each, and the samples consumed before each. The batch of step ``t`` and the samples consumed
before it (:meth:`BatchRamp.samples_before`, Megatron's ``consumed_train_samples``) are closed
forms of ``t`` (a search among the segments), so a run resumed at any step, on any layout, draws
the same batches and applies the same learning rates as an uninterrupted one.

Megatron's rule (``RampupBatchsizeNumMicroBatchesCalculator``, read, not copied): with
``N = (G - START) / INCREMENT`` increments over ``SAMPLES`` samples, the step whose consumed
samples are ``c`` runs ``G`` if ``c > SAMPLES``, else ``START + int(c / (SAMPLES / N)) x
INCREMENT``; the consumed samples advance by each step's batch.

>>> r = megatron_ramp(4, 4, 64, 16)
>>> [r.batch(t) for t in range(12)]
[4, 4, 4, 4, 4, 4, 8, 8, 8, 12, 12, 16]
>>> [r.samples_before(t) for t in (0, 6, 9, 11)]
[0, 24, 48, 72]
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

import schedules as S

__all__ = ["BatchRamp", "RampAccum", "SampleClock", "megatron_ramp", "spec_ramp"]


@dataclass(frozen=True)
class BatchRamp:
    """Segments of constant global batch: step ``starts[i]`` on runs ``batches[i]`` sequences
    per update, ``samples[i]`` consumed before it; the last segment lasts forever.
    ``source`` says where it came from (its flags), for messages and the schedule's repr."""

    starts: tuple[int, ...]
    batches: tuple[int, ...]
    samples: tuple[int, ...]
    source: str

    def _seg(self, t: int) -> int:
        return bisect.bisect_right(self.starts, int(t)) - 1

    def batch(self, t: int) -> int:
        """The global batch of step ``t``."""
        return self.batches[self._seg(t)]

    def samples_before(self, t: int) -> int:
        """The samples consumed by steps ``0 .. t - 1``."""
        i = self._seg(t)
        return self.samples[i] + (int(t) - self.starts[i]) * self.batches[i]

    def samples_traced(self, t: Any) -> Any:
        """:meth:`samples_before` of an array of steps (float, traceable). Float32: exact
        below 2**24 samples, past that within float32's rounding of the count; only a run
        longer than the lr table (``train.schedule.build.MAX_TABLE`` steps) evaluates it."""
        starts = jnp.asarray(self.starts, jnp.float32)
        i = jnp.clip(jnp.searchsorted(starts, jnp.floor(t), side="right") - 1, 0, None)
        return (jnp.asarray(self.samples, jnp.float32)[i]
                + (jnp.floor(t) - starts[i]) * jnp.asarray(self.batches, jnp.float32)[i])

    def distinct(self, steps: int) -> list[int]:
        """The distinct global batches of steps ``0 .. steps - 1``, in order of appearance."""
        return list(dict.fromkeys(b for s, b in zip(self.starts, self.batches) if s < steps))

    def batch_schedule(self) -> S.Schedule:
        """The global batch as a schedule of the step (for ``schedules.scale_batch``)."""
        return S.piecewise_constant(list(self.starts[1:]), [float(b) for b in self.batches])


@dataclass(frozen=True)
class RampAccum:
    """The micro-batches per replica of step ``t`` (``train.data.Batcher``'s ``accum_at``):
    the step's global batch over ``unit`` = micro-batch x data-parallel replicas."""

    ramp: BatchRamp
    unit: int

    def __call__(self, t: int) -> int:
        return self.ramp.batch(t) // self.unit


def megatron_ramp(start: int, increment: int, samples: int, global_batch: int) -> BatchRamp:
    """Megatron's ramp from ``start`` to ``global_batch`` by ``increment`` over ``samples``
    consumed samples (the arguments checked by the caller: positive, ``start < global_batch``,
    ``increment`` dividing the difference)."""
    per = samples / ((global_batch - start) // increment)  # a float, as Megatron's

    def level(c: int) -> int:
        return global_batch if c > samples else start + int(c / per) * increment

    starts, batches, consumed = [0], [level(0)], [0]
    t, c = 0, 0
    while batches[-1] != global_batch:
        b = batches[-1]
        # steps until the level changes: the estimate from the next threshold, then corrected
        # against level() itself (its float division decides, as in Megatron)
        nxt = min(((b - start) // increment + 1) * per, samples + 1)
        n = max(1, int(np.ceil((nxt - c) / b)))
        while n > 1 and level(c + (n - 1) * b) != b:
            n -= 1
        while level(c + n * b) == b:
            n += 1
        t, c = t + n, c + n * b
        starts.append(t)
        batches.append(level(c))
        consumed.append(c)
    return BatchRamp(tuple(starts), tuple(batches), tuple(consumed),
                     f"--rampup-batch-size {start} {increment} {samples} "
                     f"--global-batch-size={global_batch}")


def spec_ramp(spec: str, steps: int) -> BatchRamp:
    """``--batch-size-schedule=SPEC``: the algebra's text spec evaluated at steps ``0 ..
    steps - 1`` (held after); ``ValueError`` naming the flag unless every value is a positive
    integer."""
    try:
        s = S.parse(spec)
    except ValueError as e:
        raise ValueError(f"--batch-size-schedule={spec!r} is invalid: {e}") from None
    v = S.values(s, max(int(steps), 1))
    bad = np.flatnonzero(~(np.isfinite(v) & (v >= 1) & (v == np.round(v))))
    if bad.size:
        t = int(bad[0])
        raise ValueError(f"--batch-size-schedule={spec!r} is invalid: its value at step {t} is "
                         f"{float(v[t])!r}; every step's global batch must be a positive integer")
    b = v.astype(np.int64)
    change = [0, *(np.flatnonzero(b[1:] != b[:-1]) + 1).tolist()]
    starts = tuple(int(x) for x in change)
    batches = tuple(int(b[x]) for x in change)
    samples, c = [], 0
    for i, s0 in enumerate(starts):
        samples.append(c)
        end = starts[i + 1] if i + 1 < len(starts) else None
        if end is not None:
            c += (end - s0) * batches[i]
    return BatchRamp(starts, batches, tuple(samples), f"--batch-size-schedule={spec!r}")


class SampleClock:
    """``schedule(samples consumed before step t)``: a sample-counting schedule (Megatron's
    styles, lengths in samples, ``increment=1``) read at step ``t`` under a ramp. A callable
    for ``schedules.lambda_``; its ``__name__`` (the lambda's repr, and so the run's
    ``schedule_spec`` and compile key) names the schedule and the ramp."""

    def __init__(self, schedule: S.Schedule, ramp: BatchRamp) -> None:
        self.schedule, self.ramp = schedule, ramp
        self.__name__ = f"at_samples({schedule!r}, {ramp.source!r})"

    def __call__(self, t: Any) -> Any:
        if isinstance(t, int | float | np.integer | np.floating):
            return self.schedule(self.ramp.samples_before(int(t)) if t > 0 else 0)
        return self.schedule(self.ramp.samples_traced(t))

