"""Exact order statistics and value thresholds without sorting.

On CPU, XLA's full sort is about 30x slower than NumPy's, so nothing here sorts a
whole row. Instead a floating-point value is mapped to an integer *key* whose
integer order is the float order, and a monotone predicate is bisected over the
integer keys. With 32 (float32) or 64 (float64) halvings the bisection ends on an
exact data value, whatever the spread of the row: the result is exact, not an
approximation to a tolerance.

Each halving is one pass over the row (a comparison and a reduction), so the cost
is ``bits x n`` cheap operations per row and, unlike ``lax.top_k``, does not grow
with the rank asked for.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax import custom_batching, lax

Array = jax.Array

_INT_FOR_FLOAT = {
    jnp.dtype(jnp.float32): (jnp.int32, 32),
    jnp.dtype(jnp.float64): (jnp.int64, 64),
}


def _int_type(dtype) -> tuple:
    try:
        return _INT_FOR_FLOAT[jnp.dtype(dtype)]
    except KeyError:
        raise ValueError(f"ordered keys need float32 or float64 data, got {dtype}.") from None


def ordered_key(x: Array) -> Array:
    """Integer key with ``key(a) < key(b)`` iff ``a < b`` for finite floats.

    The IEEE sign-magnitude bit pattern is reinterpreted as a signed integer and,
    for negative values, the magnitude bits are flipped. ``-0.0`` gets the key
    of ``+0.0`` so that equal values have equal keys. Only integer operations
    are used: float arithmetic on XLA's CPU backend flushes subnormals to zero.
    The map is an involution on the bits, so :func:`key_to_value` inverts it.
    """
    int_type, bits = _int_type(x.dtype)
    b = lax.bitcast_convert_type(x, int_type)
    magnitude = jnp.array((1 << (bits - 1)) - 1, int_type)
    key = b ^ ((b >> (bits - 1)) & magnitude)
    return jnp.where(key == -1, jnp.zeros((), int_type), key)  # -1 is the key of -0.0


def canonical_zero(x: Array) -> Array:
    """``x`` with ``-0.0`` replaced by ``+0.0``, bit-exactly otherwise.

    ``lax.top_k`` orders ``-0.0`` below ``+0.0``; after this, equal values are
    ties and go to the lower index. Integer operations only (see ordered_key).
    """
    int_type, bits = _int_type(x.dtype)
    b = lax.bitcast_convert_type(x, int_type)
    negative_zero = jnp.array(-(1 << (bits - 1)), int_type)
    return lax.bitcast_convert_type(jnp.where(b == negative_zero, jnp.zeros((), int_type), b), x.dtype)


def key_to_value(key: Array, dtype) -> Array:
    """Inverse of :func:`ordered_key`."""
    int_type, bits = _int_type(dtype)
    key = key.astype(int_type)
    magnitude = jnp.array((1 << (bits - 1)) - 1, int_type)
    return lax.bitcast_convert_type(key ^ ((key >> (bits - 1)) & magnitude), dtype)


def smallest_key_where(
    keys: Array, predicate: Callable[[Array], Array], bits: int
) -> Array:
    """Smallest integer ``c`` in ``[min(keys), max(keys)]`` with ``predicate(c)``.

    ``predicate`` must be monotone (False then True) and True at ``max(keys)``.
    When it changes value only at data keys (counts and masses of ``keys <= c``
    do), the result is a data key. Overflow-free midpoint: ``(lo & hi) +
    ((lo ^ hi) >> 1)`` is the floor of the mean for any signed integers.
    """
    lo = jnp.min(keys) - 1  # predicate(lo) is False: nothing lies at or below it
    hi = jnp.max(keys)

    def halve(_, bracket):
        lo, hi = bracket
        mid = (lo & hi) + ((lo ^ hi) >> 1)
        ok = predicate(mid)
        return jnp.where(ok, lo, mid), jnp.where(ok, mid, hi)

    # Once hi - lo == 1 the midpoint is lo and the bracket stops moving.
    _, hi = lax.fori_loop(0, bits + 1, halve, (lo, hi))
    return hi


def kth_smallest(x: Array, k: Array | int) -> Array:
    """The ``k``-th smallest entry of a 1-D array (``k`` = 1 is the minimum).

    ``k`` may be traced (dynamic), unlike ``lax.top_k``. Exact.
    """
    _, bits = _int_type(x.dtype)
    keys = ordered_key(x)
    k = jnp.asarray(k)
    c = smallest_key_where(keys, lambda c: jnp.sum(keys <= c) >= k, bits)
    return key_to_value(c, x.dtype)


def kth_largest(x: Array, k: Array | int) -> Array:
    """The ``k``-th largest entry of a 1-D array (``k`` = 1 is the maximum). Exact."""
    return kth_smallest(x, x.shape[-1] + 1 - jnp.asarray(k))


# Extra float32 candidates when preselecting float64 rows (see top_k_indices).
PRESELECT_SLACK = 16


def _preselected_top_k_indices(x: Array, k: int) -> Array:
    """``lax.top_k(x, k)[1]`` for canonical x (..., n), exactly; float64 rows are
    preselected on their float32 rounding (see :func:`top_k_indices`)."""
    count = k + PRESELECT_SLACK
    if x.dtype != jnp.float64 or count >= x.shape[-1]:
        return lax.top_k(x, k)[1]
    # The barrier keeps XLA (CPU) from fusing the top-k into its consumers' loops.
    f, pos = lax.optimization_barrier(lax.top_k(x.astype(jnp.float32), count))
    # One decision for every row: under vmap a per-row predicate would turn the
    # cond into a select that runs both branches.
    exact = jnp.all(f[..., count - 1] < f[..., k - 1])

    def finish() -> Array:
        candidates = jnp.take_along_axis(x, pos, axis=-1)
        return jnp.take_along_axis(pos, lax.top_k(candidates, k)[1], axis=-1)

    return lax.cond(exact, finish, lambda: lax.top_k(x, k)[1])


@functools.lru_cache(maxsize=None)
def _top_k_indices_fn(k: int):
    """The custom-vmapped index function for one static k: vmapped, it calls
    itself on the batched array, so the preselection's single cond sees every row
    of every vmap level at once."""

    @custom_batching.custom_vmap
    def indices(x):
        return _preselected_top_k_indices(x, k)

    @indices.def_vmap
    def _batched(axis_size, in_batched, x):
        if not in_batched[0]:
            return indices(x), False
        return indices(x), True

    return indices


def top_k_indices(x: Array, k: int) -> Array:
    """Indices of the ``k`` largest entries along the last axis, largest first,
    ties to the lower index, ``-0.0`` equal to ``+0.0``: exactly
    ``lax.top_k(canonical_zero(x), k)[1]``.

    XLA's CPU top-k is fast only for float32 (float64 falls back to a sort, about
    30x slower), so float64 rows are preselected on their float32 rounding f.
    Rounding is monotone, so the sorted f are the rounded sorted x, and an entry
    outside the C = k + PRESELECT_SLACK largest f has ``f <= f_(C)``; when
    ``f_(C) < f_(k)`` for every row, such an entry lies below the k-th largest x,
    so the float64 top k is the top k of the C candidates (listed in increasing
    position among equal f, hence among equal x: the tie order is kept).
    Otherwise (entries collapsing to one float32 at the boundary) every row takes
    the float64 top-k. Integer output: no gradient flows through it.
    """
    x = lax.stop_gradient(canonical_zero(jnp.asarray(x)))
    if not 1 <= k <= x.shape[-1]:
        raise ValueError(f"k must be in [1, n] = [1, {x.shape[-1]}], got {k}.")
    return _top_k_indices_fn(int(k))(x)


def top_k(x: Array, k: int) -> tuple[Array, Array]:
    """``(values, indices)``, bitwise ``lax.top_k(canonical_zero(x), k)``, with the
    float64 preselection of :func:`top_k_indices`."""
    idx = top_k_indices(x, k)
    return jnp.take_along_axis(canonical_zero(jnp.asarray(x)), idx, axis=-1), idx
