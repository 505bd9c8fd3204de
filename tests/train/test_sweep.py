"""Population sweeps (train/run/sweep.py): members equal single runs, freezing, exact resume.

The references are separate ``train_and_evaluate`` runs with each member's settings: a member
vmapped next to others runs the same arithmetic batched (XLA may block the batched matrix
products differently; on CPU the members run one after the other by default, ``MEMBER_LOOP``),
so losses are compared to 1e-6 relative over 20 steps and the learning
rates (float32 inside the step, float64 in a single run's log) to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from test_train import ROOT, _assert_trees_equal, _flags, _records
from train_testutil import cpu_env, tiny

import schedules as S
import train.engine.population as population
from train import TrainConfig, build_schedule
from train import sweep as run_population
from train import train_and_evaluate as run
from train.__main__ import main, parse_config
from train.engine.population import schedule_mode
from train.resume import ResumeMismatchError
from train.run.grid import parse_sweep
from train.run.loop import TrainingInterrupted
from train.run.setup import check_config

STEPS = 20


def _member_rows(wd: str, member: int, key: str = "loss") -> list[dict]:
    return [r for r in _records(wd) if r.get("member") == member and key in r]


def _check_member_equals_single_run(wd: str, s: dict, i: int, single_cfg: dict,
                                    single_wd: str) -> None:
    ref = run(single_cfg, single_wd)
    rows = _member_rows(wd, i)
    assert [r["step"] for r in rows] == list(range(STEPS))
    np.testing.assert_allclose([r["loss"] for r in rows], [x for _, x in ref["losses"]],
                               rtol=1e-6, atol=0)
    single_lrs = [r["lr"] for r in _records(single_wd) if "loss" in r]
    # a single run applies the library's float64 lr rounded once to float32 (a table); a
    # population whose members differ in the schedule's leaves evaluates the schedule in
    # float32 in its step: cos and the products each err by < 1 ulp of the peak lr, so the
    # two agree within a few float32 ulps of the peak (absolute: near a cosine's end the
    # relative error of 0.5 (1 + cos) in float32 grows)
    peak = max(single_lrs)
    np.testing.assert_allclose([r["lr"] for r in rows], single_lrs, rtol=0,
                               atol=4 * peak * np.finfo(np.float32).eps)
    np.testing.assert_allclose(s["results"][i]["val_loss"], ref["val_loss"], rtol=1e-6)


@pytest.fixture(scope="module")
def leaves(tmp_path_factory, corpus):
    """lr x warmup of torch's cosine (a table of torch's values per member), 20 steps."""
    tmp = str(tmp_path_factory.mktemp("sweep_leaves"))
    cfg = tiny(tmp, corpus, steps=STEPS, total_steps=STEPS, lr_scheduler="cosine",
               eval_interval=10, checkpoint_interval=5, log_interval=5)
    wd = os.path.join(tmp, "pop")
    s = run_population(cfg, wd, grid={"lr": [1e-3, 4e-3], "warmup_steps": [0, 5]})
    return tmp, cfg, wd, s


def test_members_json_metrics_and_table(leaves) -> None:
    _tmp, cfg, wd, s = leaves
    with open(os.path.join(wd, "members.json")) as f:
        members = json.load(f)
    assert members == [{"lr": a, "warmup_steps": w} for a in (1e-3, 4e-3) for w in (0, 5)]
    assert s["schedule_mode"] == "table" and s["members"] == members
    for i, m in enumerate(members):
        rows = _member_rows(wd, i)
        assert [r["step"] for r in rows] == list(range(STEPS))
        assert all("time" in r and r["grad_norm"] > 0 for r in rows)
        sched = build_schedule(TrainConfig.from_dict({**cfg, **m}))
        np.testing.assert_allclose([r["lr"] for r in rows], [sched(t) for t in range(STEPS)],
                                   rtol=2e-7)
        assert [r["step"] for r in _member_rows(wd, i, "val_loss")] == [10, 20]
        assert s["results"][i]["status"] == "ok"
    ranked = [s["results"][i]["val_loss"] for i in s["ranking"]]
    assert ranked == sorted(ranked) and s["best"] == s["ranking"][0]
    assert os.path.getsize(s["plot"]) > 10_000 and s["plot"] == os.path.join(wd, "sweep.png")
    # members learn, and differently
    finals = {round(s["results"][i]["final_loss"], 6) for i in range(4)}
    assert len(finals) == 4 and max(finals) < s["results"][0]["losses"][0][1] - 0.3


def test_table_members_equal_single_runs(leaves) -> None:
    tmp, cfg, wd, s = leaves
    for i in (1, 2):  # lr 1e-3 with warmup 5; lr 4e-3 without warmup
        m = s["members"][i]
        _check_member_equals_single_run(wd, s, i, {**cfg, **m}, os.path.join(tmp, f"single{i}"))


@pytest.mark.parametrize("loop", ["auto", "vmap"])
def test_leaf_members_equal_single_runs(tmp_path, corpus, monkeypatch, loop) -> None:
    # Megatron's cosine: max_lr and min_lr are pytree leaves, stacked into one schedule.
    # "auto" is "scan" on CPU (members one after the other), "vmap" the accelerators' loop
    monkeypatch.setattr(population, "MEMBER_LOOP", loop)
    cfg = tiny(str(tmp_path), corpus, steps=STEPS, lr_scheduler=None, warmup_steps=None,
               total_steps=None, lr_decay_style="cosine", lr_warmup_iters=5,
               eval_interval=STEPS, checkpoint_interval=STEPS)
    wd = str(tmp_path / "pop")
    s = run_population(cfg, wd, grid={"lr": [1e-3, 4e-3], "min_lr": [0.0, 1e-4]})
    assert s["schedule_mode"] == "leaves"
    _check_member_equals_single_run(wd, s, 3, {**cfg, "lr": 4e-3, "min_lr": 1e-4},
                                    str(tmp_path / "single"))


def test_dropout_rates_and_seeds_equal_single_runs(tmp_path, corpus) -> None:
    # the dropout rate (a traced argument of the model) with two seeds: per-member data,
    # initialization and dropout keys
    cfg = tiny(str(tmp_path), corpus, steps=STEPS, total_steps=STEPS, dropout=0.1,
               eval_interval=STEPS, checkpoint_interval=STEPS)
    wd = str(tmp_path / "pop")
    s = run_population({**cfg, "sweep": ["dropout=0.05,0.1"], "sweep_seeds": 2}, wd)
    assert s["members"] == [{"dropout": d, "seed": k} for d in (0.05, 0.1) for k in (0, 1)]
    first = [s["results"][i]["losses"][0][1] for i in range(4)]
    assert first[2] != first[3]  # the same rate with another seed: other data and init
    assert first[1] != first[3]  # the same seed with another rate: another dropout mask
    _check_member_equals_single_run(wd, s, 3, {**cfg, "dropout": 0.1, "seed": 1},
                                    str(tmp_path / "single"))


def test_traced_dropout_rate_is_flax_dropout() -> None:
    # a member's rate is traced: the same mask and scaling as nn.Dropout's static rate, bit for
    # bit, in the layer (float32, bfloat16) and through both models (config rate vs call-time)
    import flax.linen as nn

    import models
    from models.layers import Dropout

    key, rates = jax.random.key(3), (0.07, 0.1, 0.3)
    xs = [np.random.default_rng(1).normal(size=(16, 64)).astype(d) for d in ("float32",
                                                                          "bfloat16")]
    drop = lambda layer, r, x: layer(r).apply({}, x, deterministic=False,  # noqa: E731
                                              rngs={"dropout": key})
    ref = jax.jit(lambda xs: [drop(nn.Dropout, r, x) for x in xs for r in rates])(xs)
    got = jax.jit(lambda xs, rs: [drop(Dropout, r, x) for x in xs for r in rs])(
        xs, np.float32(rates))
    for a, b in zip(ref, got, strict=True):
        assert (np.asarray(a) == 0).any() and (np.asarray(a) == np.asarray(b)).all()
    tokens = np.arange(32).reshape(2, 16) % 64
    for name in ("gpt2", "llama3"):
        cfg = models.get_config(name, "tiny", vocab_size=64, n_layer=1)
        with_rate, without = models.build(dataclasses.replace(cfg, dropout=0.1)), models.build(cfg)

        def logits(p: dict, r1: jax.Array, r2: jax.Array, a=with_rate, b=without) -> tuple:
            kw = dict(deterministic=False, rngs={"dropout": key})
            return (a.apply({"params": p}, tokens, **kw),
                    b.apply({"params": p}, tokens, dropout_rate=r1, **kw),
                    b.apply({"params": p}, tokens, dropout_rate=r2, **kw))

        ref, got, other = jax.jit(logits)(models.init_params(cfg, key), np.float32(0.1),
                                          np.float32(0.2))
        assert (np.asarray(ref) == np.asarray(got)).all(), name
        assert not np.allclose(got, other), name  # the call-time rate is used


def test_diverged_and_early_stopped_members_are_frozen(tmp_path, corpus, capsys) -> None:
    # steplr with gamma 1e-30: from step 2 on the lr underflows to 0 in float32, so the val
    # loss stops improving and patience 1 freezes that member at its second evaluation;
    # lr 1e30 diverges. The healthy member trains on, unaffected.
    cfg = tiny(str(tmp_path), corpus, steps=6, lr_scheduler="steplr", lr_step_size=1,
               warmup_steps=0, eval_interval=2, early_stop_patience=1, checkpoint_interval=100,
               sweep=["lr=3e-3,1e30", "lr_gamma=0.9,1e-30"])
    wd = str(tmp_path / "w")
    s = run(cfg, wd)
    res = s["results"]
    assert res[0]["status"] == "ok" and [t for t, _ in res[0]["evals"]] == [2, 4, 6]
    assert res[1]["status"] == "early-stopped at step 4"
    assert [t for t, _ in res[1]["evals"]] == [2, 4] and len({v for _, v in res[1]["evals"]}) == 1
    for i in (2, 3):
        assert res[i]["status"].startswith("diverged at step")
        t_bad = int(res[i]["status"].split()[-1])
        rows = _member_rows(wd, i)
        assert rows[-1]["step"] == t_bad  # logged up to the bad step, then frozen
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(res[i]["params"]))
    assert s["ranking"][-2:] in ([2, 3], [3, 2]) and s["best"] in (0, 1)
    assert [r["step"] for r in _member_rows(wd, 0)] == list(range(6))
    assert [r["step"] for r in _member_rows(wd, 1)] == list(range(4))
    # the healthy member is the single run with its settings (the others did not disturb it)
    single = run({**{k: v for k, v in cfg.items() if k != "sweep"}, "lr_gamma": 0.9,
                  "early_stop_patience": 0}, str(tmp_path / "single"))
    np.testing.assert_allclose([x for _, x in res[0]["losses"]],
                               [x for _, x in single["losses"]], rtol=1e-6)
    assert s["last_checkpoint"] == 6
    # resumed at --steps: the frozen members' statuses come from the checkpoint, their final
    # val losses (of their frozen parameters; NaN where lr 1e30 left huge finite ones) from the
    # metrics
    capsys.readouterr()
    again = run({**cfg, "resume": True}, wd)
    _assert_saved_summary(wd, s, again, capsys.readouterr().out)


def test_float16_members_have_their_own_loss_scaler(tmp_path, corpus) -> None:
    # float16: each member carries its own dynamic loss scaler (vmapped with the rest of its
    # state), from a scale so large that the first gradients overflow. Member 0 is
    # test_precision's float16 run (its compiled step is shared): its skipped steps, loss
    # scales, learning rates and losses are that single run's. Member 1 (1000x the lr: its loss
    # explodes, and so do its float16 gradients) skips other steps, and its own scale follows
    # GradScaler's rule from its own skips.
    cfg = tiny(str(tmp_path), corpus, dtype="float16", loss_scale_init=2.0**18,
               loss_scale_growth_interval=2, eval_interval=100)
    wd = str(tmp_path / "pop")
    s = run_population(cfg, wd, grid={"lr": [3e-3, 3.0]})
    single = str(tmp_path / "single")
    ref = run(cfg, single)
    rows, want = [_member_rows(wd, i) for i in (0, 1)], [r for r in _records(single) if "loss" in r]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in want] == list(range(6))
    skipped = [[r["skipped"] for r in x] for x in rows]
    assert skipped[0] == [r["skipped"] for r in want] and 0 < sum(skipped[0]) < 6
    assert [r["loss_scale"] for r in rows[0]] == [r["loss_scale"] for r in want]
    np.testing.assert_allclose([r["lr"] for r in rows[0]], [r["lr"] for r in want], rtol=2e-7)
    np.testing.assert_allclose([r["loss"] for r in rows[0]], [x for _, x in ref["losses"]],
                               rtol=1e-6, atol=0)
    assert skipped[1] != skipped[0] and 0 < sum(skipped[1]) < 6  # the members' own scalers
    finals = []
    for i in (0, 1):  # halve on a skip, double after 2 good steps; the lr moves on applied ones
        scale, good, count = 2.0**18, 0, 0
        sched = build_schedule(TrainConfig.from_dict({**cfg, **s["members"][i]}))
        for r in rows[i]:
            assert r["loss_scale"] == scale and r["lr"] == pytest.approx(sched(count), rel=1e-6)
            good = 0 if r["skipped"] else good + 1
            scale *= 0.5 if r["skipped"] else (2.0 if good == 2 else 1.0)
            good, count = good % 2, count + (not r["skipped"])
        finals.append(scale)
    assert [x["status"] for x in s["results"]] == ["ok", "ok"]
    saved = ocp.StandardCheckpointer().restore(os.path.join(wd, "checkpoints", "6", "state"))
    np.testing.assert_array_equal(saved["state"]["loss_scale"]["scale"], np.float32(finals))


def test_sigkill_and_resume_population_bit_identical(leaves) -> None:
    tmp, cfg, _, ref = leaves
    wd = os.path.join(tmp, "killed")
    args = [sys.executable, "-m", "train", "--workdir", wd, *_flags(cfg),
            "--sweep", "lr=1e-3,4e-3", "--sweep=warmup_steps=0,5"]
    kill_at = random.Random().randint(6, 15)
    p = subprocess.Popen(args, env=cpu_env(8), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    metrics = os.path.join(wd, "metrics", "metrics.jsonl")
    ckpts = os.path.join(wd, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        committed = os.path.isdir(ckpts) and any(d.isdigit() for d in os.listdir(ckpts))
        if committed and os.path.exists(metrics):
            with open(metrics) as f:
                done = [json.loads(x)["step"] for x in f if '"loss"' in x and x.endswith("\n")]
            if done and max(done) >= kill_at:
                break
        time.sleep(0.05)
    assert p.poll() is None, f"finished before the kill: {p.stderr.read().decode()[-2000:]}"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    r = subprocess.run([*args, "--resume"], env=cpu_env(8), cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = re.search(r"resumed from .* \(step (\d+)\)", r.stdout)
    assert resumed and 5 <= int(resumed.group(1)) < STEPS, r.stdout[-2000:]
    assert "sweep summary" in r.stdout and "best: member" in r.stdout
    assert re.search(r"member\s+lr\s+warmup_steps\s+loss\s+lr\n", r.stdout)  # log table
    for i in range(4):
        by_step: dict[int, set] = {}
        for x in _member_rows(wd, i):
            by_step.setdefault(x["step"], set()).add(x["loss"])
        assert sorted(by_step) == list(range(STEPS))
        ref_losses = dict(ref["results"][i]["losses"])
        for t, vals in by_step.items():  # replayed steps are bit-identical too
            assert vals == {ref_losses[t]}, (i, t, vals, ref_losses[t])
    saved = ocp.StandardCheckpointer().restore(os.path.join(wd, "checkpoints", str(STEPS),
                                                            "state"))["state"]["params"]
    ref_params = jax.tree.map(lambda *xs: np.stack(xs),
                              *[ref["results"][i]["params"] for i in range(4)])
    _assert_trees_equal(saved, ref_params)


def test_ctrl_c_saves_a_population_and_it_resumes_bit_identical(leaves) -> None:
    """Ctrl-C (SIGINT, sent to this process once the first metrics are logged) stops a
    population after the current step as it stops a single run: the state is saved there and
    TrainingInterrupted raised; resumed, every member's losses and final parameters are
    bit-identical to the uninterrupted population's."""
    tmp, cfg, _, ref = leaves
    wd = os.path.join(tmp, "ctrl_c")
    grid = {"lr": [1e-3, 4e-3], "warmup_steps": [0, 5]}
    metrics = os.path.join(wd, "metrics", "metrics.jsonl")
    late: list[int] = []  # a SIGINT after the loop ended must not interrupt the test session

    def send() -> None:
        deadline = time.time() + 240
        while time.time() < deadline and not (os.path.exists(metrics)
                                              and os.path.getsize(metrics) > 0):
            time.sleep(0.002)
        os.kill(os.getpid(), signal.SIGINT)

    old = signal.signal(signal.SIGINT, lambda *a: late.append(1))
    try:
        th = threading.Thread(target=send, daemon=True)
        th.start()
        with pytest.raises(TrainingInterrupted) as e:
            run_population(cfg, wd, grid=grid)
        th.join()
    finally:
        signal.signal(signal.SIGINT, old)
    step = e.value.step
    assert not late and 1 <= step < STEPS, (late, step)
    ckpts = os.path.join(wd, "checkpoints")
    assert e.value.checkpoint == os.path.join(ckpts, str(step))
    assert str(step) in os.listdir(ckpts)
    again = run_population({**cfg, "resume": True}, wd, grid=grid)
    assert again["start_step"] == step and again["steps"] == STEPS
    for i in range(4):
        ref_losses = ref["results"][i]["losses"]
        assert again["results"][i]["losses"] == ref_losses[step:]
        by_step: dict[int, set] = {}
        for x in _member_rows(wd, i):
            by_step.setdefault(x["step"], set()).add(x["loss"])
        assert sorted(by_step) == list(range(STEPS))
        assert all(vals == {dict(ref_losses)[t]} for t, vals in by_step.items())
        _assert_trees_equal(again["results"][i]["params"], ref["results"][i]["params"])


