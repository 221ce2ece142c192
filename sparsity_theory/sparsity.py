"""Sparse sets, tail masses and certified windows (Definition 3.2 and Section 4).

Two different integers are called k in the paper and are kept apart here:

* the *number of small entries* ``|S_eps(s)| = #{j : s_j <= eps}``; the paper
  calls a softmax row "(k, eps)-sparse" when this count is at least k
  (Definition 3.2): k counts SMALL entries;
* the *window size* k of top-k attention (Definition 3.3) counts KEPT entries.

Everything is computed from the logits ``u`` of a row, in log space: ``log s_j =
u_j - logsumexp(u)``; tail masses are returned as ``log tau`` so that masses far
below the smallest float (e.g. 1e-400) stay exact.

Tail mass ``tau(k) = sum_{j not in T_k} s_j`` for a set of windows at once: one
``lax.top_k`` with the largest window K gives the kept logits sorted; the mass
outside the top K is one masked log-sum-exp over the row, and the masses for
every smaller window follow from a reverse cumulative log-sum-exp over the K kept
logits. No whole row is sorted and no ``1 - head`` is ever formed, so tiny tails
keep full relative precision.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sparsity_theory import _checks, selection
from sparsity_theory.attention import _check_logits

Array = jax.Array


class WindowProfile(NamedTuple):
    """Per-row quantities for every window k = 1..K (index k - 1).

    ``top_logits`` / ``top_indices``: the K largest logits, largest first (ties
    to the lower index); ``log_outside`` / ``log_outside_sq`` / ``max_outside``:
    unnormalised ``log sum exp(u_j)``, ``log sum exp(2 u_j)`` and ``max u_j``
    over the entries outside the top K (-inf when there are none);
    ``log_tail[k-1] = log tau(k)``; ``log_head[k-1] = log(1 - tau(k))``;
    ``log_tail_sq`` / ``log_head_sq``: log of the sum of ``s_j^2`` over dropped /
    kept entries; ``log_first_dropped[k-1] = log s_(k+1)``, the largest dropped
    entry (-inf when nothing is dropped).
    """

    log_normaliser: Array
    top_logits: Array
    top_indices: Array
    log_outside: Array
    log_outside_sq: Array
    max_outside: Array
    log_tail: Array
    log_head: Array
    log_tail_sq: Array
    log_head_sq: Array
    log_first_dropped: Array


def suffix_logsumexp(x: Array) -> Array:
    """``out[i] = logsumexp(x[i:])`` for a 1-D array, as a sequential scan.

    A scan compiles its body once; an associative scan (or ``lax.cumlogsumexp``)
    unrolls log2(K) levels and compiled several times slower here, and
    ``lax.cumlogsumexp`` also ran ~17x slower on CPU. Each step is one logaddexp,
    so tails of any size keep full relative precision.
    """

    def step(acc, xi):
        acc = jnp.logaddexp(acc, xi)
        return acc, acc

    return lax.scan(step, jnp.full((), -jnp.inf, x.dtype), x, reverse=True)[1]


def prefix_logsumexp_sorted(x: Array) -> Array:
    """``out[i] = logsumexp(x[:i+1])`` for ``x`` sorted in decreasing order.

    Relative to the first (largest) entry every term is in (0, 1] and the partial
    sums are >= 1, so a plain cumulative sum is accurate; terms that underflow
    are below the sum's rounding.
    """
    return x[0] + jnp.log(jnp.cumsum(jnp.exp(x - x[0])))


def _reverse_cumulative_after(x: Array) -> Array:
    """``out[i] = logsumexp(x[i+1:])`` (-inf for the last index)."""
    rc = suffix_logsumexp(x)
    return jnp.concatenate([rc[1:], jnp.full((1,), -jnp.inf, x.dtype)])


def profile_from_top(log_normaliser: Array, top: Array, top_indices: Array, log_outside: Array,
                     log_outside_sq: Array, max_outside: Array) -> WindowProfile:
    """The :class:`WindowProfile` of a row from its K largest logits (sorted,
    largest first) and three summaries of the entries outside them.

    Everything else follows without the row (``log_normaliser``, the row's
    ``logsumexp``, equals ``logaddexp(logsumexp(top), log_outside)`` to
    rounding): the tails are reverse cumulative sums of the top K plus the
    outside sum, never ``1 - head``. Shared by the dense row
    (:func:`window_profile`) and the key-streamed rows
    (:func:`sparsity_theory.stream_rows`), which never hold a whole row.
    """
    lse = log_normaliser
    log_tail = jnp.logaddexp(log_outside, _reverse_cumulative_after(top)) - lse
    log_tail_sq = jnp.logaddexp(log_outside_sq, _reverse_cumulative_after(2 * top)) - 2 * lse
    log_head = prefix_logsumexp_sorted(top) - lse
    log_head_sq = prefix_logsumexp_sorted(2 * top) - 2 * lse
    first_dropped = jnp.concatenate([top[1:], max_outside[None]]) - lse
    return WindowProfile(
        lse, top, top_indices, log_outside, log_outside_sq, max_outside, log_tail, log_head,
        log_tail_sq, log_head_sq, first_dropped,
    )


def window_profile(u: Array, max_window: int) -> WindowProfile:
    """Tail masses and related sums of one row of logits ``u`` (n,) for every
    window 1..max_window, from one top-k and one masked pass (no sort).

    Building block of :func:`log_tail_mass` and of
    :func:`sparsity_theory.sparse_attention_errors`; works on one row (vmap it).
    """
    # The barrier stops XLA (CPU) from fusing the top-k into the consumers'
    # loops and recomputing it per element: 20x slower without it (jax 0.10.2).
    # selection.top_k_indices is lax.top_k's result, float64 rows preselected
    # on their float32 rounding (exact; about 15x faster on CPU).
    idx = lax.optimization_barrier(selection.top_k_indices(u, max_window))
    # Gather the kept logits from u itself: canonical_zero is a bitcast, through
    # which jax.grad would give the kept logits a zero gradient.
    top = u[idx]
    u_out = jnp.where(jnp.ones(u.shape, bool).at[idx].set(False), u, -jnp.inf)
    return profile_from_top(jax.nn.logsumexp(u), top, idx, jax.nn.logsumexp(u_out), jax.nn.logsumexp(2 * u_out),
                            jnp.max(u_out))


def window_positions(windows: tuple[int, ...]) -> Array:
    """0-based indices of the windows into a :class:`WindowProfile`'s arrays."""
    return jnp.asarray(windows, jnp.int32) - 1


