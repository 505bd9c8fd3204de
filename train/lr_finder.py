"""``python -m train.lr_finder``: the learning-rate range test from the command line.

The test itself is :mod:`train.run.lr_finder` (re-exported here); this module is its CLI.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .__main__ import build_parser, config_from_args
from .allocator import tune_host_allocator
from .plot import plot_lr_range
from .run.lr_finder import RULES as RULES
from .run.lr_finder import LRRangeResult as LRRangeResult
from .run.lr_finder import check_range
from .run.lr_finder import ema as ema
from .run.lr_finder import exponential_schedule as exponential_schedule
from .run.lr_finder import lr_range_test as lr_range_test
from .run.lr_finder import moving_average as moving_average
from .run.lr_finder import suggest_lr as suggest_lr

__all__ = ["RULES", "LRRangeResult", "ema", "exponential_schedule", "lr_range_test", "main",
           "moving_average", "suggest_lr"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m train.lr_finder``: the trainer's flags (model, data, optimizer) plus
    ``--lr-min``, ``--lr-max`` and ``--steps`` (the test's length, default 100); prints the
    suggested lr and writes the loss-vs-lr plot (``--plot``, default WORKDIR/lr_finder.png)."""
    prog = "python -m train.lr_finder"
    p = build_parser(prog)
    p.description = ("The learning-rate range test: train the model (a random init, or "
                     "--init-from's weights) while the lr grows exponentially from --lr-min to "
                     "--lr-max over --steps steps (default 100), print the suggested lr and "
                     "plot the loss against the lr. The schedule flags of the trainer are not "
                     "used.")
    p.epilog = ("example:\n  python -m train.lr_finder --model-size=tiny --lr-min=1e-5 "
                "--lr-max=1 --steps=100")
    for a in p._actions:
        if "--steps" in a.option_strings:
            a.help = "steps of the range test (default: 100)"
    g = p.add_argument_group("range test")
    g.add_argument("--lr-min", type=float, default=1e-6, help="first lr (default: 1e-06)")
    g.add_argument("--lr-max", type=float, default=1.0, help="last lr (default: 1.0)")
    g.add_argument("--rule", choices=RULES, default="steepest",
                   help="suggestion rule (default: steepest)")
    g.add_argument("--plot", metavar="FILE", help="plot file (default: WORKDIR/lr_finder.png)")
    args = vars(p.parse_args(argv))
    args.pop("print_lr", None)
    workdir = args.pop("workdir")
    lr_min, lr_max, rule = args.pop("lr_min"), args.pop("lr_max"), args.pop("rule")
    plot = args.pop("plot")
    steps = args.pop("steps", 100)
    try:
        tune_host_allocator()  # before JAX starts its threads (train/allocator.py)
    except ValueError as e:
        p.error(str(e))
    try:
        check_range("range test", lr_min, lr_max, steps)
    except ValueError as e:
        msg = str(e).split(": ", 1)[1]
        p.error(msg.replace("lr_min", "--lr-min").replace("lr_max", "--lr-max")
                .replace("steps=", "--steps="))
    cfg = config_from_args(p, args)
    out = os.path.abspath(plot or os.path.join(workdir, "lr_finder.png"))
    try:  # only the plot is written: check its directory before anything compiles
        os.makedirs(os.path.dirname(out), exist_ok=True)
        if not os.access(os.path.dirname(out), os.W_OK):
            raise OSError("not writable")
    except OSError as e:
        p.error(f"--plot={out!r} is invalid: its directory cannot be written ({e})")
    r = lr_range_test(cfg, lr_min, lr_max, steps, rule=rule, log=print)
    print(f"{r.stop_reason}; suggested lr ({rule}): {r.suggested_lr:.3e}")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(f"{prog}: warning: matplotlib is not installed: no plot "
              "(pip install 'schedax[plot]')", file=sys.stderr)
        return 0
    print(f"plot: {plot_lr_range(r, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
