"""End-to-end runs on 8 simulated CPU devices: metrics, checkpoints, exact resume, errors.

In-process runs share one compiled step (same model/optimizer/schedule); the SIGKILL and
multi-process tests use subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from train_testutil import ROOT, adamw_applied_lr, cpu_env, tiny, two_process_argvs

import models
from train import CheckpointError, NonFiniteLossError, TrainConfig, build_schedule
from train import train_and_evaluate as run
from train.checkpoint import Checkpointer
from train.engine.step import init_state
from train.optim import make_optimizer


def _records(workdir: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics", "metrics.jsonl")) as f:
        return [json.loads(x) for x in f if x.strip()]


def _tree_hash(d: str) -> dict[str, str]:
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _load_params(ckpt_dir: str, step: int) -> dict:
    state = ocp.StandardCheckpointer().restore(os.path.join(ckpt_dir, str(step), "state"))
    return state["params"]


def _assert_trees_equal(a: dict, b: dict) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def base(tmp_path_factory, corpus):
    """An uninterrupted 12-step run (the reference for the resume tests)."""
    tmp = str(tmp_path_factory.mktemp("base"))
    cfg = tiny(tmp, corpus, steps=12)
    summary = run(cfg, os.path.join(tmp, "run"))
    return tmp, cfg, summary


def _restore(ckpt_dir: str, step: int, cfg: dict) -> dict:
    """The train state saved at ``step``, restored (and verified) by the trainer's code."""
    tc = TrainConfig.from_dict(cfg)
    model_cfg = models.get_config(tc.model, tc.base_size(), vocab_size=256,
                                  **tc.model_overrides())
    params = jax.device_get(models.init_params(model_cfg, jax.random.key(tc.seed)))
    tx = make_optimizer(tc, build_schedule(tc), params)
    ck = Checkpointer(ckpt_dir, 100)
    try:
        return ck.restore(step, init_state(params, tx), ck.read_config(step))
    finally:
        ck.close()


def test_run_metrics_lr_and_checkpoints(base, capsys) -> None:
    tmp, cfg, s = base
    wd = os.path.join(tmp, "run")
    recs = [r for r in _records(wd) if "loss" in r]
    assert [r["step"] for r in recs] == list(range(12))
    sched = build_schedule(TrainConfig.from_dict(cfg))
    for r in recs:
        assert r["lr"] == pytest.approx(sched(r["step"]), rel=1e-6)  # the schedule, not --lr
        assert r["grad_norm"] > 0 and "tokens_per_s" in r
    # ... and the rate the optimizer really applied: one more step (12 -> 13) from a copy of
    # checkpoint 12, the lr recovered from the AdamW update between the two saved states
    import shutil

    more = os.path.join(tmp, "one_more")
    shutil.copytree(wd, more)
    run({**cfg, "steps": 13, "resume": True, "checkpoint_interval": 1}, more)
    ck = os.path.join(more, "checkpoints")
    applied = adamw_applied_lr(_restore(ck, 12, cfg), _restore(ck, 13, cfg), b1=0.9, b2=0.95,
                               eps=1e-8)
    logged = [r["lr"] for r in _records(more) if "loss" in r and r["step"] == 12][-1]
    assert applied == pytest.approx(logged, rel=1e-3)
    assert abs(sched(13) / sched(12) - 1) > 0.1 and abs(sched(11) / sched(12) - 1) > 0.1
    assert recs[0]["lr"] != cfg["lr"]
    assert recs[-1]["loss"] < recs[0]["loss"] - 0.5  # it learns
    vals = [r for r in _records(wd) if "val_loss" in r]
    assert [v["step"] for v in vals] == [3, 6, 9, 12]
    steps = sorted(int(p) for p in os.listdir(os.path.join(wd, "checkpoints")) if p.isdigit())
    assert steps == [6, 9, 12]  # keep_checkpoints=3
    with open(os.path.join(wd, "checkpoints", "12", "config", "metadata")) as f:
        saved = json.load(f)
    assert saved["lr_scheduler"] == "cosine" and saved["schedule_config"]["type"] == "SequentialLR"
    assert s["steps"] == 12 and np.isfinite(s["val_loss"]) and s["tokens_per_s"] > 0
    _assert_trees_equal(_load_params(os.path.join(wd, "checkpoints"), 12), s["params"])


