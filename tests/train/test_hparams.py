"""Issue 27: hyperparameters as schedules. torch's OneCycleLR / CyclicLR cycle Adam's beta1
(SGD's momentum) here exactly as torch's own schedulers set it on a torch optimizer, step by
step; a weight-decay schedule changes AdamW's update as the closed form says. A real training
run against torch's (beta1 and losses per step): tests/train/test_alignment.py,
``test_onecycle_cycles_beta1_as_pytorch``."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest

import models
from train import TrainConfig
from train.__main__ import parse_config
from train.optim import make_optimizer
from train.run.setup import check_config
from train.schedule.build import applied_schedule, build_schedule
from train.schedule.hparams import applied_hparams, build_hparams

torch = pytest.importorskip("torch")

STEPS = 8
F32 = float(np.finfo(np.float32).eps)


@functools.cache
def _params() -> dict:
    cfg = models.get_config("gpt2", "tiny", n_layer=1, block_size=16)
    return jax.device_get(models.init_params(cfg, jax.random.key(0)))


def _grads(params: dict, steps: int) -> list[dict]:
    rng = np.random.default_rng(1)
    return [jax.tree.map(lambda p: (0.05 * rng.standard_normal(p.shape)).astype(np.float32),
                         params) for _ in range(steps)]


def _ours(cfg: TrainConfig, params: dict, grads: list[dict]) -> tuple[list[dict], dict]:
    """The trainer's optimizer (the engines' tables), eagerly: the parameters after each update
    and the scheduled values it applied, read back from ``inject_hyperparams``'s state."""
    sched = applied_schedule(build_schedule(cfg), len(grads))
    hp = applied_hparams(build_hparams(cfg), len(grads))
    tx = make_optimizer(cfg, sched, params, hp)
    state = tx.init(params)
    out, applied = [], {k: [] for k in hp}
    step = jax.jit(tx.update)  # one compile (eager optax compiles each of its ops)
    for g in grads:
        updates, state = step(g, state, params)
        params = optax.apply_updates(params, updates)
        out.append(jax.device_get(params))
        inj = state[-1]  # chain([clip,] <optimizer>): the optimizer's inject_hyperparams state
        for k in applied:  # a scheduled clip norm has its own, first, inject_hyperparams
            v = state[0].hyperparams["max_norm"] if k == "clip_norm" else inj.hyperparams[k]
            applied[k].append(float(v))
    return out, applied


