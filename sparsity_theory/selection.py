"""Exact order statistics and value thresholds without sorting.

On CPU, XLA's full sort is about 30x slower than NumPy's, so nothing here sorts a
whole row. Instead a floating-point value is mapped to an integer *key* whose
integer order is the float order, and a monotone predicate of the entries at or
below a key is bisected over the integer keys. After each halving the bracket is
moved in to the nearest data keys, so the search ends as soon as one data key is
left in it: exact, not an approximation to a tolerance, whatever the spread of
the row.

Each halving is one pass over the row (a comparison and one reduction that also
finds the data keys on either side of the probe). Plain halving took 33 (float32)
or 65 (float64) passes; the snapped bracket takes about ``log2`` of the key range
over the gap between neighbouring data keys: 7-22 passes (medians 11-18) for
certified windows of Gaussian rows of 1024-65536 entries, in float32 and
float64 alike. Unlike ``lax.top_k``, the cost does not grow with the rank asked
for.

The top k itself (:func:`top_k`, :func:`block_top_k`) is ``lax.top_k``'s result
bit for bit, computed faster on CPU: float64 rows are preselected on their
float32 rounding, and long rows go through a two-stage selection (the maxima of
groups of 16 entries first, then only the entries of the k best groups).
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


def count_true(mask: Array, axis: int = -1) -> Array:
    """``jnp.sum(mask, axis)`` of a boolean array, the same values and dtype (the
    default integer), accumulated in int32 when the axis allows it.

    In 64-bit mode ``jnp.sum`` of booleans accumulates in int64, which XLA's CPU
    backend does not vectorise: counting 256 x 16384 comparisons took 6.3 ms
    that way and 1.2 ms in int32 (2 cores).
    """
    default = jax.dtypes.canonicalize_dtype(jnp.int64)
    if mask.shape[axis] >= 2**31:
        return jnp.sum(mask, axis=axis, dtype=default)
    return jnp.sum(mask, axis=axis, dtype=jnp.int32).astype(default)


def smallest_key_with_sum(
    keys: Array, weights: Array | None, reached: Callable[[Array], Array]
) -> Array:
    """Smallest data key ``c`` of a 1-D ``keys`` with ``reached(S(c))``, where
    ``S(c) = sum(weights[keys <= c])`` (``weights`` None: the count ``#{keys <= c}``).

    ``reached`` must be False at ``S = 0`` and True at the whole row's sum, and
    ``S`` must grow with ``c`` (non-negative weights), so that ``reached(S(c))``
    is False then True and changes value only at data keys.

    A bisection over the integer keys with the bracket ``(lo, hi]``
    (``reached`` False at ``lo``, True at ``hi``) moved in after each pass to the
    data keys next to the probe: on True, ``hi`` becomes the largest data key
    at or below it; on False, ``lo`` becomes one below the smallest data key
    above it. Neither changes ``S`` at the ends, so the invariant holds, the
    bracket at least halves, and the search ends when ``hi = lo + 1``: the same
    key as plain halving, in fewer passes. One variadic reduction per pass
    gives ``S`` and both neighbours (three separate reductions each wrote
    their masked row out: 2-3x slower). ``S`` is the masked sum
    ``jnp.sum(jnp.where(keys <= c, weights, 0))``: the variadic reduction gave
    the same sums bit for bit on float32 and float64 rows of 7 to 65536
    entries, and the same certified windows in all 104 cases of issue 16's
    bitwise checks.
    Overflow-free midpoint: ``(lo & hi) + ((lo ^ hi) >> 1)`` is the floor of
    the mean for any signed integers.
    """
    int_type = keys.dtype
    smallest, largest = jnp.iinfo(int_type).min, jnp.iinfo(int_type).max
    if weights is None:
        weights, zero = jnp.ones_like(keys), jnp.zeros((), int_type)
    else:
        zero = jnp.zeros((), weights.dtype)

    def combine(a, b):
        return a[0] + b[0], jnp.maximum(a[1], b[1]), jnp.minimum(a[2], b[2])

    def not_closed(bracket):
        lo, hi = bracket
        return lo + 1 < hi  # hi - lo can overflow when the keys straddle zero

    def halve(bracket):
        lo, hi = bracket
        mid = (lo & hi) + ((lo ^ hi) >> 1)
        at_or_below = keys <= mid
        total, below, above = lax.reduce(
            (jnp.where(at_or_below, weights, zero), jnp.where(at_or_below, keys, smallest),
             jnp.where(at_or_below, largest, keys)),
            (zero, jnp.array(smallest, int_type), jnp.array(largest, int_type)),
            combine, (keys.ndim - 1,))
        ok = reached(total)
        # The clamps only act when ``reached`` breaks its contract (True at
        # S = 0, or False on the whole row): plain halving's answer then.
        return (jnp.where(ok, lo, jnp.minimum(above, hi) - 1),
                jnp.where(ok, jnp.maximum(below, lo + 1), hi))

    # lo: nothing lies at or below it, so S(lo) = 0 and reached is False there.
    _, hi = lax.while_loop(not_closed, halve, (jnp.min(keys) - 1, jnp.max(keys)))
    return hi


# Jitted: called eagerly, the bisection's loop body is a new function on every
# call, so each call compiled its programs again.
@jax.jit
def kth_smallest(x: Array, k: Array | int) -> Array:
    """The ``k``-th smallest entry of a 1-D array (``k`` = 1 is the minimum).

    ``k`` may be traced (dynamic), unlike ``lax.top_k``. Exact.
    """
    keys = ordered_key(x)
    k = jnp.asarray(k)
    c = smallest_key_with_sum(keys, None, lambda count: count >= k)
    return key_to_value(c, x.dtype)


def kth_largest(x: Array, k: Array | int) -> Array:
    """The ``k``-th largest entry of a 1-D array (``k`` = 1 is the maximum). Exact."""
    return kth_smallest(x, x.shape[-1] + 1 - jnp.asarray(k))


# Entries per group in block_top_k's first stage.
GROUP = 16
# The two-stage selection is used only when the k chosen groups hold at most
# 1 / TWO_STAGE_RATIO of a row (see two_stage_pays).
TWO_STAGE_RATIO = 16


def two_stage_pays(n: int, k: int, group: int = GROUP) -> bool:
    """Whether :func:`block_top_k` beats one ``lax.top_k`` on rows of length n.

    Its second stage still takes a top-k of ``k * group`` entries, and its first
    a reduction of the row and a top-k of the n / group maxima, so it pays only
    when ``k * group`` is well below n: at least ``TWO_STAGE_RATIO`` times.
    Measured on CPU (64 float32 Gaussian rows, group 16, medians on 2 shared
    cores, so +-20%): n = 65536, k = 16: 6.5 -> 2.0 ms, k = 64: 11.0 -> 5.1
    ms, k = 256: 13.1 -> 10.9 ms; n = 16384, k = 64: 2.9 -> 2.2 ms; but at
    n / (k * group) = 4 it was slower (n = 16384, k = 256: 7.0 -> 8.1 ms;
    n = 4096, k = 64: 1.5 -> 1.7 ms).
    """
    return group >= 2 and k * group * TWO_STAGE_RATIO <= n


def group_candidates(x: Array, k: int, group: int = GROUP) -> Array:
    """Positions (..., k * group) of the entries of the k groups (``group``
    consecutive entries of x (..., n), n a multiple of ``group``) with the largest
    maxima, ties to the lower group, listed in increasing position.

    They hold the top k of x in the order (value desc, position asc), which is
    ``lax.top_k``'s order (see :func:`block_top_k` for the proof), so a top-k of
    the gathered entries is the top-k of x. x must be canonical
    (:func:`canonical_zero`): otherwise a group's maximum could be ``-0.0``
    while ``lax.top_k`` would rank its ``+0.0`` first.
    """
    n = x.shape[-1]
    if n % group:
        raise ValueError(f"the row length {n} is not a multiple of the group {group}.")
    maxima = jnp.max(x.reshape(x.shape[:-1] + (n // group, group)), axis=-1)
    # Ascending group order keeps the gathered entries in increasing position,
    # so the final top-k still breaks ties by position (the lower index first).
    # The sort is of k group indices per row, not of the row.
    chosen = lax.sort(lax.top_k(maxima, k)[1], dimension=maxima.ndim - 1)
    positions = chosen[..., :, None] * group + jnp.arange(group, dtype=chosen.dtype)
    return positions.reshape(x.shape[:-1] + (k * group,))


def _two_stage_top_k(x: Array, k: int, group: int) -> tuple[Array, Array]:
    """``lax.top_k(x, k)`` for canonical x (..., n) by two stages, exactly."""
    n = x.shape[-1]
    pad = -n % group
    if pad:  # -inf padding ranks after every entry of x (value, then index)
        x = jnp.concatenate([x, jnp.full(x.shape[:-1] + (pad,), -jnp.inf, x.dtype)], axis=-1)
    positions = group_candidates(x, k, group)
    values, chosen = lax.top_k(jnp.take_along_axis(x, positions, axis=-1), k)
    return values, jnp.take_along_axis(positions, chosen, axis=-1)


def block_top_k(x: Array, k: int, group: int = GROUP) -> tuple[Array, Array]:
    """``(values, indices)`` of the k largest entries along the last axis,
    bitwise ``lax.top_k(canonical_zero(x), k)``, by a two-stage selection
    (x without NaN).

    The row (..., n) is split into groups of ``group`` consecutive entries (the
    last one padded with -inf), each group is reduced to its maximum, the k
    groups with the largest maxima are chosen by ``lax.top_k`` over the n / group
    maxima (ties to the lower group), listed in increasing group order, and the
    final ``lax.top_k`` runs over their k * group entries only.

    Exact: order the entries by (value desc, index asc), ``lax.top_k``'s order
    (the -inf padding comes after every entry of x, so the top k of the padded
    row is the top k of x). A group's maximum, ranked with the group index,
    ranks as the group's lowest-index maximal entry, its representative (groups
    are ranges of consecutive indices). If an entry x_i of the true top k lay in
    a group g outside the k chosen ones, each chosen group's representative would
    rank before g's, which ranks before or at x_i: k entries before x_i, a
    contradiction. So the gathered entries hold the top k; they are listed in
    increasing index, so the final top-k's ties to the lower position are ties to
    the lower index, and its result is the top k of x in ``lax.top_k``'s order.

    Two stages whenever k is at most the number of groups (exact, but faster
    only when :func:`two_stage_pays`: :func:`top_k` asks that), else one
    ``lax.top_k``. Its stages are ``lax.top_k`` in x's dtype: on CPU use
    :func:`top_k` for float64 rows, which preselects them on float32.
    """
    x = canonical_zero(jnp.asarray(x))
    n = x.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n] = [1, {n}], got {k}.")
    if group < 1:
        raise ValueError(f"group must be at least 1, got {group}.")
    if group == 1 or k > -(-n // group):
        return lax.top_k(x, k)
    return _two_stage_top_k(x, k, group)


# Extra float32 candidates when preselecting float64 rows (see top_k_indices).
PRESELECT_SLACK = 16


def float32_top_k(x: Array, k: int) -> tuple[Array, Array]:
    """``lax.top_k(x, k)`` for canonical float32 x, by two stages when it pays."""
    if two_stage_pays(x.shape[-1], k):
        return _two_stage_top_k(x, k, GROUP)
    return lax.top_k(x, k)


def _preselected_top_k_indices(x: Array, k: int) -> Array:
    """``lax.top_k(canonical_zero(x), k)[1]`` for x (..., n), exactly; float64
    rows are preselected on their float32 rounding (see :func:`top_k_indices`).

    ``canonical_zero`` is applied to what each step reads, not to the whole
    float64 row first: that pass wrote a copy of the row and took half of the
    selection's time (64 rows of 65536: 14.7 of 27 ms, 2-core CPU). Rounding
    commutes with it (``-0.0`` rounds to ``-0.0``), so the candidates are the same.
    """
    count = k + PRESELECT_SLACK
    if x.dtype != jnp.float64 or count >= x.shape[-1]:
        x = canonical_zero(x)
        return float32_top_k(x, k)[1] if x.dtype == jnp.float32 else lax.top_k(x, k)[1]
    # The barrier keeps XLA (CPU) from fusing the top-k into its consumers' loops.
    # canonical_zero: float64 values below the float32 range round to -0.0.
    f, pos = lax.optimization_barrier(
        float32_top_k(canonical_zero(x.astype(jnp.float32)), count))
    # One decision for every row: under vmap a per-row predicate would turn the
    # cond into a select that runs both branches.
    exact = jnp.all(f[..., count - 1] < f[..., k - 1])

    def finish() -> Array:
        candidates = canonical_zero(jnp.take_along_axis(x, pos, axis=-1))
        return jnp.take_along_axis(pos, lax.top_k(candidates, k)[1], axis=-1)

    return lax.cond(exact, finish, lambda: lax.top_k(canonical_zero(x), k)[1])


@functools.lru_cache(maxsize=None)
def _top_k_indices_fn(k: int):
    """The custom-vmapped index function for one static k: vmapped, it calls
    itself on the batched array, so the preselection's single cond sees every row
    of every vmap level at once. Jitted: called eagerly, a bare custom_vmap traces
    its body again and compiles each of its inner jitted pieces on every call
    (about 0.15 s a call on 2 cores)."""

    @custom_batching.custom_vmap
    def indices(x):
        return _preselected_top_k_indices(x, k)

    @indices.def_vmap
    def _batched(axis_size, in_batched, x):
        return indices(x), in_batched[0]

    return jax.jit(indices)


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
    the float64 top-k. The float32 top-k (of float32 rows, and the float64
    rows' preselection) is :func:`block_top_k`'s two-stage selection on long
    rows (:func:`two_stage_pays`), bitwise ``lax.top_k`` as well. Integer
    output: no gradient flows through it.
    """
    x = lax.stop_gradient(jnp.asarray(x))
    if not 1 <= k <= x.shape[-1]:
        raise ValueError(f"k must be in [1, n] = [1, {x.shape[-1]}], got {k}.")
    return _top_k_indices_fn(int(k))(x)


def top_k(x: Array, k: int) -> tuple[Array, Array]:
    """``(values, indices)``, bitwise ``lax.top_k(canonical_zero(x), k)``, with the
    float64 preselection of :func:`top_k_indices`."""
    idx = top_k_indices(x, k)
    return canonical_zero(jnp.take_along_axis(jnp.asarray(x), idx, axis=-1)), idx
