"""Shared test settings: float64 on, hypothesis profiles."""

import os

from hypothesis import HealthCheck, settings

import sparsity_theory

# The tests compare against float64 references, so they turn JAX's 64-bit mode
# on themselves, explicitly (importing the package leaves JAX's defaults alone).
# Tests of float32 use explicit dtypes or `with sparsity_theory.x64(False):`;
# tests/test_global_state.py checks the import in fresh interpreters.
sparsity_theory.enable_x64()

# One job for `sparsity-verify run` unless a test asks for more: tests patch suite
# and library functions in this process, and worker processes would not see the
# patches. tests/test_workers.py runs several jobs explicitly.
os.environ["SPARSITY_VERIFY_JOBS"] = "1"

# No persistent compilation cache for the command unless a test asks for one
# (tests/test_compilation_cache.py): tests write nothing under the user's home,
# and a test that runs the command compiles as a first run does.
os.environ["SPARSITY_VERIFY_COMPILATION_CACHE"] = "off"

# JAX compiles once per new shape, so the first examples of a test are slow:
# no deadline, and shapes are drawn from a few buckets in each test.
settings.register_profile(
    "default", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True,
    derandomize=True,
)
settings.load_profile("ci" if os.environ.get("CI") else "default")
