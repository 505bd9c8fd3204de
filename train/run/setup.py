"""The run's setup, written once for every entry point (``train_and_evaluate``, ``sweep``, the
LR range test, ``--plan``, the CLI's check): everything checked before anything compiles.

:func:`prepare_run` is that setup: validate, simulate devices, start the distributed runtime,
select the devices (and the mesh layout), create the output directories, ``--overwrite``,
choose the checkpoint to resume from and apply the resume guard, the tokenizer, the model
configuration and the effective config (what every checkpoint saves). It returns a
:class:`RunSetup`; :meth:`RunSetup.load_data` then reads the data (after the guard: a refused
resume reads nothing) and builds the batchers.

:func:`check_config` is the whole validation of a config: its fields
(:meth:`~train.config.TrainConfig.validate`), the layout flags
(:func:`train.parallel.layout.check_flags`), the learning-rate schedule (built, and its whole
curve checked: :func:`train.schedule.build.check_lr_curve`) and a sweep's members.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import jax

import models
import schedules as S

from ..checkpoint import CheckpointError, committed_steps
from ..config import TrainConfig
from ..config_files import check_dirs
from ..data import Batcher, load_data
from ..devices import simulate_devices
from ..engine.pmap import select_devices
from ..metrics import Console, settings_text
from ..parallel.layout import Layout, check_flags, make_layout
from ..resume import (
    COURSE_KEYS,
    branch_source,
    check_compatible,
    check_same_run,
    choose_step,
    clear_outputs,
    read_saved_config,
    skipped_line,
)
from ..schedule.batch import BatchRamp, RampAccum
from ..schedule.build import check_lr_curve, group_schedules, history_join, history_pieces
from ..schedule.hparams import build_hparams, check_hparam_curves
from ..tokenizer import get_tokenizer
from ..trackers import wandb_missing
from .checks import (
    batch_split,
    check_data,
    counts_samples,
    data_parallel_replicas,
    global_batch,
    resolve_batch,
    run_ramp,
    run_schedule,
)
from .grid import member_configs
from .weights import InitFrom, load_init_params, resolve_init

__all__ = ["RunSetup", "check_config", "document_delimiters", "effective_config",
           "finished_message", "global_batch", "init_distributed", "prepare_run",
           "run_schedule", "write_json"]

#: what :func:`prepare_run` sets up: a single run, a population, the LR range test (no
#: workdir, no resume) or ``--plan`` (stops after the model configuration)
Kind = Literal["train", "sweep", "lr_finder", "plan"]


def check_hparams(cfg: TrainConfig) -> None:
    """The scheduled hyperparameters (issue 27): parsed, torch's momentum cycling allowed by the
    optimizer, every value in range at every update; a scheduled dropout is refused where the
    run is pipelined (deterministic, as a number dropout is)."""
    scheds = build_hparams(cfg)
    check_hparam_curves(scheds, cfg.steps)
    if "dropout" in scheds and ((cfg.pipeline_parallel or 1) > 1
                                or (cfg.virtual_pipeline_parallel or 1) > 1):
        raise ValueError(f"--dropout={cfg.dropout!r} is invalid with pipeline parallelism: "
                         "pipelined training is deterministic (dropout 0)")


def check_config(cfg: TrainConfig) -> S.Schedule:
    """Validate ``cfg`` entirely (see the module docstring) and return its learning-rate
    schedule; ``ValueError`` naming the flag, the value and the rule otherwise."""
    cfg = cfg.normalized().validate()
    check_flags(cfg)
    schedule = run_schedule(cfg)
    check_lr_curve(schedule, cfg.steps)
    for g, s in group_schedules(cfg).items():
        try:
            check_lr_curve(s, cfg.steps)
        except ValueError as e:
            raise ValueError(f"--group {g}: {e}") from None
    check_hparams(cfg)
    check_data(cfg)
    if cfg.global_batch_size is not None and cfg.devices is not None and (
            cfg.coordinator_address is None or cfg.num_processes is not None):
        # the device count is known from the flags: G must fit the layout (before JAX starts)
        batch_split(cfg, data_parallel_replicas(cfg, cfg.devices * (cfg.num_processes or 1)))
    if cfg.sweep or cfg.sweep_seeds:
        member_configs(cfg)  # every member's config is valid, the swept fields sweepable
    if "wandb" in cfg.tracker:
        if cfg.sweep or cfg.sweep_seeds:
            raise ValueError("--tracker=wandb is invalid with --sweep/--sweep-seeds: W&B tracks "
                             "single runs (a population's members are in metrics.jsonl; "
                             "train each member as its own run to track it)")
        missing = wandb_missing()
        if missing and cfg.wandb_mode != "disabled":
            raise ValueError(missing)
    return schedule


def init_distributed(cfg: TrainConfig) -> None:
    if cfg.coordinator_address is None:
        return
    from jax._src import distributed as _dist

    if getattr(_dist.global_state, "client", None) is not None:
        return  # already initialized in this process
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    # JAX's preemption service installs its own SIGTERM handler in C++, which silently takes
    # the signal from the run's --save-on-signal handler (train/run/stop.py agrees on the
    # step to stop at itself)
    jax.config.update("jax_enable_preemption_service", False)
    jax.distributed.initialize(coordinator_address=cfg.coordinator_address,
                               num_processes=cfg.num_processes, process_id=cfg.process_id)


def effective_config(cfg: TrainConfig, schedule: S.Schedule, model_cfg: Any,
                     extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The config as saved with every checkpoint: all keys, the schedule's ``to_config`` and
    spec, and the resolved model configuration."""
    out = cfg.to_dict()
    try:
        out["schedule_config"] = schedule.to_config()
    except ValueError:
        out["schedule_config"] = None
    out["schedule_spec"] = repr(schedule)
    out["model_config"] = dataclasses.asdict(model_cfg)
    out.update(extra or {})
    return out


