"""The command lines: ``python -m train`` (help, version, one-line errors, config files,
directories, warnings, ``--print-lr``), ``python -m train.lr_finder`` and ``python -m schedules``.
In-process where possible (no compilation anywhere here)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest

import schedules as S
import train.__main__ as cli
from train.__main__ import main, parse_config
from train.config import GROUPS, TrainConfig
from train.config_files import check_dirs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _exit(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def _one_line_error(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith("python -m train: error: "), err
    assert lines[1] == "see python -m train --help"
    assert "usage" not in err and "Traceback" not in err
    return lines[0]


# -- --help and --version ---------------------------------------------------------------------


def test_help_groups_defaults_and_examples(capsys) -> None:
    code, out, _ = _exit(["--help"], capsys)
    assert code == 0
    titles = [cli.GROUP_TITLES[g] + ":" for g in GROUPS]
    pos = [out.index("\n" + t + "\n") for t in titles]  # every group, in order
    assert pos == sorted(pos)
    # each option's block shows its default at most once, and the documented ones exactly once
    blocks = re.split(r"\n  (?=-)", out.split("examples:")[0])
    for b in blocks:
        assert b.count("default:") <= 1, b
    for opt, d in (("--steps", "2800"), ("--lr ", "0.005"), ("--batch-size ", "8"),
                   ("--tensorboard", "true")):
        (b,) = [b for b in blocks if b.startswith(opt)]
        assert f"(default: {d})" in " ".join(b.split()), b
    assert "examples:" in out and "python -m train --lr-scheduler=hf:cosine" in out
    # help texts live with the fields, not in a separate table
    assert not hasattr(cli, "HELP")
    import dataclasses

    for f in dataclasses.fields(TrainConfig):
        assert f.metadata.get("help") and f.metadata.get("group") in GROUPS, f.name


def test_version(capsys) -> None:
    code, out, _ = _exit(["--version"], capsys)
    assert code == 0 and out.strip() == f"python -m train {version('schedax')}"


# -- one-line errors --------------------------------------------------------------------------


@pytest.mark.parametrize("argv,needle", [
    (["--lr-schedular=cosine"], "unrecognized flag --lr-schedular; did you mean --lr-scheduler?"),
    (["--lr-sched=cosine"], "unrecognized flag --lr-sched"),  # no abbreviations
    (["--lr-scheduler=cosin"], "did you mean 'cosine'?"),
    (["--lr-scheduler=hf:cosine_with_restart"], "did you mean 'hf:cosine_with_restarts'?"),
    (["--lr-decay-style=cosin"], "did you mean 'cosine'?"),
    (["--steps=abc"], "--steps"),
    (["--lr-milestones=10,x", "--lr-scheduler=multistep"],
     "--lr-milestones='10,x' is invalid: element 'x' is not an int"),
    (["--lr-chain=steplr,bogus", "--lr-scheduler=chained"], "element 'bogus'"),
    (["--lr=-1"], "--lr=-1.0 is invalid"),
])
def test_errors_are_one_line(argv, needle, capsys) -> None:
    code, _, err = _exit(argv, capsys)
    assert code == 2
    assert needle in _one_line_error(err)


def test_config_file_errors_and_yaml_numbers(tmp_path, capsys) -> None:
    j = tmp_path / "bad.json"
    j.write_text('{\n  "lr": 0.1,\n  "steps": 10,,\n}\n')
    code, _, err = _exit([f"--config={j}"], capsys)
    assert code == 2 and f"{j}:3: JSON syntax error" in _one_line_error(err)
    y = tmp_path / "bad.yaml"
    y.write_text("lr: 0.1\nsteps: [10\nseed: 1\n")
    code, _, err = _exit([f"--config={y}"], capsys)
    assert code == 2 and f"{y}:" in _one_line_error(err) and "YAML syntax error" in err
    # YAML 1.1 reads 1e-3 as a string: numeric fields read it as a number
    good = tmp_path / "good.yaml"
    good.write_text("lr: 1e-3\nsteps: 1e2\nmin_lr: 1e-5\nlr_scheduler: cosine\n")
    cfg, _ = parse_config([f"--config={good}"])
    assert (cfg.lr, cfg.steps, cfg.min_lr) == (1e-3, 100, 1e-5)
    assert isinstance(cfg.steps, int)
    bad = tmp_path / "badnum.yaml"
    bad.write_text("lr: abc\n")
    code, _, err = _exit([f"--config={bad}"], capsys)
    assert "--lr='abc' is invalid: must be a number" in _one_line_error(err)


def test_dirs_are_checked_before_compiling(tmp_path, capsys) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = _exit([f"--workdir={f}", "--steps=2"], capsys)
    assert code == 2 and f"--workdir='{f}' is invalid: is a file" in _one_line_error(err)
    code, _, err = _exit([f"--workdir={tmp_path / 'w'}", f"--metrics-dir={f}"], capsys)
    assert "--metrics-dir=" in _one_line_error(err)
    cfg = TrainConfig.from_dict({"steps": 2})
    d = check_dirs(cfg, str(tmp_path / "new" / "run"))
    for k in ("workdir", "checkpoint_dir", "metrics_dir"):
        assert os.path.isdir(d[k])


# -- warnings and --print-lr ------------------------------------------------------------------


@pytest.mark.parametrize("argv,needle", [
    (["--total-steps=50"], "--total-steps=50 is shorter than --steps=100"),
    (["--lr-scheduler=multistep", "--lr-milestones=50,200"], "milestone(s) 200 beyond the run"),
    (["--lr-scheduler=exponential", "--lr-gamma=0.5"], "falls below 1e-6 of its peak"),
    (["--schedule=cosine(1e-3, 0, 50)"], "--schedule is constant from step 50"),
])
def test_warnings_once(argv, needle, capsys) -> None:
    assert main(["--print-lr", "--steps=100", *argv]) == 0
    err = capsys.readouterr().err
    hits = [x for x in err.splitlines() if needle in x]
    assert len(hits) == 1 and hits[0].startswith("python -m train: warning: "), err


def test_no_warnings_for_the_default_run(capsys) -> None:
    assert main(["--print-lr"]) == 0
    assert capsys.readouterr().err == ""


def test_print_lr_is_torchs_sequence(capsys) -> None:
    torch = pytest.importorskip("torch")
    assert main(["--print-lr", "--steps=12", "--lr=0.1", "--lr-scheduler=StepLR",
                 "--lr-step-size=4", "--lr-gamma=0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step,lr"
    got = [float(x.split(",")[1]) for x in lines[1:]]
    p = torch.nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 4, 0.5)
    ref = []
    for _ in range(12):
        ref.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    np.testing.assert_allclose(got, ref, rtol=1e-12)


# -- the other command lines ------------------------------------------------------------------


def test_schedules_cli_csv_and_plot(tmp_path, capsys) -> None:
    from schedules.__main__ import main as smain

    assert smain(["cosine(1e-3, 0, 100)", "--steps", "100", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "step,lr" and len(lines) == 101
    vals = np.array([float(x.split(",")[1]) for x in lines[1:]])
    np.testing.assert_array_equal(vals, S.values(S.cosine(1e-3, 0, 100), 100))
    with pytest.raises(SystemExit) as e:
        smain(["cosine(1e-3, 0, ", "--steps=3"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("python -m schedules: error: spec") and len(err.splitlines()) == 2
    pytest.importorskip("matplotlib")
    out = tmp_path / "lr.png"
    assert smain(["StepLR(0.1, step_size=5)", "--steps=20", f"--plot={out}"]) == 0
    assert out.stat().st_size > 1000


def test_lr_finder_help() -> None:
    """``python -m train.lr_finder --help`` prints its flags (it printed nothing before)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "train.lr_finder", "--help"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    for opt in ("--lr-min", "--lr-max", "--steps", "--model-size", "--plot"):
        assert opt in p.stdout
    assert "steps of the range test (default: 100)" in " ".join(p.stdout.split())


