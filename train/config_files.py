"""A config's files and folders: reading a ``--config`` file (JSON or YAML) and creating the
run's output directories, each error one line naming the flag or the file and line."""

from __future__ import annotations

import json
import os
from typing import Any

from ._flag import bad
from .config import TrainConfig

__all__ = ["check_dirs", "load_config_file"]


def check_dirs(cfg: TrainConfig, workdir: str) -> dict[str, str]:
    """Create the output directories (workdir, checkpoints, metrics) and check that each is a
    writable directory; returns ``{"workdir", "checkpoint_dir", "metrics_dir"}`` as absolute
    paths. Raises ``ValueError`` naming the flag. Call before anything compiles."""
    workdir = os.path.abspath(workdir)
    dirs = {"workdir": workdir,
            "checkpoint_dir": os.path.abspath(cfg.checkpoint_dir or
                                              os.path.join(workdir, "checkpoints")),
            "metrics_dir": os.path.abspath(cfg.metrics_dir or os.path.join(workdir, "metrics"))}
    for key, path in dirs.items():
        if os.path.exists(path) and not os.path.isdir(path):
            raise bad(key, path, "is a file, not a directory")
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise bad(key, path, f"cannot be created ({e.strerror or e})") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise bad(key, path, "is not writable")
    return dirs


def load_config_file(path: str) -> dict[str, Any]:
    """Read a JSON or YAML config file into a dict (keys checked by ``from_dict``); syntax
    errors raise ``ValueError`` naming the file and line."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"--config={path!r}: cannot read it ({e.strerror or e})") from None
    if path.endswith((".yaml", ".yml")) or not text.lstrip().startswith(("{", "[")):
        import yaml

        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark is not None else path
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            raise ValueError(f"--config: {where}: YAML syntax error: {what}") from None
    else:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: {path}:{e.lineno}: JSON syntax error: {e.msg} "
                             f"(column {e.colno})") from None
    if d is None:
        d = {}
    if not isinstance(d, dict):
        raise ValueError(f"--config={path!r}: expected a mapping of config keys, got "
                         f"{type(d).__name__}")
    return d