def _course_line(setup: RunSetup, t: int, cfg: TrainConfig | None = None,
                 schedule: S.Schedule | None = None, who: str = "") -> None:
    """At a schedule change: the lr of update ``t`` under the schedule so far and the new
    one, and the jump (host float64). ``cfg``/``schedule``/``who``: a population member's."""
    cfg = setup.cfg if cfg is None else cfg
    schedule = setup.schedule if schedule is None else schedule
    pieces = history_pieces(cfg, global_batch(cfg) if counts_samples(cfg) else None)
    before = float(history_join(pieces[:-1])(t))
    after = float(schedule(t))
    rel = f", x{after / before:.4g}" if before > 0 else ""
    setup.console.print(f"{who}schedule change at step {t} ({cfg.schedule_offset} offset): lr "
                        f"{before:.6g} -> {after:.6g} (jump {after - before:+.6g}{rel}); "
                        f"history of {len(cfg.schedule_history) + 1} schedule(s)")


def _check_branch(setup: RunSetup, parent_ck: str, bstep: int) -> None:
    """``--branch-from``: the run (each member of a population, as the single branch it
    equals) must continue the parent's trajectory but for its schedule from ``bstep``."""
    cfg, eff = setup.cfg, setup.eff
    where = os.path.join(parent_ck, str(bstep))
    saved = read_saved_config(parent_ck, bstep)
    if setup.kind != "sweep":
        check_compatible(saved, eff, where, change_at=bstep)
        _course_line(setup, bstep)
        return
    _, members, cfgs = member_configs(cfg)
    base = {k: v for k, v in eff.items() if k not in ("members", "swept", "member_schedules")}
    for i, (m, c) in enumerate(zip(members, cfgs, strict=True)):
        s = run_schedule(c)
        who = f"member {i} ({settings_text(m)}): "
        try:
            check_compatible(saved, {**base, **effective_config(c, s, setup.model_cfg)}, where,
                             change_at=bstep)
        except CheckpointError as e:
            raise type(e)(f"{who}{e}") from None
        _course_line(setup, bstep, c, s, who)


def finished_message(step: int, where: str) -> str:
    """The one line of a run (or population) resumed at its ``--steps``: nothing to do."""
    return (f"run already finished at step {step}; nothing to do (checkpoint {where}; pass a "
            "larger --steps to train on)")