def test_lr_finder_errors_are_one_line(capsys) -> None:
    from train.lr_finder import main as fmain

    for argv, needle in ((["--steps=2"], "--steps=2 must be an int >= 3"),
                         (["--lr-max=1e-7"], "--lr-max=1e-07 must be a finite number > "
                                             "--lr-min=1e-06"),
                         (["--lr-scheduler=cosin"], "did you mean 'cosine'?")):
        with pytest.raises(SystemExit) as e:
            fmain(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.splitlines()) == 2, err
        assert err.startswith("python -m train.lr_finder: error: ") and needle in err, err


def _torch_lrs(make, n: int, lr: float) -> list[float]:
    """torch's lr of update t: the optimizer's lr after t ``scheduler.step()`` calls."""
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(()))], lr=lr)
    sched, out = make(torch.optim.lr_scheduler, opt), []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize(("argv", "make"), [
    (["--lr=0.01", "--lr-scheduler=lambda", "--lr-lambda=1 - step / 10", "--steps=20"],
     lambda L, o: L.LambdaLR(o, lambda t: 1 - t / 10)),
    # CosineAnnealingLR's recursive form in a chain goes below zero past T_max (torch's own
    # number: schedules.torch returns it, the trainer refuses to train on it)
    (["--lr=0.01", "--lr-scheduler=chained", "--lr-chain=cosine,steplr", "--lr-step-size=7",
      "--lr-gamma=0.5", "--min-lr=0.002", "--total-steps=30", "--steps=60"],
     lambda L, o: L.ChainedScheduler([L.CosineAnnealingLR(o, T_max=30, eta_min=0.002),
                                      L.StepLR(o, step_size=7, gamma=0.5)])),
], ids=["lambda", "chained-cosine"])
def test_negative_lr_is_refused_before_compiling(argv, make, tmp_path, capsys) -> None:
    """The compatibility layer returns the peer's negative lr; the trainer refuses to train on
    it, in one line naming the first such step, before anything compiles."""
    from train.schedule.build import build_schedule

    cfg = TrainConfig.from_dict({a.split("=", 1)[0][2:].replace("-", "_"): a.split("=", 1)[1]
                                 for a in argv})
    n = cfg.steps
    ref = _torch_lrs(make, n, cfg.lr)
    first = next(t for t, v in enumerate(ref) if v < 0)
    ours = build_schedule(cfg)
    np.testing.assert_allclose([ours(t) for t in range(n)], ref, rtol=1e-12, atol=1e-18)
    with pytest.raises(SystemExit) as e:
        main([*argv, f"--workdir={tmp_path}/run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"the learning rate is negative at step {first} " in err and err.count("\n") == 2
    assert not os.path.exists(f"{tmp_path}/run/checkpoints"), "nothing was started"