def test_resume_in_process_is_exact(base) -> None:
    tmp, cfg, ref = base
    wd = os.path.join(tmp, "resumed")
    run({**cfg, "steps": 5}, wd)  # stops between checkpoints (last one at 5 = the end)
    s = run({**cfg, "resume": True}, wd)
    assert s["start_step"] == 5
    assert dict(s["losses"]) == {t: x for t, x in ref["losses"] if t >= 5}
    _assert_trees_equal(s["params"], ref["params"])


def test_existing_checkpoints_need_resume(base) -> None:
    tmp, cfg, _ = base
    wd = os.path.join(tmp, "run")
    before = _tree_hash(os.path.join(wd, "checkpoints"))
    with pytest.raises(ValueError, match="already holds checkpoints"):
        run(cfg, wd)
    assert _tree_hash(os.path.join(wd, "checkpoints")) == before


def test_resume_changed_model_or_corrupted_fails_cleanly(base) -> None:
    tmp, cfg, _ = base
    ck = os.path.join(tmp, "run", "checkpoints")
    before = _tree_hash(ck)
    with pytest.raises(CheckpointError, match="n_embd: checkpoint None, now 32"):
        run({**cfg, "resume": True, "steps": 14, "n_embd": 32}, os.path.join(tmp, "run"))
    assert _tree_hash(ck) == before
    # corrupt a copy of the checkpoints: every data file of the latest step's state
    import shutil

    bad = os.path.join(tmp, "corrupt")
    shutil.copytree(os.path.join(tmp, "run"), bad)
    for root, _, files in os.walk(os.path.join(bad, "checkpoints", "12", "state")):
        for f in files:
            p = os.path.join(root, f)
            if "ocdbt" in root or f.startswith("manifest") or os.sep + "d" in root:
                with open(p, "r+b") as fh:
                    fh.write(b"\x00garbage\x00" * 4)
    bad_before = _tree_hash(os.path.join(bad, "checkpoints"))
    with pytest.raises(CheckpointError, match="corrupted"):
        run({**cfg, "resume": True, "steps": 14}, bad)
    assert _tree_hash(os.path.join(bad, "checkpoints")) == bad_before


#: a --schedule spec replaces TINY's scheduler flags (giving both is an error)
SPEC_ONLY = dict(lr_scheduler=None, warmup_steps=None, total_steps=None)


def test_nan_stops_and_keeps_checkpoints(tmp_path, corpus) -> None:
    # lr 1e6 (warmup 2): the loss of step 2, computed before its update, is finite, but that
    # update makes the state non-finite; the run must stop there without saving that state
    cfg = tiny(str(tmp_path), corpus, steps=12, lr=1e6, checkpoint_interval=1, eval_interval=100)
    wd = str(tmp_path / "w")
    with pytest.raises(NonFiniteLossError, match=r"not finite|loss is (nan|inf)") as e:
        run(cfg, wd)
    ck = os.path.join(wd, "checkpoints")
    steps = sorted(int(p) for p in os.listdir(ck) if p.isdigit())
    bad_step = int(str(e.value).split(" at step ")[1].split()[0])
    assert steps and max(steps) <= bad_step  # nothing saved from a non-finite step
    for st in steps:  # every checkpoint on disk is finite
        leaves = jax.tree.leaves(ocp.StandardCheckpointer().restore(os.path.join(ck, str(st),
                                                                                 "state")))
        assert all(np.all(np.isfinite(x)) for x in leaves if np.asarray(x).dtype.kind == "f"), st
    named = re.search(r"Last good checkpoint: (\S+)", str(e.value)).group(1)
    assert named == f"{ck}/{max(steps)}"
    state = _restore(ck, max(steps), cfg)  # what --resume restores, verified by its checksums
    assert int(state["step"]) == max(steps)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state)
               if np.asarray(x).dtype.kind == "f")