def _as_batch(logits) -> Array:
    logits = jnp.asarray(logits)
    if not jnp.issubdtype(logits.dtype, jnp.floating):
        logits = logits.astype(jnp.result_type(float))
    return logits


@functools.partial(jax.jit, static_argnames="windows")
def _log_tail_mass(logits: Array, windows: tuple[int, ...]) -> Array:
    pos = window_positions(windows)

    def row(u):
        return window_profile(u, max(windows)).log_tail[pos]

    return jnp.vectorize(row, signature="(n)->(w)")(logits)


def log_tail_mass(logits: Array, windows) -> Array:
    """``log tau_i(k)`` for each window k in ``windows``: shape (..., len(windows)).

    ``tau_i(k) = sum_{j not in T_k(i)} s_ij`` is the softmax mass that top-k
    attention drops from row i (Definition 3.4); ``tau(n) = 0`` gives -inf.
    """
    _check_logits(logits)
    windows = _checks.check_windows(windows, jnp.shape(logits)[-1])
    return _log_tail_mass(_as_batch(logits), windows)


def tail_mass(logits: Array, windows) -> Array:
    """``tau_i(k)`` for each window k (see :func:`log_tail_mass`); underflows to 0
    below the smallest float, where :func:`log_tail_mass` stays exact."""
    return jnp.exp(log_tail_mass(logits, windows))


def log_eps_array(eps, dtype) -> Array:
    """``log eps`` in ``dtype``, validated. For concrete eps the log is taken on the
    host in NumPy float64 (whatever JAX's 64-bit mode): on XLA's CPU backend a
    subnormal eps flushes to zero, and an eps below the float32 range (1e-50 with
    float32 logits) would round to 0 before its log, while its log (-115) is an
    ordinary float32.

    A traced eps already has its JAX dtype: its log is taken in the widest float
    JAX holds here (float64 in 64-bit mode, else float32: asking for float64
    without it would silently give float32 anyway), subnormals included."""
    _checks.check_eps(eps)
    if _checks.is_concrete(eps):
        return jnp.asarray(np.log(np.asarray(eps, np.float64)), dtype)
    widest = jax.dtypes.canonicalize_dtype(jnp.float64)  # float32 without 64-bit mode
    return log_positive(jnp.asarray(eps).astype(widest)).astype(dtype)


