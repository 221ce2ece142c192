"""Helpers shared by the property tests."""

import contextlib

from hypothesis import HealthCheck
import jax
import numpy as np

EPS64 = float(np.finfo(np.float64).eps)
# n is drawn from a few buckets so that JAX compiles each shape once.
N_BUCKETS = (1, 2, 3, 8, 33)

SETTINGS = dict(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def all_windows(n: int) -> tuple[int, ...]:
    return tuple(range(1, n + 1))


def few_windows(n: int) -> tuple[int, ...]:
    """A fixed handful of windows per n, for functions compiled per static k."""
    return tuple(sorted({k for k in (1, 2, n // 2, n - 1, n) if 1 <= k <= n}))


def tiny_value(x: float) -> float:
    """x scaled by 1e-200, kept a normal float (or 0): values whose squares underflow."""
    y = x * 1e-200
    return y if abs(y) >= np.finfo(np.float64).tiny else 0.0


@contextlib.contextmanager
def compilations():
    """A list that receives one entry per XLA backend compilation in the block:
    for tests that a repeated call reuses its compiled program."""
    compiled = []

    def listener(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(kwargs.get("fun_name", event))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
