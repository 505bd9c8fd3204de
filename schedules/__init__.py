"""schedules: a pure-functional learning-rate schedule algebra on JAX.

A schedule is an immutable pytree mapping a step to a value. Call it on a
Python int (a Python float comes back, no JAX dispatch), a NumPy array, or a
JAX array/tracer (``jit``, ``vmap``, ``grad``, optax's ``learning_rate``).

>>> import schedules as S
>>> lr = S.warmup(S.cosine(3e-4, 3e-5, 900), 100)
>>> lr(0), lr(100), round(lr(1000), 12)
(0.0, 0.0003, 3e-05)
"""

from ._combinators import Add as add
from ._combinators import Clip as clip
from ._combinators import Join as join
from ._combinators import Lambda as lambda_
from ._combinators import Maximum as maximum
from ._combinators import Minimum as minimum
from ._combinators import Multiply as multiply
from ._combinators import Repeat as repeat
from ._combinators import Scale as scale
from ._combinators import ScaleBatch as scale_batch
from ._combinators import Shift as shift
from ._combinators import Warmup as warmup
from ._core import Schedule as Schedule
from ._core import as_schedule as as_schedule
from ._expr import Expr as expr
from ._expr import SpecError as SpecError
from ._facade import Scheduler as Scheduler
from ._primitives import Constant as constant
from ._primitives import CosineDecay as cosine
from ._primitives import CosineRestarts as cosine_restarts
from ._primitives import Cyclic as cyclic
from ._primitives import Exponential as exponential
from ._primitives import InverseSqrt as inverse_sqrt
from ._primitives import Linear as linear
from ._primitives import MultiStep as multistep
from ._primitives import Noam as noam
from ._primitives import Noise as noise
from ._primitives import OneCycle as one_cycle
from ._primitives import PiecewiseConstant as piecewise_constant
from ._primitives import PiecewiseLinear as piecewise_linear
from ._primitives import Polynomial as polynomial
from ._primitives import StepDecay as step
from ._primitives import TanhDecay as tanh_decay
from ._primitives import WarmupStableDecay as wsd
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
