"""Long runs on shared clusters (issue #28): a ``--save-on-signal`` signal finishes the step,
saves and exits 143; only committed checkpoints of the workdir's own run are resumed;
``--exit-after-minutes`` saves and stops; ``--save-every-minutes`` keeps one temporary
checkpoint beside the step-based ones; the chain of interrupted runs equals an uninterrupted
one bit for bit.

One subprocess (the real exit status and signal delivery), the rest in-process with the shared
tiny config (``train_testutil.TINY``: its compiled step is shared with the other trainer tests).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest
from train_testutil import tiny

from train import train_and_evaluate as run
from train.checkpoint import COMMIT_MARKER, TEMPORARY, committed_steps
from train.resume import ForeignCheckpointError, choose_step
from train.run.stop import StopSignals, TrainingInterrupted, exit_status

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 20  # TINY's schedule horizon: the compiled step is the shared one


def _flags(cfg: dict) -> list[str]:
    out = []
    for k, v in cfg.items():
        f = "--" + k.replace("_", "-")
        out.append((f if v else "--no-" + f[2:]) if isinstance(v, bool) else f"{f}={v}")
    return out


def _losses(wd: str) -> dict[int, set[float]]:
    by_step: dict[int, set[float]] = {}
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        for r in map(json.loads, f):
            if "loss" in r:
                by_step.setdefault(r["step"], set()).add(r["loss"])
    return by_step


def test_exit_status_is_128_plus_the_signal_number() -> None:
    # the numbers a shell reports for a process the signal killed (Linux)
    assert exit_status(signal.SIGTERM) == 143 and exit_status(signal.SIGUSR1) == 138
    assert exit_status(signal.SIGINT) == 130


def test_a_signal_before_the_first_step_stops_at_once_and_a_later_one_is_deferred() -> None:
    before = signal.getsignal(signal.SIGUSR1)
    with StopSignals("SIGUSR1") as sig:
        with pytest.raises(TrainingInterrupted) as e:
            os.kill(os.getpid(), signal.SIGUSR1)  # Python runs the handler right here
        assert e.value.status == 138 and e.value.checkpoint is None and e.value.step is None
    with StopSignals("SIGUSR1") as sig:
        sig.defer()
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)  # the second is reported, not raised
        assert sig.received == signal.SIGUSR1
    assert signal.getsignal(signal.SIGUSR1) == before  # restored


def test_sigterm_saves_exits_143_and_the_interrupted_chain_is_bit_identical(
        tmp_path, corpus, capsys) -> None:
    """SIGTERM (twice: the second during the save) to ``python -m train``: status 143, a
    committed checkpoint at the step it stopped, metrics flushed. Then in-process, with a
    newer uncommitted copy and a half-written orbax tmp directory in the way: a resume with a
    tiny ``--exit-after-minutes`` saves after one step and prints the resume command; a resume
    with ``--save-every-minutes`` runs to the end. Logged losses and final parameters equal an
    uninterrupted run's bit for bit."""
    cfg = tiny(str(tmp_path), corpus, steps=STEPS)
    ref = run(cfg, str(tmp_path / "ref"))
    wd = str(tmp_path / "w")
    # evaluations do not touch the training state (a free setting): many of them slow each
    # step so that the signal lands mid-run
    slow = {**cfg, "eval_interval": 1, "eval_batches": 40}
    p = subprocess.Popen([sys.executable, "-m", "train", "--workdir", wd, *_flags(slow),
                          "--save-on-signal=term,usr1"], cwd=ROOT, env=dict(os.environ),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watchdog = threading.Timer(240, p.kill)
    watchdog.start()
    out, sent = [], 0
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith("step ") and not sent:
                p.send_signal(signal.SIGTERM)
                sent = 1
            elif line.startswith("SIGTERM after step") and sent == 1:
                p.send_signal(signal.SIGTERM)  # during the save
                sent = 2
        err = p.stderr.read()
        p.wait()
    finally:
        watchdog.cancel()
    out_s = "".join(out)
    assert p.returncode == 143, (out_s[-2000:], err[-2000:])
    assert sent == 2 and "Traceback" not in err + out_s, err[-3000:]
    assert "SIGTERM again" in err
    line = next(x for x in out if x.startswith("interrupted after step"))
    k = int(line.split()[3])
    assert 1 <= k < STEPS - 2, out_s[-2000:]
    ckpts = os.path.join(wd, "checkpoints")
    assert line.rstrip().endswith(f"checkpoint saved: {os.path.join(ckpts, str(k))}")
    good, bad = committed_steps(ckpts)
    assert max(good) == k and not bad
    assert os.path.isfile(os.path.join(ckpts, str(k), COMMIT_MARKER))
    assert sorted(_losses(wd)) == list(range(k))  # flushed up to the stop
    assert f"resume with: python -m train --resume --workdir {wd}" in out_s

    # an uncommitted copy at a newer step (no commit marker) and a half-written save
    fake = os.path.join(ckpts, str(k + 2))
    shutil.copytree(os.path.join(ckpts, str(k)), fake)
    os.remove(os.path.join(fake, COMMIT_MARKER))
    os.makedirs(os.path.join(ckpts, f"{k + 1}.orbax-checkpoint-tmp-1", "state"))
    with pytest.raises(ValueError, match=rf"--resume={k + 2}: the checkpoint at step {k + 2} "
                       rf"is not committed \(no commit marker"):
        choose_step(k + 2, ckpts)
    # the workdir's run recorded other settings than the checkpoint's: a copied-in checkpoint
    config_json = os.path.join(wd, "config.json")
    with open(config_json) as f:
        recorded = f.read()
    with open(config_json, "w") as f:
        json.dump({**json.loads(recorded), "seed": 7}, f)
    with pytest.raises(ForeignCheckpointError, match=r"seed: checkpoint 0, config.json 7"):
        run({**cfg, "resume": True}, wd)
    with open(config_json, "w") as f:
        f.write(recorded)
    capsys.readouterr()
    s = run({**cfg, "resume": True, "exit_after_minutes": 1e-6}, wd)
    printed = capsys.readouterr().out
    assert s["start_step"] == k and s["stop_reason"].startswith("time limit"), s["stop_reason"]
    assert f"skipped uncommitted checkpoint(s), moved aside as <step>.uncommitted: {fake}" \
        in printed and f"resuming from step {k}" in printed
    assert os.path.isdir(fake + ".uncommitted") and not os.path.exists(fake)
    assert (f"resume with: python -m train --resume --workdir {wd} --exit-after-minutes=1e-06"
            in printed)
    assert max(committed_steps(ckpts)[0]) == k + 1

    s = run({**cfg, "resume": True, "save_every_minutes": 1e-6}, wd)
    assert s["start_step"] == k + 1 and s["stop_reason"] == "completed"
    # every step after the resume is due a temporary save except the step-based ones
    # (every 3, and the last); orbax keeps the last temporary one only
    temp = sorted(int(d) for d in os.listdir(os.path.join(ckpts, TEMPORARY)) if d.isdigit())
    assert temp == [STEPS - 1]
    assert os.path.isfile(os.path.join(ckpts, TEMPORARY, str(STEPS - 1), COMMIT_MARKER))
    # each save's stall was measured and logged
    kinds = [r["kind"] for r in s["save_stalls"]]
    assert kinds.count("temporary") == len([t for t in range(k + 2, STEPS) if t % 3]), kinds
    assert all(r["stall_s"] >= r["wait_s"] >= 0 for r in s["save_stalls"])

    want = {t: {v} for t, v in ref["losses"]}
    assert _losses(wd) == want  # every step logged once, with the uninterrupted run's loss
    jax.tree.map(np.testing.assert_array_equal, s["params"], ref["params"])
