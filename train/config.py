"""The trainer's configuration: a frozen, validated dataclass (configs as data).

Every field is also a command-line flag (``lr_scheduler`` <-> ``--lr-scheduler``) and a key of
a JSON/YAML config file. :meth:`TrainConfig.validate` runs before anything is compiled and
raises ``ValueError`` naming the flag, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import typing
from collections.abc import Mapping
from typing import Any

from models.common import DTYPES

from ._flag import bad as _bad
from ._flag import check_choice as _choice
from ._flag import check_float as _float
from ._flag import check_int as _int
from ._flag import check_pos_int as _pos_int
from ._flag import flag
from ._flag import is_num as _is_num
from .schedule.names import CHAINABLE, LR_SCHEDULERS, canonical_decay_style, canonical_scheduler

__all__ = ["CHAINABLE", "GROUPS", "HPARAM_FIELDS", "LR_SCHEDULERS", "TRACKERS", "WANDB_MODES",
           "TrainConfig", "flag",
           "parse_lr_mults"]

MODELS = ("gpt2", "llama3")
#: ``--tracker`` names (``jsonl`` is always on) and ``--wandb-mode`` values (train/trackers.py)
TRACKERS = ("jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")
TOKENIZERS = ("byte", "gpt2")
#: ``--help`` groups, in order (a field's ``metadata["group"]``; fields without one: "run")
GROUPS = ("model", "data", "schedule", "optimizer", "parallelism", "checkpoints", "logging",
          "run")
#: ``--optimizer`` -> the optimizer-specific fields it uses (``train/optim.py``); the others must
#: keep their defaults. --weight-decay, --clip-norm and --lr-mults apply to every optimizer.
OPTIMIZER_FLAGS: dict[str, tuple[str, ...]] = {
    "adamw": ("beta1", "beta2", "eps"), "adam": ("beta1", "beta2", "eps"),
    "sgd": ("momentum", "nesterov", "dampening"), "lion": ("beta1", "beta2"), "adafactor": (),
}
OPTIMIZERS = tuple(OPTIMIZER_FLAGS)

#: train-level model sizes on top of ``models.MODEL_SIZES``: name -> (base size, overrides).
#: "micro" is the default run's model: GPT-2 "tiny" widened to 2 layers x 128 (of the shapes
#: tried, the one that learned the most per second of CPU; docs/training.md); "mini"
#: (4 layers x 128) was the default before.
EXTRA_SIZES: dict[str, tuple[str, dict[str, int]]] = {
    "micro": ("tiny", {"n_layer": 2, "n_head": 4, "n_embd": 128}),
    "mini": ("tiny", {"n_layer": 4, "n_head": 4, "n_embd": 128}),
}


def _f(default: Any, group: str, help: str, factory: Any = None) -> Any:
    """A config field with its ``--help`` text and group (``metadata``)."""
    md = {"help": help, "group": group}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


_S = "schedule"
_SCHED = "; a number or a schedule of the step in the algebra's text (docs/training.md)"
#: issue 27: the hyperparameters that take a number or a schedule (the algebra's text spec)
HPARAM_FIELDS = ("weight_decay", "beta1", "beta2", "momentum", "clip_norm", "dropout")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All of a run's settings. Defaults are the built-in CPU run (``python -m train``).

    Each field's ``metadata`` holds its ``--help`` text and group. Schedule arguments default to
    ``None`` ("not given"): the scheduler's own default applies, and a given argument the chosen
    scheduler does not read is an error."""

    # model
    model: str = _f("gpt2", "model", f"model family: {', '.join(MODELS)}")
    model_size: str = _f("micro", "model",
                         "models.MODEL_SIZES[model], 'micro' (2 layers x 128, the default run) "
                         "or 'mini' (4 layers x 128)")
    n_layer: int | None = _f(None, "model", "override the size's number of layers")
    n_head: int | None = _f(None, "model", "override the size's number of heads")
    n_embd: int | None = _f(None, "model", "override the size's width")
    dtype: str = _f("float32", "model", "compute dtype (params and optimizer state stay float32)")
    dropout: float | str = _f(0.0, "model", "dropout rate (0 = off), or a schedule of the step "
                              "in the algebra's text (docs/training.md)")
    # data
    data: str | None = _f(None, "data", "text file/dir, .jsonl(.gz/.zst), .parquet, a datasets "
                          "folder, a train.prepare folder, llm.c/nanoGPT .bin file/dir, or a "
                          "mixture NAME=PATH:WEIGHT,... (docs/data.md) "
                          "(unset: the built-in corpus, Python's standard library sources)")
    val_data: str | None = _f(None, "data",
                              "separate validation data (unset: a held-out split of --data)")
    val_fraction: float = _f(0.05, "data", "held-out validation fraction when splitting")
    tokenizer: str = _f("byte", "data", f"{', '.join(TOKENIZERS)} (GPT-2 BPE offline) or a "
                        "tokenizer file: tokenizer.json, a LLaMA-3 tiktoken tokenizer.model, a "
                        "SentencePiece .model")
    sampling: str = _f("random", "data", "random (windows drawn with replacement) or epoch "
                       "(every epoch a seeded permutation of non-overlapping windows)")
    data_cache: str | None = _f(None, "data", "where tokenized text is cached "
                                "(unset: $SCHEDAX_CACHE or ~/.cache/schedax)")
    seq_len: int = _f(64, "data", "sequence length (the model's block size)")
    batch_size: int = _f(8, "data", "sequences per device per micro-batch")
    grad_accum: int = _f(1, "data", "micro-batches per optimizer update")
    # schedule
    steps: int = _f(2800, _S, "number of optimizer updates (iterations)")
    lr: float = _f(5e-3, _S, "peak learning rate: the optimizer's base lr (torch, "
                   "transformers), max_lr (onecycle, cyclic, Megatron)")
    lr_scheduler: str | None = _f(None, _S, "torch scheduler (" + ", ".join(LR_SCHEDULERS)
                                  + "; aliases such as StepLR, CosineAnnealingLR) or hf:NAME "
                                  "(transformers get_scheduler); unset: cosine with a 10% "
                                  "warmup")
    warmup_steps: int | None = _f(None, _S, "linear warmup steps, prepended to a torch "
                                  "scheduler (unset: no warmup; 10% for the default "
                                  "scheduler); hf: num_warmup_steps")
    warmup_ratio: float | None = _f(None, _S, "warmup as a fraction of the schedule: "
                                    "ceil(ratio x total steps) (as transformers)")
    total_steps: int | None = _f(None, _S, "schedule length; lengths (T_max, T_0, total_iters, "
                                 "total_steps) default to it minus the warmup (unset: --steps)")
    min_lr: float | None = _f(None, _S, "final/minimum lr: eta_min (cosine, cosine-restarts; "
                              "unset: 0), hf polynomial lr_end, hf min_lr, Megatron min_lr")
    lr_step_size: int | None = _f(None, _S, "steplr: step_size (required)")
    lr_gamma: float | None = _f(None, _S, "gamma: steplr/multistep (unset: 0.1), exponential "
                                "(required), cyclic exp_range (unset: 1.0)")
    lr_milestones: tuple[int, ...] = _f(None, _S, "comma-separated steps: multistep milestones "
                                        "(required); sequential boundaries (global steps)",
                                        factory=tuple)
    lr_chain: tuple[str, ...] = _f(None, _S, "comma-separated children of sequential/chained, "
                                   f"from {', '.join(CHAINABLE)}", factory=tuple)
    lr_lambda: str | None = _f(None, _S, "lambda: lr_lambda, a safe expression of `step`, "
                               "e.g. '0.95 ** (step // 10)' (never eval'ed)")
    lr_factor: float | None = _f(None, _S, "constant: ConstantLR factor (unset: 1.0)")
    lr_total_iters: int | None = _f(None, _S, "linear/constant/polynomial: total_iters "
                                    "(unset: the schedule length)")
    lr_start_factor: float | None = _f(None, _S, "linear: start_factor (unset: 1/3)")
    lr_end_factor: float | None = _f(None, _S, "linear: end_factor (unset: 1.0)")
    lr_power: float | None = _f(None, _S, "polynomial, hf:polynomial: power (unset: 1.0)")
    lr_t0: int | None = _f(None, _S, "cosine-restarts: T_0 (unset: the schedule length)")
    lr_t_mult: int | None = _f(None, _S, "cosine-restarts: T_mult (unset: 1)")
    lr_base: float | None = _f(None, _S, "cyclic: base_lr (required; max_lr is --lr)")
    lr_step_size_up: int | None = _f(None, _S, "cyclic: step_size_up (unset: 2000)")
    lr_step_size_down: int | None = _f(None, _S, "cyclic: step_size_down (unset: step_size_up)")
    lr_mode: str | None = _f(None, _S, "cyclic: mode, triangular|triangular2|exp_range "
                             "(unset: triangular)")
    lr_pct_start: float | None = _f(None, _S, "onecycle: pct_start (unset: 0.3)")
    lr_anneal_strategy: str | None = _f(None, _S, "onecycle: anneal_strategy, cos|linear "
                                        "(unset: cos)")
    lr_div_factor: float | None = _f(None, _S, "onecycle: div_factor (unset: 25)")
    lr_final_div_factor: float | None = _f(None, _S, "onecycle: final_div_factor (unset: 1e4)")
    lr_three_phase: bool | None = _f(None, _S, "onecycle: three_phase (unset: false)")
    lr_num_cycles: float | None = _f(None, _S, "hf:cosine*/hf:wsd: num_cycles "
                                     "(unset: transformers' default)")
    lr_timescale: int | None = _f(None, _S, "hf:inverse_sqrt: timescale "
                                  "(unset: the warmup or 10000)")
    min_lr_ratio: float | None = _f(None, _S, "hf:cosine_with_min_lr: min_lr_rate; hf:wsd: "
                                    "min_lr_ratio")
    warmup_lr_ratio: float | None = _f(None, _S, "hf:cosine_warmup_with_min_lr: warmup_lr_rate")
    lr_num_decay_steps: int | None = _f(None, _S, "hf:wsd: num_decay_steps (required)")
    lr_num_stable_steps: int | None = _f(None, _S, "hf:wsd: num_stable_steps (unset: the rest)")
    lr_warmup_type: str | None = _f(None, _S, "hf:wsd: warmup_type, linear|cosine|1-sqrt")
    lr_decay_type: str | None = _f(None, _S, "hf:wsd: decay_type, linear|cosine|1-sqrt "
                                   "(unset: cosine)")
    lr_decay_style: str | None = _f(None, _S, "Megatron-LM's scheduler instead of "
                                    "--lr-scheduler: none|constant|linear|cosine|"
                                    "inverse-square-root|WSD")
    lr_warmup_iters: int | None = _f(None, _S, "Megatron: warmup iterations (unset: 0)")
    lr_warmup_init: float | None = _f(None, _S, "Megatron: lr at the start of the warmup "
                                      "(unset: 0)")
    lr_decay_iters: int | None = _f(None, _S, "Megatron: iterations to decay over "
                                    "(unset: --steps)")
    lr_wsd_decay_iters: int | None = _f(None, _S, "Megatron WSD: annealing iterations "
                                        "(required)")
    lr_wsd_decay_style: str | None = _f(None, _S, "Megatron WSD: linear|cosine|exponential|"
                                        "minus_sqrt (unset: exponential)")
    schedule: str | None = _f(None, _S, "any schedule in the algebra's text spec, absolute "
                              "values (instead of --lr-scheduler)")
    # issue 27: torch's OneCycleLR / CyclicLR cycle the momentum (adam(w)/lion beta1, sgd momentum)
    lr_cycle_momentum: bool | None = _f(None, _S, "onecycle/cyclic: cycle_momentum, cycle "
                                        "adam(w)/lion beta1 (sgd momentum) inversely to the "
                                        "lr (unset: true, as torch)")
    lr_base_momentum: float | None = _f(None, _S, "onecycle/cyclic: base_momentum (unset: "
                                        "0.85 onecycle, 0.8 cyclic)")
    lr_max_momentum: float | None = _f(None, _S, "onecycle/cyclic: max_momentum (unset: "
                                       "0.95 onecycle, 0.9 cyclic)")
    # optimizer
    lr_mults: Mapping[str, float] = _f(None, "optimizer", "per-group lr multipliers, "
                                       "PATTERN=MULT,... on parameter paths (e.g. wte=0.1)",
                                       factory=dict)
    clip_norm: float | str = _f(1.0, "optimizer", "global gradient-norm clipping (0 = off)"
                                + _SCHED)
    beta1: float | str = _f(0.9, "optimizer", "adam(w)/lion beta1" + _SCHED)
    beta2: float | str = _f(0.95, "optimizer", "adam(w)/lion beta2" + _SCHED)
    eps: float = _f(1e-8, "optimizer", "adam(w) epsilon")
    weight_decay: float | str = _f(0.1, "optimizer", "weight decay (matrices only): decoupled "
                                   "for adamw/lion/adafactor, L2 in the gradient for adam/sgd "
                                   "(as torch)" + _SCHED)
    optimizer: str = _f("adamw", "optimizer", "adamw, adam, sgd, lion or adafactor (torch "
                        "semantics; docs/training.md)")
    momentum: float | str = _f(0.0, "optimizer", "sgd: momentum (torch.optim.SGD)" + _SCHED)
    nesterov: bool = _f(False, "optimizer", "sgd: Nesterov momentum")
    dampening: float = _f(0.0, "optimizer", "sgd: momentum dampening")
    # float16 dynamic loss scaling (torch GradScaler's rule; unused for other dtypes)
    loss_scale_init: float = _f(2.0**16, "optimizer", "--dtype=float16: initial dynamic loss "
                                "scale")
    loss_scale_growth_interval: int = _f(2000, "optimizer", "--dtype=float16: double the loss "
                                         "scale after this many consecutive finite steps")
    # evaluation, logging, checkpoints
    eval_interval: int = _f(200, "logging", "evaluate every N steps (and at the end)")
    eval_batches: int = _f(16, "logging", "validation batches per evaluation")
    early_stop_patience: int = _f(0, "logging", "stop after N evaluations without "
                                  "improvement (0 = off)")
    log_interval: int = _f(10, "logging", "log every N steps")
    metrics_dir: str | None = _f(None, "logging", "metrics directory (unset: WORKDIR/metrics)")
    tensorboard: bool = _f(True, "logging", "write TensorBoard event files")
    checkpoint_dir: str | None = _f(None, "checkpoints",
                                    "checkpoint directory (unset: WORKDIR/checkpoints)")
    checkpoint_interval: int = _f(1000, "checkpoints", "save every N steps (and at the end)")
    keep_checkpoints: int = _f(3, "checkpoints", "keep the last N checkpoints")
    async_checkpoints: bool = _f(True, "checkpoints", "save checkpoints asynchronously")
    resume: bool | str | int = _f(False, "checkpoints", "continue a run: --resume (latest "
                                  "checkpoint; error if none), --resume=auto (latest, or start "
                                  "fresh), --resume=STEP; saved settings fill in unset flags")
    overwrite: bool = _f(False, "checkpoints", "start over in a used workdir: delete its "
                         "checkpoints, metrics, config.json")
    # long runs on shared clusters (issue #28: signals and time limits; train/run/loop.py,
    # docs/training.md "Running on a cluster")
    save_on_signal: str = _f("SIGTERM,SIGUSR1", "checkpoints", "signals that finish the "
                             "current step, save a checkpoint and exit with status 128 + the "
                             "signal's number (SIGTERM 143, SIGUSR1 138; Ctrl-C always: 130); "
                             "comma-separated names of SIGTERM, SIGUSR1, SIGUSR2, SIGHUP, or "
                             "none")
    save_every_minutes: float | None = _f(None, "checkpoints", "also save a temporary "
                                          "checkpoint every M minutes of wall-clock time (the "
                                          "last one only is kept, beside the --keep ones)")
    exit_after_minutes: float | None = _f(None, "checkpoints", "save a checkpoint and exit "
                                          "(status 75: resume me) once the run has taken M "
                                          "minutes (from its setup: data and compile "
                                          "included), printing "
                                          "the resume command; not carried over by --resume "
                                          "(Megatron's exit_duration_in_mins)")
    sample_tokens: int = _f(200, "logging", "tokens to sample at the end (0 = none)")
    sample_prompt: str = _f("def ", "logging", "prompt for the final sample")
    seed: int = _f(0, "data", "seed (initial weights, data order)")
    verbose: bool = _f(False, "logging", "print the full config and parameter table at start")
    # parallelism
    devices: int | None = _f(None, "parallelism", "local devices to use (unset: all)")
    simulate_devices: int | None = _f(None, "parallelism", "simulate N CPU devices (XLA_FLAGS, "
                                      "set before JAX starts)")
    coordinator_address: str | None = _f(None, "parallelism",
                                         "multi-host: coordinator host:port (jax.distributed)")
    num_processes: int | None = _f(None, "parallelism", "multi-host: number of processes")
    process_id: int | None = _f(None, "parallelism", "multi-host: this process's index")
    # sharded training on a device mesh (train/engine/mesh.py, docs/parallelism.md); any layout flag
    # selects engine "mesh"
    engine: str = _f("pmap", "parallelism", "pmap (data parallel, the default) or mesh (jit "
                     "over a device mesh; any of the layout flags below selects it); see "
                     "docs/parallelism.md")
    data_parallel: int | None = _f(None, "parallelism", "mesh: data-parallel replicas "
                                   "(unset: devices / --tensor-parallel)")
    tensor_parallel: int | None = _f(None, "parallelism", "mesh: Megatron tensor parallelism "
                                     "over N devices (heads, MLP, vocab)")
    sequence_parallel: bool = _f(False, "parallelism", "mesh: shard the residual stream's "
                                 "sequence over the TP devices")
    zero_stage: int | None = _f(None, "parallelism", "mesh: ZeRO 0-3 over the data axis "
                                "(1 optimizer state, 2 +gradients, 3 +parameters = FSDP)")
    n_kv_head: int | None = _f(None, "model", "LLaMA-3: override the number of key/value heads "
                               "(GQA)")
    # pipeline parallelism (train/parallel/pipeline.py) and activation recompute (models.layers)
    pipeline_parallel: int | None = _f(None, "parallelism", "mesh: pipeline stages N (layers in "
                                       "N x V contiguous chunks, chunk c on stage c mod N; "
                                       "micro-batches = --grad-accum)")
    virtual_pipeline_parallel: int | None = _f(None, "parallelism", "mesh: model chunks per "
                                               "pipeline stage V (interleaved schedule, smaller "
                                               "bubble)")
    recompute: str = _f("none", "model", "activation recompute: none, full (jax.checkpoint of "
                        "layer groups) or selective (keep matmul outputs, recompute attention)")
    recompute_method: str = _f("uniform", "model", "--recompute=full: uniform (groups of K "
                               "layers) or block (the first K layers of each model chunk)")
    recompute_num_layers: int = _f(1, "model", "K of --recompute-method")
    plan: bool = _f(False, "parallelism", "print the per-device memory/FLOP plan of one train "
                    "step (compiled on N simulated CPU devices, nothing allocated) and exit")
    plan_peak_tflops: float = _f(989.0, "parallelism", "--plan: peak TFLOP/s per device for "
                                 "the step-time estimate")
    # population sweeps (train/run/sweep.py): "FIELD=V1,V2,..." entries (the grid is their product)
    # and/or K data/init seeds (seed, seed+1, ...); every member trains in one program
    sweep: tuple[str, ...] = _f(None, "run", "train a population in one program: "
                                "FIELD=V1,V2,... (repeatable; the grid is the product; "
                                "commas inside parentheses belong to a value, e.g. a "
                                "schedule's text; see docs/sweeps.md)", factory=tuple)
    sweep_seeds: int = _f(0, "run", "sweep K seeds (seed .. seed+K-1: init and data order) as "
                          "one more axis (0 = off)")
    # issue 27 (changing course): a run's schedule history, branches, per-group schedules
    # (train/schedule/build.py builds the join; train/resume.py records the changes)
    change_schedule: bool = _f(False, _S, "with --resume: continue with the schedule flags "
                               "given, from the resumed step on (the change is recorded in "
                               "--schedule-history); docs/training.md 'Changing course'")
    schedule_offset: str = _f("global", _S, "where the current schedule's step 0 is after a "
                              "change (--change-schedule, --branch-from): global (the run's "
                              "step) or local (restarted at the change)")
    schedule_from: int = _f(0, _S, "the step from which the current schedule flags apply "
                            "(set by --change-schedule / --branch-from)")
    schedule_history: tuple[Mapping[str, Any], ...] = _f(
        None, _S, "the earlier schedules of the run, JSON list of {from_step, flags, offset} "
        "(written by --change-schedule / --branch-from; not for hand editing)", factory=tuple)
    branch_from: str | None = _f(None, "checkpoints", "start a new run (another --workdir) "
                                 "from RUN_DIR's checkpoint at STEP (RUN_DIR[:STEP], default "
                                 "its latest), with the schedule flags given from STEP on")
    group: tuple[str, ...] = _f(None, "optimizer", "PATTERN:SPEC (repeatable): parameters "
                                "whose path contains PATTERN get their own lr schedule SPEC "
                                "(the algebra's text, absolute values, e.g. "
                                "'wte:cosine(1e-3, 0, 1000)')", factory=tuple)
    # weights in and out, document masks (#26, #25; branch s8-weights)
    init_from: str | None = _f(None, "model", "start from a transformers checkpoint folder or a "
                               "run directory[:STEP]: its architecture and weights, the "
                               "optimizer and schedule fresh at step 0 (docs/training.md)")
    export_hf_every: int = _f(0, "checkpoints", "export a transformers folder into "
                              "WORKDIR/hf/step_N every N steps (0 = off)")
    document_mask: bool = _f(False, "data", "attention within documents only: segment ids "
                             "from the data's BOS/EOS (positions restart per document); every "
                             "engine: pmap, mesh, the pipeline, populations")
    # issue 28 (elastic resume, experiment trackers): the global batch as the trajectory setting
    # (train/run/checks.py resolve_batch); trackers beside metrics.jsonl (train/run/tracking.py)
    global_batch_size: int | None = _f(None, "data", "sequences per optimizer update G, kept "
                                       "when a run resumes on another device count: each "
                                       "replica takes G / DP of them in micro-batches of "
                                       "min(--batch-size, G / DP), --grad-accum derived "
                                       "(unset: DP x --grad-accum x --batch-size)")
    tracker: tuple[str, ...] = _f(None, "logging", "experiment trackers, comma-separated: "
                                  "jsonl (always on), tensorboard, wandb (default: "
                                  "jsonl,tensorboard; --no-tensorboard drops tensorboard)",
                                  factory=lambda: ("jsonl", "tensorboard"))
    wandb_project: str = _f("schedax", "logging", "--tracker=wandb: the W&B project")
    wandb_run_name: str | None = _f(None, "logging", "--tracker=wandb: the run's name "
                                    "(unset: W&B's)")
    wandb_mode: str = _f("online", "logging", "--tracker=wandb: online, offline (under "
                         "WORKDIR/wandb; `wandb sync` uploads it later) or disabled")
    # issue 25 item 2 (s10-vocab): the model's vocabulary rows padded for speed; a run saved
    # before this field resumes with 1 (train.resume.LEGACY_VALUES)
    vocab_pad_to: int = _f(64, "model", "round the embedding/head rows up to a multiple of N "
                           "(the padding ids are masked: never sampled, not in the loss; "
                           "exports drop them); 1 = no padding")
    # issue 27 item 6 (batch-size ramp): the global batch of step t (train/schedule/batch.py)
    rampup_batch_size: tuple[int, ...] | None = _f(
        None, "data", "Megatron's batch-size ramp: the global batch "
        "from START to --global-batch-size by INCREMENT every SAMPLES / ((G - START) / "
        "INCREMENT) consumed samples (docs/training.md 'Batch-size ramp')")
    batch_size_schedule: str | None = _f(
        None, "data", "the global batch of step t as a schedule in the algebra's text, e.g. "
        "'piecewise_constant([100, 200], [8, 16, 32])' (instead of --rampup-batch-size)")
    lr_batch_scaling: str | None = _f(
        None, _S, "with a batch-size ramp: scale the lr by the batch of each step relative to "
        "--global-batch-size (schedules.scale_batch): linear, sqrt or blend")

    # -- conversion ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict (keys are field names; ``-`` is accepted for ``_``); validated.

        Numbers given as strings (YAML 1.1 reads ``1e-3`` as a string) are read as numbers
        where the field is numeric."""
        names = cls.field_names()
        kinds = field_kinds()
        kw: dict[str, Any] = {}
        for k, v in d.items():
            key = str(k).replace("-", "_")
            if key not in names:
                import difflib

                close = difflib.get_close_matches(key, names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"unknown config key {k!r}{hint} (the keys are the flags' "
                                 f"names: see python -m train --help)")
            kw[key] = _coerce(key, v, kinds[key])
        return cls(**kw).normalized().validate()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, Mapping):
                v = dict(v)
            out[f.name] = v
        return out

    def replace(self, **kw: Any) -> TrainConfig:
        return dataclasses.replace(self, **kw).normalized().validate()

    def normalized(self) -> TrainConfig:
        """Coerce list-ish and comma-separated values to tuples (config files, CLI) and
        scheduler names to their canonical spelling; ``self`` when nothing changes."""
        kw: dict[str, Any] = {}
        ms = self.lr_milestones
        if isinstance(ms, str):
            ms = _int_list("lr_milestones", ms)
        elif isinstance(ms, list | tuple):
            ms = tuple(ms)
        kw["lr_milestones"] = ms
        ch = self.lr_chain
        if isinstance(ch, str):
            ch = tuple(x.strip() for x in ch.split(",") if x.strip())
        elif isinstance(ch, list):
            ch = tuple(ch)
        if isinstance(ch, tuple) and all(isinstance(c, str) for c in ch):
            ch = tuple(_chain_name(c, ch) for c in ch)
        kw["lr_chain"] = ch
        if self.lr_scheduler is not None:
            kw["lr_scheduler"] = canonical_scheduler(self.lr_scheduler)
        if self.lr_decay_style is not None:
            kw["lr_decay_style"] = canonical_decay_style(self.lr_decay_style)
        lm = self.lr_mults
        if isinstance(lm, str):
            lm = parse_lr_mults(lm)
        kw["lr_mults"] = dict(lm) if isinstance(lm, Mapping) else lm
        sw = self.sweep
        kw["sweep"] = (sw,) if isinstance(sw, str) else tuple(sw) if isinstance(sw, list) else sw
        kw["resume"] = resume_value(self.resume)
        gr = self.group  # issue 27
        kw["group"] = (gr,) if isinstance(gr, str) else tuple(gr) if isinstance(gr, list) else gr
        kw["schedule_history"] = _history(self.schedule_history)
        kw["rampup_batch_size"] = _ramp_value(self.rampup_batch_size)  # issue 27 item 6
        kw["save_on_signal"] = signal_names(self.save_on_signal)
        for k in HPARAM_FIELDS:
            kw[k] = hparam_value(getattr(self, k))
        tr = self.tracker
        if isinstance(tr, str):
            tr = tuple(x.strip() for x in tr.split(","))
        if isinstance(tr, list | tuple) and all(isinstance(x, str) for x in tr):
            # jsonl is always on; each name once, in the order given
            tr = tuple(dict.fromkeys(("jsonl", *(x for x in tr if x))))
        kw["tracker"] = tr
        if all(_same(getattr(self, k), v) for k, v in kw.items()):
            return self
        return dataclasses.replace(self, **kw)

    # -- derived ---------------------------------------------------------------------------
    @property
    def schedule_steps(self) -> int:
        """The horizon of the lr schedule (``total_steps``, default ``steps``)."""
        return self.total_steps if self.total_steps is not None else self.steps

    @property
    def scheduler_name(self) -> str:
        """The canonical ``--lr-scheduler`` (the default scheduler is ``cosine``)."""
        return "cosine" if self.lr_scheduler is None else canonical_scheduler(self.lr_scheduler)

    @property
    def is_default_schedule(self) -> bool:
        """No ``--lr-scheduler``, ``--lr-decay-style`` or ``--schedule``: cosine with a 10%
        warmup."""
        return self.lr_scheduler is None and self.lr_decay_style is None and (
            self.schedule is None)

    @property
    def warmup(self) -> int:
        """Warmup steps: ``--warmup-steps``, or ``ceil(--warmup-ratio x schedule length)``
        (transformers' rule), or 10% of the schedule for the default scheduler, else 0."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        if self.warmup_ratio is not None:
            return math.ceil(self.schedule_steps * self.warmup_ratio)
        return self.schedule_steps // 10 if self.is_default_schedule else 0

    @property
    def writes_tensorboard(self) -> bool:
        """TensorBoard event files: ``tensorboard`` in ``--tracker`` and not
        ``--no-tensorboard`` (the older flag, kept as the way to switch it off)."""
        return bool(self.tensorboard) and "tensorboard" in self.tracker

    @property
    def mesh_engine(self) -> bool:
        """True when the mesh engine runs: ``--engine=mesh`` or any layout flag."""
        return self.engine == "mesh" or self.sequence_parallel or any(
            getattr(self, k) is not None
            for k in ("data_parallel", "tensor_parallel", "zero_stage", "pipeline_parallel",
                      "virtual_pipeline_parallel"))

    def model_overrides(self) -> dict[str, Any]:
        """Overrides passed to ``models.get_config`` on top of the named size."""
        out: dict[str, Any] = {}
        if self.model_size in EXTRA_SIZES:
            out.update(EXTRA_SIZES[self.model_size][1])
        for k in ("n_layer", "n_head", "n_embd", "n_kv_head"):
            if getattr(self, k) is not None:
                out[k] = getattr(self, k)
        out["dtype"] = self.dtype
        out["block_size"] = self.seq_len
        out["vocab_pad_to"] = self.vocab_pad_to
        if self.dropout and not isinstance(self.dropout, str):  # a schedule: passed per step
            out["dropout"] = self.dropout
        if self.recompute != "none":
            out.update(remat=self.recompute, remat_method=self.recompute_method,
                       remat_num_layers=self.recompute_num_layers,
                       remat_chunks=(self.pipeline_parallel or 1)
                       * (self.virtual_pipeline_parallel or 1))
        return out

    def base_size(self) -> str:
        extra = EXTRA_SIZES.get(self.model_size)
        return extra[0] if extra else self.model_size

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> TrainConfig:
        """Check every field on its own (types, ranges, choices, combinations of fields);
        raise ``ValueError`` naming the flag, value and rule. What needs more than the fields
        (the schedule, the layout on the devices, a sweep's members) is checked by the run's
        setup (:func:`train.run.setup.check_config`), before anything compiles."""
        if self.__dict__.get("_valid"):
            return self
        _choice("model", self.model, MODELS)
        import models  # deferred: importing JAX models is not needed to parse a config

        sizes = tuple(models.MODEL_SIZES[self.model]) + tuple(EXTRA_SIZES)
        _choice("model_size", self.model_size, sizes)
        _pos_int("vocab_pad_to", self.vocab_pad_to)  # issue 25 item 2 (before the >= 0 check)
        kinds = field_kinds()
        for k, kind in kinds.items():  # types of the optional schedule arguments
            v = getattr(self, k)
            if v is None or k in _CHECKED:
                continue
            if kind is int:
                _int(k, v, lo=0)
            elif kind is float:
                _float(k, v)
            elif kind is bool and not isinstance(v, bool):
                raise _bad(k, v, "must be true or false")
            elif kind is str and (not isinstance(v, str) or not v):
                raise _bad(k, v, "must be a non-empty string")
        for k in ("n_layer", "n_head", "n_embd", "total_steps", "lr_step_size", "devices",
                  "num_processes", "lr_t0", "lr_step_size_up", "lr_decay_iters",
                  "lr_wsd_decay_iters", "simulate_devices", "global_batch_size"):
            if getattr(self, k) is not None:
                _pos_int(k, getattr(self, k))
        for k in ("seq_len", "batch_size", "grad_accum", "steps", "eval_interval",
                  "eval_batches", "log_interval", "checkpoint_interval", "keep_checkpoints"):
            _pos_int(k, getattr(self, k))
        for k in ("early_stop_patience", "sample_tokens", "seed"):
            _int(k, getattr(self, k), lo=0)
        _choice("dtype", self.dtype, DTYPES)
        if self.tokenizer not in TOKENIZERS and not (isinstance(self.tokenizer, str)
                                                     and os.path.isfile(self.tokenizer)):
            raise _bad("tokenizer", self.tokenizer, f"must be one of {', '.join(TOKENIZERS)} "
                       "or a tokenizer file (tokenizer.json, tokenizer.model, SentencePiece "
                       ".model)")
        _choice("sampling", self.sampling, ("random", "epoch"))
        _hparam("dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        _float("val_fraction", self.val_fraction, lo=0.0, hi=0.5, lo_open=True)
        _float("lr", self.lr, lo=0.0, lo_open=True)
        for k in ("min_lr", "lr_warmup_init", "lr_base"):
            if getattr(self, k) is not None:
                _float(k, getattr(self, k), lo=0.0)
        if self.lr_gamma is not None:
            _float("lr_gamma", self.lr_gamma, lo=0.0, lo_open=True)
        if self.warmup_ratio is not None:
            _float("warmup_ratio", self.warmup_ratio, lo=0.0, hi=1.0)
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise _bad("warmup_ratio", self.warmup_ratio,
                       f"give --warmup-steps={self.warmup_steps} or --warmup-ratio, not both")
        if self.schedule is not None and (self.lr_scheduler is not None
                                          or self.lr_decay_style is not None):
            other = "lr_scheduler" if self.lr_scheduler is not None else "lr_decay_style"
            raise _bad("schedule", self.schedule,
                       f"give --schedule or {flag(other)}={getattr(self, other)}, not both")
        _hparam("clip_norm", self.clip_norm, lo=0.0)
        _hparam("beta1", self.beta1, lo=0.0, hi=1.0, hi_open=True)
        _hparam("beta2", self.beta2, lo=0.0, hi=1.0, hi_open=True)
        _float("eps", self.eps, lo=0.0, lo_open=True)
        _hparam("weight_decay", self.weight_decay, lo=0.0)
        _check_optimizer(self)
        _float("loss_scale_init", self.loss_scale_init, lo=0.0, lo_open=True)
        _pos_int("loss_scale_growth_interval", self.loss_scale_growth_interval)
        for k in ("async_checkpoints", "tensorboard", "overwrite", "verbose"):
            if not isinstance(getattr(self, k), bool):
                raise _bad(k, getattr(self, k), "must be true or false")
        if not (isinstance(self.resume, bool) or self.resume == "auto" or (
                isinstance(self.resume, int) and self.resume >= 0)):
            raise _bad("resume", self.resume, "must be true, false, auto or a checkpoint step")
        if self.overwrite and self.resume is not False:
            raise _bad("overwrite", self.overwrite, "cannot be combined with --resume")
        signal_names(self.save_on_signal)
        for k in ("save_every_minutes", "exit_after_minutes"):
            if getattr(self, k) is not None:
                _float(k, getattr(self, k), lo=0.0, lo_open=True)
        if not isinstance(self.lr_milestones, tuple) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in self.lr_milestones
        ) or list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise _bad("lr_milestones", _show(self.lr_milestones),
                       "must be strictly increasing positive ints, e.g. 100,200")
        if not isinstance(self.lr_chain, tuple):
            raise _bad("lr_chain", self.lr_chain, "must be a comma-separated list of schedulers")
        if not isinstance(self.lr_mults, Mapping) or not all(
            isinstance(k, str) and _is_num(v) and v >= 0 for k, v in self.lr_mults.items()
        ):
            raise _bad("lr_mults", self.lr_mults,
                       "must map parameter-path substrings to numbers >= 0, e.g. wte=0.1,wpe=0.1")
        if not isinstance(self.tracker, tuple) or not all(
                isinstance(x, str) and x in TRACKERS for x in self.tracker):
            raise _bad("tracker", _show(self.tracker), "must be a comma-separated list of "
                       f"{', '.join(TRACKERS)}")
        _choice("wandb_mode", self.wandb_mode, WANDB_MODES)
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt:
            raise _bad("sample_prompt", self.sample_prompt, "must be a non-empty string")
        if self.coordinator_address is not None and (
            self.num_processes is None or self.process_id is None
        ):
            raise _bad("coordinator_address", self.coordinator_address,
                       "multi-host runs also need --num-processes and --process-id")
        if self.process_id is not None and self.num_processes is not None and (
            self.process_id >= self.num_processes
        ):
            raise _bad("process_id", self.process_id,
                       f"must be < --num-processes={self.num_processes}")
        if self.n_kv_head is not None and self.model != "llama3":
            raise _bad("n_kv_head", self.n_kv_head, "only --model=llama3 has key/value heads")
        _check_course(self)
        _check_ramp(self)  # issue 27 item 6
        _choice("recompute", self.recompute, ("none", "full", "selective"))
        _choice("recompute_method", self.recompute_method, ("uniform", "block"))
        _pos_int("recompute_num_layers", self.recompute_num_layers)
        # #26, #25 (s8-weights)
        _int("export_hf_every", self.export_hf_every, lo=0)
        if self.init_from is not None and (not isinstance(self.init_from, str)
                                           or not self.init_from):
            raise _bad("init_from", self.init_from, "must be a folder path (a transformers "
                       "checkpoint or a run directory[:STEP])")
        if self.init_from is not None and self.branch_from is not None:
            raise _bad("init_from", self.init_from, "and --branch-from both say where the "
                       "weights come from: give one (--branch-from also keeps the optimizer "
                       "state and the step)")
        if self.init_from is not None and (self.sweep or self.sweep_seeds):
            raise _bad("init_from", self.init_from, "a population (--sweep, --sweep-seeds) "
                       "starts from its own initialisations")
        # the model config itself (validated by models)
        try:
            models.get_config(self.model, self.base_size(), **self.model_overrides())
        except ValueError as e:
            raise ValueError(f"{flag('model_size')}={self.model_size!r} with the given "
                             f"overrides is invalid: {e}") from None
        object.__setattr__(self, "_valid", True)
        return self


def _history(v: Any) -> Any:
    """``--schedule-history`` from a flag (JSON text; ``json.loads``, never eval) or a config
    file (a list): a tuple of dicts; anything else is left for ``validate`` to refuse."""
    if isinstance(v, str):
        import json

        try:
            v = json.loads(v)
        except ValueError:
            raise _bad("schedule_history", v, "must be a JSON list of {from_step, flags, "
                       "offset} entries") from None
    if isinstance(v, list | tuple):
        return tuple(dict(e) if isinstance(e, Mapping) else e for e in v)
    return v


def _ramp_value(v: Any) -> Any:
    """``--rampup-batch-size``: three values from the flag (``nargs=3``), a config file's list
    or ``"START,INCREMENT,SAMPLES"``; ints where they are integral (``validate`` checks)."""
    if isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
        v = " ".join(v)
    if isinstance(v, str):
        v = [x for x in v.replace(",", " ").split() if x]
    if isinstance(v, list | tuple):
        out = []
        for x in v:
            try:
                f = float(str(x).replace("_", ""))
                out.append(int(f) if f.is_integer() else x)
            except ValueError:
                out.append(x)
        return tuple(out)
    return v


def _check_ramp(c: TrainConfig) -> None:
    """Issue 27 item 6's fields on their own (what needs the layout: train.run.checks)."""
    r = c.rampup_batch_size
    if r is not None:
        if not isinstance(r, tuple) or len(r) != 3:
            raise _bad("rampup_batch_size", _show(r) if isinstance(r, tuple) else r,
                       "takes three integers START INCREMENT SAMPLES")
        for name, v in zip(("START", "INCREMENT", "SAMPLES"), r):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise _bad("rampup_batch_size", " ".join(map(str, r)),
                           f"{name}={v} must be a positive integer")
        start, inc, _ = r
        g = c.global_batch_size
        if g is None:
            raise _bad("rampup_batch_size", " ".join(map(str, r)), "needs --global-batch-size "
                       "(the batch the ramp ends at, as in Megatron)")
        if start >= g:
            raise _bad("rampup_batch_size", " ".join(map(str, r)), f"START={start} must be < "
                       f"--global-batch-size={g} (the ramp needs at least one increment)")
        if (g - start) % inc:
            raise _bad("rampup_batch_size", " ".join(map(str, r)), f"INCREMENT={inc} must "
                       f"divide --global-batch-size - START = {g - start} (Megatron asserts it)")
    if c.batch_size_schedule is not None:
        if r is not None:
            raise _bad("batch_size_schedule", c.batch_size_schedule,
                       "give --batch-size-schedule or --rampup-batch-size, not both")
        if c.global_batch_size is None:
            raise _bad("batch_size_schedule", c.batch_size_schedule, "needs "
                       "--global-batch-size (the batch the lr is stated for)")
    if c.lr_batch_scaling is not None:
        _choice("lr_batch_scaling", c.lr_batch_scaling, ("linear", "sqrt", "blend"))
        if r is None and c.batch_size_schedule is None:
            raise _bad("lr_batch_scaling", c.lr_batch_scaling, "is only used with a "
                       "batch-size ramp (--rampup-batch-size or --batch-size-schedule)")


def _check_course(c: TrainConfig) -> None:
    """Issue 27's fields on their own: the offset, the history's entries (each
    ``{"from_step": int, "flags": {...}, "offset": "global"|"local"}``, steps strictly
    increasing and before ``--schedule-from``), the groups' ``PATTERN:SPEC`` form."""
    _choice("schedule_offset", c.schedule_offset, ("global", "local"))
    if not isinstance(c.change_schedule, bool):
        raise _bad("change_schedule", c.change_schedule, "must be true or false")
    if c.change_schedule and c.resume is False:
        raise _bad("change_schedule", c.change_schedule, "only applies with --resume (a "
                   "--branch-from run takes its schedule flags as they are)")
    if c.branch_from is not None and c.sweep_seeds:
        raise _bad("branch_from", c.branch_from, f"cannot start a population over "
                   f"--sweep-seeds={c.sweep_seeds}: every member starts from the parent's "
                   "state and data position (its seed); sweep the branch's schedule flags")
    # a --branch-from population (issue 27): its members' schedules are swept from the
    # branch step on, after the parent's history (train/run/grid.py checks the swept fields)
    if (c.change_schedule or (c.schedule_history and c.branch_from is None)) and (
            c.sweep or c.sweep_seeds):
        name = "change_schedule" if c.change_schedule else "schedule_history"
        raise _bad(name, getattr(c, name) if c.change_schedule else _show_json(
            c.schedule_history), "cannot change a --sweep "
                   "population's schedule (its members' schedules are swept from step 0); "
                   "branch from its checkpoint instead (--branch-from, with --sweep for "
                   "several schedules as one population)")
    h = c.schedule_history
    rule = ("must be a list of {from_step, flags, offset} entries with from_step strictly "
            "increasing and below --schedule-from, offset global or local")
    if not isinstance(h, tuple):
        raise _bad("schedule_history", h, rule)
    last = -1
    for e in h:
        ok = (isinstance(e, Mapping) and set(e) == {"from_step", "flags", "offset"}
              and isinstance(e["from_step"], int) and not isinstance(e["from_step"], bool)
              and isinstance(e["flags"], Mapping) and e["offset"] in ("global", "local"))
        if not ok or e["from_step"] <= last or e["from_step"] >= c.schedule_from:
            raise _bad("schedule_history", _show_json(h), rule)
        last = e["from_step"]
    if (h and h[0]["from_step"] != 0) or (c.schedule_from > 0 and not h):
        raise _bad("schedule_history", _show_json(h), "must start at step 0 and be given when "
                   f"--schedule-from={c.schedule_from} > 0 (the schedules before it)")
    if not isinstance(c.group, tuple):
        raise _bad("group", c.group, "must be PATTERN:SPEC entries (repeatable)")
    if c.group and (c.sweep or c.sweep_seeds):
        raise _bad("group", ",".join(map(str, c.group)), "cannot be combined with --sweep "
                   "(a population's members share one optimizer structure; train the groups "
                   "as single runs)")
    seen: set[str] = set()
    for g in c.group:
        pat, sep, spec = g.partition(":") if isinstance(g, str) else ("", "", "")
        if not sep or not pat.strip() or not spec.strip():
            raise _bad("group", g, "must be PATTERN:SPEC, e.g. 'wte:cosine(1e-3, 0, 1000)'")
        if pat.strip() in seen:
            raise _bad("group", g, f"the pattern {pat.strip()!r} is given twice")
        if pat.strip() in c.lr_mults:
            raise _bad("group", g, f"the pattern {pat.strip()!r} is also in --lr-mults: give "
                       "a group one schedule")
        seen.add(pat.strip())


def _show_json(v: Any) -> str:
    import json

    return json.dumps(v, default=str)


def _check_optimizer(c: TrainConfig) -> None:
    """--optimizer, its hyperparameters (torch's rules), and no flag it would ignore."""
    _choice("optimizer", c.optimizer, OPTIMIZERS)
    _hparam("momentum", c.momentum, lo=0.0, hi=1.0, hi_open=True)
    _float("dampening", c.dampening, lo=0.0, hi=1.0)
    if not isinstance(c.nesterov, bool):
        raise _bad("nesterov", c.nesterov, "must be true or false")
    defaults = TrainConfig()
    unused = [k for k in ("beta1", "beta2", "eps", "momentum", "nesterov", "dampening")
              if k not in OPTIMIZER_FLAGS[c.optimizer] and getattr(c, k) != getattr(defaults, k)]
    if unused:
        uses = [flag(k) for k in (*OPTIMIZER_FLAGS[c.optimizer], "weight_decay")]
        raise ValueError(f"--optimizer={c.optimizer} does not use "
                         f"{', '.join(f'{flag(k)}={getattr(c, k)!r}' for k in unused)} "
                         f"({c.optimizer} uses {', '.join(uses)})")
    # a scheduled momentum counts as > 0 here (its values are checked per step:
    # train.schedule.hparams)
    momentum = 1.0 if isinstance(c.momentum, str) else c.momentum
    if c.nesterov and (momentum <= 0 or c.dampening != 0):
        raise _bad("nesterov", c.nesterov, f"requires --momentum > 0 and --dampening=0 (as "
                   f"torch.optim.SGD), got --momentum={c.momentum}, --dampening={c.dampening}")
    if c.dampening != 0 and momentum == 0:
        raise _bad("dampening", c.dampening, "only applies with --momentum > 0")


#: fields whose type checks have their own rule in ``validate``
_CHECKED = frozenset({"lr_milestones", "lr_chain", "lr_mults", "resume", "tensorboard",
                      "change_schedule",
                      "save_on_signal",
                      "async_checkpoints", "sample_prompt", "overwrite", "verbose",
                      "sequence_parallel", "plan", "recompute", "recompute_method",
                      "tracker", "wandb_mode", "rampup_batch_size", "lr_batch_scaling"})


def _hparam(name: str, v: Any, **rule: Any) -> None:
    """A hyperparameter given as a number (checked by ``rule``) or as a schedule's text (a
    non-empty string, parsed and checked at every step by :mod:`train.schedule.hparams`)."""
    if isinstance(v, str):
        if not v.strip():
            raise _bad(name, v, "must be a number or a schedule, e.g. 'cosine(0.1, 0.01, 1000)'")
        return
    _float(name, v, **rule)


def hparam_value(v: Any) -> Any:
    """A hyperparameter's value from text (flags, config files): a number where the text is one
    (``float(text)``, as argparse's ``type=float``), else the schedule's text, stripped; ints to
    floats."""
    if isinstance(v, str):
        t = v.strip()
        try:
            return float(t) if t else v
        except ValueError:
            return t
    if isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    return v


def field_kinds() -> dict[str, type | None]:
    """Field name -> ``int``, ``float``, ``bool``, ``str`` or ``None`` (lists, mappings): the
    scalar type of its annotation (``int | None`` -> ``int``)."""
    global _KINDS
    if _KINDS is None:
        hints = typing.get_type_hints(TrainConfig)
        out: dict[str, type | None] = {}
        for name, h in hints.items():
            args = [a for a in typing.get_args(h) if a is not type(None)] or [h]
            out[name] = args[0] if len(args) == 1 and args[0] in (int, float, bool, str) \
                else None
        _KINDS = out
    return _KINDS


_KINDS: dict[str, type | None] | None = None


def _coerce(name: str, v: Any, kind: type | None) -> Any:
    """Config-file values: numeric strings (YAML 1.1's ``1e-3``) to numbers where the field is
    numeric, integral floats (``1e3``) to ints where it is an int."""
    if kind in (int, float) and isinstance(v, str):
        try:
            x = float(v.strip().replace("_", ""))
        except ValueError:
            raise _bad(name, v, f"must be {'an int' if kind is int else 'a number'}") from None
        v = x
    if kind is int and isinstance(v, float) and math.isfinite(v) and v == int(v):
        v = int(v)
    if kind is float and isinstance(v, int) and not isinstance(v, bool):
        v = float(v)
    return v


def _int_list(name: str, text: str) -> tuple[int, ...]:
    out = []
    for x in text.replace(" ", "").split(","):
        if not x:
            continue
        try:
            out.append(int(x))
        except ValueError:
            raise _bad(name, text, f"element {x!r} is not an int (expected comma-separated "
                       "ints, e.g. 100,200)") from None
    return tuple(out)


def _chain_name(c: str, chain: tuple[str, ...]) -> str:
    try:
        name = canonical_scheduler(c, "lr_chain")
    except ValueError as e:
        msg = str(e).split(" is invalid: ", 1)[-1]
        raise _bad("lr_chain", ",".join(chain), f"element {c!r}: {msg}") from None
    if name not in CHAINABLE:
        raise _bad("lr_chain", ",".join(chain),
                   f"{c!r} is not allowed; each entry must be one of {', '.join(CHAINABLE)}")
    return name


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _show(v: Any) -> Any:
    return ",".join(map(str, v)) if isinstance(v, tuple) else v


#: ``--save-on-signal`` choices: the signals a scheduler sends before it stops a job (Slurm
#: ``--signal``, Kubernetes and spot VMs: SIGTERM); SIGINT (Ctrl-C) is always handled
SAVE_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGHUP")


def signal_names(v: Any) -> str:
    """``--save-on-signal`` canonical: ``"term, usr1"`` -> ``"SIGTERM,SIGUSR1"``, ``none`` ->
    ``""``; ``ValueError`` naming the flag for anything else."""
    items = v if isinstance(v, list | tuple) else str(v).split(",") if isinstance(v, str) \
        else None
    if items is None:
        raise _bad("save_on_signal", v, "must be comma-separated signal names")
    out: list[str] = []
    for x in (str(i).strip().upper() for i in items):
        if x in ("", "NONE"):
            continue
        name = x if x.startswith("SIG") else "SIG" + x
        if name not in SAVE_SIGNALS:
            raise _bad("save_on_signal", v, f"{x!r} is not one of {', '.join(SAVE_SIGNALS)} "
                       "(or none)")
        if name not in out:
            out.append(name)
    return ",".join(out)


def resume_value(v: Any) -> Any:
    """``--resume`` values from text (config files, flags): true, false, auto, or a step."""
    if isinstance(v, str):
        t = v.strip().lower()
        if t in ("true", ""):
            return True
        if t == "false":
            return False
        if t.isdigit():
            return int(t)
        return "auto" if t == "auto" else v
    return v


def parse_lr_mults(text: str) -> dict[str, float]:
    """``"wte=0.1,wpe=0.1"`` -> ``{"wte": 0.1, "wpe": 0.1}``."""
    out: dict[str, float] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, val = part.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError
            out[key.strip()] = float(val)
        except ValueError:
            raise _bad("lr_mults", text,
                       "must be comma-separated PATTERN=MULTIPLIER, e.g. wte=0.1,wpe=0.1") from None
    return out
