"""``--simulate-devices=N``: N CPU devices on one machine (data parallelism without hardware).

XLA reads ``--xla_force_host_platform_device_count`` once, when JAX starts its backend, so
:func:`simulate_devices` must run before anything asks JAX for a device (``python -m train``
calls it right after parsing its flags). Importing ``jax`` is fine; touching a device is not.
"""

from __future__ import annotations

import os
import re

__all__ = ["simulate_devices"]

_FLAG = "--xla_force_host_platform_device_count"


def _backend_started() -> bool:
    try:
        from jax._src import xla_bridge
    except ImportError:  # pragma: no cover - a JAX without this module: assume not started
        return False
    return bool(xla_bridge.backends_are_initialized())


def simulate_devices(n: int | None) -> None:
    """Make JAX start with ``n`` CPU devices (and only the CPU platform); ``None``: no-op.

    If JAX's backend has already started (e.g. in a notebook or a test process), this only
    checks that it has exactly ``n`` CPU devices, and raises ``ValueError`` otherwise."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"--simulate-devices={n!r} is invalid: must be an int >= 1")
    if _backend_started():
        import jax

        have = jax.devices()
        if len(have) != n or have[0].platform != "cpu":
            raise ValueError(
                f"--simulate-devices={n} is invalid here: JAX has already started with "
                f"{len(have)} {have[0].platform} device(s); set it before JAX starts (the "
                f"command line does), or set XLA_FLAGS={_FLAG}={n} JAX_PLATFORMS=cpu in the "
                "environment")
        return
    flags = re.sub(rf"{_FLAG}=\S*", "", os.environ.get("XLA_FLAGS", "")).strip()
    os.environ["XLA_FLAGS"] = f"{flags} {_FLAG}={n}".strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
