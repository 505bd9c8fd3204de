"""``python -m train``: command-line entry point (thin wrapper over ``train_and_evaluate``).

Every :class:`~train.config.TrainConfig` field is a flag (``--lr-scheduler``, ``--batch-size``,
...); ``--config FILE`` (JSON or YAML, same keys) sets defaults that flags override.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from typing import Any

from .config import CHAINABLE, LR_SCHEDULERS, MODELS, TOKENIZERS, TrainConfig, flag

HELP: dict[str, str] = {
    "model": f"model family: {', '.join(MODELS)}",
    "model_size": "models.MODEL_SIZES[model] or 'mini' (4 layers x 128, the default run)",
    "n_layer": "override the size's number of layers",
    "n_head": "override the size's number of heads",
    "n_embd": "override the size's width",
    "dtype": "compute dtype (params and optimizer state stay float32)",
    "dropout": "dropout rate (0 = off)",
    "data": "text file/dir, llm.c or nanoGPT .bin file/dir (default: Python stdlib sources)",
    "val_data": "separate validation data (default: a held-out split of --data)",
    "val_fraction": "held-out validation fraction when splitting",
    "tokenizer": f"{', '.join(TOKENIZERS)} (GPT-2 BPE offline)",
    "data_cache": "where tokenized text is cached (default $SCHEDAX_CACHE or ~/.cache/schedax)",
    "seq_len": "sequence length (the model's block size)",
    "batch_size": "sequences per micro-batch per device (pmap) or per data-parallel replica "
                  "(mesh)",
    "grad_accum": "micro-batches per optimizer update",
    "steps": "number of optimizer updates (iterations)",
    "lr": "peak learning rate",
    "lr_scheduler": f"one of {', '.join(LR_SCHEDULERS)}",
    "warmup_steps": "linear warmup steps (0 = none; default 10%% of the schedule)",
    "total_steps": "schedule horizon (default --steps)",
    "min_lr": "final/minimum lr (cosine eta_min, wsd end, cyclic base)",
    "lr_step_size": "steplr period, cosine-restarts T_0, cyclic step_size_up",
    "lr_gamma": "decay factor (steplr, multistep, exponential)",
    "lr_milestones": "comma-separated steps (multistep; sequential boundaries)",
    "lr_chain": f"comma-separated schedulers for sequential/chained, from {', '.join(CHAINABLE)}",
    "lr_lambda": "lambda: a safe expression of `step`, e.g. '0.95 ** (step // 10)' (no eval)",
    "lr_start_factor": "linear: start factor",
    "lr_end_factor": "linear: end factor",
    "lr_power": "polynomial: power",
    "lr_t_mult": "cosine-restarts: T_mult",
    "wsd_decay_fraction": "wsd: fraction of the steps spent decaying",
    "wsd_shape": "wsd: decay shape (linear, cosine, 1-sqrt)",
    "schedule": "any schedule in the algebra's text spec (absolute lr; overrides --lr-scheduler)",
    "lr_mults": "per-group lr multipliers, PATTERN=MULT,... on parameter paths (e.g. wte=0.1)",
    "clip_norm": "global gradient-norm clipping (0 = off)",
    "beta1": "AdamW beta1", "beta2": "AdamW beta2", "eps": "AdamW epsilon",
    "weight_decay": "AdamW weight decay (matrices only)",
    "eval_interval": "evaluate every N steps (and at the end)",
    "eval_batches": "validation batches per evaluation",
    "early_stop_patience": "stop after N evaluations without improvement (0 = off)",
    "log_interval": "log every N steps",
    "metrics_dir": "metrics directory (default WORKDIR/metrics)",
    "tensorboard": "write TensorBoard event files",
    "checkpoint_dir": "checkpoint directory (default WORKDIR/checkpoints)",
    "checkpoint_interval": "save every N steps (and at the end)",
    "keep_checkpoints": "keep the last N checkpoints",
    "async_checkpoints": "save checkpoints asynchronously",
    "resume": "continue from the latest checkpoint",
    "sample_tokens": "tokens to sample at the end (0 = none)",
    "sample_prompt": "prompt for the final sample",
    "seed": "seed (init, data order)",
    "devices": "local devices to use (default all)",
    "coordinator_address": "multi-host: coordinator host:port (jax.distributed)",
    "num_processes": "multi-host: number of processes",
    "process_id": "multi-host: this process's index",
    "engine": "pmap (data parallel, the default) or mesh (jit over a device mesh; any of the "
              "layout flags below selects it); see docs/parallelism.md",
    "data_parallel": "mesh: data-parallel replicas (default devices / --tensor-parallel)",
    "tensor_parallel": "mesh: Megatron tensor parallelism over N devices (heads, MLP, vocab)",
    "sequence_parallel": "mesh: shard the residual stream's sequence over the TP devices",
    "zero_stage": "mesh: ZeRO 0-3 over the data axis (1 optimizer state, 2 +gradients, "
                  "3 +parameters = FSDP)",
    "pipeline_parallel": "mesh: pipeline stages N (layers in N x V contiguous chunks, chunk c on "
                         "stage c mod N; micro-batches = --grad-accum)",
    "virtual_pipeline_parallel": "mesh: model chunks per pipeline stage V (interleaved "
                                 "schedule, smaller bubble)",
    "recompute": "activation recompute: none, full (jax.checkpoint of layer groups) or "
                 "selective (keep matmul outputs, recompute attention)",
    "recompute_method": "--recompute=full: uniform (groups of K layers) or block (the first K "
                        "layers of each model chunk)",
    "recompute_num_layers": "K of --recompute-method",
    "n_kv_head": "LLaMA-3: override the number of key/value heads (GQA)",
    "plan": "print the per-device memory/FLOP plan of one train step (compiled on N simulated "
            "CPU devices, nothing allocated) and exit",
    "plan_peak_tflops": "--plan: peak TFLOP/s per device for the step-time estimate",
}


def _arg_type(annotation: str) -> Any:
    a = annotation.replace(" ", "")
    if a.startswith("int"):
        return int
    if a.startswith("float"):
        return float
    return str


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m train",
        description="Train GPT-2/LLaMA-3 (data-parallel, pmap) with a schedules learning rate. "
        "With no arguments: a small GPT-2 on Python's standard library sources, a few minutes "
        "on a CPU.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--config", help="JSON or YAML file of config keys (flags override it)")
    p.add_argument("--workdir", default="runs/train", help="output directory")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        ann = str(f.type)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        names = [flag(f.name)]
        if f.name == "steps":
            names.append("--num-iterations")
        help_ = HELP.get(f.name, "") + f" (default: {default!r})"
        if hints.get(f.name) is bool:
            p.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=help_)
        else:
            p.add_argument(*names, dest=f.name, type=_arg_type(ann), default=argparse.SUPPRESS,
                           help=help_, metavar=f.name.upper())
    p.formatter_class = argparse.HelpFormatter
    return p


def parse_config(argv: Sequence[str] | None = None) -> tuple[TrainConfig, str]:
    """argv -> (validated config, workdir); exits via ``parser.error`` on a bad value."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    workdir = args.pop("workdir")
    path = args.pop("config", None)
    d: dict[str, Any] = {}
    try:
        if path:
            from .config import load_config_file

            d.update(load_config_file(path))
        d.update(args)
        return TrainConfig.from_dict(d), workdir
    except (ValueError, OSError) as e:
        parser.error(str(e))
        raise  # unreachable


def _simulate_devices(argv: Sequence[str]) -> None:
    """``--plan``: run on the CPU with DP x TP simulated devices (default 8), set before JAX
    initialises its backend."""
    import os

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--data-parallel", type=int, default=None)
    pre.add_argument("--tensor-parallel", type=int, default=1)
    known, _ = pre.parse_known_args(argv)
    n = known.data_parallel * known.tensor_parallel if known.data_parallel else 8
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={n}")
    os.environ["JAX_PLATFORMS"] = "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    if "--plan" in (sys.argv[1:] if argv is None else argv):
        _simulate_devices(sys.argv[1:] if argv is None else argv)
    cfg, workdir = parse_config(argv)
    from .loop import NonFiniteLossError, train_and_evaluate

    try:
        train_and_evaluate(cfg, workdir)
    except NonFiniteLossError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        from .checkpoint import CheckpointError

        if isinstance(e, CheckpointError | ValueError):
            print(f"error: {e}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
