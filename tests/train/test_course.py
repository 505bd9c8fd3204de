"""Changing course (issue 27): a run's schedule history (``--change-schedule``), branches
(``--branch-from``) and per-group schedules (``--group``).

Expected learning rates are written out by hand from the schedules' closed forms (torch's
``SequentialLR(LinearLR, StepLR)``, ``CosineAnnealingLR``, the algebra's ``linear``); runs
compared bit for bit are the same program on the same layout (an uninterrupted run with the
same history, or a parent and a branch with its schedule). In-process runs use the shared
tiny config (``train_testutil.TINY``, 8 simulated CPU devices).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from train_testutil import tiny

from train import train_and_evaluate as run
from train.__main__ import main
from train.metrics import read_metrics
from train.resume import ResumeMismatchError
from train.run.loop import TrainingInterrupted
from train.run.train import SingleRun

LR = 3e-3


class _KilledError(Exception):
    """A run stopped at once, saving nothing (as SIGKILL leaves it), in the test's process."""


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


def test_change_schedule_history_refusal_and_kill(tmp_path, corpus, monkeypatch,
                                                    capsys) -> None:
    """Two changes (global then local offset), the run killed after the second before any
    checkpoint of it: a plain resume continues the changed run; the logged lrs are the
    history's join by hand, and the run equals an uninterrupted one bit for bit."""
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
    code = main(["--resume", "--workdir", wd, "--lr-scheduler=cosine", "--steps=6"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "lr_scheduler: checkpoint 'steplr'" in err and "lr-gamma" not in err
    # change 1 at step 3: cosine (T_max = --total-steps) at the global step
    run({"resume": True, "change_schedule": True, "steps": 6, "lr_scheduler": "cosine",
         "total_steps": 20}, wd)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("schedule change at step 3"))
    assert f"lr {_steplr(3):.6g} -> {_cosine(3):.6g}" in line, line
    # change 2 at step 6: the algebra's linear, restarted at 0 (local); killed after step 8
    # (nothing saved: the last checkpoint, 6, holds the settings from before the change)
    orig = SingleRun.after_step

    def after(self, loop):
        orig(self, loop)
        if loop.step == 8:
            raise _KilledError

    monkeypatch.setattr(SingleRun, "after_step", after)
    with pytest.raises(_KilledError):
        run({"resume": True, "change_schedule": True, "steps": 9,
             "schedule": "linear(1e-3, 0, 4)", "schedule_offset": "local"}, wd)
    monkeypatch.setattr(SingleRun, "after_step", orig)
    assert max(int(x) for x in os.listdir(os.path.join(wd, "checkpoints")) if x.isdigit()) == 6
    capsys.readouterr()
    done = run({"resume": True}, wd)  # a plain resume: the change recorded in config.json
    assert done["start_step"] == 6 and done["steps"] == 9
    assert "schedule change at step 6 (local offset)" in capsys.readouterr().out
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


def _files(d: str) -> dict[str, tuple[int, int]]:
    """Every file under ``d``: (size, mtime_ns), to show that a parent run is untouched."""
    out = {}
    for root, _, names in os.walk(d):
        for n in names:
            st = os.stat(os.path.join(root, n))
            out[os.path.join(root, n)] = (st.st_size, st.st_mtime_ns)
    return out


def test_branch_cooldown_ctrl_c_and_a_group(tmp_path, corpus, monkeypatch, capsys) -> None:
    """A WSD parent (warmup, stable; the embeddings in a --group of their own) branched at
    step 3: with its own schedule the branch is the parent bit for bit; a cooldown branch
    (linear to 0 over 3 steps, local offset) logs the cooldown's lrs by hand, records its
    origin, and a Ctrl-C + resume inside it equals an uninterrupted branch bit for bit. The
    parent's files are never modified. The group: printed at start, its lr logged per step
    (by hand), a resume changing it refused, naming it. (One test: the compiled steps are
    shared.)"""
    tmp = str(tmp_path)
    parent = os.path.join(tmp, "parent")
    stable = "warmup(constant(3e-3), 2)"  # 0, 1.5e-3, 3e-3, 3e-3, ...
    p = run(tiny(tmp, corpus, schedule=stable, lr_scheduler=None, warmup_steps=None,
                 total_steps=None, steps=6, group=["wte:linear(1e-2, 0, 6)"]),
            parent)
    out = capsys.readouterr().out
    assert "group 'wte': own schedule linear(1e-2, 0, 6)" in out
    assert "lr --group wte" in out  # the parameter summary's wte line
    pr = _rows(parent)
    for t in range(6):
        _close(pr[t]["lr_wte"], 1e-2 * (1 - t / 6))
        _close(pr[t]["lr"], 3e-3 * min(t / 2, 1))
    before = _files(parent)
    # the same schedule: the parent's steps 3..5 again
    same = os.path.join(tmp, "same")
    b = run({"branch_from": f"{parent}:3", "steps": 6}, same)
    assert b["start_step"] == 3
    _same_tree(b["params"], p["params"])
    br = _rows(same)
    assert sorted(br) == [3, 4, 5]
    assert [(br[t]["loss"], br[t]["lr"], br[t]["lr_wte"]) for t in br] == [
        (pr[t]["loss"], pr[t]["lr"], pr[t]["lr_wte"]) for t in br]
    out = capsys.readouterr().out
    assert f"branched from {os.path.join(parent, 'checkpoints', '3')}" in out
    with pytest.raises(ResumeMismatchError, match="group: checkpoint"):
        run({"resume": True, "steps": 6, "group": ["wte:linear(1e-2, 0, 3)"]}, same)
    # a cooldown from step 3, killed (Ctrl-C) after step 4 and resumed
    cool = {"branch_from": f"{parent}:3", "steps": 6, "schedule": "linear(3e-3, 0, 3)",
            "schedule_offset": "local"}
    ref_wd, wd = os.path.join(tmp, "cool_ref"), os.path.join(tmp, "cool")
    ref = run(cool, ref_wd)
    out = capsys.readouterr().out
    assert "schedule change at step 3 (local offset): lr 0.003 -> 0.003" in out
    orig = SingleRun.after_step

    def after(self, loop):
        orig(self, loop)
        if loop.step == 5:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(SingleRun, "after_step", after)
    with pytest.raises(TrainingInterrupted):
        run(cool, wd)
    monkeypatch.setattr(SingleRun, "after_step", orig)
    done = run({"resume": True}, wd)
    assert done["start_step"] == 5
    _same_tree(done["params"], ref["params"])
    rows, ref_rows = _rows(wd), _rows(ref_wd)
    assert sorted(rows) == [3, 4, 5]
    assert [(rows[t]["loss"], rows[t]["lr"]) for t in rows] == [
        (ref_rows[t]["loss"], ref_rows[t]["lr"]) for t in rows]
    for t in rows:  # the algebra's linear from 3e-3 to 0 over 3 steps, restarted at 3
        _close(rows[t]["lr"], 3e-3 * (1 - (t - 3) / 3))
    assert rows[3]["loss"] == pr[3]["loss"]  # the same state and batch at the branch step
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    assert saved["branch_from"] == f"{os.path.abspath(parent)}:3"
    assert saved["schedule_from"] == 3 and saved["schedule_offset"] == "local"
    assert [(h["from_step"], h["flags"]["schedule"]) for h in saved["schedule_history"]] == [
        (0, stable)]
    assert _files(parent) == before


def test_group_schedule_drives_its_parameters() -> None:
    """``--group``: SGD (no momentum, no decay, no clipping) with gradient 1 moves each
    parameter by minus its lr of each step; the wte group follows its own linear schedule (by
    hand), every other tensor the run's constant lr. As torch's LambdaLR with one lambda per
    group: a parameter belongs to the first pattern found in its path."""
    import models
    from train.config import TrainConfig
    from train.optim import make_optimizer, param_table
    from train.schedule.build import build_schedule

    params = jax.device_get(models.init_params(
        models.get_config("gpt2", "tiny", n_layer=1, block_size=16), jax.random.key(0)))
    cfg = TrainConfig.from_dict(dict(
        model_size="tiny", optimizer="sgd", lr=0.1, lr_scheduler="constant", lr_factor=1.0,
        warmup_steps=0, weight_decay=0.0, clip_norm=0.0, steps=4,
        group=["wte:linear(0.5, 0, 4)"])).validate()
    tx = make_optimizer(cfg, build_schedule(cfg), params)
    step = jax.jit(lambda p, s: tx.update(jax.tree.map(jnp.ones_like, p), s, p))
    state, p = tx.init(params), params
    want_wte = np.asarray(params["wte"]["embedding"], np.float32)
    want_wpe = np.asarray(params["wpe"]["embedding"], np.float32)
    for t in range(4):
        upd, state = step(p, state)
        p = jax.device_get(optax.apply_updates(p, upd))
        want_wte = want_wte - np.float32(0.5 * (1 - t / 4))
        want_wpe = want_wpe - np.float32(0.1)
    # float32 rounding of each lr and of each subtraction: a few ulps of the values
    np.testing.assert_allclose(p["wte"]["embedding"], want_wte, rtol=0, atol=1e-6)
    np.testing.assert_allclose(p["wpe"]["embedding"], want_wpe, rtol=0, atol=1e-6)
    t = param_table(params, {}, ("wte",))
    assert "group 'wte': its own schedule (--group)" in t
    # a pattern matching no parameter is refused, naming it
    bad = dataclasses.replace(cfg, group=("nope:constant(1.0)",))
    with pytest.raises(ValueError, match=r"--group pattern\(s\) \['nope'\] match no parameter"):
        make_optimizer(bad, build_schedule(bad), params)


def test_history_join_by_hand_and_flag_rules() -> None:
    """The history's join on the host: a constant run changed at step 4 to Megatron's linear
    decay over 4 iterations (its sample counter: step x global batch), local (restarted at
    the change) or global (already decayed); the history's and the groups' rules."""
    from train.config import TrainConfig
    from train.schedule.build import build_schedule

    old = dict(lr=1.0, lr_scheduler="constant", lr_factor=1.0, warmup_steps=0, steps=10)
    base = dict(steps=10, lr=2.0, lr_decay_style="linear", min_lr=0.0, lr_decay_iters=4,
                schedule_from=4, schedule_history=[dict(from_step=0, offset="global",
                                                        flags=old)])
    for off, tail in (("local", [2.0 * (1 - k / 4) for k in range(4)] + [0.0] * 4),
                      ("global", [0.0] * 8)):
        cfg = TrainConfig.from_dict({**base, "schedule_offset": off}).normalized().validate()
        s = build_schedule(cfg, 16)
        got = [float(s(t)) for t in range(12)]
        np.testing.assert_allclose(got, [1.0] * 4 + tail, rtol=1e-12, atol=1e-12)
    bad = [({"schedule_from": 4}, "schedule_history"),  # a change without its history
           ({**base, "schedule_history": [dict(from_step=4, offset="global", flags=old)]},
            "schedule_history"),  # an entry not before --schedule-from
           ({"schedule_offset": "middle"}, "schedule_offset"),
           ({"change_schedule": True}, "change_schedule"),  # without --resume
           ({"group": ["wte"]}, "group"), ({"group": ["wte:constant(1.0)"],
                                            "lr_mults": {"wte": 0.1}}, "group"),
           ({"group": ["wte:constant(1.0)"], "sweep": ["lr=1e-3,3e-3"]}, "group"),
           ({**base, "sweep": ["lr=1e-3,3e-3"]}, "schedule_history")]
    for kw, name in bad:
        with pytest.raises(ValueError, match=f"--{name.replace('_', '-')}="):
            TrainConfig.from_dict(kw).normalized().validate()


def test_branch_population_equals_single_branches(tmp_path, corpus, capsys) -> None:
    """``--branch-from`` with ``--sweep lr=...``: every member starts from the parent's
    checkpoint at step 3 (its state, step and data position). The member with the parent's
    lr continues as the parent did, the other as a single branch with its lr; a member
    vmapped next to another runs the same arithmetic batched, so losses agree to 1e-6
    relative and lrs to float32 rounding (as tests/train/test_sweep.py's members and single
    runs). Sweeping a non-schedule field, or seeds, from a parent is refused."""
    from train.run.setup import check_config

    tmp = str(tmp_path)
    parent = os.path.join(tmp, "parent")
    p = run(tiny(tmp, corpus, steps=6), parent)  # cosine, checkpoints at 3 and 6
    pr = _rows(parent)
    before = _files(parent)
    pop_wd = os.path.join(tmp, "pop")
    s = run({"branch_from": f"{parent}:3", "steps": 6, "sweep": [f"lr={LR},1e-3"]}, pop_wd)
    out = capsys.readouterr().out
    assert f"branched from {os.path.join(parent, 'checkpoints', '3')} (step 3)" in out
    assert "member 1 (lr=0.001): schedule change at step 3 (global offset)" in out
    assert s["start_step"] == 3 and s["steps"] == 6
    with open(os.path.join(pop_wd, "metrics", "metrics.jsonl")) as f:
        rows = [r for r in map(json.loads, f) if "loss" in r]
    member = {i: {r["step"]: r for r in rows if r["member"] == i} for i in (0, 1)}
    assert sorted(member[0]) == sorted(member[1]) == [3, 4, 5]
    f32 = LR * float(np.finfo(np.float32).eps)

    def same(got: dict, want: dict, got_params, want_params) -> None:
        np.testing.assert_allclose([got[t]["loss"] for t in (3, 4, 5)],
                                   [want[t]["loss"] for t in (3, 4, 5)], rtol=1e-6, atol=0)
        np.testing.assert_allclose([got[t]["lr"] for t in (3, 4, 5)],
                                   [want[t]["lr"] for t in (3, 4, 5)], rtol=0, atol=4 * f32)
        for x, y in zip(jax.tree.leaves(got_params), jax.tree.leaves(want_params), strict=True):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)

    # member 0 has the parent's schedule: the parent's steps 3..5 (the same state and batch at
    # step 3: the loss before any member's update is the parent's bit for bit)
    assert member[0][3]["loss"] == pr[3]["loss"] == member[1][3]["loss"]
    same(member[0], pr, s["results"][0]["params"], p["params"])
    # member 1: a single branch with lr 1e-3 from step 3 (cosine at the global step)
    single_wd = os.path.join(tmp, "single")
    b = run({"branch_from": f"{parent}:3", "steps": 6, "lr": 1e-3}, single_wd)
    same(member[1], _rows(single_wd), s["results"][1]["params"], b["params"])
    for t in (3, 4, 5):  # after 2 warmup steps, torch's cosine (T_max 20 - 2) at the run's step
        assert member[1][t]["lr"] == pytest.approx(
            1e-3 * (1 + math.cos(math.pi * (t - 2) / 18)) / 2, rel=1e-6)
    # the WSD recipe's cooldowns as one population: --sweep over a schedule's text (commas
    # inside parentheses belong to the value), restarted at the branch step (local offset)
    cool_wd = os.path.join(tmp, "cools")
    c = run({"branch_from": f"{parent}:3", "steps": 6, "schedule_offset": "local",
             "sweep": ["schedule=linear(3e-3, 0, 3),linear(3e-3, 0, 2)"]}, cool_wd)
    assert c["members"] == [{"schedule": "linear(3e-3, 0, 3)"},
                            {"schedule": "linear(3e-3, 0, 2)"}]
    with open(os.path.join(cool_wd, "metrics", "metrics.jsonl")) as f:
        cool = [(r["member"], r["step"], r["lr"]) for r in map(json.loads, f) if "loss" in r]
    assert sorted(cool) == [(i, t, pytest.approx(3e-3 * max(0.0, 1 - (t - 3) / n), abs=4 * f32))
                            for i, n in ((0, 3), (1, 2)) for t in (3, 4, 5)]
    # the command line: the swept --schedule is each member's family (the parent's cosine
    # flags are not carried), the parent's schedule the history
    from train.__main__ import parse_config

    cli, _ = parse_config(["--branch-from", f"{parent}:3", "--workdir", os.path.join(tmp, "c"),
                           "--steps=6", "--schedule-offset=local", "--sweep",
                           "schedule=linear(3e-3, 0, 3),linear(3e-3, 0, 2)"])
    assert cli.lr_scheduler is None and cli.schedule is None and cli.schedule_from == 3
    assert cli.sweep == ("schedule=linear(3e-3, 0, 3),linear(3e-3, 0, 2)",)
    assert [h["flags"]["lr_scheduler"] for h in cli.schedule_history] == ["cosine"]
    assert _files(parent) == before
    done = run({"resume": True}, pop_wd)  # the population branch resumes as any population
    assert done["stop_reason"] == "already finished"
    # only the branch's schedule flags may vary; seeds would leave the parent's data stream
    for kw, what in (({"sweep": ["weight_decay=0.0,0.1"]}, "weight_decay is invalid with "
                      "--branch-from"), ({"sweep": ["lr=1e-3,3e-3"], "sweep_seeds": 2},
                                         "--branch-from=")):
        with pytest.raises(ValueError, match=what):
            from train.config import TrainConfig
            from train.resume import with_saved_config

            check_config(TrainConfig.from_dict(with_saved_config(
                {"branch_from": f"{parent}:3", "steps": 6, **kw}, os.path.join(tmp, "x"))))