def _assert_saved_summary(wd: str, finished: dict, again: dict, out: str) -> None:
    """A population resumed at its --steps: the single run's one line, nothing trained, and the
    finished run's summary (statuses, losses, ranking) rebuilt from what it saved."""
    steps = finished["steps"]
    assert f"run already finished at step {steps}; nothing to do" in out, out
    assert "resumed from" not in out, out
    assert "sweep summary (saved; ranked by final validation loss)" in out
    assert again["stop_reason"] == "already finished" and again["start_step"] == steps
    assert again["ranking"] == finished["ranking"] and again["best"] == finished["best"]
    assert again["plot"] == finished["plot"] and f"plot: {finished['plot']}" in out
    for a, b in zip(again["results"], finished["results"], strict=True):
        for key in ("settings", "status", "losses", "evals", "final_loss", "val_loss"):
            want = b[key]  # metrics.jsonl holds non-finite numbers as null: read back as NaN
            if key in ("losses", "evals"):
                want = [(t, x if np.isfinite(x) else np.nan) for t, x in want]
            elif key in ("final_loss", "val_loss") and not np.isfinite(want):
                want = np.nan
            np.testing.assert_equal(a[key], want, err_msg=f"member {a['member']}: {key}")
        row = re.search(rf"^\s+{a['member']}\s.*$", out.split("(saved;")[1], re.M).group(0)
        assert f"{b['final_loss']:.4f}" in row and f"{b['val_loss']:.4f}" in row, row
        assert (b["status"] in row) == (b["status"] != "ok"), row
    best = finished["results"][finished["best"]]
    assert f"best: member {finished['best']} (" in out and f"{best['val_loss']:.4f}" in out


