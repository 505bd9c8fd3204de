"""Changing course (issue 27): a run's schedule history (``--change-schedule``), branches
(``--branch-from``) and per-group schedules (``--group``).

Expected learning rates are written out by hand from the schedules' closed forms (torch's
``SequentialLR(LinearLR, StepLR)``, ``CosineAnnealingLR``, the algebra's ``linear``); runs
compared bit for bit are the same program on the same layout (an uninterrupted run with the
same history, or a parent and a branch with its schedule). In-process runs use the shared
tiny config (``train_testutil.TINY``, 8 simulated CPU devices).
"""

from __future__ import annotations

import json
import math
import os
import signal

import jax
import numpy as np
import pytest
from train_testutil import tiny

from train import train_and_evaluate as run
from train.__main__ import main
from train.metrics import read_metrics
from train.resume import ResumeMismatchError
from train.run.loop import TrainingInterrupted
from train.run.train import SingleRun

LR = 3e-3


def _rows(wd: str) -> dict[int, dict]:
    return read_metrics(os.path.join(wd, "metrics", "metrics.jsonl"))[0]


def _same_tree(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _close(got: float, want: float) -> None:
    # the step logs the float32 rounding of the host's float64 value: half an ulp
    assert got == pytest.approx(want, rel=2**-23, abs=0), (got, want)


def _steplr(t: int) -> float:
    """SequentialLR([LinearLR(1/2, 1, total_iters=2), StepLR(2, 0.5)], milestones=[2])."""
    return LR * (0.5 + 0.5 * t / 2) if t < 2 else LR * 0.5 ** ((t - 2) // 2)


def _cosine(t: int, total: int = 20) -> float:
    return LR * (1 + math.cos(math.pi * t / total)) / 2


def test_change_schedule_history_refusal_and_ctrl_c(tmp_path, corpus, monkeypatch,
                                                    capsys) -> None:
    """Two changes (global then local offset) and a Ctrl-C after the second: the logged lrs
    are the history's join by hand, and the run equals an uninterrupted one bit for bit."""
    tmp = str(tmp_path)
    wd = os.path.join(tmp, "w")
    base = tiny(tmp, corpus, steps=3, lr_scheduler="steplr", lr_step_size=2, lr_gamma=0.5)
    run(base, wd)
    # without --change-schedule: refused, naming the change (not a flag filled from the saved
    # settings: the saved --lr-gamma belongs to StepLR)
    with pytest.raises(ResumeMismatchError) as e:
        run({"resume": True, "steps": 6, "lr_scheduler": "cosine"}, wd)
    msg = str(e.value)
    assert "lr_scheduler: checkpoint 'steplr', now 'cosine'" in msg and "lr_gamma" not in msg
    assert "--change-schedule" in msg
    with pytest.raises(SystemExit) as ex:  # the CLI: one line, before anything compiles
        main(["--resume", "--workdir", wd, "--lr-scheduler=cosine", "--steps=6"])
    err = capsys.readouterr().err
    assert ex.value.code == 2 and "Traceback" not in err
    assert "lr_scheduler: checkpoint 'steplr'" in err and "lr-gamma" not in err
    # change 1 at step 3: cosine (T_max = --total-steps) at the global step
    run({"resume": True, "change_schedule": True, "steps": 6, "lr_scheduler": "cosine",
         "total_steps": 20}, wd)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("schedule change at step 3"))
    assert f"lr {_steplr(3):.6g} -> {_cosine(3):.6g}" in line, line
    # change 2 at step 6: the algebra's linear, restarted at 0 (local); Ctrl-C after step 7
    orig = SingleRun.after_step

    def after(self, loop):
        orig(self, loop)
        if loop.step == 7:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(SingleRun, "after_step", after)
    with pytest.raises(TrainingInterrupted):
        run({"resume": True, "change_schedule": True, "steps": 9,
             "schedule": "linear(1e-3, 0, 4)", "schedule_offset": "local"}, wd)
    monkeypatch.setattr(SingleRun, "after_step", orig)
    done = run({"resume": True}, wd)  # a plain resume rebuilds the history
    assert done["start_step"] == 7 and done["steps"] == 9
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    hist = saved["schedule_history"]
    assert [(h["from_step"], h["offset"]) for h in hist] == [(0, "global"), (3, "global")]
    assert hist[0]["flags"]["lr_scheduler"] == "steplr" and hist[0]["flags"]["lr_gamma"] == 0.5
    assert hist[1]["flags"]["lr_scheduler"] == "cosine" and hist[1]["flags"]["lr_gamma"] is None
    assert saved["schedule_from"] == 6 and saved["schedule_offset"] == "local"
    assert "change_schedule" not in saved
    # the logged lrs: the join evaluated by hand
    rows = _rows(wd)
    want = [_steplr(t) for t in range(3)] + [_cosine(t) for t in range(3, 6)] + [
        1e-3 * (1 - (t - 6) / 4) for t in range(6, 9)]
    assert sorted(rows) == list(range(9))
    for t, w in enumerate(want):
        _close(rows[t]["lr"], w)
    # an uninterrupted run with the same history from step 0: the same bits
    ref_wd = os.path.join(tmp, "ref")
    ref = run({**base, **{k: saved[k] for k in ("schedule_history", "schedule_from",
                                                 "schedule_offset", "schedule", "lr_scheduler",
                                                 "lr_step_size", "lr_gamma", "warmup_steps",
                                                 "total_steps")}, "steps": 9}, ref_wd)
    _same_tree(done["params"], ref["params"])
    ref_rows = _rows(ref_wd)
    assert [(ref_rows[t]["loss"], ref_rows[t]["lr"]) for t in range(9)] == [
        (rows[t]["loss"], rows[t]["lr"]) for t in range(9)]
