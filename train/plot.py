"""``python -m train.plot METRICS.jsonl [-o OUT.png]``: loss and learning-rate curves to PNG.

Needs matplotlib (the ``plot`` extra). For a resumed run, later records of a step replace
earlier ones (the replayed steps are identical anyway).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "plot_metrics", "read_metrics"]


def read_metrics(path: str) -> tuple[dict[int, dict[str, Any]], dict[int, float]]:
    """(train records by step, validation loss by step) from a metrics.jsonl file."""
    train: dict[int, dict[str, Any]] = {}
    val: dict[int, float] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            rec = json.loads(line)
            if "val_loss" in rec:  # null (a non-finite value) reads as NaN
                val[int(rec["step"])] = _num(rec["val_loss"])
            elif "loss" in rec:
                train[int(rec["step"])] = rec
    return train, val


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def plot_metrics(path: str, out: str | None = None) -> str:
    """Draw loss (train + validation) and lr against the step; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = read_metrics(path)
    if not train:
        raise ValueError(f"{path}: no training records")
    steps = sorted(train)
    loss = [_num(train[s]["loss"]) for s in steps]
    lr = [_num(train[s]["lr"]) for s in steps]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    ax1.plot(steps, loss, lw=1, label="train")
    if val:
        vs = sorted(val)
        ax1.plot(vs, [val[s] for s in vs], "o-", label="validation")
    ax1.set_ylabel("loss")
    finite = [x for x in loss if math.isfinite(x)]
    if finite and max(finite) / max(min(finite), 1e-9) > 20:
        ax1.set_yscale("log")
    ax1.legend()
    ax1.grid(alpha=0.3)
    ax2.plot(steps, lr, lw=1, color="C2")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("optimizer step")
    ax2.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(path))) or path)
    fig.tight_layout()
    out = out or os.path.splitext(path)[0] + ".png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.plot", description=__doc__)
    p.add_argument("metrics", help="a metrics.jsonl file written by python -m train")
    p.add_argument("-o", "--out", help="output PNG (default: next to the metrics file)")
    a = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("python -m train.plot: error: needs matplotlib: pip install 'schedax[plot]' "
              "(or pip install matplotlib)", file=sys.stderr)
        return 2
    try:
        out = plot_metrics(a.metrics, a.out)
    except (OSError, ValueError) as e:
        p.error(str(e))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
