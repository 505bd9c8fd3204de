"""``python -m schedules SPEC --steps N``: the lr sequence of a schedule spec, without training.

Prints ``step lr`` lines (default), a CSV table (``--csv``: ``step,lr``) or writes a plot
(``--plot FILE``, needs matplotlib). ``SPEC`` is the text syntax of :func:`schedules.parse`
(``"cosine(1e-3, 0, 100)"``, ``"StepLR(0.1, step_size=30)"``, ...); it is parsed, never
evaluated as Python. The trainer's own flags: ``python -m train --print-lr --steps N ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import schedules as S


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = _Parser(prog="python -m schedules", allow_abbrev=False,
                description="Print, tabulate or plot the lr sequence of a schedule spec.",
                epilog='example: python -m schedules "cosine(1e-3, 0, 100)" --steps 100 --csv')
    p.add_argument("spec", help="a schedule in the text syntax, e.g. 'cosine(1e-3, 0, 100)'")
    p.add_argument("--steps", type=int, default=100, help="steps 0 .. N-1 (default: 100)")
    p.add_argument("--csv", action="store_true", help="CSV with a header (step,lr)")
    p.add_argument("--plot", metavar="FILE", help="write a plot of the curve (PNG, SVG, ...)")
    a = p.parse_args(argv)
    if a.steps < 1:
        p.error(f"--steps={a.steps} is invalid: must be an int >= 1")
    try:
        s = S.parse(a.spec)
        v = S.values(s, a.steps)
    except ValueError as e:
        p.error(f"spec {a.spec!r} is invalid: {str(e).splitlines()[0]}")
    if a.plot:
        fig = S.plot(s, steps=a.steps, labels=[a.spec])
        fig.savefig(a.plot)
        print(f"wrote {a.plot}", file=sys.stderr)
        return 0
    if a.csv:
        print("step,lr")
    sep = "," if a.csv else " "
    for t, x in enumerate(v.tolist()):
        print(f"{t}{sep}{x!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
