"""The trainer's configuration: a frozen, validated dataclass (configs as data).

Every field is also a command-line flag (``lr_scheduler`` <-> ``--lr-scheduler``) and a key of
a JSON/YAML config file. :meth:`TrainConfig.validate` runs before anything is compiled and
raises ``ValueError`` naming the flag, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping
from typing import Any

LR_SCHEDULERS = (
    "constant", "steplr", "multistep", "linear", "exponential", "cosine", "cosine-restarts",
    "polynomial", "onecycle", "cyclic", "wsd", "sequential", "chained", "lambda",
)
#: schedulers that may appear in ``--lr-chain`` (the composable, non-composite ones).
CHAINABLE = tuple(s for s in LR_SCHEDULERS if s not in ("sequential", "chained"))
MODELS = ("gpt2", "llama3")
TOKENIZERS = ("byte", "gpt2")
DTYPES = ("float32", "bfloat16", "float16")
WSD_SHAPES = ("linear", "cosine", "1-sqrt")

#: train-level model sizes on top of ``models.MODEL_SIZES``: name -> (base size, overrides).
#: "mini" is the default run's model: GPT-2 "tiny" widened to 4 layers x 128.
EXTRA_SIZES: dict[str, tuple[str, dict[str, int]]] = {
    "mini": ("tiny", {"n_layer": 4, "n_head": 4, "n_embd": 128}),
}


def flag(name: str) -> str:
    """The command-line flag of a config field: ``lr_scheduler`` -> ``--lr-scheduler``."""
    return "--" + name.replace("_", "-")


def _bad(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{flag(name)}={value!r} is invalid: {allowed}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """All of a run's settings. Defaults are the built-in CPU run (``python -m train``)."""

    # model
    model: str = "gpt2"
    model_size: str = "mini"
    n_layer: int | None = None
    n_head: int | None = None
    n_embd: int | None = None
    dtype: str = "float32"
    dropout: float = 0.0
    # data
    data: str | None = None  # None: the built-in corpus (Python's standard library sources)
    val_data: str | None = None
    val_fraction: float = 0.05
    tokenizer: str = "byte"
    data_cache: str | None = None  # None: $SCHEDAX_CACHE or ~/.cache/schedax
    seq_len: int = 128
    batch_size: int = 16  # per device, per micro-batch
    grad_accum: int = 1
    # optimisation
    steps: int = 300
    lr: float = 3e-3
    lr_scheduler: str = "cosine"
    warmup_steps: int | None = None  # None: 10% of the schedule length
    total_steps: int | None = None  # None: steps
    min_lr: float = 0.0
    lr_step_size: int | None = None
    lr_gamma: float = 0.1
    lr_milestones: tuple[int, ...] = ()
    lr_chain: tuple[str, ...] = ()
    lr_lambda: str | None = None
    lr_start_factor: float = 1.0 / 3.0
    lr_end_factor: float = 1.0
    lr_power: float = 1.0
    lr_t_mult: int = 1
    wsd_decay_fraction: float = 0.2
    wsd_shape: str = "linear"
    schedule: str | None = None  # a spec in the schedules text syntax; overrides lr_scheduler
    lr_mults: Mapping[str, float] = dataclasses.field(default_factory=dict)
    clip_norm: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    # evaluation, logging, checkpoints
    eval_interval: int = 100
    eval_batches: int = 4
    early_stop_patience: int = 0  # evaluations without improvement; 0 = off
    log_interval: int = 10
    metrics_dir: str | None = None  # None: <workdir>/metrics
    tensorboard: bool = True
    checkpoint_dir: str | None = None  # None: <workdir>/checkpoints
    checkpoint_interval: int = 100
    keep_checkpoints: int = 3
    async_checkpoints: bool = True
    resume: bool = False
    sample_tokens: int = 200
    sample_prompt: str = "def "
    seed: int = 0
    # parallelism
    devices: int | None = None  # None: all local devices
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    # sharded training on a device mesh (train/mesh.py, docs/parallelism.md); any layout flag
    # selects engine "mesh"
    engine: str = "pmap"
    data_parallel: int | None = None  # None: devices / tensor_parallel
    tensor_parallel: int | None = None
    sequence_parallel: bool = False
    zero_stage: int | None = None
    n_kv_head: int | None = None  # LLaMA-3: key/value heads (GQA)
    # pipeline parallelism (train/pipeline.py) and activation recompute (models.common)
    pipeline_parallel: int | None = None
    virtual_pipeline_parallel: int | None = None
    recompute: str = "none"
    recompute_method: str = "uniform"
    recompute_num_layers: int = 1
    plan: bool = False  # print the per-device memory/FLOP plan (train/plan.py) and exit
    plan_peak_tflops: float = 989.0

    # -- conversion ------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        """Build from a dict (keys are field names; ``-`` is accepted for ``_``); validated."""
        names = set(cls.field_names())
        kw: dict[str, Any] = {}
        for k, v in d.items():
            key = str(k).replace("-", "_")
            if key not in names:
                raise ValueError(
                    f"unknown config key {k!r}; allowed: {', '.join(sorted(names))}"
                )
            kw[key] = v
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
        """Coerce list-ish and comma-separated values to tuples (config files, CLI)."""
        kw: dict[str, Any] = {}
        ms = self.lr_milestones
        if isinstance(ms, str):
            ms = tuple(int(x) for x in ms.replace(" ", "").split(",") if x)
        elif isinstance(ms, list | tuple):
            ms = tuple(ms)
        kw["lr_milestones"] = ms
        ch = self.lr_chain
        if isinstance(ch, str):
            ch = tuple(x.strip() for x in ch.split(",") if x.strip())
        elif isinstance(ch, list | tuple):
            ch = tuple(ch)
        kw["lr_chain"] = ch
        lm = self.lr_mults
        if isinstance(lm, str):
            lm = parse_lr_mults(lm)
        kw["lr_mults"] = dict(lm) if isinstance(lm, Mapping) else lm
        return dataclasses.replace(self, **kw)

    # -- derived ---------------------------------------------------------------------------
    @property
    def schedule_steps(self) -> int:
        """The horizon of the lr schedule (``total_steps``, default ``steps``)."""
        return self.total_steps if self.total_steps is not None else self.steps

    @property
    def warmup(self) -> int:
        """Warmup steps (``warmup_steps``, default 10% of the schedule length)."""
        return self.warmup_steps if self.warmup_steps is not None else self.schedule_steps // 10

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
        if self.dropout:
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
        """Check every field; raise ``ValueError`` naming the flag, value and rule."""
        _choice("model", self.model, MODELS)
        import models  # deferred: importing JAX models is not needed to parse a config

        sizes = tuple(models.MODEL_SIZES[self.model]) + tuple(EXTRA_SIZES)
        _choice("model_size", self.model_size, sizes)
        for k in ("n_layer", "n_head", "n_embd", "total_steps", "lr_step_size", "devices",
                  "num_processes"):
            if getattr(self, k) is not None:
                _pos_int(k, getattr(self, k))
        for k in ("seq_len", "batch_size", "grad_accum", "steps", "eval_interval",
                  "eval_batches", "log_interval", "checkpoint_interval", "keep_checkpoints",
                  "lr_t_mult"):
            _pos_int(k, getattr(self, k))
        if self.warmup_steps is not None:
            _int("warmup_steps", self.warmup_steps, lo=0)
        for k in ("early_stop_patience", "sample_tokens", "seed"):
            _int(k, getattr(self, k), lo=0)
        if self.process_id is not None:
            _int("process_id", self.process_id, lo=0)
        _choice("dtype", self.dtype, DTYPES)
        _choice("tokenizer", self.tokenizer, TOKENIZERS)
        _choice("lr_scheduler", self.lr_scheduler, LR_SCHEDULERS)
        _choice("wsd_shape", self.wsd_shape, WSD_SHAPES)
        _float("dropout", self.dropout, lo=0.0, hi=1.0, hi_open=True)
        _float("val_fraction", self.val_fraction, lo=0.0, hi=0.5, lo_open=True)
        _float("lr", self.lr, lo=0.0, lo_open=True)
        _float("min_lr", self.min_lr, lo=0.0)
        _float("lr_gamma", self.lr_gamma, lo=0.0, lo_open=True)
        _float("lr_start_factor", self.lr_start_factor, lo=0.0, hi=1.0, lo_open=True)
        _float("lr_end_factor", self.lr_end_factor, lo=0.0, hi=1.0)
        _float("lr_power", self.lr_power, lo=0.0, lo_open=True)
        _float("wsd_decay_fraction", self.wsd_decay_fraction, lo=0.0, hi=1.0)
        _float("clip_norm", self.clip_norm, lo=0.0)
        _float("beta1", self.beta1, lo=0.0, hi=1.0, hi_open=True)
        _float("beta2", self.beta2, lo=0.0, hi=1.0, hi_open=True)
        _float("eps", self.eps, lo=0.0, lo_open=True)
        _float("weight_decay", self.weight_decay, lo=0.0)
        for k in ("async_checkpoints", "resume", "tensorboard"):
            if not isinstance(getattr(self, k), bool):
                raise _bad(k, getattr(self, k), "must be true or false")
        if self.warmup > self.schedule_steps:
            raise _bad("warmup_steps", self.warmup_steps,
                       f"must be <= the schedule length (--total-steps/--steps = "
                       f"{self.schedule_steps})")
        if not isinstance(self.lr_milestones, tuple) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in self.lr_milestones
        ) or list(self.lr_milestones) != sorted(set(self.lr_milestones)):
            raise _bad("lr_milestones", self.lr_milestones,
                       "must be strictly increasing positive ints, e.g. 100,200")
        if not isinstance(self.lr_chain, tuple):
            raise _bad("lr_chain", self.lr_chain, "must be a comma-separated list of schedulers")
        for name in self.lr_chain:
            if name not in CHAINABLE:
                allowed = ", ".join(CHAINABLE)
                raise _bad("lr_chain", ",".join(self.lr_chain),
                           f"{name!r} is not allowed; each entry must be one of {allowed}")
        if not isinstance(self.lr_mults, Mapping) or not all(
            isinstance(k, str) and _is_num(v) and v >= 0 for k, v in self.lr_mults.items()
        ):
            raise _bad("lr_mults", self.lr_mults,
                       "must map parameter-path substrings to numbers >= 0, e.g. wte=0.1,wpe=0.1")
        for k in ("data", "val_data", "data_cache", "metrics_dir", "checkpoint_dir",
                  "schedule", "lr_lambda", "coordinator_address"):
            v = getattr(self, k)
            if v is not None and (not isinstance(v, str) or not v):
                raise _bad(k, v, "must be a non-empty string")
        if not isinstance(self.sample_prompt, str) or not self.sample_prompt:
            raise _bad("sample_prompt", self.sample_prompt, "must be a non-empty string")
        for k in ("data", "val_data"):
            p = getattr(self, k)
            if p is not None and not os.path.exists(p):
                raise _bad(k, p, "no such file or directory")
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
        _check_layout(self)
        # the model config itself (validated by models) and the schedule
        try:
            models.get_config(self.model, self.base_size(), **self.model_overrides())
        except ValueError as e:
            raise ValueError(f"{flag('model_size')}={self.model_size!r} with the given "
                             f"overrides is invalid: {e}") from None
        from .lr import build_schedule

        build_schedule(self)
        return self


