"""The stateful facade of ``schedules.torch``: :class:`Scheduler` loads torch's
``state_dict()``."""

from __future__ import annotations

from typing import Any

from .._facade import Scheduler as _BaseScheduler


def _torch_last_epoch(sd: dict[str, Any]) -> int:
    if "last_epoch" in sd:
        return int(sd["last_epoch"])
    subs = sd.get("_schedulers")
    if subs:  # ChainedScheduler has no last_epoch: every child stepped as often as it
        return _torch_last_epoch(subs[0])
    raise ValueError(
        "load_state_dict: expected a dict with a 'last_epoch' entry "
        "(ours or a torch scheduler's state_dict())"
    )


class Scheduler(_BaseScheduler):
    """:class:`schedules.Scheduler` that also loads any torch scheduler's ``state_dict()``
    (including ``ChainedScheduler``'s, which has no ``last_epoch`` of its own).

    >>> from schedules import torch as T
    >>> sch = T.Scheduler(T.StepLR(0.1, step_size=2, gamma=0.5))
    >>> sch.load_state_dict({"last_epoch": 4, "_step_count": 5})
    >>> sch.get_last_lr()
    [0.025]
    >>> sch.step(); sch.state_dict()
    {'last_epoch': 5}
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not isinstance(state_dict, dict):
            raise ValueError("load_state_dict: expected a dict")
        super().load_state_dict({"last_epoch": _torch_last_epoch(state_dict)})
