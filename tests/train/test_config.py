"""Config validation, config files + flags, and the --lr-scheduler mapping (no compilation)."""

from __future__ import annotations

import json
import math

import pytest

import schedules as S
from schedules import torch as T
from train.__main__ import main, parse_config
from train.config import LR_SCHEDULERS, TrainConfig
from train.run.setup import check_config
from train.schedule.build import build_schedule


def test_defaults_valid() -> None:
    cfg = TrainConfig().validate()
    assert cfg.warmup == 280 and cfg.schedule_steps == 2800 and cfg.tokenizer == "byte"
    assert (cfg.model, cfg.model_size, cfg.seq_len, cfg.batch_size) == ("gpt2", "micro", 64, 8)


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        (dict(lr=-1.0), "--lr=-1.0"),
        (dict(lr=float("nan")), "--lr=nan"),
        (dict(batch_size=0), "--batch-size=0"),
        (dict(lr_scheduler="bogus"), "must be one of constant, steplr"),
        (dict(lr_scheduler="cosin"), "did you mean 'cosine'?"),
        (dict(model="gpt3"), "--model='gpt3'"),
        (dict(model_size="huge"), "--model-size='huge'"),
        (dict(tokenizer="sentencepiece"), "--tokenizer"),
        (dict(warmup_steps=400, steps=300), "--warmup-steps=400"),
        (dict(lr_scheduler="steplr"), "--lr-step-size is required by --lr-scheduler=steplr"),
        (dict(lr_scheduler="multistep"), "--lr-milestones is required"),
        (dict(lr_scheduler="lambda"), "--lr-lambda is required"),
        (dict(lr_scheduler="lambda", lr_lambda="__import__('os').system('x')"), "--lr-lambda="),
        (dict(lr_scheduler="chained", lr_chain=("steplr", "bogus")), "--lr-chain='steplr,bogus'"),
        (dict(lr_scheduler="sequential", lr_chain=("linear", "cosine")), "needs 1 milestone"),
        (dict(lr_milestones=(20, 10)), "--lr-milestones"),
        (dict(schedule="cosine(1e-3, 0, "), "--schedule="),
        (dict(beta2=1.0), "--beta2=1.0"),
        (dict(n_head=3, model_size="tiny"), "--model-size='tiny'"),
        (dict(data="/no/such/file"), "--data='/no/such/file'"),
        (dict(coordinator_address="localhost:1234"), "--num-processes"),
        (dict(resume="yes"), "--resume='yes'"),
    ],
)
def test_rejects_bad_values(kw: dict, needle: str) -> None:
    with pytest.raises(ValueError, match=None) as e:
        check_config(TrainConfig.from_dict(kw))
    assert needle in str(e.value), str(e.value)


def test_unknown_key() -> None:
    with pytest.raises(ValueError, match="unknown config key 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 1e-3})


def test_config_file_and_flags(tmp_path) -> None:
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"lr": 1e-3, "lr-scheduler": "MultiStepLR", "lr_gamma": 0.5,
                             "steps": 50, "lr_milestones": [10, 20]}))
    cfg, workdir = parse_config(["--config", str(j), "--lr=2e-3", "--workdir", "w"])
    assert (cfg.lr, cfg.lr_scheduler, cfg.lr_gamma, cfg.steps) == (2e-3, "multistep", 0.5, 50)
    assert cfg.lr_milestones == (10, 20) and workdir == "w"
    y = tmp_path / "c.yaml"
    y.write_text("lr: 0.01\nlr_scheduler: chained\nlr_chain: steplr,linear\nlr_step_size: 5\n")
    cfg, _ = parse_config(["--config", str(y), "--no-tensorboard", "--lr-mults=wte=0.1"])
    assert cfg.lr_chain == ("steplr", "linear") and cfg.tensorboard is False
    assert cfg.lr_mults == {"wte": 0.1}
    # round trip of the dict form
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_cli_rejects_before_compiling(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--lr-scheduler=steplr", "--steps=10"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--lr-step-size is required by --lr-scheduler=steplr" in err
    with pytest.raises(SystemExit):
        main(["--lr=abc"])
    assert "--lr" in capsys.readouterr().err


@pytest.mark.parametrize("name", LR_SCHEDULERS)
def test_every_scheduler_builds(name: str) -> None:
    extra = {
        "steplr": dict(lr_step_size=40), "multistep": dict(lr_milestones=(100, 200)),
        "exponential": dict(lr_gamma=0.99), "cyclic": dict(lr_base=1e-4, lr_step_size_up=50),
        "cosine-restarts": dict(lr_t0=50), "lambda": dict(lr_lambda="0.95 ** (step // 10)"),
        "sequential": dict(lr_chain=("linear", "cosine"), lr_milestones=(100,)),
        "chained": dict(lr_chain=("steplr", "linear"), lr_step_size=40),
    }.get(name, {})
    cfg = TrainConfig.from_dict(dict(lr_scheduler=name, steps=300, **extra))
    s = build_schedule(cfg)
    vals = [s(t) for t in range(cfg.steps)]
    assert all(math.isfinite(v) and v >= 0 for v in vals)
    assert S.from_config(s.to_config())(123) == pytest.approx(s(123), rel=1e-12)


def test_torch_mapping_values() -> None:
    cfg = TrainConfig.from_dict(dict(lr=0.1, lr_scheduler="steplr", lr_step_size=10,
                                     lr_gamma=0.5, warmup_steps=0, steps=100))
    s = build_schedule(cfg)
    ref = T.StepLR(0.1, step_size=10, gamma=0.5)
    assert [s(t) for t in range(40)] == [ref(t) for t in range(40)]
    cfg = TrainConfig.from_dict(dict(lr=0.1, lr_scheduler="cosine", warmup_steps=10, steps=100,
                                     min_lr=0.01))
    s = build_schedule(cfg)
    ref = T.SequentialLR(0.1, [T.LinearLR(0.1, start_factor=0.1, total_iters=10),
                               T.CosineAnnealingLR(0.1, T_max=90, eta_min=0.01)], [10])
    assert [s(t) for t in range(100)] == pytest.approx([ref(t) for t in range(100)], rel=1e-12)
    lam = build_schedule(TrainConfig.from_dict(dict(
        lr=1.0, lr_scheduler="lambda", lr_lambda="0.95 ** (step // 10)", warmup_steps=0)))
    assert lam(25) == pytest.approx(0.9025)
    spec = build_schedule(TrainConfig.from_dict(dict(schedule="0.5 * constant(2e-3)")))
    assert spec(7) == pytest.approx(1e-3)