def test_plot_of_a_run_and_its_branches(tmp_path, capsys, monkeypatch) -> None:
    """``python -m train.plot RUN_DIR --branches``: the run's curves and those of the sibling
    workdirs whose config.json names it in ``branch_from`` (another run's branch is not
    one), each from its branch step, a population branch one curve per member. The series
    are the metrics.jsonl rows (written here by hand: no training needed)."""
    pytest.importorskip("matplotlib")
    from train.plot import branch_series, find_branches
    from train.plot import main as plot_main

    def workdir(name: str, steps, branch_from: str | None = None, member=None,
                members=None) -> str:
        d = tmp_path / name
        (d / "metrics").mkdir(parents=True)
        (d / "config.json").write_text(json.dumps(
            {"branch_from": branch_from} if branch_from else {}))
        if members is not None:
            (d / "members.json").write_text(json.dumps(members))
        with open(d / "metrics" / "metrics.jsonl", "w") as f:
            for m in ([None] if member is None else member):
                for t in steps:
                    row = {"step": t, "loss": 5.0 - t / 10 - (m or 0), "lr": 1e-3 * (t + 1)}
                    f.write(json.dumps(row if m is None else {**row, "member": m}) + "\n")
            f.write(json.dumps({"step": steps[-1] + 1, "val_loss": 4.0}) + "\n")
            f.write('{"step": 9, "lo')  # a line cut short by a killed run
        return str(d)

    parent = workdir("parent", range(6))
    p_abs = os.path.abspath(parent)
    cool = workdir("cool", range(3, 6), f"{p_abs}:3")
    early = workdir("early", range(1, 3), f"{p_abs}:1")
    pop = workdir("pop", range(3, 5), f"{p_abs}:3", member=[0, 1],
                  members=[{"lr": 0.003}, {"lr": 0.001}])
    workdir("other", range(3, 5), f"{os.path.join(str(tmp_path), 'elsewhere')}:3")
    workdir("parent2", range(3, 5), f"{p_abs}2:3")  # a prefix of the name is not the run
    assert find_branches(parent) == [early, cool, pop]
    got = [(s["label"], s["from_step"], s["steps"], s["loss"], s["lr"])
           for s in branch_series(parent)]
    assert got == [
        ("parent", 0, list(range(6)), [5.0 - t / 10 for t in range(6)],
         [1e-3 * (t + 1) for t in range(6)]),
        ("early (from step 1)", 1, [1, 2], [4.9, 4.8], [2e-3, 3e-3]),
        ("cool (from step 3)", 3, [3, 4, 5], [4.7, 4.6, 4.5], [4e-3, 5e-3, 6e-3]),
        ("pop member 0 (lr=0.003) (from step 3)", 3, [3, 4], [4.7, 4.6], [4e-3, 5e-3]),
        ("pop member 1 (lr=0.001) (from step 3)", 3, [3, 4], [5.0 - t / 10 - 1 for t in (3, 4)],
         [4e-3, 5e-3])]
    assert [s["label"] for s in branch_series(parent, [cool])] == ["parent",
                                                                   "cool (from step 3)"]
    monkeypatch.chdir(tmp_path)  # a relative RUN_DIR: the same series
    assert [s["steps"] for s in branch_series("parent")] == [s[2] for s in got]
    assert plot_main([parent, "--branches"]) == 0
    out = os.path.join(parent, "branches.png")
    assert capsys.readouterr().out.strip() == out and os.path.getsize(out) > 10_000
    assert not [n for n in os.listdir(parent) if ".tmp" in n]
    o2 = str(tmp_path / "two.png")
    assert plot_main([parent, "--branches", cool, "-o", o2]) == 0 and os.path.getsize(o2) > 0
    with pytest.raises(SystemExit) as e:
        plot_main([os.path.join(parent, "metrics", "metrics.jsonl"), "--branches"])
    assert e.value.code == 2 and "is not a directory" in capsys.readouterr().err


