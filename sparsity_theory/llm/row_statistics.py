"""The paper's per-row quantities on causal attention rows (real models).

Row i of a causal attention head sees ``n_i = i + 1`` keys; its scores are
``u_ij = <q_i, k_j> / sqrt(head_dim)`` for ``j <= i`` and its softmax row is
``s_ij = exp(u_ij - logsumexp_j u_ij)``. For every row this module measures, from
one descending sort of the visible scores (in log space throughout):

* the certified window ``k_eps`` (smallest k with tail mass ``tau(k) <= eps``), the
  effective entries ``E(eps) = #{j : s_ij > eps}`` (Definition 3.2, Section 5) and
  ``log tau(k)`` at fixed windows (Definition 3.4; ``-inf`` once k >= n_i);
* the empirical score mean ``mu_i`` and spread ``sigma_i`` (population standard
  deviation over the n_i visible scores: the stand-in for the sub-Gaussian proxy
  of Lemma 4.2, which a real row does not have), the largest deviation
  ``max_j |u_ij - mu_i|`` and the range ``max_j u_ij - min_j u_ij``;
* ``log`` of the k-th smallest entry for ``k = ceil(q n_i)`` (Theorem 4.3 holds
  for the row iff it is at most eps_k);
* the mass on the first ``sinks`` keys (attention sinks) and on the ``local``
  most recent keys.

Tail masses come from a reverse cumulative log-sum-exp of the sorted row
(``sparsity.suffix_logsumexp``), never as ``1 - head``.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsity_theory.llm.llama import grouped_mix, grouped_scores, kept_keys
from sparsity_theory.selection import count_true
from sparsity_theory.sparsity import suffix_logsumexp

Array = jax.Array


class SparseRowErrors(NamedTuple):
    """Per head and sampled row: logs of ``||s_i - s^_i||_2``, of the output error
    ``||o_i - o^_i||_2`` and of the exact output's norm ``||o_i||_2``."""

    log_l2: Array
    log_output_error: Array
    log_output_norm: Array


class CausalRowStatistics(NamedTuple):
    """Per head and query row (shape (heads, n, ...)); row i sees i + 1 keys."""

    mean: Array  # mu_i
    sigma: Array  # sigma_i
    max_deviation: Array  # max_j |u_ij - mu_i|
    spread: Array  # max_j u_ij - min_j u_ij
    log_normaliser: Array  # logsumexp_j u_ij
    certified_window: Array  # (..., len(eps)) int
    effective_entries: Array  # (..., len(eps)) int
    log_tail_mass: Array  # (..., len(windows))
    log_kth_smallest: Array  # (..., len(small_fractions))
    log_sink_mass: Array  # mass on keys 0..sinks-1
    log_local_mass: Array  # mass on keys i-local+1..i


def small_counts(n: Array, fraction: float) -> Array:
    """``k = ceil(q n)`` clipped to [1, n]: the number of small entries Theorem 4.3
    is asked to guarantee in a row of n keys."""
    return jnp.clip(jnp.ceil(fraction * n - 1e-9).astype(jnp.int32), 1, n)


