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
    ``load_state_dict`` also takes a PyTorch scheduler's ``state_dict()``
    (only its ``last_epoch`` is read).

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
        """Resume from our ``state_dict()`` or a PyTorch scheduler's."""
        if not isinstance(state_dict, dict) or "last_epoch" not in state_dict:
            raise ValueError("load_state_dict: expected a dict with a 'last_epoch' entry")
        self.last_epoch = check_int("load_state_dict", "last_epoch", state_dict["last_epoch"], ge=0)

    def __repr__(self) -> str:
        return f"Scheduler({list(self.schedules)!r}, last_epoch={self.last_epoch})"
