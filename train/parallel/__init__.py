"""The parallel layout: the one layout object and its checks (:mod:`~train.parallel.layout`),
the one layout -> shardings table (:mod:`~train.parallel.shardings`) and the circular pipeline
(:mod:`~train.parallel.pipeline`). Import the submodules.
"""
