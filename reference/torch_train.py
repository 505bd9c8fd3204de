"""``python -m reference.torch_train <flags>``: the PyTorch reference of ``python -m train``.

It takes the same flags (parsed by ``train.__main__.parse_config``) and runs the same training
with PyTorch, so that the two JSON-lines logs can be compared step by step:

* **model**: ``transformers`` ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` (``models.hf_config``,
  eager attention, float32), initial weights = ours (``models.init_params(cfg, key(seed))``
  exported with ``models.to_hf``);
* **data**: the global batch of step ``t`` from ``train.data.Batcher`` (a pure function of
  ``(seed, t)``), all ``devices x grad_accum x batch_size`` rows in one forward pass: the mean
  gradient of data parallelism, computed by one process;
* **loss**: our definition (``models.loss_fn``): token cross-entropy of the logits of
  ``x = batch[:, :-1]`` against explicit targets ``batch[:, 1:]`` (HF's internal label shift is
  not used), averaged per micro-batch, then over micro-batches, then over devices, as the
  pmapped step does;
* **optimizer**: ``--optimizer``: ``torch.optim.AdamW`` (default), ``Adam``, ``SGD``
  (``--momentum --dampening --nesterov``) or ``Adafactor`` (:func:`build_optimizer`), with two
  parameter groups: weight decay exactly where ``models.decay_mask`` says so (names mapped
  through ``models.to_hf``), none elsewhere; ``torch.nn.utils.clip_grad_norm_(--clip-norm)``
  before each step;
* **schedule**: the ``torch.optim.lr_scheduler`` classes (or transformers' ``get_scheduler``)
  that the flags name: ``train.schedule.plan.plan`` (the trainer's own table of names, classes and
  arguments) realized with torch; ``scheduler.step()`` after each ``optimizer.step()``.

Output: ``<metrics dir>/metrics.jsonl`` (default ``WORKDIR/metrics``), one line per step:
``{"step", "loss", "lr", "grad_norm"}`` where ``lr`` is the learning rate the optimizer used at
that step, plus ``beta1`` (``momentum`` for SGD) where ``onecycle``/``cyclic`` cycle it (torch's
``cycle_momentum``, as the trainer). Not supported (rejected): dropout, ``--lr-mults``,
``--schedule``, ``--optimizer=lion`` (not in torch.optim), hyperparameters given as schedules
(issue 27) and Megatron's ``--lr-decay-style``.
``reference.torch_ddp`` runs the same training as real ``DistributedDataParallel`` processes.
Never imported by the packages.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim import lr_scheduler as L

import models
from train._flag import flag
from train.config import HPARAM_FIELDS, TrainConfig
from train.data import Batcher, load_data
from train.schedule.hparams import build_hparams
from train.schedule.plan import Plan, plan
from train.tokenizer import get_tokenizer

__all__ = ["build_model", "build_optimizer", "build_scheduler", "decay_names", "param_groups",
           "train", "main"]

# -- model ------------------------------------------------------------------------------------


def build_model(model_cfg: Any, params: Any) -> torch.nn.Module:
    """The transformers model of ``model_cfg`` (eager attention, float32) holding ``params``."""
    import transformers

    d = dict(models.hf_config(model_cfg))
    d.pop("architectures", None)
    model_type = d.pop("model_type")
    if model_type == "gpt2":
        hc, cls = transformers.GPT2Config(**d), transformers.GPT2LMHeadModel
    else:
        hc, cls = transformers.LlamaConfig(**d), transformers.LlamaForCausalLM
    hc._attn_implementation = "eager"
    model = cls(hc).to(torch.float32)
    sd = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in
          models.to_hf(model_cfg, params).items()}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    tied = {"lm_head.weight"} if hc.tie_word_embeddings else set()
    missing = [k for k in missing if k not in tied and not k.endswith((".attn.bias",
                                                                        ".masked_bias"))]
    if missing or unexpected:
        raise RuntimeError(f"weight export mismatch: missing {missing}, unexpected {unexpected}")
    named = dict(model.named_parameters())
    for k, v in sd.items():  # the weights really are ours, bit for bit
        if not torch.equal(named[k].detach(), v):
            raise RuntimeError(f"{k}: weights differ after loading")
    model.train()  # dropout is 0 (checked by the caller), so this equals eval()
    return model


def decay_names(model_cfg: Any, params: Any) -> set[str]:
    """HF parameter names that get weight decay: ``models.decay_mask`` mapped by ``to_hf``."""
    import jax

    mask = models.decay_mask(params)
    ones = jax.tree.map(lambda m, p: np.full(np.shape(p), float(m), np.float32), mask, params)
    out = set()
    for name, a in models.to_hf(model_cfg, ones).items():
        if a.size and not (np.all(a == 1.0) or np.all(a == 0.0)):
            raise RuntimeError(f"{name}: mixed decay mask")
        if a.size and a.flat[0] == 1.0:
            out.add(name)
    return out


def param_groups(model: torch.nn.Module, decay: set[str], weight_decay: float) -> list[dict]:
    """Two optimizer groups: ``decay`` names with ``weight_decay``, every other parameter with 0."""
    yes, no = [], []
    for name, p in model.named_parameters():  # tied weights appear once, under the first name
        (yes if name in decay else no).append(p)
    seen = {n for n, _ in model.named_parameters()}
    if not decay <= seen:
        raise RuntimeError(f"decay names not in the model: {sorted(decay - seen)}")
    return [{"params": yes, "weight_decay": weight_decay, "name": "decay"},
            {"params": no, "weight_decay": 0.0, "name": "no_decay"}]


def build_optimizer(cfg: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """The ``torch.optim`` class that ``--optimizer`` names, with the torch-named flags
    (``train/optim.py`` builds the same optimizer from optax; lion has no torch version)."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               dampening=cfg.dampening, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adafactor":
        return torch.optim.Adafactor(groups, lr=cfg.lr, beta2_decay=-0.8, eps=(None, 1e-3),
                                     d=1.0, weight_decay=cfg.weight_decay)
    raise ValueError(f"--optimizer={cfg.optimizer} has no torch.optim equivalent in the "
                     "reference (adamw, adam, sgd, adafactor)")


