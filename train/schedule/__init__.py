"""The learning-rate schedule from the trainer's flags.

:mod:`~train.schedule.names` (the torch / transformers / Megatron name tables, below the
config), :mod:`~train.schedule.plan` (flags -> a :class:`~train.schedule.plan.Plan`, pure
data) and :mod:`~train.schedule.build` (plan -> a :class:`schedules.Schedule`, warnings, the
lr-curve check). Import the submodules; this package imports nothing, so that the config can
read the name tables without loading the builders.
"""
