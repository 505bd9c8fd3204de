"""A population's tables: each member's status from the bookkeeping (:func:`member_status`),
the log table and the ranked summary (:func:`member_table`, :func:`print_ranking`), and the
summary of a population resumed at its ``--steps``, rebuilt from what it saved
(:func:`finished_summary`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..checkpoint import Checkpointer
from ..metrics import Console, iter_records, settings_text
from .setup import RunSetup

__all__ = ["finished_summary", "member_status", "member_table", "new_book", "print_ranking"]


def new_book(k: int) -> dict[str, np.ndarray]:
    """The bookkeeping of ``k`` fresh members (saved with the population): the best
    validation loss (the largest finite float: checkpoints hold finite values only), the
    evaluations since, the early-stop and divergence steps (-1: none)."""
    return {"best": np.full(k, np.finfo(np.float64).max), "since_best": np.zeros(k, np.int32),
            "stopped": np.full(k, -1, np.int32), "diverged": np.full(k, -1, np.int32)}


def member_status(book: Mapping[str, np.ndarray], i: int) -> str:
    """Member ``i``'s status from the population's bookkeeping."""
    if book["diverged"][i] >= 0:
        return f"diverged at step {book['diverged'][i]}"
    if book["stopped"][i] >= 0:
        return f"early-stopped at step {book['stopped'][i]}"
    return "ok"


def member_table(names: list[str], members: list[dict], book: Mapping[str, np.ndarray],
           rows: list[tuple[int, float, float]], last: str = "lr") -> str:
    w = [max(len(n), 8) for n in names]
    head = "  member " + " ".join(f"{n:>{x}}" for n, x in zip(names, w))
    lines = [head + f" {'loss':>9} {last:>10}"]
    for i, a, b in rows:
        vals = " ".join(f"{_fmt(members[i][n]):>{x}}" for n, x in zip(names, w))
        st = "" if member_status(book, i) == "ok" else f"  {member_status(book, i)}"
        bs = f"{b:>10.4f}" if last == "val loss" else f"{b:>10.3e}"
        lines.append(f"  {i:>6} {vals} {a:>9.4f} {bs}{st}")
    return "\n".join(lines)


def print_ranking(c: Console, names: list[str], members: list[dict],
                   book: Mapping[str, np.ndarray], results: list[dict], workdir: str,
                   metrics_path: str, ckpt_dir: str, last_saved: int | None
                   ) -> tuple[list[int], int]:
    """The summary's ranked table (diverged members last, then by final validation loss), the
    best member and where the outputs are; returns (ranking, best)."""
    k = len(results)
    ranking = sorted(range(k), key=lambda i: (results[i]["status"] != "ok"
                                              and "diverged" in results[i]["status"],
                                              _nan_last(results[i]["val_loss"])))
    c.print(member_table(names, members, book, [(i, results[i]["final_loss"],
                                                  results[i]["val_loss"]) for i in ranking],
                         last="val loss"))
    best = ranking[0]
    c.print(f"best: member {best} ({settings_text(members[best])}), val loss "
            f"{results[best]['val_loss']:.4f}")
    c.print(f"members: {os.path.join(workdir, 'members.json')}; metrics: {metrics_path}; "
            f"checkpoints: {ckpt_dir} (last step {last_saved})")
    return ranking, best


def finished_summary(setup: RunSetup, names: list[str], members: list[dict],
                     schedule_mode: str) -> dict[str, Any]:
    """A population whose checkpoint is at ``--steps`` (the setup printed the single run's one
    line: nothing to do): the finished run's summary rebuilt from what it saved: each member's
    status from the checkpoint's bookkeeping (checked against its checksums), its losses and
    validation losses from ``metrics.jsonl`` (a resumed run's replayed steps logged the same
    values; the last row of a step wins). Nothing is trained, compiled or evaluated."""
    k, step, ckpt_dir = len(members), setup.resume_step, setup.ckpt_dir
    workdir, console, path = setup.workdir, setup.console, setup.metrics_path
    ckpt = Checkpointer(ckpt_dir, setup.cfg.keep_checkpoints, async_save=False)
    try:
        book = ckpt.restore_part(step, {"book": new_book(k)})["book"]
    finally:
        ckpt.close()
    losses: list[dict[int, float]] = [{} for _ in range(k)]
    vals: list[dict[int, float]] = [{} for _ in range(k)]
    if os.path.exists(path):
        for r in iter_records(path):
            i = r.get("member")
            if not isinstance(i, int) or not 0 <= i < k or not isinstance(r.get("step"), int):
                continue
            for key, into in (("loss", losses), ("val_loss", vals)):
                if key in r:
                    v = r[key]
                    into[i][r["step"]] = float("nan") if v is None else float(v)
    results = []
    for i in range(k):
        frozen = max(int(book["stopped"][i]), int(book["diverged"][i]))
        hist = sorted((t, v) for t, v in losses[i].items() if t < step)
        evals = sorted((t, v) for t, v in vals[i].items()
                       if t <= step and (frozen < 0 or t <= frozen))
        results.append({"member": i, "settings": members[i], "status": member_status(book, i),
                        "losses": hist, "evals": evals,
                        "final_loss": hist[-1][1] if hist else float("nan"),
                        "val_loss": vals[i].get(step, float("nan"))})
    console.print("\n=== sweep summary (saved; ranked by final validation loss) ===")
    ranking, best = print_ranking(console, names, members, book, results, workdir, path,
                                  ckpt_dir, step)
    out = {"members": members, "swept": names, "results": results, "ranking": ranking,
           "best": best, "steps": step, "start_step": step, "stop_reason": "already finished",
           "metrics_path": path, "checkpoint_dir": ckpt_dir, "last_checkpoint": step,
           "schedule_mode": schedule_mode}
    if os.path.exists(os.path.join(workdir, "sweep.png")):
        out["plot"] = os.path.join(workdir, "sweep.png")
        console.print(f"plot: {out['plot']}")
    return out


def _nan_last(x: float) -> float:
    return x if math.isfinite(x) else math.inf


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)