def _torch(params: dict, grads: list[dict], make_opt, make_sched, key: str,
           wd: float) -> tuple[list[dict], list[float]]:
    """torch.optim with torch's scheduler: the momentum (beta1) torch's scheduler put in the
    optimizer before each ``step()``, and the parameters after it (decay on our mask)."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    decay = jax.tree_util.tree_leaves(models.decay_mask(params))
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for x in leaves]
    opt = make_opt([{"params": [t for t, d in zip(tensors, decay) if d], "weight_decay": wd},
                    {"params": [t for t, d in zip(tensors, decay) if not d],
                     "weight_decay": 0.0}])
    sched = make_sched(opt)
    out, mom = [], []
    for g in grads:
        for t, gl in zip(tensors, jax.tree_util.tree_leaves(g)):
            t.grad = torch.tensor(gl)
        pg = opt.param_groups[0]
        mom.append(pg["betas"][0] if "betas" in pg else pg["momentum"])
        opt.step()
        sched.step()
        out.append(jax.tree_util.tree_unflatten(treedef, [t.detach().numpy().copy()
                                                          for t in tensors]))
    return out, mom


CASES = {  # id: (trainer flags, torch optimizer, torch scheduler, the cycled field)
    "onecycle-adamw": (
        dict(optimizer="adamw", lr_scheduler="onecycle", lr=3e-3),
        lambda g: torch.optim.AdamW(g, lr=3e-3, betas=(0.9, 0.95), eps=1e-8),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=3e-3, total_steps=STEPS),
        "beta1"),
    "onecycle-sgd": (
        dict(optimizer="sgd", lr_scheduler="onecycle", lr=0.1, lr_base_momentum=0.7,
             lr_max_momentum=0.9, lr_pct_start=0.5, lr_anneal_strategy="linear"),
        lambda g: torch.optim.SGD(g, lr=0.1, momentum=0.9),
        lambda o: torch.optim.lr_scheduler.OneCycleLR(
            o, max_lr=0.1, total_steps=STEPS, base_momentum=0.7, max_momentum=0.9,
            pct_start=0.5, anneal_strategy="linear"),
        "momentum"),
    "cyclic-adam": (
        dict(optimizer="adam", lr_scheduler="cyclic", lr=3e-3, lr_base=1e-4,
             lr_step_size_up=3, lr_mode="triangular2"),
        lambda g: torch.optim.Adam(g, lr=3e-3, betas=(0.9, 0.95), eps=1e-8),
        lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=1e-4, max_lr=3e-3,
                                                    step_size_up=3, mode="triangular2"),
        "beta1"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cycled_momentum_is_torchs(case: str) -> None:
    """Per step, the beta1 / momentum the optimizer applied is the one torch's scheduler set
    (float32 tables of float64 values: within an ulp of 1), and the parameters follow torch's
    optimizer driven by torch's scheduler (lr and momentum) within float32 arithmetic."""
    flags, make_opt, make_sched, field = CASES[case]
    cfg = TrainConfig.from_dict(dict(model_size="tiny", steps=STEPS, warmup_steps=0,
                                     weight_decay=0.1, clip_norm=0.0, **flags))
    params = _params()
    grads = _grads(params, STEPS)
    ours, applied = _ours(cfg, params, grads)
    ref, mom = _torch(params, grads, make_opt, make_sched, field, wd=0.1)
    assert list(applied) == [field]
    assert len(set(mom)) > 3  # torch really cycles it
    np.testing.assert_allclose(applied[field], mom, rtol=0, atol=F32)
    for t in range(STEPS):  # parameter changes relative to the largest, per tensor
        for a, b, p0 in zip(jax.tree.leaves(ours[t]), jax.tree.leaves(ref[t]),
                            jax.tree.leaves(params)):
            da, db = np.asarray(a, np.float64) - p0, np.asarray(b, np.float64) - p0
            storage = (t + 1) * float(np.spacing(np.float32(np.max(np.abs(b)))))
            assert max(np.max(np.abs(da - db)) - storage, 0) <= 2e-5 * np.max(np.abs(db))


def test_constant_momentum_when_not_cycled() -> None:
    """``--no-lr-cycle-momentum``: no schedule, the optimizer is the constant one (torch's
    ``cycle_momentum=False`` leaves beta1 alone); ``--beta1`` with cycling is refused."""
    cfg = TrainConfig.from_dict(dict(lr_scheduler="onecycle", steps=STEPS,
                                     lr_cycle_momentum=False))
    assert build_hparams(cfg) == {}
    with pytest.raises(ValueError, match=r"--beta1=0\.8 is not used"):
        build_hparams(TrainConfig.from_dict(dict(lr_scheduler="onecycle", beta1=0.8)))
    with pytest.raises(ValueError, match="optimizer must support momentum"):
        build_hparams(TrainConfig.from_dict(dict(lr_scheduler="cyclic", lr_base=1e-4,
                                                 optimizer="adafactor")))


