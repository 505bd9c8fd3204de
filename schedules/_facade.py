"""A PyTorch-style stateful facade over pure schedules: the state is the step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._core import Schedule
from ._validate import check_int

__all__ = ["Scheduler"]


class Scheduler:
    """``step()``/``get_last_lr()``/``state_dict()`` over one schedule per parameter group.

    Its whole state is ``last_epoch``, the number of ``step()`` calls so far;
    ``get_last_lr()`` is ``[s(last_epoch) for s in schedules]``, so the
    learning rate is never accumulated and resuming needs only the counter.
    ``load_state_dict`` also takes any PyTorch scheduler's ``state_dict()``, composites
    included (only the step count is read: ``last_epoch``, or for a ``ChainedScheduler``,
    which has none, that of its first child, since every child is stepped with it).

    >>> import schedules as S
    >>> sch = S.Scheduler(S.step(0.1, step_size=2, gamma=0.5))
    >>> for _ in range(3):
    ...     sch.step()
    >>> sch.last_epoch, sch.get_last_lr()
    (3, [0.05])
    """

    def __init__(self, schedules: Schedule | Sequence[Schedule], last_epoch: int = 0) -> None:
        if isinstance(schedules, Schedule):
            group = [schedules]
        elif isinstance(schedules, (list, tuple)):
            group = list(schedules)
        else:
            group = []
        if not group or not all(isinstance(s, Schedule) for s in group):
            raise ValueError(
                f"Scheduler: schedules={schedules!r} must be a Schedule or a non-empty list of them"
            )
        self.schedules: tuple[Schedule, ...] = tuple(group)
        self.last_epoch: int = check_int("Scheduler", "last_epoch", last_epoch, ge=0)

    def step(self) -> None:
        """Advance one step (call after each optimizer step, as in PyTorch)."""
        self.last_epoch += 1

    def get_last_lr(self) -> list[float]:
        """The learning rate of each group at the current step."""
        return [s(self.last_epoch) for s in self.schedules]

    def state_dict(self) -> dict[str, Any]:
        """``{"last_epoch": n}``: everything needed to resume."""
        return {"last_epoch": self.last_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from our ``state_dict()`` or any PyTorch scheduler's (``ChainedScheduler``
        and ``SequentialLR`` included); the schedules then continue with torch's numbers."""
        self.last_epoch = check_int("load_state_dict", "last_epoch", _last_epoch(state_dict),
                                    ge=0)

    def __repr__(self) -> str:
        return f"Scheduler({list(self.schedules)!r}, last_epoch={self.last_epoch})"


def _last_epoch(sd: Any) -> Any:
    """The step count in a ``state_dict()``: ours, a torch scheduler's, or a torch
    ``ChainedScheduler``'s (no ``last_epoch`` of its own: its first child's)."""
    if isinstance(sd, dict):
        if "last_epoch" in sd:
            return sd["last_epoch"]
        subs = sd.get("_schedulers")
        if isinstance(subs, list | tuple) and subs:
            return _last_epoch(subs[0])
    raise ValueError(
        f"load_state_dict: state_dict={sd!r:.200} is invalid: expected a dict with a "
        "'last_epoch' entry (ours or any torch scheduler's state_dict())"
    )