def log_positive(x: Array) -> Array:
    """``log x`` for positive floats, subnormals included.

    XLA's CPU backend treats subnormal inputs as zero (log = -inf). A subnormal's
    bits, read as an integer m, give ``x = m * 2^(min_exponent - mantissa_bits)``
    exactly, so its log is ``log m + (min_exponent - mantissa_bits) log 2``.
    """
    info = jnp.finfo(x.dtype)
    int_type, _ = selection._int_type(x.dtype)
    m = lax.bitcast_convert_type(x, int_type).astype(x.dtype)  # subnormal: bits = m
    log_sub = jnp.log(m) + (info.minexp - info.nmant) * np.log(2.0)
    return jnp.where(x < info.smallest_normal, log_sub, jnp.log(x))


@jax.jit
def _num_small(logits: Array, log_eps: Array) -> Array:
    # Every entry is at most 1: clamp at log 1 = 0, so that eps = 1 counts all n
    # even when rounding puts the largest u_j - lse a few ulps above 0.
    log_s = jnp.minimum(logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True), 0.0)
    below = log_s.reshape(log_s.shape + (1,) * log_eps.ndim) <= log_eps
    return selection.count_true(below, axis=logits.ndim - 1)


def num_small_entries(logits: Array, eps) -> Array:
    """``|S_eps(s_i)| = #{j : s_ij <= eps}`` (Definition 3.2), per row.

    ``eps`` is a scalar or an array of thresholds in (0, 1]; the result has shape
    ``logits.shape[:-1] + eps.shape``. The row is "(k, eps)-sparse" in the paper's
    sense when this count is at least k.
    """
    _check_logits(logits)
    logits = _as_batch(logits)
    return _num_small(logits, log_eps_array(eps, logits.dtype))


def num_effective_entries(logits: Array, eps) -> Array:
    """``E_i(eps) = #{j : s_ij > eps} = n - |S_eps(s_i)|`` (Section 5, Figure 1)."""
    n = jnp.shape(logits)[-1]
    return n - num_small_entries(logits, eps)


# Rows are searched a few at a time: lax.map over chunks of at most about this
# many entries (see rows_per_chunk), vmap within a chunk. A chunk's keys and
# masses stay in the cores' caches over its 33 (float32) or 65 (float64)
# bisection passes (certified windows, k-th smallest entries), where a whole
# block side by side streamed every row from memory on each pass; and a chunk
# of several rows still gives XLA work to split over the cores, which one row
# at a time did not (each pass ran on one core). The results are the same bit
# for bit.
# certified_window of 128 float32 rows, 3 eps, 2-core CPU, medians of 9: one
# row at a time -> chunks of 2, 4, 8 rows: n = 16384 112 -> 59, 48, 43 ms;
# n = 65536 306 -> 188, 172, 222 ms; n = 4096 14.0 -> 12.5, 34.4 (sic), 12.9
# ms, and the whole block side by side 10.1 ms. (Before, one row at a time
# from n = 4096 on had replaced the whole block side by side: float64 n = 4096
# 175 -> 84 ms, 16384 924 -> 341-549, 65536 2104 -> 700-811.)
ROW_CHUNK_ENTRIES = 1 << 17