def test_weight_decay_schedule_closed_form() -> None:
    """AdamW with ``--weight-decay='linear(0.4, 0.0, 4)'``: on the decayed matrices
    ``p' = p - lr_t (u_t + wd_t p)`` with ``wd_t`` this step's value, ``u_t`` the Adam direction,
    which does not depend on the decay (decoupled): recovered from the same run at
    ``--weight-decay=0``; the other leaves move as without decay."""
    params = _params()
    grads = _grads(params, 6)
    base = dict(model_size="tiny", steps=6, lr=0.05, lr_scheduler="steplr", lr_step_size=2,
                lr_gamma=0.5, warmup_steps=0, clip_norm=0.0)
    cfg = TrainConfig.from_dict({**base, "weight_decay": "linear(0.4, 0.0, 4)"})
    ours, applied = _ours(cfg, params, grads)
    free, _ = _ours(TrainConfig.from_dict({**base, "weight_decay": 0.0}), params, grads)
    wd = [0.4, 0.3, 0.2, 0.1, 0.0, 0.0]  # by hand
    lr = [0.05, 0.05, 0.025, 0.025, 0.0125, 0.0125]
    np.testing.assert_allclose(applied["weight_decay"], wd, rtol=F32)
    decay = jax.tree.leaves(models.decay_mask(params))
    prev_free = jax.tree.leaves(params)
    pred = [np.asarray(x, np.float64) for x in prev_free]
    for t in range(6):
        now_free = jax.tree.leaves(free[t])
        for i, (d, a, b) in enumerate(zip(decay, prev_free, now_free)):
            pred[i] = pred[i] + (np.asarray(b, np.float64) - a) - (lr[t] * wd[t] * pred[i]
                                                                  if d else 0.0)
            got = np.asarray(jax.tree.leaves(ours[t])[i], np.float64)
            # float32 storage of both runs' parameters and the update arithmetic, per step
            tol = 4 * (t + 1) * F32 * (np.max(np.abs(pred[i])) + 1e-3)
            assert np.max(np.abs(got - pred[i])) <= tol, (t, i)
            if d and t < 4:  # the decay really moved the matrices (the test can fail)
                assert np.max(np.abs(got - np.asarray(b))) > 100 * tol
        prev_free = now_free


def test_hparam_flags() -> None:
    """A number stays a number (the constant optimizer, bit for bit); a schedule's text is kept;
    values out of range at some step are refused naming the flag and the step."""
    c, _ = parse_config(["--weight-decay=0.05", "--clip-norm=cosine(1.0, 0.5, 10)"])
    assert c.weight_decay == 0.05 and c.clip_norm == "cosine(1.0, 0.5, 10)"
    assert set(build_hparams(c)) == {"clip_norm"}
    for over, frag in ((dict(beta1="linear(0.9, 1.2, 10)"), "--beta1: the schedule is 1.02 at "
                        "step 4"), (dict(weight_decay="foo("), "--weight-decay='foo(' is invalid")):
        with pytest.raises(ValueError, match=frag.replace("(", r"\(")):
            check_config(TrainConfig.from_dict(dict(data="unused.txt", **over)))


def test_population_member_optimizer_is_the_single_runs() -> None:
    """A sweep over the lr of a OneCycleLR SGD run with a weight-decay schedule: a member's
    optimizer, built by the population from its slice of the stacked tables, applies the same
    momentum and weight decay as the single run with its lr (the same float32 tables) and moves
    the parameters as it does (the same operations: equal within float32 rounding)."""
    from train.engine.population import Population
    from train.run.grid import member_configs
    from train.run.setup import run_schedule

    base = TrainConfig.from_dict(dict(
        model_size="tiny", steps=STEPS, optimizer="sgd", lr_scheduler="onecycle", warmup_steps=0,
        clip_norm="linear(2.0, 0.5, 8)", weight_decay="linear(0.4, 0.0, 4)",
        sweep=("lr=0.05,0.1",))).normalized()
    members, cfgs = member_configs(base)[1:]
    pop = Population(cfgs, members, [run_schedule(c) for c in cfgs])
    assert pop.scheduled == ("clip_norm", "momentum", "weight_decay")
    params = _params()
    grads = [jax.tree.map(lambda g: 4 * g, g) for g in _grads(params, STEPS)]  # clipped
    single, applied = _ours(cfgs[1], params, grads)
    h = jax.tree.map(lambda x: x[1], pop.h)
    sched = applied_schedule(run_schedule(cfgs[1]), STEPS)
    tx = pop.optimizer(h, sched, params)
    state, p, step = tx.init(params), params, jax.jit(tx.update)
    for t, g in enumerate(grads):
        updates, state = step(g, state, p)
        p = optax.apply_updates(p, updates)
        assert float(state[-1].hyperparams["weight_decay"]) == applied["weight_decay"][t]
        assert float(state[-1].hyperparams["momentum"]) == applied["momentum"][t]
        for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(single[t])):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert applied["weight_decay"][:4] == pytest.approx([0.4, 0.3, 0.2, 0.1], rel=F32)


