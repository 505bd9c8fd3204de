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