def _block_statistics(u, rows, log_eps, windows, fractions, sinks, local):
    """u: (H, m, N) scores of query rows ``rows`` (m,) against keys 0..N-1."""
    visible = jnp.arange(u.shape[-1])[None, :] <= rows[:, None]  # (m, N)
    count = (rows + 1).astype(u.dtype)
    masked = jnp.where(visible, u, -jnp.inf)
    srt = -jnp.sort(-masked, axis=-1)  # descending; the n_i visible scores first
    # Moments from the sorted copy: one array for every statistic (XLA may round
    # scores recomputed in different fusions differently: a one-key row got sigma 1e-18).
    first = jnp.arange(u.shape[-1])[None, :] < (rows + 1)[:, None]
    mean = jnp.sum(jnp.where(first, srt, 0.0), axis=-1) / count
    centred = jnp.where(first, srt - mean[..., None], 0.0)
    sigma = jnp.sqrt(jnp.sum(jnp.square(centred), axis=-1) / count)
    lse = jax.nn.logsumexp(masked, axis=-1)
    last = jnp.broadcast_to(rows, srt.shape[:-1])[..., None]
    lowest = jnp.take_along_axis(srt, last, axis=-1)[..., 0]
    spread = srt[..., 0] - lowest
    max_deviation = jnp.maximum(srt[..., 0] - mean, mean - lowest)
    # log tau(k) for k = 1..N: the mass outside the k largest.
    after = jnp.vectorize(suffix_logsumexp, signature="(n)->(n)")(srt)
    log_tail = jnp.concatenate([after[..., 1:], jnp.full(after.shape[:-1] + (1,), -jnp.inf, u.dtype)],
                               axis=-1) - lse[..., None]
    # A tail within a few ulps of eps counts as <= eps (the masses are rounded), as in
    # sparsity.certified_window: exact up to rounding at the boundary tau(k) = eps.
    slack = 16 * jnp.finfo(u.dtype).eps
    certified = 1 + count_true(log_tail[..., None, :] > log_eps[:, None] + slack, axis=-1)
    certified = jnp.minimum(certified, (rows + 1)[:, None])
    log_s = masked - lse[..., None]
    effective = count_true(log_s[..., None, :] > log_eps[:, None], axis=-1)
    tails = log_tail[..., jnp.asarray(windows) - 1]
    ks = jnp.stack([small_counts(rows + 1, q) for q in fractions], axis=-1)  # (m, F)
    idx = jnp.broadcast_to(rows[:, None] + 1 - ks, srt.shape[:-1] + (len(fractions),))
    kth = jnp.take_along_axis(srt, idx, axis=-1) - lse[..., None]
    j = jnp.arange(u.shape[-1])[None, :]
    sink = jax.nn.logsumexp(jnp.where(j < sinks, masked, -jnp.inf), axis=-1) - lse
    near = visible & (j > rows[:, None] - local)
    local_mass = jax.nn.logsumexp(jnp.where(near, u, -jnp.inf), axis=-1) - lse
    return CausalRowStatistics(mean, sigma, max_deviation, spread, lse,
                               certified, effective, tails, kth, sink, local_mass)


def _statistics(queries, rows, keys, log_eps, windows, fractions, sinks, local):
    """queries: (H, m, d) of rows ``rows``; keys: (KV, L, d), every key the rows see."""
    scale = 1.0 / math.sqrt(queries.shape[-1])
    u = grouped_scores(queries, keys) * jnp.asarray(scale, queries.dtype)
    return _block_statistics(u, rows, log_eps, windows, fractions, sinks, local)


@functools.partial(jax.jit, static_argnames=("groups", "windows", "fractions", "sinks", "local"))
def _grouped_statistics(queries, keys, grouped_rows, inverse, log_eps, groups, windows, fractions,
                        sinks, local):
    """Every group of rows in one compiled call: ``groups`` lists (key length,
    number of rows) in the order of ``grouped_rows``; ``inverse`` puts the rows
    back in the caller's order. One call per layer instead of about 180 eager
    operations (gathers, slices, joins), which took 1.1 of the 2.0 s of a
    1024-token profile of SmolLM2's 30 layers."""
    parts, start = [], 0
    for length, count in groups:
        rows = grouped_rows[start:start + count]
        start += count
        # Windows beyond this group's keys drop nothing: their tail is -inf, as at k >= n_i.
        w_group = tuple(min(w, length) for w in windows)
        part = _statistics(queries[:, rows], rows, keys[:, :length], log_eps, w_group, fractions,
                           sinks, local)
        if w_group != windows:
            cut = jnp.asarray([w > length for w in windows])
            part = part._replace(log_tail_mass=jnp.where(cut, -jnp.inf, part.log_tail_mass))
        parts.append(part)
    return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1)[:, inverse], *parts)


MIN_KEY_LENGTH = 64  # rows this short share one group: fewer compiled shapes, little extra work


