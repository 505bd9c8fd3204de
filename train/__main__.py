"""``python -m train``: command-line entry point (thin wrapper over ``train_and_evaluate``).

Every :class:`~train.config.TrainConfig` field is a flag (``--lr-scheduler``, ``--batch-size``,
...) whose help text and group live in the field's metadata; ``--config FILE`` (JSON or YAML,
same keys) sets values that flags override. Every error is one line
(``python -m train: error: ...``) plus a hint, printed before anything compiles.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .allocator import tune_host_allocator
from .checkpoint import CheckpointError
from .config import GROUPS, TrainConfig, field_kinds, flag
from .config_files import check_dirs, load_config_file
from .devices import simulate_devices
from .resume import with_saved_config
from .run.loop import NonFiniteLossError
from .run.setup import check_config
from .run.stop import TIME_LIMIT_STATUS, StopSignals, TrainingInterrupted, signal_name
from .run.train import train_and_evaluate
from .schedule.build import lr_table, schedule_warnings
from .schedule.hparams import check_given_momentum

EPILOG = """examples:
  python -m train                                     # the default run (cosine, 10% warmup)
  python -m train --lr-scheduler=steplr --lr-step-size=100 --lr-gamma=0.5
  python -m train --lr-scheduler=cosine --warmup-steps=30 --min-lr=3e-4
  python -m train --lr-scheduler=chained --lr-chain=steplr,linear --lr-step-size=100
  python -m train --lr-scheduler=hf:cosine --warmup-ratio=0.1
  python -m train --lr-decay-style=WSD --lr-warmup-iters=30 --lr-wsd-decay-iters=60
  python -m train --schedule="join(linear(0, 1e-3, 100), cosine(1e-3, 1e-5, 900), at=[100])"
  python -m train --print-lr --steps=20 --lr-scheduler=exponential --lr-gamma=0.9
  python -m train --config=run.yaml --lr=1e-3        # flags override the file
see docs/training.md for every flag"""

GROUP_TITLES = {
    "model": "model", "data": "data", "schedule": "schedule (learning rate)",
    "optimizer": "optimizer", "parallelism": "parallelism", "checkpoints": "checkpoints",
    "logging": "evaluation and logging", "run": "run",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (``PROG: error: ...`` and a ``--help`` hint, no usage
    blob) and "did you mean --X?" for misspelled flags."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\nsee {self.prog} --help\n")

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: Any = None) -> argparse.Namespace:
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(self._unknown(extra[0]))
        return ns

    def _unknown(self, arg: str) -> str:
        name = arg.split("=", 1)[0]
        if not name.startswith("-"):
            return f"unexpected argument {arg!r} (flags look like --name=value)"
        opts = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
        close = difflib.get_close_matches(name, opts, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        return f"unrecognized flag {name}{hint}"


def _default_text(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING or f.default is None:
        return ""
    d = f.default
    if isinstance(d, bool):
        d = str(d).lower()
    return f" (default: {d})"


def build_parser(prog: str = "python -m train") -> ArgumentParser:
    """The trainer's parser: one flag per config field, grouped as ``GROUPS``."""
    p = ArgumentParser(
        prog=prog, allow_abbrev=False, epilog=EPILOG, usage="%(prog)s [--FLAG=VALUE ...]",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train GPT-2/LLaMA-3 (data-parallel, pmap) with a schedules learning rate. "
        "With no arguments: a small GPT-2 on Python's standard library sources, a few minutes "
        "on a CPU.",
    )
    groups = {g: p.add_argument_group(GROUP_TITLES.get(g, g)) for g in GROUPS}
    run = groups["run"]
    run.add_argument("--config", help="JSON or YAML file of config keys (flags override it)")
    run.add_argument("--workdir", default="runs/train", help="output directory "
                     "(default: runs/train)")
    run.add_argument("--print-lr", action="store_true", help="print the lr of every update "
                     "(CSV: step,lr) for --steps and exit without training")
    run.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    kinds = field_kinds()
    for f in dataclasses.fields(TrainConfig):
        names = [flag(f.name)]
        if f.name == "steps":
            names.append("--num-iterations")
        help_ = (f.metadata.get("help", "") + _default_text(f)).replace("%", "%%")
        g = groups.get(f.metadata.get("group", "run"), run)
        if f.name in ("sweep", "group"):  # repeatable: --sweep lr=1e-3 --sweep warmup_steps=0
            g.add_argument(*names, dest=f.name, action="append", default=argparse.SUPPRESS,
                           help=help_,
                           metavar="FIELD=V1,V2" if f.name == "sweep" else "PATTERN:SPEC")
        elif f.name == "resume":  # --resume[=auto|STEP] / --no-resume
            g.add_argument(*names, dest=f.name, nargs="?", const=True, default=argparse.SUPPRESS,
                           metavar="auto|STEP", help=help_)
            g.add_argument("--no-resume", dest=f.name, action="store_false",
                           default=argparse.SUPPRESS, help="start from scratch (the default)")
        elif f.name == "rampup_batch_size":  # Megatron's form: --rampup-batch-size 4 4 64
            g.add_argument(*names, dest=f.name, nargs=3, default=argparse.SUPPRESS,
                           help=help_, metavar=("START", "INCREMENT", "SAMPLES"))
        elif kinds.get(f.name) is bool:
            g.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction,
                           default=argparse.SUPPRESS, help=help_)
        else:
            kind = kinds.get(f.name)
            g.add_argument(*names, dest=f.name, default=argparse.SUPPRESS, help=help_,
                           type=kind if kind in (int, float) else str,
                           metavar=f.name.upper())
    return p


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("schedax")
    except PackageNotFoundError:  # pragma: no cover - running from a plain checkout
        return "unknown"


