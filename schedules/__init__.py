"""schedules: a pure-functional learning-rate schedule algebra on JAX.

A schedule is an immutable pytree mapping a step to a value. Call it on a
Python int (a Python float comes back, no JAX dispatch), a NumPy array, or a
JAX array/tracer (``jit``, ``vmap``, ``grad``, optax's ``learning_rate``).

>>> import schedules as S
>>> lr = S.warmup(S.cosine(3e-4, 3e-5, 900), 100)
>>> lr(0), lr(100), round(lr(1000), 12)
(0.0, 0.0003, 3e-05)
"""

from ._combinators import add as add
from ._combinators import clip as clip
from ._combinators import join as join
from ._combinators import lambda_ as lambda_
from ._combinators import maximum as maximum
from ._combinators import minimum as minimum
from ._combinators import multiply as multiply
from ._combinators import repeat as repeat
from ._combinators import scale as scale
from ._combinators import scale_batch as scale_batch
from ._combinators import shift as shift
from ._combinators import warmup as warmup
from ._core import Schedule as Schedule
from ._core import as_schedule as as_schedule
from ._expr import SpecError as SpecError
from ._expr import expr as expr
from ._facade import Scheduler as Scheduler
from ._primitives import constant as constant
from ._primitives import cosine as cosine
from ._primitives import cosine_restarts as cosine_restarts
from ._primitives import cyclic as cyclic
from ._primitives import exponential as exponential
from ._primitives import inverse_sqrt as inverse_sqrt
from ._primitives import linear as linear
from ._primitives import multistep as multistep
from ._primitives import noam as noam
from ._primitives import noise as noise
from ._primitives import one_cycle as one_cycle
from ._primitives import piecewise_constant as piecewise_constant
from ._primitives import piecewise_linear as piecewise_linear
from ._primitives import polynomial as polynomial
from ._primitives import step as step
from ._primitives import tanh_decay as tanh_decay
from ._primitives import wsd as wsd
from ._serialize import from_config as from_config
from ._serialize import parse as parse
from ._tools import plot as plot
from ._tools import values as values
from .megatron import OptimizerParamScheduler as megatron_lr

__all__ = [
    "Schedule",
    "Scheduler",
    "SpecError",
    "add",
    "as_schedule",
    "clip",
    "constant",
    "cosine",
    "cosine_restarts",
    "cyclic",
    "expr",
    "exponential",
    "from_config",
    "inverse_sqrt",
    "join",
    "lambda_",
    "megatron_lr",
    "linear",
    "maximum",
    "minimum",
    "multiply",
    "multistep",
    "noam",
    "noise",
    "one_cycle",
    "parse",
    "piecewise_constant",
    "piecewise_linear",
    "plot",
    "polynomial",
    "repeat",
    "scale",
    "scale_batch",
    "shift",
    "step",
    "tanh_decay",
    "values",
    "warmup",
    "wsd",
]