def key_lengths(rows: np.ndarray, n: int) -> np.ndarray:
    """The number of keys read for each row: the next power of two >= row + 1,
    at least ``MIN_KEY_LENGTH``, at most n (rows of one length are computed
    together; short rows do not pay for the whole context)."""
    pow2 = 2 ** np.ceil(np.log2(rows + 1)).astype(np.int64)
    return np.minimum(np.maximum(pow2, MIN_KEY_LENGTH), n)


def causal_row_statistics(queries, keys, rows=None, eps=(0.1, 0.01), windows=(1, 8, 64),
                          small_fractions=(0.5, 0.9), sinks: int = 1,
                          local: int = 8) -> CausalRowStatistics:
    """:class:`CausalRowStatistics` of one layer's causal attention, for the query
    positions ``rows`` (default: all), shape (heads, len(rows), ...).

    queries: (heads, n, head_dim), post-RoPE; keys: (kv_heads, n, head_dim) with
    heads a multiple of kv_heads (query head h reads key head h // group).
    Rows are grouped by :func:`key_lengths`; memory is O(heads x rows x n).
    ``windows`` larger than a row's n_i give tail mass 0 (log -inf)."""
    queries, keys = jnp.asarray(queries), jnp.asarray(keys)
    if queries.ndim != 3 or keys.ndim != 3 or queries.shape[1:] != keys.shape[1:]:
        raise ValueError(f"queries (heads, n, d) and keys (kv_heads, n, d) must agree, got "
                         f"{queries.shape} and {keys.shape}.")
    if queries.shape[0] % keys.shape[0]:
        raise ValueError(f"heads ({queries.shape[0]}) must be a multiple of kv_heads ({keys.shape[0]}).")
    n = queries.shape[1]
    rows = np.arange(n) if rows is None else np.asarray(rows)
    if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer) \
            or rows.min() < 0 or rows.max() >= n:
        raise ValueError(f"rows must be a non-empty 1-D array of positions in [0, {n}).")
    eps = np.asarray(eps, np.float64).ravel()
    if eps.size == 0 or np.any(~(eps > 0)) or np.any(eps > 1):
        raise ValueError(f"eps must be in (0, 1], got {eps.tolist()}.")
    windows = tuple(int(w) for w in windows)
    if not windows or any(not 1 <= w <= n for w in windows):
        raise ValueError(f"windows must lie in [1, n] = [1, {n}], got {windows}.")
    fractions = tuple(float(q) for q in small_fractions)
    if any(not 0 < q <= 1 for q in fractions):
        raise ValueError(f"small_fractions must lie in (0, 1], got {fractions}.")
    log_eps = jnp.asarray(np.log(eps), queries.dtype)
    lengths = key_lengths(rows, n)
    order = [np.flatnonzero(lengths == length) for length in np.unique(lengths)]
    groups = tuple((int(lengths[g[0]]), int(g.size)) for g in order)
    inverse = np.argsort(np.concatenate(order))
    return _grouped_statistics(queries, keys, jnp.asarray(rows[np.concatenate(order)]),
                               jnp.asarray(inverse), log_eps, groups, windows, fractions,
                               int(sinks), int(local))


def _masked_lse(u, mask):
    return jax.nn.logsumexp(jnp.where(mask, u, -jnp.inf), axis=-1)


def _weighted_mean(u, mask, lse, values):
    """``sum_{j in mask} exp(u_j - lse) v_j`` with lse the mask's own log-sum-exp;
    values (KV, n, d_v) of the key heads."""
    w = jnp.where(mask, jnp.exp(u - lse[..., None]), 0.0)
    return grouped_mix(w, values)


