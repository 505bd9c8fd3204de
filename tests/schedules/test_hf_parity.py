"""schedules.hf against the real transformers schedules driving a torch optimizer."""

from __future__ import annotations

import random
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers import optimization as O  # noqa: E402

from schedules import hf  # noqa: E402


def _ref(fn, lr, n, **kw):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=lr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sch = fn(opt, **kw)
        out = []
        for _ in range(n):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            sch.step()
    return np.asarray(out)


def _configs(rng):
    w = rng.randint(0, 40)
    n = w + rng.randint(1, 200)
    cyc = rng.choice([0.5, 1.0, 1.5, 0.25, 2.0])  # float32 closed form: dyadic cycles
    yield "get_constant_schedule", {}
    yield "get_constant_schedule_with_warmup", {"num_warmup_steps": w}
    yield "get_linear_schedule_with_warmup", {"num_warmup_steps": w, "num_training_steps": n}
    yield "get_cosine_schedule_with_warmup", {"num_warmup_steps": w, "num_training_steps": n,
                                              "num_cycles": cyc}
    yield "get_cosine_with_hard_restarts_schedule_with_warmup", {
        "num_warmup_steps": w, "num_training_steps": n, "num_cycles": rng.randint(1, 4)}
    yield "get_polynomial_decay_schedule_with_warmup", {
        "num_warmup_steps": w, "num_training_steps": n, "lr_end": rng.choice([1e-7, 1e-5]),
        "power": rng.uniform(0.5, 3)}
    yield "get_inverse_sqrt_schedule", {"num_warmup_steps": w,
                                        "timescale": rng.choice([None, rng.randint(1, 100)])}
    yield "get_cosine_with_min_lr_schedule_with_warmup", {
        "num_warmup_steps": w, "num_training_steps": n, "num_cycles": cyc,
        "min_lr_rate": rng.uniform(0, 0.5)}
    yield "get_cosine_with_min_lr_schedule_with_warmup_lr_rate", {
        "num_warmup_steps": w, "num_training_steps": n, "min_lr_rate": rng.uniform(0, 0.5),
        "warmup_lr_rate": rng.choice([None, 0.1])}
    yield "get_wsd_schedule", {
        "num_warmup_steps": w, "num_decay_steps": rng.randint(1, 80),
        "num_stable_steps": rng.randint(0, 80),
        "warmup_type": rng.choice(["linear", "cosine", "1-sqrt"]),
        "decay_type": rng.choice(["linear", "cosine", "1-sqrt"]),
        "min_lr_ratio": rng.choice([0.0, 0.1]), "num_cycles": cyc}


@pytest.mark.parametrize("seed", range(15))
def test_hf_parity(seed):
    rng = random.Random(seed)
    lr = rng.uniform(1e-4, 1e-2)
    for name, kw in _configs(rng):
        if name == "get_inverse_sqrt_schedule" and kw["num_warmup_steps"] == 0 \
                and kw["timescale"] is None:
            kw["timescale"] = 10
        n = 320
        ref = _ref(getattr(O, name), lr, n, **kw)
        s = getattr(hf, name)(lr, **kw)
        got = np.asarray([s(t) for t in range(n)])
        np.testing.assert_array_equal(got, ref, err_msg=name)  # transformers, bit for bit
        f32 = np.asarray(jax.jit(jax.vmap(s))(jnp.arange(n, dtype=jnp.float32)), np.float64)
        peak = np.max(ref)
        err = np.abs(f32 - ref)
        lim = np.maximum(3e-6 * np.abs(ref), 2e-5 * np.abs(ref) * (np.abs(ref) < 1e-6 * peak))
        lim = np.maximum(lim, 2e-7 * peak)  # documented: near zeros of the cosines
        assert (err <= lim).all(), (name, kw, int(np.argmax(err > lim)))


def test_get_scheduler_names():
    for name in ["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                 "constant_with_warmup", "inverse_sqrt"]:
        ref = O.get_scheduler(name, torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                                                    lr=0.1), 5, 50)
        ours = hf.get_scheduler(name, 0.1, 5, 50)
        for t in range(60):
            assert ours(t) == pytest.approx(ref.get_last_lr()[0], rel=1e-12)
            ref.optimizer.step()
            ref.step()
    with pytest.raises(ValueError):
        hf.get_scheduler("linear", 0.1)


def test_list_lr_is_one_schedule_per_param_group():
    """A list of lrs gives one schedule per group, as transformers' lambda drives every group
    of the optimizer (torch's LambdaLR with several param groups)."""
    lrs, kw, n = [0.1, 0.03], {"num_warmup_steps": 3, "num_training_steps": 12}, 14
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, lrs)])
    sch = O.get_linear_schedule_with_warmup(opt, **kw)
    want = []
    for _ in range(n):
        want.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sch.step()
    got = hf.get_linear_schedule_with_warmup(lrs, **kw)
    assert isinstance(got, list) and len(got) == len(lrs)
    np.testing.assert_array_equal([[s(t) for s in got] for t in range(n)], want)


def test_get_scheduler_reduce_lr_on_plateau_takes_torch_keywords():
    """``scheduler_specific_kwargs`` are ReduceLROnPlateau's own keywords; the transformation
    lowers the lr after ``patience`` bad epochs as torch's does."""
    metrics = [1.0, 0.9, 0.95, 0.95, 0.95, 0.96, 0.97, 0.98]
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=2, factor=0.5)
    want = []
    for m in metrics:
        ref.step(m)
        want.append(opt.param_groups[0]["lr"])
    tx = hf.get_scheduler("reduce_lr_on_plateau", 0.5,
                          scheduler_specific_kwargs={"patience": 2, "factor": 0.5})
    state = tx.init(jnp.zeros(1))
    got = []
    for m in metrics:
        _, state = tx.update(jnp.zeros(1), state, value=m)
        got.append(float(state.lr))
    assert want[-1] < 0.5  # the metric plateaued: torch lowered the lr
    np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="patiense"):
        hf.get_scheduler("reduce_lr_on_plateau", 0.5, scheduler_specific_kwargs={"patiense": 2})