def test_early_stopping_on_validation_loss(tmp_path, corpus) -> None:
    # lr 0: the parameters, hence the validation loss, never change, so no evaluation after
    # the first improves on it; with patience 2 the run stops at the third evaluation.
    cfg = tiny(str(tmp_path), corpus, steps=12, schedule="constant(0.0)", **SPEC_ONLY,
               eval_interval=2, early_stop_patience=2, checkpoint_interval=100)
    out = run(cfg, str(tmp_path / "w"))
    assert out["stop_reason"].startswith("early stop") and out["steps"] == 6
    assert [s for s, _ in out["evals"]] == [2, 4, 6]
    assert len({v for _, v in out["evals"]}) == 1
    assert out["last_checkpoint"] == 6  # the stopping point is saved
    off = run(tiny(str(tmp_path), corpus, steps=6, schedule="constant(0.0)", **SPEC_ONLY,
                   eval_interval=2, checkpoint_interval=100), str(tmp_path / "off"))
    assert off["stop_reason"] == "completed" and off["steps"] == 6  # off by default


def test_grad_accum_steps_schedule_once_per_update(tmp_path, corpus, base) -> None:
    _, _, ref = base
    cfg = tiny(str(tmp_path), corpus, steps=3, grad_accum=2, batch_size=1, eval_interval=100)
    s = run(cfg, str(tmp_path / "w"))
    recs = [r for r in _records(str(tmp_path / "w")) if "loss" in r]
    sched = build_schedule(TrainConfig.from_dict(cfg))
    assert [r["lr"] for r in recs] == pytest.approx([sched(t) for t in range(3)], rel=1e-6)
    # same rows per device as batch_size=2 without accumulation: same trajectory
    np.testing.assert_allclose([x for _, x in s["losses"]], [x for _, x in ref["losses"][:3]],
                               rtol=2e-5)


def _flags(cfg: dict) -> list[str]:
    out = []
    for k, v in cfg.items():
        if isinstance(v, bool):
            out.append(f"--{k.replace('_', '-')}" if v else f"--no-{k.replace('_', '-')}")
        else:
            out.append(f"--{k.replace('_', '-')}={v}")
    return out


def test_sigkill_and_resume_bit_identical(base) -> None:
    tmp, cfg, ref = base
    wd = os.path.join(tmp, "killed")
    args = [sys.executable, "-m", "train", "--workdir", wd, *_flags(cfg)]
    kill_at = random.Random().randint(4, 10)
    p = subprocess.Popen(args, env=cpu_env(8), cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    metrics = os.path.join(wd, "metrics", "metrics.jsonl")
    ckpts = os.path.join(wd, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        # Kill only once a checkpoint has been committed (orbax renames a finished save to its
        # bare step number), so the resume really restarts mid-run; the save is asynchronous
        # and may still be in flight a few steps after its step.
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
    assert resumed and 3 <= int(resumed.group(1)) <= 12, r.stdout[-2000:]
    recs = [x for x in _records(wd) if "loss" in x]
    by_step: dict[int, set] = {}
    for x in recs:
        by_step.setdefault(x["step"], set()).add(x["loss"])
    assert sorted(by_step) == list(range(12))
    ref_losses = dict(ref["losses"])
    for t, vals in by_step.items():  # replayed steps are bit-identical, too
        assert vals == {ref_losses[t]}, (t, vals, ref_losses[t])
    _assert_trees_equal(_load_params(os.path.join(wd, "checkpoints"), 12), ref["params"])


def test_two_processes_match_one(base) -> None:
    tmp, cfg, ref = base
    wd = os.path.join(tmp, "multi")
    procs = [subprocess.Popen(argv, env=cpu_env(4), cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for argv in two_process_argvs(wd, _flags({**cfg, "steps": 4}))]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    assert "2 process(es) x 4" in outs[0][0] and "summary" in outs[0][0]
    assert "effective config" not in outs[1][0] and "summary" not in outs[1][0]  # only process 0
    recs = [x for x in _records(wd) if "loss" in x]
    np.testing.assert_allclose([x["loss"] for x in recs], [x for _, x in ref["losses"][:4]],
                               rtol=1e-5)
