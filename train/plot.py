"""Every plot of the trainer: a run's loss and learning-rate curves (``python -m train.plot
METRICS.jsonl [-o OUT.png]``), a run and its branches (``python -m train.plot RUN_DIR
--branches [BRANCH_DIR ...]``, :func:`plot_branches`), a population's (:func:`plot_sweep`) and
the LR range test's (:func:`plot_lr_range`).

Needs matplotlib (the ``plot`` extra). For a resumed run, later records of a step replace
earlier ones (the replayed steps are identical anyway).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .metrics import iter_records, read_metrics, settings_text

__all__ = ["branch_series", "find_branches", "main", "plot_branches", "plot_lr_range",
           "plot_metrics", "plot_sweep", "read_metrics"]


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


def _metrics_of(run_dir: str) -> tuple[str, dict[str, Any]]:
    """(a workdir's metrics.jsonl, its config.json or {}): ``metrics_dir`` as it names it."""
    cfg: dict[str, Any] = {}
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            loaded = json.load(f)
        cfg = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    # a --metrics-dir is as the run was given it (the trainer's default: RUN_DIR/metrics)
    return os.path.join(cfg.get("metrics_dir") or os.path.join(run_dir, "metrics"),
                        "metrics.jsonl"), cfg


def find_branches(run_dir: str) -> list[str]:
    """The workdirs next to ``run_dir`` (its siblings) whose ``config.json`` records a
    ``branch_from`` of ``run_dir`` (``RUN_DIR:STEP``, absolute, as ``--branch-from`` writes it),
    sorted by branch step, then name."""
    root = os.path.abspath(run_dir)
    out = []
    parent = os.path.dirname(root)
    for name in sorted(os.listdir(parent)):
        d = os.path.join(parent, name)
        if d == root or not os.path.isdir(d):
            continue
        frm = _metrics_of(d)[1].get("branch_from")
        head, _, step = str(frm or "").rpartition(":")
        if frm and head == root and step.isdigit():
            out.append((int(step), name, d))
    return [d for _, _, d in sorted(out)]


def branch_series(run_dir: str, branch_dirs: Sequence[str] | None = None
                  ) -> list[dict[str, Any]]:
    """The curves of a run and its branches: ``[{"label", "dir", "from_step", "steps",
    "loss", "lr"}]``, the run first (``from_step`` 0), then each branch from its branch step
    (its own metrics.jsonl, which starts there; a population branch gives one curve per
    member, labelled with its settings). ``branch_dirs``: None finds them
    (:func:`find_branches`). ``ValueError`` for a directory without training records."""
    dirs = find_branches(run_dir) if branch_dirs is None else list(branch_dirs)
    out = []
    for i, d in enumerate([run_dir, *dirs]):
        path, cfg = _metrics_of(d)
        name = os.path.basename(os.path.abspath(d))
        frm = str(cfg.get("branch_from") or "")
        start = int(frm.rpartition(":")[2]) if i and frm.rpartition(":")[2].isdigit() else 0
        rows: dict[Any, dict[int, dict]] = {}
        try:
            for r in iter_records(path):
                if r.get("loss") is not None and "step" in r:
                    rows.setdefault(r.get("member"), {})[int(r["step"])] = r
        except OSError as e:
            raise ValueError(f"{d}: no metrics ({e})") from None
        if not rows:
            raise ValueError(f"{path}: no training records")
        members = _members(d) if any(k is not None for k in rows) else {}
        for k in sorted(rows, key=lambda x: -1 if x is None else x):
            steps = sorted(rows[k])
            label = name if k is None else f"{name} member {k}" + (
                f" ({settings_text(members[k])})" if k in members else "")
            if i:
                label += f" (from step {start})"
            out.append({"label": label, "dir": d, "from_step": start, "steps": steps,
                        "loss": [_num(rows[k][t]["loss"]) for t in steps],
                        "lr": [_num(rows[k][t].get("lr")) for t in steps]})
    return out


def _members(d: str) -> dict[int, dict]:
    try:
        with open(os.path.join(d, "members.json")) as f:
            return dict(enumerate(json.load(f)))
    except (OSError, ValueError, TypeError):
        return {}


def plot_branches(run_dir: str, branch_dirs: Sequence[str] | None = None,
                  out: str | None = None) -> str:
    """A run's loss and lr with each branch's from its branch step (:func:`branch_series`),
    labelled, a dotted line at each branch step; returns the PNG path (default
    ``RUN_DIR/branches.png``)."""
    plt = _pyplot()
    series = branch_series(run_dir, branch_dirs)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for i, s in enumerate(series):
        kw = dict(lw=1.5 if i == 0 else 1, color=f"C{i % 10}", label=s["label"])
        ax1.plot(s["steps"], s["loss"], **kw)
        ax2.plot(s["steps"], s["lr"], **kw)
    for t in sorted({s["from_step"] for s in series[1:]}):
        for ax in (ax1, ax2):
            ax.axvline(t, color="0.6", ls=":", lw=1)
    ax1.set_ylabel("train loss")
    ax2.set_ylabel("learning rate")
    ax2.set_xlabel("optimizer step")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=7)
    fig.suptitle(f"{os.path.basename(os.path.abspath(run_dir))} and {len(series) - 1} "
                 "branch curve(s)")
    fig.tight_layout()
    out = out or os.path.join(run_dir, "branches.png")
    tmp = f"{out}.tmp{os.getpid()}.png"  # atomic: a temporary name, then a rename
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out


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
    p.add_argument("metrics", help="a metrics.jsonl file written by python -m train (with "
                   "--branches: the run's --workdir)")
    p.add_argument("--branches", nargs="*", metavar="BRANCH_DIR", default=None,
                   help="draw the run (a --workdir) and its branches (--branch-from), each from "
                   "its branch step; without BRANCH_DIRs, the sibling workdirs branched from it")
    p.add_argument("-o", "--out", help="output PNG (default: next to the metrics file; "
                   "RUN_DIR/branches.png with --branches)")
    a = p.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("python -m train.plot: error: needs matplotlib: pip install 'schedax[plot]' "
              "(or pip install matplotlib)", file=sys.stderr)
        return 2
    try:
        if a.branches is not None:
            if not os.path.isdir(a.metrics):
                raise ValueError(f"--branches: {a.metrics} is not a directory (give the run's "
                                 "--workdir)")
            out = plot_branches(a.metrics, a.branches or None, a.out)
        else:
            out = plot_metrics(a.metrics, a.out)
    except (OSError, ValueError) as e:
        p.error(str(e))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
