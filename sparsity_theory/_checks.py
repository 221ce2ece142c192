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


def check_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """The dtype a sampler should produce: ``None`` means JAX's default float
    dtype (float32, or float64 when 64-bit mode is on); an explicit dtype is
    returned as given when JAX can hold it here.

    A 64-bit dtype (float64, int64, ...) needs JAX's 64-bit mode. Without it JAX
    silently truncates to 32 bits (with only a warning), so the result would not
    be what was asked for: raise instead, and say how to turn the mode on.
    Reads the mode when called, so a ``sparsity_theory.x64()`` block counts.
    """
    if dtype is None:
        return np.dtype(jax.dtypes.canonicalize_dtype(float))
    try:
        wanted = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name} must be a dtype, got {dtype!r}.") from None
    if np.dtype(jax.dtypes.canonicalize_dtype(wanted)) != wanted:
        raise ValueError(
            f"{name}={wanted.name} needs JAX's 64-bit mode, which is off: call "
            f"sparsity_theory.enable_x64() (or use `with sparsity_theory.x64():`, "
            f"or set JAX_ENABLE_X64=1), or ask for {name}=None (float32)."
        )
    return wanted


# --- value checks that also run under jit (jax.experimental.checkify) ----------------
#
# The checks above skip values they cannot see (tracers). The ones below take a
# ``checked`` flag: eagerly they always raise ValueError; on tracers with
# ``checked=True`` they stage a ``checkify.check`` instead, so the caller must
# functionalise the traced function, e.g.
#
#     f = functools.partial(bounds.score_deviation_bound, num_keys=64, checked=True)
#     err, out = checkify.checkify(jax.jit(f), errors=checkify.user_checks)(sigma, delta=0.05)
#     err.throw()  # raises JaxRuntimeError naming the argument
#
# (a ``checkify.check`` staged without checkify is an error, hence the opt-in).


def check_values(ok: Any, message: str, *, checked: bool = False) -> None:
    """Raise ``ValueError(message)`` unless every entry of the boolean ``ok`` holds.

    Concrete ``ok``: checked now. Traced ``ok``: a ``checkify.check`` when
    ``checked`` (run under ``checkify.checkify``), otherwise skipped.
    """
    if is_concrete(ok):
        if not bool(np.all(np.asarray(ok))):
            raise ValueError(message)
    elif checked:
        from jax.experimental import checkify  # only needed on this path

        checkify.check(jax.numpy.all(ok), message)


def check_finite_values(x: Any, name: str, *, checked: bool = False) -> None:
    """Every entry of ``x`` is finite (no NaN, no infinity)."""
    arr = jax.numpy.asarray(x) if not is_concrete(x) else np.asarray(x)
    if np.size(arr):
        check_values(jax.numpy.isfinite(arr) if not is_concrete(x) else np.isfinite(arr),
                     f"{name} must be finite: it has NaN or infinite entries (shape {np.shape(x)}).",
                     checked=checked)


def check_nonnegative_values(x: Any, name: str, *, checked: bool = False) -> None:
    """Every entry of ``x`` is finite and >= 0 (a scale sigma, a radius, a norm)."""
    xp = np if is_concrete(x) else jax.numpy
    arr = xp.asarray(x)
    check_values(xp.isfinite(arr) & (arr >= 0),
                 f"{name} must be finite and >= 0 (shape {np.shape(x)}).", checked=checked)


def check_probability_values(delta: Any, name: str = "delta", *, checked: bool = False) -> None:
    """``delta`` lies in the open interval (0, 1): :func:`check_probability` eagerly,
    a checkify check under tracing when ``checked``."""
    if is_concrete(delta):
        check_probability(delta, name)
    else:
        d = jax.numpy.asarray(delta)
        check_values((d > 0) & (d < 1), f"{name} must lie in (0, 1).", checked=checked)


def check_eps_values(eps: Any, name: str = "eps", *, checked: bool = False) -> None:
    """``eps`` lies in (0, 1]: :func:`check_eps` eagerly, a checkify check under tracing."""
    if is_concrete(eps):
        check_eps(eps, name)
    else:
        e = jax.numpy.asarray(eps)
        check_values((e > 0) & (e <= 1), f"{name} must lie in (0, 1].", checked=checked)


def check_nonempty(x: Any, name: str) -> None:
    """``x`` has at least one entry (shapes are static, so this runs under jit too)."""
    if np.size(x) == 0:
        raise ValueError(f"{name} must not be empty, got shape {np.shape(x)}.")


def check_count(value: Any, name: str, minimum: int = 1, maximum: Any = None) -> Any:
    """An integer count (a number of keys n, of small entries k): a Python or NumPy
    integer, returned as a Python int (any size), or an integer-dtype array
    (for vmap), returned as a JAX array whose concrete values are range-checked
    (traced ones are not). Floats, bools and strings are rejected."""
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, bool):
        v = int(value)
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {v}.")
        if maximum is not None and v > maximum:
            raise ValueError(f"{name} must be <= {maximum}, got {v}.")
        return v
    dtype = getattr(value, "dtype", None)
    if dtype is None or not np.issubdtype(np.dtype(dtype), np.integer) or np.dtype(dtype) == bool:
        raise ValueError(f"{name} must be an integer, got {value!r}.")
    if is_concrete(value):
        arr = np.asarray(value)
        if np.any(arr < minimum) or (maximum is not None and np.any(arr > maximum)):
            bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
            raise ValueError(f"{name} must be {bounds}, got {value!r}.")
    return jax.numpy.asarray(value)
