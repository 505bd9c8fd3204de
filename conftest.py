"""Test-wide setup: 8 simulated CPU devices (set before JAX initializes its backend)."""

import os

# read by JAX when it is imported (chex imports it): set first
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import chex

# XLA reads its flags when the CPU backend starts (the first JAX computation, after this file):
# chex sets the device count in XLA_FLAGS, keeping any other flags given there (it raises if the
# backend already started with another count). Subprocesses that need another count (2
# processes x 4 devices) set XLA_FLAGS in their own environment (tests/train/train_testutil.py
# cpu_env).
chex.set_n_cpu_devices(8)

try:  # the CI gate replays the same examples every run (.ci/run sets HYPOTHESIS_PROFILE=ci);
    # elsewhere each run draws new ones
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # the test extra is not installed: only the doctests can run
    pass
