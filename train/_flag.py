"""Flag names of config fields (a leaf module: imported by config, lr and the CLIs)."""

from __future__ import annotations

from typing import Any

__all__ = ["bad", "flag"]


def flag(name: str) -> str:
    """The command-line flag of a config field: ``lr_scheduler`` -> ``--lr-scheduler``."""
    return "--" + name.replace("_", "-")


def bad(name: str, value: Any, allowed: str) -> ValueError:
    """``ValueError("--flag=value is invalid: allowed")`` for config field ``name``."""
    return ValueError(f"{flag(name)}={value!r} is invalid: {allowed}")
