"""Resume guards the run: trajectory settings must match the checkpoint's (one message for all
differences), free settings may change, saved settings fill in a bare ``--resume``,
``--resume=auto|STEP``, finished runs, ``--overwrite``, and Ctrl-C (a subprocess).

In-process runs use the shared tiny config (``train_testutil.TINY``) so the compiled step is
shared with the other trainer tests.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from train_testutil import tiny

import models
from train import CheckpointError, TrainConfig, build_schedule
from train import train_and_evaluate as run
from train.__main__ import main, parse_config
from train.resume import (
    DERIVED_KEYS,
    FREE_KEYS,
    TRAJECTORY_KEYS,
    ResumeMismatchError,
    check_compatible,
    clear_outputs,
)
from train.run.setup import effective_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _ckpts(wd: str) -> list[int]:
    d = os.path.join(wd, "checkpoints")
    return sorted(int(x) for x in os.listdir(d) if x.isdigit()) if os.path.isdir(d) else []


@pytest.fixture(scope="module")
def three(tmp_path_factory, corpus):
    """A finished 3-step run (checkpoint at 3) of the shared tiny config."""
    tmp = str(tmp_path_factory.mktemp("resume"))
    cfg = tiny(tmp, corpus, steps=3)
    wd = os.path.join(tmp, "run")
    run(cfg, wd)
    return tmp, cfg, wd


def test_every_field_is_classified() -> None:
    fields = set(TrainConfig.field_names())
    traj, free = set(TRAJECTORY_KEYS), set(FREE_KEYS)
    assert not traj & free, traj & free
    assert fields - traj - free == set(), "classify new TrainConfig fields in train/resume.py"
    assert (traj | free) - fields == set()
    assert not set(DERIVED_KEYS) & fields


def test_guard_lists_every_trajectory_difference_in_one_message(three) -> None:
    _, cfg, wd = three
    before = _ckpts(wd)
    changed = dict(lr=1e-3, seed=1, clip_norm=0.5, dropout=0.1, beta2=0.99,
                   model="llama3", lr_scheduler="linear")
    # batch_size and grad_accum are compared through the global batch (tokens_per_step,
    # asserted below, with the global batch in sequences)
    with pytest.raises(ResumeMismatchError) as e:
        run({**cfg, **changed, "batch_size": 1, "grad_accum": 3, "resume": True, "steps": 6},
            wd)
    msg = str(e.value)
    assert "\n" not in msg
    full = TrainConfig.from_dict(cfg).to_dict()
    for k, v in changed.items():
        assert f"{k}: checkpoint {full[k]!r}, now {v!r}" in msg, (k, msg)
    for k in ("model_config", "schedule_spec", "tokens_per_step"):  # derived ones, too
        assert f"{k}: checkpoint" in msg
    # 8 devices x 2 sequences at the checkpoint, 8 x 3 x 1 now; and the way to keep it
    assert ("the global batch: 16 sequences per update at the checkpoint, 24 now; resume "
            "with --global-batch-size=16") in msg
    assert isinstance(e.value, CheckpointError) and _ckpts(wd) == before
    # --steps moves the schedule when --total-steps is unset: refused, with the reason
    def eff(**kw):
        c = TrainConfig.from_dict({**cfg, "total_steps": None, "warmup_steps": 0, **kw})
        mc = models.get_config("gpt2", "tiny", **c.model_overrides())
        return effective_config(c, build_schedule(c), mc)

    with pytest.raises(ResumeMismatchError, match=r"schedule_spec: .*--total-steps"):
        check_compatible(eff(steps=2), eff(steps=4), "here")
    check_compatible(eff(steps=2, total_steps=8), eff(steps=4, total_steps=8), "here")


def test_free_settings_may_change_and_saved_settings_fill_in(three, tmp_path) -> None:
    import shutil

    _, cfg, wd0 = three
    wd = str(tmp_path / "w")
    shutil.copytree(wd0, wd)
    # only free settings differ (a longer run inside total_steps, outputs, intervals)
    out = run({"resume": True, "steps": 5, "log_interval": 2, "eval_interval": 5,
               "checkpoint_interval": 5, "keep_checkpoints": 2, "sample_tokens": 0,
               "tensorboard": False, "async_checkpoints": False}, wd)
    assert out["start_step"] == 3 and out["steps"] == 5 and out["last_checkpoint"] == 5
    with open(os.path.join(wd, "config.json")) as f:
        written = json.load(f)
    for k in TRAJECTORY_KEYS:  # the saved trajectory settings were used
        assert written[k] == TrainConfig.from_dict(cfg).to_dict()[k], k
    assert written["steps"] == 5 and written["keep_checkpoints"] == 2
    # the CLI: `--resume --workdir W` and nothing else gives the saved settings back
    got, _ = parse_config(["--resume", "--workdir", wd])
    assert got == TrainConfig.from_dict({**written, "resume": True})
    # and WORKDIR/config.json is accepted by --config
    again, _ = parse_config(["--config", os.path.join(wd, "config.json"), "--workdir", "x"])
    assert again == TrainConfig.from_dict({**written, "resume": False})


def test_resume_modes_and_finished_runs(three, tmp_path, capsys) -> None:
    _, cfg, wd = three
    empty = str(tmp_path / "empty")
    with pytest.raises(ValueError, match=r"no checkpoint in .*--resume=auto"):
        run({**cfg, "resume": True}, empty)
    with pytest.raises(ValueError, match=r"--resume=2: no checkpoint at step 2 .*available: 3"):
        run({**cfg, "resume": 2}, wd)
    with pytest.raises(ValueError, match=r"already holds checkpoints.*--overwrite"):
        run(cfg, wd)
    # a finished run: says so, exits 0, no summary of NaNs (the CLI, in-process)
    capsys.readouterr()
    assert main(["--resume", "--workdir", wd]) == 0
    out = capsys.readouterr().out
    assert "run already finished at step 3; nothing to do" in out
    assert "nan" not in out and "summary" not in out
    # ... and what it saved: the last update's train loss and the final val loss (its metrics)
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        recs = [json.loads(x) for x in f]
    loss = [r["loss"] for r in recs if r.get("step") == 2 and "loss" in r][-1]
    val = [r["val_loss"] for r in recs if r.get("step") == 3 and "val_loss" in r][-1]
    assert f"saved results: train loss {loss:.4f} (step 3), val loss {val:.4f}" in out
    again = run({**cfg, "resume": True}, wd)
    assert again["stop_reason"] == "already finished"
    assert (again["final_loss"], again["val_loss"]) == (loss, val)
    assert main(["--resume=3", "--workdir", wd]) == 0
    # --resume=auto with no checkpoint starts from scratch
    s = run({**cfg, "resume": "auto", "steps": 1, "eval_interval": 100}, empty)
    assert s["start_step"] == 0 and _ckpts(empty) == [1]


def test_overwrite_starts_over_inside_the_workdir_only(three, tmp_path) -> None:
    import shutil

    _, cfg, wd0 = three
    wd = str(tmp_path / "w")
    shutil.copytree(wd0, wd)
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        assert sum(1 for _ in f) > 1
    s = run({**cfg, "overwrite": True, "steps": 1, "eval_interval": 100}, wd)
    assert s["start_step"] == 0 and _ckpts(wd) == [1]  # the old 3 is gone
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        assert [r["step"] for r in map(json.loads, f) if "loss" in r] == [0]
    with pytest.raises(ValueError, match="cannot be combined with --resume"):
        TrainConfig.from_dict({**cfg, "overwrite": True, "resume": True})
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    with pytest.raises(ValueError, match="not inside --workdir"):
        clear_outputs(wd, [str(outside)])
    assert outside.exists()
    with pytest.raises(ValueError, match="not inside"):
        clear_outputs(wd, [wd])


def test_ctrl_c_saves_prints_the_resume_command_and_exits_130(tmp_path, corpus) -> None:
    wd = str(tmp_path / "w")
    cfg = tiny(str(tmp_path), corpus, steps=400, total_steps=400, eval_interval=1000,
               checkpoint_interval=1000)
    args = [sys.executable, "-m", "train", "--workdir", wd]
    for k, v in cfg.items():
        f = "--" + k.replace("_", "-")
        args.append((f if v else "--no-" + f[2:]) if isinstance(v, bool) else f"{f}={v}")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("XLA_FLAGS", None)
    p = subprocess.Popen([*args, "--simulate-devices=2"], env=env, cwd=str(tmp_path),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = os.path.join(wd, "metrics", "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
            break
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, (out[-2000:], err[-2000:])
    assert "Traceback" not in err and "Traceback" not in out, err[-3000:]
    assert "devices: 2 (" in out  # --simulate-devices set up the CPU devices
    line = [x for x in out.splitlines() if x.startswith("interrupted after step")][-1]
    step = int(line.split()[3].rstrip(";:"))
    assert 1 <= step < 400 and _ckpts(wd) == [step]
    resume = [x for x in out.splitlines() if x.startswith("resume with: ")][-1]
    cmd = resume.removeprefix("resume with: ").split()
    assert cmd[:4] == ["python", "-m", "train", "--resume"] and wd in cmd
    # the printed command continues that run with its saved settings (parsed here)
    got, got_wd = parse_config(cmd[3:])
    want = dataclasses.replace(TrainConfig.from_dict(cfg), simulate_devices=2, resume=True)
    assert got == want and os.path.abspath(got_wd) == wd