def _check_layout(c: TrainConfig) -> None:
    """The mesh engine's flags alone (model/device-count checks: ``train.mesh.make_layout``)."""
    _choice("engine", c.engine, ("pmap", "mesh"))
    for k in ("data_parallel", "tensor_parallel", "n_kv_head", "pipeline_parallel",
              "virtual_pipeline_parallel"):
        if getattr(c, k) is not None:
            _pos_int(k, getattr(c, k))
    _choice("recompute", c.recompute, ("none", "full", "selective"))
    _choice("recompute_method", c.recompute_method, ("uniform", "block"))
    _pos_int("recompute_num_layers", c.recompute_num_layers)
    if c.virtual_pipeline_parallel not in (None, 1) and not c.pipeline_parallel:
        raise _bad("virtual_pipeline_parallel", c.virtual_pipeline_parallel,
                   "needs --pipeline-parallel")
    if c.zero_stage is not None and c.zero_stage not in (0, 1, 2, 3):
        raise _bad("zero_stage", c.zero_stage, "must be 0, 1, 2 or 3 (3 = FSDP)")
    for k in ("sequence_parallel", "plan"):
        if not isinstance(getattr(c, k), bool):
            raise _bad(k, getattr(c, k), "must be true or false")
    if c.sequence_parallel and (c.tensor_parallel or 1) < 2:
        raise _bad("sequence_parallel", True,
                   f"needs --tensor-parallel >= 2 (got {c.tensor_parallel})")
    if c.n_kv_head is not None and c.model != "llama3":
        raise _bad("n_kv_head", c.n_kv_head, "only --model=llama3 has key/value heads")
    _float("plan_peak_tflops", c.plan_peak_tflops, lo=0.0, lo_open=True)
    if c.mesh_engine and c.devices is not None:
        raise _bad("devices", c.devices, "is a pmap flag; the mesh engine uses "
                   "--data-parallel x --tensor-parallel devices")


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


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (keys checked by ``from_dict``)."""
    with open(path) as f:
        text = f.read()
    if path.endswith((".yaml", ".yml")):
        import yaml

        d = yaml.safe_load(text)
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError:
            import yaml

            d = yaml.safe_load(text)
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"--config={path!r}: expected a mapping of config keys, got "
                         f"{type(d).__name__}")
    return d


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise _bad(name, value, f"must be one of {', '.join(allowed)}")


def _int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _bad(name, value, f"must be an int >= {lo}")


def _pos_int(name: str, value: Any) -> None:
    _int(name, value, 1)


def _float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False) -> None:
    ok = _is_num(value)
    if ok and lo is not None:
        ok = value > lo if lo_open else value >= lo
    if ok and hi is not None:
        ok = value < hi if hi_open else value <= hi
    if not ok:
        lb = "" if lo is None else f"{'(' if lo_open else '['}{lo}"
        ub = "" if hi is None else f"{hi}{')' if hi_open else ']'}"
        rng = f"in {lb or '(-inf'}, {ub or 'inf)'}"
        raise _bad(name, value, f"must be a finite number {rng}")
