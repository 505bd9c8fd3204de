"""The console and metrics surface: steady-state ETA, one 1-based step in bar and log lines,
MFU on log lines, a compact start (full config in WORKDIR/config.json), strict-JSON metrics."""

from __future__ import annotations

import io
import json
import math
import os

import pytest
from train_testutil import tiny

from train import TrainConfig
from train import train_and_evaluate as run
from train.metrics import Console, MetricsWriter, iter_records, read_metrics


def test_eta_comes_from_steady_state_steps_only() -> None:
    c = Console(total=100, stream=io.StringIO(), bar=False)
    assert math.isnan(c.eta(1))  # before the first (compiling) step is over: unknown
    # the compile step ended at t=60 s; 10 more steps took 5 s: 0.5 s/step, 89 steps left
    c.steady(1, t=60.0)
    assert c.eta(11, now=65.0) == pytest.approx(0.5 * 89)
    assert math.isnan(c.eta(1, now=65.0))
    # with the pre-fix formula (elapsed since start / steps) it would have been ~9 min
    assert c.eta(11, now=65.0) < 65.0 / 11 * 89 / 5


def test_bar_and_log_lines_show_the_same_1_based_step_and_mfu() -> None:
    log, bar = io.StringIO(), io.StringIO()
    for stream, is_bar in ((log, False), (bar, True)):
        c = Console(total=10, stream=stream, bar=is_bar)
        c.steady(1, t=0.0)
        c.update(4, loss=2.5, lr=1e-3, tokens_per_s=1000.0, grad_norm=0.5, mfu=0.0123)
        c.close()
    assert "step  5/10 |" in log.getvalue() and "mfu 1.2%" in log.getvalue()
    assert "] 5/10 |" in bar.getvalue() and "mfu 1.2%" in bar.getvalue()
    c = Console(total=10, stream=(s := io.StringIO()), bar=False)
    c.update(0, loss=2.5, lr=1e-3, tokens_per_s=None)  # the compile step: no rate yet
    assert "? tok/s" in s.getvalue() and "eta ?" in s.getvalue() and "mfu" not in s.getvalue()


def test_metrics_are_strict_json(tmp_path) -> None:
    w = MetricsWriter(str(tmp_path), tensorboard=False)
    w.write(0, loss=float("nan"), lr=1e-3, tokens_per_s=None, grad_norm=float("inf"))
    w.close()
    with open(tmp_path / "metrics.jsonl") as f:
        text = f.read()
    assert "nan" not in text.lower() and "inf" not in text.lower()
    rec = json.loads(text)
    assert rec == {"step": 0, "loss": None, "lr": 1e-3, "tokens_per_s": None, "grad_norm": None}


def test_metrics_reader_skips_what_a_killed_run_leaves(tmp_path) -> None:
    """``iter_records`` (the one reader behind plots, a finished run's saved results and a
    population's saved summary): every JSON object in file order, each line that is blank, not
    JSON, cut inside a character or not an object skipped; a missing file is an OSError."""
    w = MetricsWriter(str(tmp_path), tensorboard=False)
    w.write(5, loss=2.0, lr=1e-3)  # file order, not step order, is what comes back
    w.close()
    path = tmp_path / "metrics.jsonl"
    with open(path, "ab") as f:
        f.write(b"\n")                                   # blank
        f.write(b"not json\n")                           # not JSON
        f.write(b'{"step": 1, "loss": 3.0, "member": 0}\n')
        f.write(b"[1, 2]\n3\n")                          # JSON, not objects
        f.write(b'{"step": 2, "note": "caf\xc3"}\n')     # a character cut short
        f.write(b'{"step": 3, "val_loss": null}\n')
        f.write(b'{"step": 4, "lo')                       # the torn last line
    got = list(iter_records(str(path)))
    assert got == [{"step": 5, "loss": 2.0, "lr": 1e-3}, {"step": 1, "loss": 3.0, "member": 0},
                   {"step": 3, "val_loss": None}]
    # read_metrics on top: the population's row left out, a null val_loss read as NaN
    train, val = read_metrics(str(path))
    assert list(train) == [5] and list(val) == [3] and math.isnan(val[3])
    with pytest.raises(OSError):
        next(iter_records(str(tmp_path / "missing.jsonl")))


def test_run_console_and_metrics(tmp_path, corpus, capsys) -> None:
    cfg = tiny(str(tmp_path), corpus, steps=4, log_interval=1)
    wd = str(tmp_path / "w")
    s = run(cfg, wd)
    out = capsys.readouterr().out
    # the compact start: a few lines, the full config in WORKDIR/config.json
    start = out[: out.index("step 1/4")].splitlines()
    assert len(start) <= 16, start
    assert "h_0/attn" not in out and "effective config" not in out
    assert any(x.strip().startswith("h_*/attn") and "x 2 layers" in x for x in start)
    with open(os.path.join(wd, "config.json")) as f:
        saved = json.load(f)
    assert TrainConfig.from_dict(saved) == TrainConfig.from_dict(cfg)
    assert f"full config: {os.path.join(wd, 'config.json')}" in out
    # log lines: 1-based steps 1..4, MFU from the second (timed) step on
    lines = [x for x in out.splitlines() if x.startswith("step ")]
    assert [x.split()[1] for x in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "mfu" not in lines[0] and all(" mfu " in x for x in lines[1:])
    assert "nan" not in out.lower()
    # metrics.jsonl: no 0.0 tokens/s for the compile step, no "nan" strings
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        recs = [json.loads(x) for x in f]
    train = [r for r in recs if "loss" in r]
    assert train[0]["tokens_per_s"] is None  # the compile step: not timed (was 0.0)
    assert all(r["tokens_per_s"] > 0 for r in train[1:])
    assert s["tokens_per_s"] > 0 and math.isfinite(s["mfu"])
    # --verbose prints the whole config and every tensor
    run({**cfg, "verbose": True, "overwrite": True, "steps": 1, "eval_interval": 100}, wd)
    out = capsys.readouterr().out
    assert "effective config" in out and "h_0/attn/c_attn/kernel" in out


def test_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch, capsys) -> None:
    import sys

    from train import plot

    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps({"step": 0, "loss": 1.0, "lr": 1e-3}) + "\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert plot.main([str(p)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "pip install" in err and "Traceback" not in err


def test_simulate_devices_checks_a_started_backend() -> None:
    import jax

    from train.devices import simulate_devices

    n = len(jax.devices())  # conftest: 8 simulated CPU devices, backend started
    simulate_devices(n)
    with pytest.raises(ValueError, match=r"--simulate-devices=3 .*already started"):
        simulate_devices(3)
    with pytest.raises(ValueError, match="must be an int >= 1"):
        simulate_devices(0)