@functools.partial(jax.jit, static_argnames=("selection", "sinks"))
def _sparse_errors(queries, rows, keys, values, windows, selection, sinks):
    scale = 1.0 / math.sqrt(queries.shape[-1])
    u = grouped_scores(queries, keys) * jnp.asarray(scale, queries.dtype)
    visible = jnp.arange(u.shape[-1])[None, :] <= rows[:, None]
    kept = kept_keys(u, visible, rows, windows, selection, sinks)
    dropped = visible & ~kept
    lse = _masked_lse(u, visible)
    lse_kept, lse_dropped = _masked_lse(u, kept), _masked_lse(u, dropped)
    log_tail, log_head = lse_dropped - lse, lse_kept - lse
    # ||s - s^||^2 = sum_drop s_j^2 + (tau / (1 - tau))^2 sum_kept s_j^2 (exact, factorised).
    log_s = u - lse[..., None]
    sq_drop = _masked_lse(2 * log_s, dropped)
    sq_kept = 2 * (log_tail - log_head) + _masked_lse(2 * log_s, kept)
    log_l2 = 0.5 * jnp.logaddexp(sq_drop, sq_kept)
    # o - o^ = tau (m_dropped - m_kept), each m the softmax-weighted mean over its own set.
    m_drop = _weighted_mean(u, dropped, jnp.where(jnp.isfinite(lse_dropped), lse_dropped, 0.0), values)
    m_kept = _weighted_mean(u, kept, lse_kept, values)
    norm = jnp.linalg.norm(m_drop - m_kept, axis=-1)
    log_out = jnp.where(jnp.isfinite(log_tail), log_tail + jnp.log(norm), -jnp.inf)
    exact = _weighted_mean(u, visible, lse, values)
    return SparseRowErrors(log_l2, log_out, jnp.log(jnp.linalg.norm(exact, axis=-1)))


@functools.partial(jax.jit, static_argnames=("selection", "sinks"))
def _sparse_errors_layers(queries, rows, keys, values, windows, selection, sinks):
    return jax.vmap(lambda q, k, v: _sparse_errors(q, rows, k, v, windows, selection, sinks))(
        queries, keys, values)


def causal_sparse_errors(queries, keys, values, rows, windows, selection: str = "top-k",
                         sinks: int = 4) -> SparseRowErrors:
    """Errors of sparse attention against dense attention on the same queries,
    keys and values (the one-layer error, not compounded through later layers),
    for the query positions ``rows``; ``windows[n]`` keys kept for a row with n
    visible keys (:class:`sparsity_theory.llm.KeptSet`'s rule).

    queries (heads, n, d), keys (kv_heads, n, d), values (kv_heads, n, d_v), or
    all three with a leading layer axis (one compiled call for every layer).
    Returns arrays of shape ([layers,] heads, len(rows))."""
    queries, keys, values = jnp.asarray(queries), jnp.asarray(keys), jnp.asarray(values)
    layered = queries.ndim == 4
    if queries.ndim not in (3, 4) or keys.ndim != queries.ndim or values.ndim != queries.ndim \
            or keys.shape[-2:] != queries.shape[-2:] or values.shape[:-1] != keys.shape[:-1] \
            or queries.shape[:-3] != keys.shape[:-3] or queries.shape[-3] % keys.shape[-3]:
        raise ValueError(f"queries ([L,] heads, n, d), keys ([L,] kv_heads, n, d) and values "
                         f"([L,] kv_heads, n, d_v) must agree, got {queries.shape}, {keys.shape}, "
                         f"{values.shape}.")
    n = queries.shape[-2]
    rows = np.asarray(rows)
    if rows.ndim != 1 or rows.size == 0 or not np.issubdtype(rows.dtype, np.integer) \
            or rows.min() < 0 or rows.max() >= n:
        raise ValueError(f"rows must be a non-empty 1-D array of positions in [0, {n}).")
    windows = np.asarray(windows)
    if windows.ndim != 1 or windows.shape[0] < n + 1 or np.any(windows[1:n + 1] < 1):
        raise ValueError(f"windows must give a window >= 1 for every visible count 1..{n} "
                         f"(length >= {n + 1}), got shape {windows.shape}.")
    if selection not in ("top-k", "sink-recent"):
        raise ValueError(f"selection must be 'top-k' or 'sink-recent', got {selection!r}.")
    w = np.minimum(windows[:n + 1], np.arange(n + 1)).astype(np.int32)
    w[0] = 1
    length = int(rows.max()) + 1  # keys beyond the last row are never visible
    args = (queries[..., rows, :], jnp.asarray(rows), keys[..., :length, :],
            values[..., :length, :], jnp.asarray(w))
    fn = _sparse_errors_layers if layered else _sparse_errors
    return fn(*args, selection, int(sinks))
