"""Running: the one setup every entry point shares (:mod:`~train.run.setup`), the step loop
with its hooks (:mod:`~train.run.loop`), single runs (:mod:`~train.run.train`), populations
(:mod:`~train.run.sweep`), the LR range test (:mod:`~train.run.lr_finder`) and the memory
plan (:mod:`~train.run.memplan`). Import the submodules.
"""