def test_resume_of_a_finished_population_shows_its_summary(leaves, capsys) -> None:
    # nothing to do, as a single run resumed at --steps (the CLI, in-process, as test_resume)
    _tmp, cfg, wd, s = leaves
    capsys.readouterr()
    assert main(["--resume", "--workdir", wd]) == 0
    out = capsys.readouterr().out
    again = run_population({**cfg, "resume": True}, wd,
                           grid={"lr": [1e-3, 4e-3], "warmup_steps": [0, 5]})
    _assert_saved_summary(wd, s, again, out)
    assert "nan" not in out  # every member finished: nothing missing


def test_resume_with_another_population_is_refused(leaves) -> None:
    # train.resume's guard: every difference in one message, before anything compiles; the
    # CLI prints it as one line, as for a single run
    _tmp, cfg, wd, _ = leaves
    with pytest.raises(ResumeMismatchError) as e:
        run_population({**cfg, "resume": True, "beta2": 0.9}, wd,
                       grid={"lr": [1e-3, 5e-3], "warmup_steps": [0, 5]})
    msg = str(e.value)
    assert msg.startswith(f"cannot resume from {os.path.join(wd, 'checkpoints', str(STEPS))}")
    for part in ("beta2: checkpoint 0.95, now 0.9", "sweep: checkpoint ['lr=0.001,0.004', ",
                 "members: checkpoint [{'lr': 0.001, 'warmup_steps': 0}, ",
                 "{'lr': 0.005, 'warmup_steps': 0}", "member_schedules: checkpoint "):
        assert part in msg, (part, msg)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run_population(cfg, wd, grid={"lr": [1e-3, 4e-3], "warmup_steps": [0, 5]})
    r = subprocess.run([sys.executable, "-m", "train", "--workdir", wd, *_flags(cfg), "--resume",
                        "--sweep", "lr=1e-3,5e-3", "--sweep=warmup_steps=0,5"], env=cpu_env(8),
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0 and "members: checkpoint" in r.stderr, r.stderr


# -- the grid and its validation (no training) ----------------------------------------------


def test_parse_sweep_grid_product_and_seeds() -> None:
    names, members = parse_sweep(["lr=1e-3,3e-3", "warmup-steps=0, 50"], seeds=2, base_seed=7)
    assert names == ["lr", "warmup_steps", "seed"]
    assert len(members) == 8 and members[0] == {"lr": 1e-3, "warmup_steps": 0, "seed": 7}
    assert members[-1] == {"lr": 3e-3, "warmup_steps": 50, "seed": 8}
    assert isinstance(members[0]["warmup_steps"], int)
    assert parse_sweep(["total_steps=none,40"])[1] == [{"total_steps": None},
                                                        {"total_steps": 40}]


def test_parse_sweep_schedule_text_keeps_its_commas(tmp_path) -> None:
    """A schedule's text is one value: the commas inside its parentheses and brackets do not
    split it (--schedule, and the hyperparameters that take a schedule); a number stays a
    number. Members of one form with other leaves make one program (the leaves stacked); the
    plot labels text values on its axis."""
    names, members = parse_sweep([
        "schedule=cosine(1e-3, 0, 20), join(constant(1e-3), constant(0.0), at=[10])",
        "weight_decay=0.1,linear(0.1, 0, 10)"])
    assert names == ["schedule", "weight_decay"]
    assert [m["schedule"] for m in members[::2]] == [
        "cosine(1e-3, 0, 20)", "join(constant(1e-3), constant(0.0), at=[10])"]
    assert [m["weight_decay"] for m in members[:2]] == [0.1, "linear(0.1, 0, 10)"]
    for bad, match in (("schedule=cosine(1e-3, 0, 20", "unbalanced"),
                       ("schedule=cosine(1e-3, 0, 20)),constant(1e-3)", "unbalanced"),
                       ("lr=cosine(1e-3, 0, 20)", "each value must be a number")):
        with pytest.raises(ValueError, match=r"--sweep.*is invalid: " + match):
            parse_sweep([bad])
    cfg = TrainConfig(model_size="tiny", lr_scheduler=None, warmup_steps=None,
                      total_steps=None, steps=20,
                      sweep=("schedule=cosine(1e-3, 0, 20),cosine(3e-3, 1e-4, 10)",))
    check_config(cfg)  # each member a valid single run
    from train.run.checks import run_schedule
    from train.run.grid import member_configs

    _, ms, cfgs = member_configs(cfg.normalized().validate())
    assert schedule_mode([run_schedule(c) for c in cfgs], ms)[0] == "leaves"
    from train.plot import plot_sweep

    out = plot_sweep({"swept": ["schedule"], "results": [
        {"member": i, "settings": m, "val_loss": 3.0 - i, "losses": [(0, 4.0), (1, 3.5)]}
        for i, m in enumerate(ms)]}, str(tmp_path / "sweep.png"))
    assert os.path.getsize(out) > 1000


@pytest.mark.parametrize("entry, match", [
    ("model_size=tiny,mini", r"model_size cannot be swept: it defines the model"),
    ("dropout=0.1,1.5", r"--sweep member 1 \(dropout=1.5\) is invalid"),
    ("lr_scheduler=cosine,wsd", r"lr_scheduler cannot be swept: it selects the schedule's"),
    ("batch_size=2,4", r"batch_size cannot be swept: it defines the data"),
    ("steps=10,20", r"steps cannot be swept: it is the run's bookkeeping"),
    ("lr", r"must be FIELD=V1,V2"),
    ("lr=", r"must be FIELD=V1,V2"),
    ("lrr=1,2", r"'lrr' is not a config field"),
    ("warmup_steps=1.5,2", r"each value must be an int"),
    ("lr=1e-3,1e-3", r"distinct"),
    ("lr=-1,1e-3", r"--sweep member 0 \(lr=-1\) is invalid: --lr=-1.0 is invalid"),
])
def test_bad_sweeps_raise_before_compiling(entry, match) -> None:
    with pytest.raises(ValueError, match=match):
        check_config(TrainConfig(model_size="tiny", sweep=(entry,)))


def test_sweep_seeds_validated_and_not_twice() -> None:
    with pytest.raises(ValueError, match=r"--sweep-seeds=-1 is invalid"):
        check_config(TrainConfig(model_size="tiny", sweep_seeds=-1))
    with pytest.raises(ValueError, match="seed is swept twice"):
        check_config(TrainConfig(model_size="tiny", sweep=("seed=1,2",), sweep_seeds=2))


def test_schedules_of_different_structure_are_rejected() -> None:
    members = [{"x": 0}, {"x": 1}]
    with pytest.raises(ValueError, match=r"differ in structure.*run them separately"):
        schedule_mode([S.constant(1e-3), S.wsd(1e-3, total=10, warmup=2, decay=2)], members)
    mode, _, const = schedule_mode([S.wsd(1e-3, total=10, warmup=w, decay=2) for w in (0, 2)],
                                    members)
    assert mode == "leaves" and sum(c is None for c in const) == 1  # only warmup is vmapped


def test_cli_repeatable_sweep_flag() -> None:
    cfg, _wd = parse_config(["--model-size=tiny", "--sweep", "lr=1e-3,3e-3",
                            "--sweep=beta2=0.95,0.99", "--sweep-seeds=3", "--workdir=x"])
    assert cfg.sweep == ("lr=1e-3,3e-3", "beta2=0.95,0.99") and cfg.sweep_seeds == 3
    with pytest.raises(SystemExit):
        parse_config(["--sweep", "n_layer=1,2"])


def test_population_checks_simulate_devices_as_a_single_run(tmp_path) -> None:
    """``simulate_devices`` is not ignored by a population: with JAX already started on 8
    devices, 3 is refused before anything compiles, naming the flag, as for a single run."""
    assert len(jax.devices()) == 8  # the backend has started (conftest's 8 CPU devices)
    cfg = TrainConfig(model_size="tiny", steps=1, simulate_devices=3)
    for call in (lambda: run_population(cfg, str(tmp_path / "p"), grid={"lr": [1e-3, 2e-3]}),
                 lambda: run(cfg, str(tmp_path / "s"))):
        with pytest.raises(ValueError, match=r"--simulate-devices=3 is invalid here: JAX has "
                                             r"already started with 8 cpu device"):
            call()


def test_member_loop_is_scan_on_cpus_and_checked(monkeypatch) -> None:
    assert jax.devices()[0].platform == "cpu"
    assert population.member_loop(None) == "scan"  # "auto" on CPU: the members in sequence
    monkeypatch.setattr(population, "MEMBER_LOOP", "vmap")
    assert population.member_loop(jax.devices()[:1]) == "vmap"
    monkeypatch.setattr(population, "MEMBER_LOOP", "loop")
    with pytest.raises(ValueError, match=r"MEMBER_LOOP='loop' is invalid: must be one of auto"):
        population.member_loop(None)
