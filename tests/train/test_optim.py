"""The optimizer: decay on matrices only, per-group lr multipliers, the parameter table."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import optax
import pytest

import models
from train.config import TrainConfig
from train.optim import make_optimizer, param_table, path_str
from train.schedule.build import build_schedule


def _params() -> dict:
    cfg = models.get_config("gpt2", "tiny", n_layer=1, block_size=16)
    return jax.device_get(models.init_params(cfg, jax.random.key(0)))


def test_weight_decay_on_matrices_only_and_groups() -> None:
    params = _params()
    cfg = TrainConfig.from_dict(dict(model_size="tiny", lr=0.1, weight_decay=0.5,
                                     lr_scheduler="constant", warmup_steps=0,
                                     lr_mults={"wpe": 0.0}))
    tx = make_optimizer(cfg, build_schedule(cfg), params)
    zeros = jax.tree.map(np.zeros_like, params)
    upd, _ = jax.jit(tx.update)(zeros, tx.init(params), params)
    new = jax.device_get(optax.apply_updates(params, upd))
    # zero gradients: only decay moves parameters, and only 2-D kernels decay
    k = params["h_0"]["attn"]["c_attn"]["kernel"]
    np.testing.assert_allclose(new["h_0"]["attn"]["c_attn"]["kernel"], k * (1 - 0.1 * 0.5),
                               rtol=1e-6)
    for path in (("h_0", "attn", "c_attn", "bias"), ("ln_f", "scale"), ("wte", "embedding")):
        a, b = params, new
        for p in path:
            a, b = a[p], b[p]
        np.testing.assert_array_equal(a, b)
    # gradient step: the wpe group has multiplier 0 and does not move
    ones = jax.tree.map(np.ones_like, params)
    upd, _ = jax.jit(tx.update)(ones, tx.init(params), params)
    new = jax.device_get(optax.apply_updates(params, upd))
    np.testing.assert_array_equal(new["wpe"]["embedding"], params["wpe"]["embedding"])
    assert not np.array_equal(new["wte"]["embedding"], params["wte"]["embedding"])


def test_param_table() -> None:
    t = param_table(_params(), {"wte": 0.1})
    assert "wte/embedding" in t and "group 'wte': lr x 0.1" in t
    line = next(x for x in t.splitlines() if x.startswith("h_0/attn/c_attn/kernel"))
    assert " yes " in line
    assert "total:" in t


# -- every --optimizer against torch.optim (Lion: against the paper's update in NumPy) ----------

torch = pytest.importorskip("torch")

STEPS = 6
#: lr of each step: StepLR halving every 2 steps, so the schedule really drives the updates
SCHED = dict(lr_scheduler="steplr", lr_step_size=2, lr_gamma=0.5, warmup_steps=0)


def _grads(params: dict, steps: int, scale: float) -> list[dict]:
    rng = np.random.default_rng(1)
    return [jax.tree.map(lambda p: (scale * rng.standard_normal(p.shape)).astype(np.float32),
                         params) for _ in range(steps)]


def _optax_run(cfg: TrainConfig, params: dict, grads: list[dict]) -> dict:
    tx = make_optimizer(cfg, build_schedule(cfg), params)
    state = tx.init(params)
    for g in grads:  # eagerly: a few hundred small ops, cheaper than compiling each optimizer
        updates, state = tx.update(g, state, params)
        params = optax.apply_updates(params, updates)
    return jax.device_get(params)


def _torch_run(cfg: TrainConfig, params: dict, grads: list[dict], make: Any) -> dict:
    """torch.optim on the same leaves: one group per (decay, lr multiplier), lr of step t set
    from torch's own StepLR arithmetic (lr * gamma ** (t // step_size)) times the multiplier;
    ``clip_grad_norm_`` over all tensors before each step."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    decay = jax.tree_util.tree_leaves(models.decay_mask(params))
    mults = [next((m for pat, m in cfg.lr_mults.items() if pat in path_str(p)), 1.0)
             for p, _ in leaves]
    tensors = [torch.tensor(np.asarray(x), requires_grad=True) for _, x in leaves]
    groups: dict = {}
    for t, d, m in zip(tensors, decay, mults):
        groups.setdefault((bool(d), m), []).append(t)
    opt = make([{"params": ps, "weight_decay": cfg.weight_decay if d else 0.0, "mult": m}
                for (d, m), ps in groups.items()])
    for i, g in enumerate(grads):
        for grp in opt.param_groups:
            grp["lr"] = cfg.lr * cfg.lr_gamma ** (i // cfg.lr_step_size) * grp["mult"]
        for t, gl in zip(tensors, jax.tree_util.tree_leaves(g)):
            t.grad = torch.tensor(gl)
        if cfg.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(tensors, cfg.clip_norm)
        opt.step()
    return jax.tree_util.tree_unflatten(treedef, [t.detach().numpy() for t in tensors])


def _lion_numpy(cfg: TrainConfig, params: dict, grads: list[dict]) -> dict:
    """Lion (Chen et al. 2023, Algorithm 2) in float64, with our mask, groups and clipping."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    decay = jax.tree_util.tree_leaves(models.decay_mask(params))
    mults = [next((m for pat, m in cfg.lr_mults.items() if pat in path_str(p)), 1.0)
             for p, _ in leaves]
    ps = [np.asarray(x, np.float64) for _, x in leaves]
    ms = [np.zeros_like(p) for p in ps]
    for i, g in enumerate(grads):
        gs = [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(g)]
        norm = np.sqrt(sum(np.sum(x * x) for x in gs))
        if cfg.clip_norm > 0 and norm > cfg.clip_norm:
            gs = [x * cfg.clip_norm / norm for x in gs]
        lr = cfg.lr * cfg.lr_gamma ** (i // cfg.lr_step_size)
        for j, (p, m, x) in enumerate(zip(ps, ms, gs)):
            c = cfg.beta1 * m + (1 - cfg.beta1) * x
            ps[j] = p - lr * mults[j] * (np.sign(c) + (cfg.weight_decay if decay[j] else 0) * p)
            ms[j] = cfg.beta2 * m + (1 - cfg.beta2) * x
    return jax.tree_util.tree_unflatten(treedef, ps)


def _close(ours: dict, ref: dict, start: dict, rtol: float) -> None:
    """Compare the parameter *changes* (the optimizer's work), tensor by tensor: relative to the
    largest change of the tensor, float32 arithmetic in a different order rounds at ~1e-7 per
    operation, a few dozen operations per step over 6 steps (``rtol``); and both sides store the
    parameters in float32, rounding them by up to half an ulp of ``max|p|`` per step each, which
    matters when the updates are small against the weights (Adafactor: ``lr * rms(p)``)."""
    for (path, a), b, p0 in zip(jax.tree_util.tree_leaves_with_path(ours),
                                jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(start)):
        da, db = np.asarray(a, np.float64) - p0, np.asarray(b, np.float64) - p0
        scale = np.max(np.abs(db))
        assert scale > 0, path_str(path)
        storage = STEPS * float(np.spacing(np.float32(np.max(np.abs(b)))))
        err = max(np.max(np.abs(da - db)) - storage, 0.0) / scale
        assert err <= rtol, f"{path_str(path)}: relative difference {err:.2e} > {rtol:g}"


CASES = {  # name: (config overrides, torch optimizer factory)
    "adamw": (dict(beta1=0.8, beta2=0.9, eps=1e-6),
              lambda c: lambda g: torch.optim.AdamW(g, lr=c.lr, betas=(c.beta1, c.beta2),
                                                    eps=c.eps)),
    "adam": (dict(beta1=0.8, beta2=0.9, eps=1e-6),
             lambda c: lambda g: torch.optim.Adam(g, lr=c.lr, betas=(c.beta1, c.beta2), eps=c.eps)),
    "sgd": (dict(momentum=0.9),
            lambda c: lambda g: torch.optim.SGD(g, lr=c.lr, momentum=c.momentum,
                                                dampening=c.dampening, nesterov=c.nesterov)),
    "sgd-dampening": (dict(momentum=0.9, dampening=0.3), None),
    "sgd-nesterov": (dict(momentum=0.8, nesterov=True), None),
    "sgd-plain": (dict(), None),
    "adafactor": (dict(), lambda c: lambda g: torch.optim.Adafactor(
        g, lr=c.lr, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, foreach=False)),
}


@pytest.mark.parametrize("case", [*CASES, "lion"])
def test_optimizer_matches_torch(case: str) -> None:
    """A few steps of ``make_optimizer`` (schedule, clipping, decay mask, a group at 0.5x) equal
    torch.optim's on the same parameters and gradients."""
    params = _params()
    name = case.split("-")[0]
    over, make = CASES.get(case, (dict(beta1=0.9, beta2=0.99), None))
    if name == "sgd":
        make = CASES["sgd"][1]
    lr = 0.1 if name in ("sgd",) else 3e-3
    cfg = TrainConfig.from_dict(dict(model_size="tiny", lr=lr, optimizer=name, weight_decay=0.1,
                                     clip_norm=1.0, lr_mults={"wpe": 0.5}, **SCHED, **over))
    grads = _grads(params, STEPS, scale=0.05)  # global norm ~ 0.05 * sqrt(#params) > 1: clipped
    ours = _optax_run(cfg, params, grads)
    if name == "lion":
        ref = _lion_numpy(cfg, params, grads)
    else:
        ref = _torch_run(cfg, params, grads, make(cfg))
    _close(ours, ref, params, rtol=2e-5)


def test_sgd_dampening_is_not_optax_trace() -> None:
    """optax.sgd (trace: t = g + momentum t) equals torch's SGD only without dampening; our
    ``sgd_momentum`` implements dampening, and the comparison above would notice if it did not."""
    from train.optim import sgd_momentum

    g = [np.full(3, x, np.float32) for x in (1.0, -2.0, 0.5, 3.0)]
    for damp, nest in ((0.0, False), (0.0, True), (0.4, False)):
        ours, theirs = sgd_momentum(0.9, damp, nest), optax.trace(0.9, nesterov=nest)
        s1, s2 = ours.init(g[0]), theirs.init(g[0])
        buf, out_ref = 0.0, []
        for i, x in enumerate(g):  # torch.optim.SGD's step, by hand
            buf = x[0] if i == 0 else 0.9 * buf + (1 - damp) * x[0]
            out_ref.append(x[0] + 0.9 * buf if nest else buf)
            u1, s1 = ours.update(x, s1)
            u2, s2 = theirs.update(x, s2)
            assert float(u1[0]) == pytest.approx(out_ref[-1], rel=1e-6)
            if damp == 0:
                assert float(u2[0]) == pytest.approx(out_ref[-1], rel=1e-6)
        if damp > 0:
            assert float(u2[0]) != pytest.approx(out_ref[-1], rel=1e-3)


@pytest.mark.parametrize("over,fragment", [
    (dict(optimizer="sgd", beta2=0.99), "--optimizer=sgd does not use --beta2=0.99"),
    (dict(optimizer="adamw", momentum=0.9), "--optimizer=adamw does not use --momentum=0.9"),
    (dict(optimizer="lion", eps=1e-6), "--optimizer=lion does not use --eps=1e-06"),
    (dict(optimizer="adafactor", beta1=0.8), "--optimizer=adafactor does not use --beta1=0.8"),
    (dict(optimizer="sgd", nesterov=True), "--nesterov=True is invalid: requires --momentum > 0"),
    (dict(optimizer="sgd", momentum=0.9, dampening=0.1, nesterov=True),
     "requires --momentum > 0 and --dampening=0"),
    (dict(optimizer="sgd", dampening=0.1), "--dampening=0.1 is invalid: only applies with"),
    (dict(optimizer="sgd", momentum=1.0), "--momentum=1.0 is invalid"),
    (dict(optimizer="rmsprop"), "--optimizer='rmsprop' is invalid: must be one of adamw, adam"),
])
def test_optimizer_flags_are_validated(over: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        TrainConfig.from_dict(dict(model_size="tiny", **over))
    assert fragment in str(info.value)