def config_from_args(parser: ArgumentParser, args: dict[str, Any],
                     workdir: str | None = None) -> TrainConfig:
    """The validated config of parsed ``args`` (``--config`` file first, flags over it; with
    ``--resume``, the checkpoint's saved settings in ``workdir`` fill in the rest); a bad value
    exits through ``parser.error`` (one line)."""
    path = args.pop("config", None)
    d: dict[str, Any] = {}
    try:
        if path:
            d.update(load_config_file(path))
        d.update(args)
        # typed (or in the --config file), not filled in from a checkpoint
        given = {str(k).replace("-", "_") for k in d}
        if workdir is not None:
            d = with_saved_config(d, workdir)
        cfg = TrainConfig.from_dict(d)
        if cfg.simulate_devices is None:  # (else checked once the devices exist: main)
            check_config(cfg)
        check_given_momentum(cfg, given)  # issue 27: nothing typed is silently overwritten
        return cfg
    except (ValueError, OSError, CheckpointError) as e:  # a resume guard's refusal included
        parser.error(str(e))


def parse_config(argv: Sequence[str] | None = None) -> tuple[TrainConfig, str]:
    """argv -> (validated config, workdir); exits via ``parser.error`` on a bad value."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    args.pop("print_lr", None)
    workdir = args.pop("workdir")
    return config_from_args(parser, args, workdir), workdir


def warn(prog: str, lines: Sequence[str]) -> None:
    for line in lines:
        print(f"{prog}: warning: {line}", file=sys.stderr)


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
    prog = "python -m train"
    parser = build_parser(prog)
    args = vars(parser.parse_args(argv))
    print_lr = args.pop("print_lr", False)
    workdir = args.pop("workdir")
    try:
        tune_host_allocator()  # before JAX starts its threads (train/allocator.py)
    except ValueError as e:
        parser.error(str(e))
    if args.get("plan"):
        _simulate_devices(sys.argv[1:] if argv is None else argv)
    cfg = config_from_args(parser, args, workdir)
    try:
        simulate_devices(cfg.simulate_devices)  # before JAX starts its backend
        schedule = check_config(cfg)  # everything checked before anything compiles
    except ValueError as e:
        parser.error(str(e))
    warn(prog, schedule_warnings(cfg, schedule))
    if print_lr:
        print("step,lr")
        for t, v in lr_table(schedule, cfg.steps):
            print(f"{t},{v!r}")
        return 0
    try:
        check_dirs(cfg, workdir)
    except ValueError as e:
        parser.error(str(e))
    signals = StopSignals(cfg.save_on_signal, keep_after_signal=True,
                          together=(cfg.num_processes or 1) > 1)
    try:
        with signals:  # from here a signal stops the run (see train/run/stop.py)
            summary = train_and_evaluate(cfg, workdir)
    except TrainingInterrupted as e:  # the loop said where it saved and how to resume
        if not e.printed:
            print(f"{prog}: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except NonFiniteLossError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if isinstance(e, CheckpointError | ValueError):
            print(f"{prog}: error: {e}", file=sys.stderr)
            return 2
        raise
    if signals.received is not None:
        print(f"{prog}: {signal_name(signals.received)} arrived after the last step: the run "
              "completed", file=sys.stderr)
    if isinstance(summary, dict) and summary.get("resumable"):  # --exit-after-minutes: saved
        return TIME_LIMIT_STATUS
    return 0


if __name__ == "__main__":
    sys.exit(main())