# -- schedule ---------------------------------------------------------------------------------


def _realize(p: Plan, opt: torch.optim.Optimizer) -> Any:
    if p.cls == "hf":
        from transformers import get_scheduler

        kw = p.kwargs
        return get_scheduler(kw["name"], opt, num_warmup_steps=kw["num_warmup_steps"],
                             num_training_steps=kw["num_training_steps"],
                             scheduler_specific_kwargs=dict(kw["scheduler_specific_kwargs"]))
    if p.cls in ("spec", "megatron"):
        raise ValueError("--schedule and --lr-decay-style (Megatron) are not torch schedulers: "
                         "the reference supports --lr-scheduler only")
    kw = dict(p.kwargs)
    if "lr_lambda" in kw:  # a safe expression (schedules.expr), evaluated on the host
        fn = kw["lr_lambda"]
        kw["lr_lambda"] = lambda step: float(fn(step))
    if p.children:  # children are constructed first, in order, as a torch user would
        kids = [_realize(c, opt) for c in p.children]
        if p.cls == "ChainedScheduler":
            return L.ChainedScheduler(kids, optimizer=opt)
        return getattr(L, p.cls)(opt, schedulers=kids, **kw)
    return getattr(L, p.cls)(opt, **kw)


def build_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer) -> Any:
    """The torch (or transformers) scheduler that the flags name: the trainer's own
    :func:`train.schedule.plan.plan` (one table for both) realized with
    ``torch.optim.lr_scheduler``."""
    return _realize(plan(cfg), opt)


# -- training ---------------------------------------------------------------------------------


def _momentum(group: dict) -> dict[str, float]:
    """The momentum torch's ``cycle_momentum`` sets in ``group``, under the trainer's name."""
    if "betas" in group:
        return {"beta1": float(group["betas"][0])}
    return {"momentum": float(group["momentum"])} if "momentum" in group else {}


def _check(cfg: TrainConfig) -> None:
    if cfg.dropout:
        raise ValueError("--dropout must be 0 for the reference (random streams differ)")
    if cfg.lr_mults:
        raise ValueError("--lr-mults is not supported by the reference")
    if cfg.schedule is not None:
        raise ValueError("--schedule is not supported by the reference (use --lr-scheduler)")
    if cfg.dtype != "float32":
        raise ValueError("--dtype must be float32 for the reference")
    if cfg.optimizer == "lion":
        raise ValueError("--optimizer=lion is not supported by the reference (not in torch.optim)")
    scheduled = [k for k in HPARAM_FIELDS if isinstance(getattr(cfg, k), str)]
    if scheduled:
        raise ValueError(f"{flag(scheduled[0])}={getattr(cfg, scheduled[0])!r}: hyperparameters "
                         "given as schedules are not supported by the reference")


def global_devices(cfg: TrainConfig) -> int:
    """Devices of the run being mirrored: ``--devices`` (default: all local JAX devices) times
    ``--num-processes``: the global batch has ``devices x grad_accum x batch_size`` rows."""
    import jax

    per = cfg.devices if cfg.devices is not None else jax.local_device_count()
    return per * (cfg.num_processes or 1)


