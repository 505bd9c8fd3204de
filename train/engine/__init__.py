"""The engines: one train-step body (:mod:`~train.engine.step`), one interface
(:mod:`~train.engine.base`), and its implementations: ``pmap`` data parallelism
(:mod:`~train.engine.pmap`), the device mesh (:mod:`~train.engine.mesh`) and populations
(:mod:`~train.engine.population`). Import the submodules.
"""
