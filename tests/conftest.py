"""Shared test settings: float64 on (the package enables it), hypothesis profiles."""

import os

from hypothesis import HealthCheck, settings

import sparsity_theory  # noqa: F401  (enables jax_enable_x64)

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