def rows_per_chunk(r: int, n: int) -> int:
    """The largest divisor of r that is at most ``max(2, ROW_CHUNK_ENTRIES // n)``:
    chunks that tile the r rows exactly, so the rows are never copied to pad
    the last chunk (for evaluate_rows' blocks of 128 rows, the bound itself)."""
    limit = min(r, max(2, ROW_CHUNK_ENTRIES // max(n, 1)))
    return max(d for d in range(1, limit + 1) if r % d == 0)


def over_rows(row_fn, rows: Array, *per_row: Array):
    """``row_fn(row, *entries)`` for each row of ``rows`` (r, n) and the matching
    entries of ``per_row`` (r, ...): side by side (vmap) in chunks of
    :func:`rows_per_chunk` rows, one chunk after another (lax.map)."""
    r, n = rows.shape
    chunk = rows_per_chunk(r, n) if r else 0
    if chunk == r:
        return jax.vmap(row_fn)(rows, *per_row)
    chunks = tuple(x.reshape((r // chunk, chunk) + x.shape[1:]) for x in (rows,) + per_row)
    out = lax.map(lambda args: jax.vmap(row_fn)(*args), chunks)
    return jax.tree_util.tree_map(lambda a: a.reshape((r,) + a.shape[2:]), out)


@jax.jit
def _log_kth_smallest(logits: Array, k: Array) -> Array:
    def row(u, k):
        return selection.kth_smallest(u, k) - jax.nn.logsumexp(u)

    n = logits.shape[-1]
    shape = jnp.broadcast_shapes(logits.shape[:-1], k.shape)
    rows = jnp.broadcast_to(logits, shape + (n,)).reshape(-1, n)
    return over_rows(row, rows, jnp.broadcast_to(k, shape).reshape(-1)).reshape(shape)


def log_kth_smallest_entry(logits: Array, k) -> Array:
    """``log`` of the k-th smallest softmax entry of each row (k = 1: the minimum).

    Theorem 4.3 guarantees at least k entries <= eps_k; that holds iff this
    k-th smallest entry is <= eps_k. ``k`` may be an array broadcast against the
    rows. Exact (bisection over the ordered float keys, no sort).
    """
    _check_logits(logits)
    n = jnp.shape(logits)[-1]
    if _checks.is_concrete(k):
        ks = np.asarray(k)
        if not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 1) or np.any(ks > n):
            raise ValueError(f"k must be integers in [1, n] = [1, {n}], got {k!r}.")
    return _log_kth_smallest(_as_batch(logits), jnp.asarray(k))


# Relative slack, in units of the float's epsilon, for the tie split at the
# threshold: (G - eps) / p is a ratio of rounded masses, so an exact integer can
# come out a few ulps above itself.
_ULPS = 16.0


def _certified_window_row(u: Array, log_eps: Array) -> Array:
    n = u.shape[-1]
    lse = jax.nn.logsumexp(u)
    keys = selection.ordered_key(u)

    # s_j / eps, computed once: each bisection pass is then a masked sum, not an
    # exp. Entries that underflow are negligible against the threshold 1, and an
    # overflow to inf still answers "mass > eps" correctly.
    relative = jnp.exp(u - lse - log_eps)

    # t* = smallest value whose mass at-or-below exceeds eps: every entry above
    # t* must be kept; of the entries tied at t*, as many as bring the tail to eps.
    c = selection.smallest_key_with_sum(keys, relative, lambda mass: mass > 1.0)
    above = selection.count_true(keys > c)
    tied = selection.count_true(keys == c)
    log_g = jax.nn.logsumexp(jnp.where(keys <= c, u, -jnp.inf)) - lse
    log_p = selection.key_to_value(c, u.dtype) - lse
    excess = jnp.exp(log_g - log_p) - jnp.exp(log_eps - log_p)
    excess = excess * (1 - _ULPS * jnp.finfo(u.dtype).eps)
    from_tie = jnp.minimum(tied.astype(u.dtype), jnp.maximum(jnp.ceil(excess), 0))
    return jnp.clip(above + from_tie.astype(above.dtype), 1, n)


def _certified_windows_row(u: Array, log_eps: Array) -> Array:
    """Certified windows of one row at every threshold of ``log_eps`` (E,)."""
    return jax.vmap(_certified_window_row, in_axes=(None, 0))(u, log_eps)


def certified_windows_of_rows(logits: Array, log_eps: Array) -> Array:
    """Certified windows of rows (r, n) at thresholds ``log_eps`` (E,): (r, E)."""
    return over_rows(lambda u: _certified_windows_row(u, log_eps), logits)


def small_counts_and_certified_windows_of_rows(logits: Array, log_eps: Array) -> tuple:
    """``(num_small, certified_window)`` of rows (r, n) at thresholds ``log_eps``
    (E,), each (r, E): both per row in :func:`over_rows`' chunks, whose rows stay
    in cache between the count's passes and the bisection's (the count over a
    whole block of 128 rows of 65536 read them from memory)."""
    return over_rows(lambda u: (_num_small(u, log_eps), _certified_windows_row(u, log_eps)),
                     logits)


@jax.jit
def _certified_window(logits: Array, log_eps: Array) -> Array:
    batch, n = logits.shape[:-1], logits.shape[-1]
    windows = certified_windows_of_rows(logits.reshape(-1, n), log_eps.reshape(-1))
    return windows.reshape(batch + log_eps.shape)


def certified_window(logits: Array, eps) -> Array:
    """Smallest window k in [1, n] whose tail mass ``tau(k) <= eps``, per row.

    The per-row oracle window: top-k attention with this k drops at most eps of
    the softmax mass. ``eps`` is a scalar or array; the result has shape
    ``logits.shape[:-1] + eps.shape``. Exact up to rounding of the masses at the
    boundary ``tau(k) = eps``; found by bisection on the value threshold, not by
    sorting the row.
    """
    _check_logits(logits)
    logits = _as_batch(logits)
    return _certified_window(logits, log_eps_array(eps, logits.dtype))