def setup(cfg: TrainConfig, devices: int | None = None) -> dict[str, Any]:
    """Everything a reference run needs (shared with ``reference.torch_ddp``): the validated
    config, ``D`` (devices of the mirrored run), the batcher of the global batch, the model with
    our initial weights, its parameter groups, optimizer and scheduler."""
    import jax

    cfg = cfg.normalized().validate()
    _check(cfg)
    D = devices if devices is not None else global_devices(cfg)
    torch.manual_seed(cfg.seed)
    tok = get_tokenizer(cfg.tokenizer)
    model_cfg = models.get_config(cfg.model, cfg.base_size(), vocab_size=tok.vocab_size,
                                  **cfg.model_overrides())
    train_data, _, desc = load_data(cfg.data, cfg.val_data, tok, cfg.data_cache,
                                    cfg.val_fraction)
    train_data.check(cfg.seq_len + 1, tok.vocab_size)
    batcher = Batcher(train_data, seq_len=cfg.seq_len, batch_size=cfg.batch_size,
                      grad_accum=cfg.grad_accum, local_devices=D, process_index=0,
                      process_count=1, seed=cfg.seed)
    params = jax.device_get(models.init_params(model_cfg, jax.random.key(cfg.seed)))
    model = build_model(model_cfg, params)
    groups = param_groups(model, decay_names(model_cfg, params), cfg.weight_decay)
    opt = build_optimizer(cfg, groups)
    sched = build_scheduler(cfg, opt)
    return dict(cfg=cfg, D=D, desc=desc, batcher=batcher, model=model, opt=opt, sched=sched,
                all_params=[p for g in groups for p in g["params"]])


def train(cfg: TrainConfig, workdir: str, devices: int | None = None,
          verbose: bool = True) -> list[dict[str, float]]:
    """Run the reference; returns the metric records (also written as JSON lines)."""
    su = setup(cfg, devices)
    cfg, D, desc, batcher, model, opt, sched, all_params = (
        su[k] for k in ("cfg", "D", "desc", "batcher", "model", "opt", "sched", "all_params"))

    metrics_dir = cfg.metrics_dir or os.path.join(os.path.abspath(workdir), "metrics")
    os.makedirs(metrics_dir, exist_ok=True)
    path = os.path.join(metrics_dir, "metrics.jsonl")
    if verbose:
        print(f"reference: {type(model).__name__} (eager, float32), {desc}; global batch "
              f"{D} x {cfg.grad_accum} x {cfg.batch_size} x {cfg.seq_len}; "
              f"{type(sched).__name__}; metrics {path}", flush=True)
    records = []
    cycled = bool(build_hparams(cfg))
    A, B, T = cfg.grad_accum, cfg.batch_size, cfg.seq_len
    t0 = time.perf_counter()
    with open(path, "w") as f:
        for step in range(cfg.steps):
            tokens = torch.from_numpy(batcher.batch(step).reshape(-1, T + 1).astype(np.int64))
            x, y = tokens[:, :-1], tokens[:, 1:]
            lr = float(opt.param_groups[0]["lr"])
            # the trainer logs the momentum onecycle/cyclic cycle: so does this, torch's value
            mom = _momentum(opt.param_groups[0]) if cycled else {}
            logits = model(input_ids=x).logits.float()
            nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                                  reduction="none")
            # our reduction order: mean per micro-batch, then over micro-batches, then devices
            loss = nll.view(D, A, B * T).mean(-1).mean(-1).mean(-1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_norm > 0:
                gnorm = torch.nn.utils.clip_grad_norm_(all_params, cfg.clip_norm)
            else:
                gnorm = torch.linalg.vector_norm(
                    torch.stack([torch.linalg.vector_norm(p.grad) for p in all_params]))
            opt.step()
            sched.step()
            rec = {"step": step, "loss": float(loss.detach()), "lr": lr,
                   "grad_norm": float(gnorm), **mom}
            records.append(rec)
            f.write(json.dumps(rec) + "\n")
            if verbose and ((step + 1) % cfg.log_interval == 0 or step + 1 == cfg.steps):
                print(f"step {step:6d}/{cfg.steps} | loss {rec['loss']:.6f} | lr {lr:.6e} | "
                      f"grad norm {rec['grad_norm']:.4f} | {time.perf_counter() - t0:.1f}s",
                      flush=True)
    return records


def main(argv: Sequence[str] | None = None) -> int:
    from train.__main__ import parse_config

    cfg, workdir = parse_config(argv)
    try:
        train(cfg, workdir)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