def test_change_and_branch_on_the_mesh_engine(tmp_path, corpus) -> None:
    """The same course on the mesh engine (tensor parallel 2 x data parallel 4 over the 8
    simulated devices): a schedule change at a resume and a branch restore the sharded state
    and continue bit for bit like an uninterrupted mesh run with the same history; the lrs
    are the join by hand."""
    tmp = str(tmp_path)
    mesh = {"tensor_parallel": 2}
    base = tiny(tmp, corpus, steps=2, lr_scheduler="steplr", lr_step_size=2, lr_gamma=0.5,
                **mesh)
    wd = os.path.join(tmp, "w")
    run(base, wd)
    change = {"lr_scheduler": "cosine", "total_steps": 20, "steps": 4}
    done = run({"resume": True, "change_schedule": True, **change}, wd)
    assert done["start_step"] == 2
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    ref_wd = os.path.join(tmp, "ref")
    ref = run({**base, **{k: saved[k] for k in ("schedule_history", "schedule_from",
                                                 "schedule_offset", "lr_scheduler",
                                                 "lr_step_size", "lr_gamma", "warmup_steps",
                                                 "total_steps")},
               "steps": 4}, ref_wd)
    rows, ref_rows = _rows(wd), _rows(ref_wd)
    _same_tree(done["params"], ref["params"])
    assert [(rows[t]["loss"], rows[t]["lr"]) for t in range(4)] == [
        (ref_rows[t]["loss"], ref_rows[t]["lr"]) for t in range(4)]
    for t in range(4):
        _close(rows[t]["lr"], _steplr(t) if t < 2 else _cosine(t))
    # a branch at step 3 of the uninterrupted run (whose checkpoint holds the history) with
    # its own schedule: that run again
    br = run({"branch_from": f"{ref_wd}:3", "steps": 4}, os.path.join(tmp, "branch"))
    assert br["start_step"] == 3
    _same_tree(br["params"], done["params"])
