"""Test-wide setup: 8 simulated CPU devices (set before JAX initializes its backend)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

try:  # the CI gate replays the same examples every run (.ci/run sets HYPOTHESIS_PROFILE=ci);
    # elsewhere each run draws new ones
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
except ImportError:  # the test extra is not installed: only the doctests can run
    pass