def test_typed_beta1_at_its_default_is_refused_under_cycling(capsys) -> None:
    """``--beta1=0.9`` (the default's value, typed) with onecycle's momentum cycling would be
    overwritten silently, as torch's OneCycleLR overwrites ``betas[0]``: the CLI refuses it in
    one line, as any other value; not typed, or with ``--no-lr-cycle-momentum``, it is fine.
    SGD's ``--momentum`` likewise under cyclic."""
    from train.__main__ import parse_config

    for argv, flag_ in ((["--lr-scheduler=onecycle", "--beta1=0.9"], "--beta1=0.9"),
                        (["--lr-scheduler=cyclic", "--lr-base=1e-4", "--optimizer=sgd",
                          "--momentum=0.0"], "--momentum=0.0")):
        with pytest.raises(SystemExit) as e:
            parse_config([*argv, "--steps=10"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err
        assert f"{flag_} is not used: " in err and "--no-lr-cycle-momentum" in err
        assert "--lr-base-momentum and --lr-max-momentum" in err
    cfg, _ = parse_config(["--lr-scheduler=onecycle", "--steps=10"])
    assert cfg.beta1 == 0.9 and "beta1" in build_hparams(cfg)
    cfg, _ = parse_config(["--lr-scheduler=onecycle", "--beta1=0.9", "--steps=10",
                           "--no-lr-cycle-momentum"])
    assert build_hparams(cfg) == {}


def test_checkpoint_from_before_momentum_cycling_resumes_as_it_ran(tmp_path, corpus) -> None:
    """A onecycle checkpoint saved before issue 27 trained with a constant beta1 and holds the
    plain optimizer state (no injected hyperparameters), and its saved settings have no
    ``lr_cycle_momentum`` (its built schedule: today's default's). A plain ``--resume`` reads it
    as ``--no-lr-cycle-momentum`` and continues as it ran, bit for bit as an uninterrupted run
    of the old kind (today's ``--no-lr-cycle-momentum``: the same optimizer, bit for bit);
    asking it to cycle is refused in one message saying why and what to do."""
    import json
    import os

    from train_testutil import tiny

    from train import train_and_evaluate as run
    from train.resume import ResumeMismatchError

    tmp = str(tmp_path)
    old = tiny(tmp, corpus, lr_scheduler="onecycle", warmup_steps=None, steps=3,
               lr_cycle_momentum=False)
    wd = os.path.join(tmp, "old")
    run(old, wd)
    # what the code before issue 27 saved: no lr_cycle_momentum; the spec without the flag
    legacy = build_schedule(TrainConfig.from_dict({**old, "lr_cycle_momentum": None})
                            .normalized().validate())
    meta = os.path.join(wd, "checkpoints", "3", "config", "metadata")
    for path in (meta, os.path.join(wd, "config.json")):
        with open(path) as f:
            saved = json.load(f)
        del saved["lr_cycle_momentum"]
        if path == meta:
            assert saved["schedule_spec"] != repr(legacy)
            saved.update(schedule_spec=repr(legacy), schedule_config=legacy.to_config())
        with open(path, "w") as f:
            json.dump(saved, f)
    with pytest.raises(ResumeMismatchError) as e:
        run({"resume": True, "steps": 6, "lr_cycle_momentum": True}, wd)
    msg = str(e.value)
    assert "lr_cycle_momentum: checkpoint False, now True" in msg
    assert "Resume with --no-lr-cycle-momentum" in msg and "\n" not in msg
    done = run({"resume": True, "steps": 6}, wd)
    assert done["start_step"] == 3
    ref = run({**old, "steps": 6}, os.path.join(tmp, "ref"))
    for x, y in zip(jax.tree.leaves(done["params"]), jax.tree.leaves(ref["params"]),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    with open(os.path.join(wd, "metrics", "metrics.jsonl")) as f:
        rows = [json.loads(x) for x in f if '"loss"' in x]
    assert [r["step"] for r in rows] == list(range(6)) and not any("beta1" in r for r in rows)