def _read_recorded(path: str) -> dict[str, Any] | None:
    """The settings a run recorded in its workdir's ``config.json`` (None: none, or unreadable:
    nothing to compare a checkpoint with)."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) else None


def write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (a temporary name, then a rename)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=isinstance(obj, dict))
        f.write("\n")
    os.replace(tmp, path)


@dataclasses.dataclass
class RunSetup:
    """Everything a run needs before its engine compiles (built by :func:`prepare_run`).

    ``n_local`` / ``n_global`` count data-parallel replicas (the mesh layout's data axis when
    there is one); ``resume_step`` is the checkpoint to resume from (None: from scratch), its
    guard already applied; ``finished`` says it is at ``--steps`` already (nothing to train).
    ``eff`` is the effective config every checkpoint saves. ``cfg`` is the run's config with
    ``batch_size`` and ``grad_accum`` resolved on this layout (``--global-batch-size``:
    :func:`train.run.checks.resolve_batch`): what the batchers and engines read."""

    cfg: TrainConfig
    kind: str
    schedule: S.Schedule
    process_index: int
    process_count: int
    devices: list | None
    n_local: int
    n_global: int
    layout: Layout | None
    workdir: str | None
    workdir_arg: str | None
    ckpt_dir: str
    metrics_dir: str
    config_path: str
    console: Console
    resume_step: int | None
    tok: Any
    model_cfg: Any
    tokens_per_step: int
    eff: dict[str, Any]
    data_desc: str = ""
    #: ``--branch-from`` (first start): the parent's checkpoint directory and step to restore
    branch: tuple[str, int] | None = None
    #: ``--init-from``: where the weights of a fresh start come from (None: random init)
    init: InitFrom | None = None
    #: ``--document-mask``: the (BOS, EOS) ids delimiting documents (None: no mask)
    documents: tuple[int | None, int | None] | None = None
    #: ``time.monotonic()`` when the setup began: ``--exit-after-minutes`` counts from it
    started: float = dataclasses.field(default_factory=time.monotonic)
    #: issue 27 item 6: the global batch of each step (None: constant) and the sequences of
    #: one micro-batch over all replicas (a step of global batch ``b`` accumulates ``b / unit``)
    ramp: BatchRamp | None = None
    ramp_unit: int = 0

    @property
    def primary(self) -> bool:
        return self.process_index == 0

    @property
    def finished(self) -> bool:
        return self.resume_step is not None and self.resume_step == self.cfg.steps

    @property
    def metrics_path(self) -> str:
        return os.path.join(os.path.abspath(self.metrics_dir), "metrics.jsonl")

    def load_data(self, seeds: Sequence[int] | None = None, val: bool = True
                  ) -> tuple[Any, Any, list[Batcher], list[Batcher]]:
        """(train data, val data, train batchers, val batchers): one batcher per seed of
        ``seeds`` (default: the config's), each checked against the model's vocabulary."""
        cfg, tok = self.cfg, self.tok
        train_data, val_data, self.data_desc = load_data(cfg.data, cfg.val_data, tok,
                                                         cfg.data_cache, cfg.val_fraction)
        train_data.check(cfg.seq_len + 1, tok.vocab_size)
        if val:
            val_data.check(cfg.seq_len + 1, tok.vocab_size)
        self.eff["data_description"] = self.data_desc
        kw = dict(seq_len=cfg.seq_len, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                  local_devices=self.n_local, process_index=self.process_index,
                  process_count=self.process_count)
        seeds = [cfg.seed] if seeds is None else list(seeds)
        accum = None if self.ramp is None else RampAccum(self.ramp, self.ramp_unit)
        # --sampling orders the training windows; evaluation draws its own fixed batches (of
        # the full global batch under a ramp)
        return (train_data, val_data,
                [Batcher(train_data, seed=s, sampling=cfg.sampling, accum_at=accum, **kw)
                 for s in seeds],
                [Batcher(val_data, seed=s, **kw) for s in seeds] if val else [])

    def initial_params(self) -> tuple[dict, str | None]:
        """(the float32 host params a run starts from, the line saying where they come from):
        ``--init-from``'s weights laid out for this run's model configuration and vocabulary
        (:func:`train.run.weights.load_init_params`), else a random init from ``--seed`` (line
        None). Every entry point that trains (the run, the LR range test) starts here; a resume
        restores its own checkpoint over them (they are then its shapes' template: the source
        is not read again)."""
        if self.init is not None and self.resume_step is None:
            return (load_init_params(self.init, self.model_cfg, self.tok.vocab_size),
                    f"init: weights from {self.init.describe()}")
        return jax.device_get(models.init_params(self.model_cfg,
                                                 jax.random.key(self.cfg.seed))), None

    def resumed_line(self, step: int, where: str) -> None:
        """The one line after a restore (or ``--resume=auto`` finding nothing)."""
        self.console.print(f"resumed from {where} (step {step})")

    def fresh_line(self) -> None:
        if self.cfg.resume == "auto" and not isinstance(self.cfg.resume, bool):
            self.console.print(f"--resume=auto: no checkpoint in {self.ckpt_dir}; starting from "
                               "step 0")


def document_delimiters(tok: Any) -> tuple[int | None, int | None]:
    """``--document-mask``: the (BOS, EOS) ids the tokenizer places around each document (what
    a prepared folder's manifest records: its tokenizer is the run's); ``ValueError`` when it
    places neither (documents cannot be told apart)."""
    bos = tok.bos_id if tok.add_bos else None
    eos = tok.eos_id if tok.add_eos else None
    if bos is None and eos is None:
        raise ValueError(f"--document-mask is invalid with --tokenizer={tok.name}: it places no "
                         "BOS/EOS token around documents (use gpt2 or a tokenizer file with "
                         "one)")
    return bos, eos


def prepare_run(cfg: TrainConfig, workdir: str | None, kind: Kind = "train", *,
                validate: Callable[[TrainConfig], tuple[S.Schedule, Mapping[str, Any]]]
                | None = None,
                outputs: Sequence[str] = ("config.json", "wandb_run_id"),
                allow_changed: Sequence[str] = ()) -> RunSetup:
    """The one setup of every run (see the module docstring), in this order: simulate devices,
    validate (``validate(cfg) -> (schedule, extra effective-config keys)``, by default
    :func:`check_config`; a sweep starts the distributed runtime first), create the
    directories, start the distributed runtime, select the devices, ``--overwrite`` (deleting
    the checkpoints, the metrics and ``outputs`` under ``workdir``: a single run's
    ``config.json`` and saved W&B run id, so that a run started over is a new W&B run), the
    resume step, the tokenizer and model configuration, the layout (mesh engine), the
    effective config and the resume guard (a checkpoint past ``--steps`` is refused; one at
    it prints :func:`finished_message`: the caller returns its saved summary). Only a
    committed checkpoint is resumed (newer uncommitted step directories are skipped, in one
    line), and only one whose trajectory settings equal those recorded in the workdir's
    ``config.json`` (:func:`train.resume.check_same_run`; ``allow_changed``: keys a run
    re-configured or branched on purpose, not compared).

    ``kind="lr_finder"`` has no workdir: no directories, no resume; ``kind="plan"`` stops after
    the model configuration (no layout, no guard)."""
    started = time.monotonic()
    workdir_arg = workdir
    simulate_devices(cfg.simulate_devices)  # before JAX starts its backend
    if kind == "sweep":  # before the members' schedules are built
        init_distributed(cfg)
    schedule, eff_extra = (check_config(cfg), {}) if validate is None else validate(cfg)
    if workdir is not None:
        check_dirs(cfg, workdir)
        workdir = os.path.abspath(workdir)
    if kind != "lr_finder":
        init_distributed(cfg)
    pidx, pcount = jax.process_index(), jax.process_count()
    devices = select_devices(cfg)
    n_local = sum(d.process_index == pidx for d in (devices or jax.devices()))
    n_global = len(devices or jax.devices())
    # --global-batch-size: the per-device batch and accumulation of this layout (the one rule)
    cfg = resolve_batch(cfg, data_parallel_replicas(cfg, n_global))
    base = workdir or os.getcwd()
    ckpt_dir = os.path.abspath(cfg.checkpoint_dir or os.path.join(base, "checkpoints"))
    metrics_dir = cfg.metrics_dir or os.path.join(base, "metrics")
    config_path = os.path.join(base, "config.json")
    console = Console(cfg.steps, enabled=pidx == 0, bar=False if kind == "sweep" else None)
    resume_step = None
    if workdir is not None:
        if cfg.overwrite and pidx == 0:
            removed = clear_outputs(workdir, [ckpt_dir, metrics_dir,
                                              *(os.path.join(workdir, o) for o in outputs)])
            if removed:
                console.print(f"--overwrite: deleted {', '.join(removed)}")
        resume_step = choose_step(cfg.resume, ckpt_dir)
        if kind in ("train", "sweep") and pidx == 0:  # the run's Checkpointer moves them
            line = skipped_line(ckpt_dir, resume_step)
            if line:
                console.print(line)
    cfg, init, model_cfg = resolve_init(cfg, ckpt_dir, resume_step, workdir)  # --init-from
    tok = get_tokenizer(cfg.tokenizer)
    if model_cfg is None:
        model_cfg = models.get_config(cfg.model, cfg.base_size(), vocab_size=tok.vocab_size,
                                      **cfg.model_overrides())
    elif tok.vocab_size > model_cfg.vocab_size:
        raise ValueError(f"--tokenizer={cfg.tokenizer} is invalid: its {tok.vocab_size} tokens "
                         f"do not fit the vocabulary of --init-from={cfg.init_from} "
                         f"({model_cfg.vocab_size})")
    documents = document_delimiters(tok) if cfg.document_mask else None
    # issue 27 item 6: the ramp on this layout (checked again: the device count is known now)
    ramp = run_ramp(cfg, data_parallel_replicas(cfg, n_global))
    layout = None
    if cfg.mesh_engine and kind == "train":  # the mesh engine: replicas per process
        layout = make_layout(cfg, model_cfg, n_global, pcount, n_local)
        n_local, n_global = layout.data // pcount, layout.size
    tokens_per_step = pcount * n_local * cfg.grad_accum * cfg.batch_size * cfg.seq_len
    eff = effective_config(cfg, schedule, model_cfg, {
        "workdir": workdir, "process_count": pcount, "global_devices": n_global,
        "tokens_per_step": tokens_per_step, **(eff_extra or {})})
    if init is not None and init.kind != "resumed":
        eff["init_origin"] = init.origin()
    setup = RunSetup(cfg, kind, schedule, pidx, pcount, devices, n_local, n_global, layout,
                     workdir, workdir_arg, ckpt_dir, metrics_dir, config_path, console,
                     resume_step, tok, model_cfg, tokens_per_step, eff, init=init,
                     documents=documents, started=started, ramp=ramp,
                     ramp_unit=cfg.batch_size * data_parallel_replicas(cfg, n_global))
    if resume_step is None and cfg.branch_from is not None and kind in ("train", "sweep"):
        _, parent_ck, bstep = branch_source(cfg.branch_from)
        if bstep >= cfg.steps:
            raise ValueError(f"--steps={cfg.steps} is invalid: the branch starts at step "
                             f"{bstep} ({os.path.join(parent_ck, str(bstep))}); give more "
                             "steps")
        _check_branch(setup, parent_ck, bstep)
        setup.branch = (parent_ck, bstep)
    if resume_step is not None and kind != "plan":  # the guard, before data or compiling
        where = committed_steps(ckpt_dir)[0][resume_step]
        # a change at this very step: given now, or recorded by a run killed before its next
        # checkpoint (train.resume.with_saved_config adopts it from config.json)
        saved = read_saved_config(ckpt_dir, resume_step)
        changes = cfg.change_schedule or (cfg.schedule_history != () and cfg.schedule_from
                                          == resume_step != saved.get("schedule_from"))
        recorded = _read_recorded(config_path)
        if recorded is not None:  # config.json may already record this change (a kill)
            check_same_run(saved, recorded, where, config_path,
                           (*allow_changed, *(COURSE_KEYS if changes else ())))
        check_compatible(saved, eff, where, change_at=resume_step if changes else None)
        if changes:
            _course_line(setup, resume_step)
        if resume_step > cfg.steps:
            raise ValueError(f"--steps={cfg.steps} is invalid: the checkpoint to resume from "
                             f"({where}) is at step {resume_step}, past it")
        if resume_step == cfg.steps:
            console.print(finished_message(resume_step, where))
    return setup
