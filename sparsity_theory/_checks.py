"""Argument validation for the public API.

Every public function validates what it can see: shapes always (they are static
under ``jit``), values only when they are concrete. A traced value cannot be
inspected without a host round trip, so inside a user's ``jit`` the checks on
values are skipped; the public functions are meant to be called with concrete
arrays, and the error then names the argument instead of surfacing as a NaN
several calls later.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import numpy as np


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values (not a tracer inside jit, vmap or grad)."""
    return not isinstance(x, jax.core.Tracer)


def check_finite_array(x: Any, name: str) -> None:
    """Raise ValueError when a concrete array has a NaN or an infinity."""
    if is_concrete(x):
        arr = np.asarray(x)
        if arr.size and not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise ValueError(
                f"{name} must be finite: it has {bad} NaN or infinite entries "
                f"(shape {arr.shape})."
            )


def check_ndim(x: Any, ndim: int, name: str) -> None:
    if np.ndim(x) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {np.shape(x)}.")


def check_min_ndim(x: Any, ndim: int, name: str) -> None:
    if np.ndim(x) < ndim:
        raise ValueError(
            f"{name} must have at least {ndim} dimension(s), got shape {np.shape(x)}."
        )


def check_int(value: Any, name: str) -> int:
    """Return ``value`` as a Python int, or raise if it is not an integer."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    return int(value)


def check_window(k: Any, n: int, name: str = "k") -> int:
    """A window size (Definition 3.3) must be an integer in [1, n]."""
    k = check_int(k, name)
    if not 1 <= k <= n:
        raise ValueError(f"{name} must be in [1, n] = [1, {n}], got {k}.")
    return k


def check_windows(windows: Any, n: int, name: str = "windows") -> tuple[int, ...]:
    """A non-empty sequence of window sizes, each in [1, n]."""
    if np.ndim(windows) == 0:  # a scalar (int, float, 0-d array, None): one window
        windows = (windows.item() if isinstance(windows, np.ndarray) else windows,)
    windows = tuple(windows)
    if not windows:
        raise ValueError(f"{name} must hold at least one window size.")
    return tuple(check_window(k, n, name=f"{name}[{i}]") for i, k in enumerate(windows))


def check_eps(eps: Any, name: str = "eps") -> None:
    """A softmax threshold eps (Definition 3.2) must lie in (0, 1]."""
    if is_concrete(eps):
        arr = np.asarray(eps, dtype=float)
        if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr > 1):
            raise ValueError(f"{name} must lie in (0, 1], got {eps!r}.")


def check_probability(delta: Any, name: str = "delta") -> Any:
    """A probability (delta, alpha, a confidence) must lie in the open interval (0, 1).

    Returns a concrete scalar as a float (arrays and tracers are returned as given).
    """
    if not is_concrete(delta):
        return delta
    try:
        arr = np.asarray(delta, dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in (0, 1), got {delta!r}.") from None
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0) or np.any(arr >= 1):
        raise ValueError(f"{name} must lie in (0, 1), got {delta!r}.")
    return float(arr) if arr.ndim == 0 else delta


def check_positive(value: Any, name: str) -> float:
    """A finite, strictly positive scalar (a radius R, a standard deviation)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}.") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {value!r}.")
    return v


def check_finite_scalar(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number, got {value!r}.") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}.")
    return v


def check_same(a: int, b: int, what: str) -> None:
    if a != b:
        raise ValueError(f"mismatched shapes: {what} ({a} != {b}).")


def check_block_size(block_size: Any, name: str = "block_size") -> int:
    b = check_int(block_size, name)
    if b < 1:
        raise ValueError(f"{name} must be >= 1, got {b}.")
    return b


def as_tuple_of_floats(values: Any, name: str) -> tuple[float, ...]:
    if np.ndim(values) == 0:  # a scalar, 0-d arrays included
        values = (values,)
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a flat sequence of numbers, "
                         f"got {values!r}.") from None
    if not out:
        raise ValueError(f"{name} must hold at least one value.")
    return out
