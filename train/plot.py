"""Every plot of the trainer: a run's loss and learning-rate curves (``python -m train.plot
METRICS.jsonl [-o OUT.png]``), a population's (:func:`plot_sweep`) and the LR range test's
(:func:`plot_lr_range`).

Needs matplotlib (the ``plot`` extra). For a resumed run, later records of a step replace
earlier ones (the replayed steps are identical anyway).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import read_metrics, settings_text

__all__ = ["main", "plot_lr_range", "plot_metrics", "plot_sweep", "read_metrics"]


def _pyplot() -> Any:
    """matplotlib's pyplot on a file backend (the ``plot`` extra)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


#: the scheduled hyperparameters a metrics.jsonl may hold (train.schedule.hparams.HPARAMS)
HPARAM_KEYS = ("beta1", "beta2", "momentum", "weight_decay", "clip_norm", "dropout")


def plot_metrics(path: str, out: str | None = None) -> str:
    """Draw loss (train + validation), lr and any scheduled hyperparameter against the step;
    returns the PNG path."""
    plt = _pyplot()
    train, val = read_metrics(path)
    if not train:
        raise ValueError(f"{path}: no training records")
    steps = sorted(train)
    loss = [_num(train[s]["loss"]) for s in steps]
    lr = [_num(train[s]["lr"]) for s in steps]
    # issue 27: the scheduled hyperparameters a run logs (the values its updates applied)
    hp = [k for k in HPARAM_KEYS if any(k in train[s] for s in steps)]
    fig, axes = plt.subplots(2 + bool(hp), 1, figsize=(8, 6 + 2.5 * bool(hp)), sharex=True)
    ax1, ax2 = axes[:2]
    if hp:
        for i, k in enumerate(hp):
            axes[2].plot(steps, [_num(train[s].get(k)) for s in steps], lw=1, color=f"C{3 + i}",
                         label=k)
        axes[2].set_ylabel("scheduled")
        axes[2].legend(fontsize=7)
        axes[2].grid(alpha=0.3)
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
    axes[-1].set_xlabel("optimizer step")
    ax2.grid(alpha=0.3)
    fig.suptitle(os.path.basename(os.path.dirname(os.path.abspath(path))) or path)
    fig.tight_layout()
    out = out or os.path.splitext(path)[0] + ".png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_sweep(summary: Mapping[str, Any], path: str) -> str:
    """Final validation loss against each swept field, and every member's loss curve (PNG)."""
    plt = _pyplot()

    names, results = summary["swept"], summary["results"]
    fig, axes = plt.subplots(1, len(names) + 1, figsize=(4 * (len(names) + 1), 3.4),
                             squeeze=False)
    for ax, name in zip(axes[0], names):
        vals = [r["settings"][name] for r in results]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals)
        cats = [] if numeric else list(dict.fromkeys(map(str, vals)))
        # a schedule's text (or None): one position per distinct value, labelled with it
        xs = np.array(vals if numeric else [cats.index(str(v)) for v in vals], float)
        ys = np.array([r["val_loss"] for r in results])
        others = [n for n in names if n != name]
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(results):
            groups.setdefault(settings_text({n: r["settings"][n] for n in others}), []).append(i)
        for label, idx in groups.items():
            idx = sorted(idx, key=lambda i: xs[i])
            ax.plot(xs[idx], ys[idx], "o-", ms=4, label=label or None)
        if cats:
            ax.set_xticks(range(len(cats)), cats, rotation=20, fontsize=6, ha="right")
        elif (xs > 0).all() and xs.max() / xs.min() >= 10:
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel("final validation loss")
        if len(groups) > 1 and len(groups) <= 8:
            ax.legend(fontsize=7)
    ax = axes[0][-1]
    for r in results:
        if r["losses"]:
            t, v = zip(*r["losses"])
            ax.plot(t, v, lw=1, label=f"{r['member']}: {settings_text(r['settings'])}")
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    if len(results) <= 8:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_lr_range(result: Any, path: str) -> str:
    """The LR range test's loss (raw and smoothed) against the learning rate, with the
    suggested lr (``train.run.lr_finder.LRRangeResult``); returns the PNG path."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(result.lrs, result.losses, alpha=0.4, label="loss")
    ax.plot(result.lrs, result.smoothed, label="smoothed")
    ax.axvline(result.suggested_lr, color="k", ls="--", lw=1,
               label=f"suggested {result.suggested_lr:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


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
