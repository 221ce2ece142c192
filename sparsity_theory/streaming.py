"""Per-row statistics streamed over key blocks: memory O(query block x (K + key block)).

:func:`stream_rows` computes what :func:`sparsity_theory.evaluate_rows` computes,
but never holds a whole row of scores. For each block of query rows it walks over
the keys one block at a time and carries, per row:

* the K largest logits so far and their indices (K = the largest window): each
  key block is merged with them by one ``lax.top_k`` over K + (key block)
  entries, ties to the lower index, so the final set is exactly the top K of
  the row (earlier keys sit first in the merge, so position order is index
  order among ties). A long float32 block (a multiple of GROUP = 16 keys, at
  least TWO_STAGE_RATIO K GROUP = 256 K) enters the top-k with only K * GROUP
  of its entries: those of the K groups of GROUP consecutive keys with the
  largest maxima, in increasing position (the two-stage selection of
  :func:`sparsity_theory.selection.block_top_k`, which proves that they hold
  the block's top K); every other entry goes straight to the outside sums.
  float64 blocks are preselected on their float32 rounding (exact, with a
  fallback; see ``_block_candidates``);
* three summaries of every entry that is *not* among the current top K: its
  log-sum-exp, the log-sum-exp of twice the logits, and the maximum, plus (with
  values) the sum of its value rows weighted by ``exp(u_j - max)``. An entry
  leaves the top K at most once, and is then added to these sums: the sums are
  built from the entries they hold, never as a total minus a head, so a tail
  mass of 1e-300 keeps its relative precision. Each merge step exponentiates
  relative to the largest entry it adds (the (K+1)-th of the merge), so every
  term lies in [0, 1] and the largest is 1;
* the minimum and the sum of the logits.

At the end, :func:`sparsity_theory.sparsity.profile_from_top` turns the top K
and the outside summaries into every tail mass and error of Definitions 3.3-3.4
and Section 6, exactly as for a dense row.

The count of small entries ``|S_eps|`` (Definition 3.2) needs the final
normaliser. At most ``1/eps`` entries exceed eps, and when the K-th largest
entry is already at most eps every large entry is among the top K: the count
then comes from the top K alone. Otherwise a second pass over the keys counts
(``lax.cond``: it runs only for query blocks that need it).

The certified window (smallest k with ``tau(k) <= eps``) is known only up to
K: here it is *censored* at K + 1, meaning "more than K". Ask for a larger window
when you need it exactly, or use :func:`sparsity_theory.evaluate_rows`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax import lax

from sparsity_theory import _checks
from sparsity_theory.errors import errors_from_profile
from sparsity_theory.evaluate import (
    RowStatistics, map_row_blocks, row_blocks, validated_rows_arguments,
)
from sparsity_theory.selection import (
    GROUP, PRESELECT_SLACK, float32_top_k, canonical_zero, count_true, group_candidates, top_k,
    two_stage_pays,
)
from sparsity_theory.sparsity import profile_from_top

Array = jax.Array


class _Running(NamedTuple):
    """What one query block carries over the key blocks (leading axis: rows)."""

    top: Array  # (b, K) largest logits so far, largest first
    top_indices: Array  # (b, K)
    log_outside: Array  # (b,) log sum exp(u_j) over entries outside the top K
    log_outside_sq: Array  # (b,) log sum exp(2 u_j) over the same
    max_outside: Array  # (b,)
    weighted_values: Optional[Array]  # (b, d_v) sum exp(u_j - max_outside) v_j, outside
    min_logit: Array  # (b,)
    sum_logit: Array  # (b,)


def _finite_or_zero(x: Array) -> Array:
    return jnp.where(jnp.isfinite(x), x, 0.0)


def _count_dtype():
    """The default integer (int32, or int64 in 64-bit mode), as the dense counts use."""
    return jnp.zeros((), int).dtype


def _block_scores(q, key_block, start, n, scale):
    """Scores of a query block against one key block; padded keys get -inf."""
    u = scale * (q @ key_block.T)
    valid = start + jnp.arange(key_block.shape[0]) < n
    return jnp.where(valid[None, :], u, -jnp.inf), valid




def _block_candidates(u, window):
    """Positions (b, C) in the block that surely hold the block's top ``window``,
    in increasing order among equal values of u, and whether they do (None:
    always; else a traced flag, False sending every row to the whole block).

    float32 blocks long enough (:func:`selection.two_stage_pays`) take the
    two-stage selection's candidates (:func:`selection.group_candidates`): the
    entries of the ``window`` groups of GROUP consecutive keys with the largest
    maxima, in increasing position. They hold the block's top ``window`` (the
    proof is in :func:`selection.block_top_k`), so the merge's top-k runs over
    K + K * GROUP entries instead of K + (key block).

    XLA's CPU top-k is fast only for float32 (float64 and integers fall back to
    a sort, 30x slower), so float64 rows are preselected on their float32
    rounding f. Rounding is monotone, so ``f_i > f_j`` implies ``u_i > u_j``: if
    the C-th largest f is strictly below the ``window``-th largest f, every
    entry of the block's top ``window`` is among the C largest f. Otherwise
    (many entries rounding to the same float32 at the boundary, or a block
    shorter than C) the whole block is the candidate set. Among equal u, the
    float32 top-k lists positions in increasing order, as the merge needs.
    """
    b, num_keys = u.shape
    everything = jnp.broadcast_to(jnp.arange(num_keys, dtype=jnp.int32), (b, num_keys))
    if u.dtype == jnp.float32:
        if num_keys % GROUP == 0 and two_stage_pays(num_keys, window):
            return group_candidates(canonical_zero(u), window), None
        return everything, None
    count = window + PRESELECT_SLACK
    if count >= num_keys:
        return everything, None
    # canonical_zero: float64 values below the float32 range round to -0.0.
    f, pos = lax.optimization_barrier(
        float32_top_k(canonical_zero(u.astype(jnp.float32)), count))
    return pos.astype(jnp.int32), jnp.all(f[:, -1] < f[:, window - 1])


def _merge(carry: _Running, u, valid, start, values, value_block, window):
    """Merge one key block's logits ``u`` (b, B) into the running state."""
    positions, exact = _block_candidates(u, window)
    if exact is None:
        return _merge_candidates(carry, u, positions, valid, start, values, value_block, window)
    everything = jnp.broadcast_to(jnp.arange(u.shape[1], dtype=jnp.int32), u.shape)
    return lax.cond(
        exact,
        lambda: _merge_candidates(carry, u, positions, valid, start, values, value_block, window),
        lambda: _merge_candidates(carry, u, everything, valid, start, values, value_block, window),
    )


def _merge_candidates(carry: _Running, u, positions, valid, start, values, value_block, window):
    """Merge the running top ``window`` with the block's candidate ``positions``;
    every other entry of the block, and every evicted former top entry, joins
    the outside sums."""
    b, num_keys = u.shape
    # Earlier keys first: lax.top_k breaks ties by position, so ties go to the
    # lower index.
    union = canonical_zero(
        jnp.concatenate([carry.top, jnp.take_along_axis(u, positions, axis=1)], axis=1))
    indices = jnp.concatenate([carry.top_indices, start + positions], axis=1)
    # As in sparsity.window_profile: the barrier keeps XLA from recomputing the
    # top-k inside its consumers' loops.
    top, keep = lax.optimization_barrier(top_k(union, window))
    top_indices = jnp.take_along_axis(indices, keep, axis=1)
    # Which entries were kept, by comparison rather than a scatter (XLA's CPU
    # scatter cost more than the top-k): everything above the K-th kept value t,
    # and of the entries equal to t those up to the K-th kept's position (top-k
    # takes ties in increasing position).
    t = top[:, -1:]
    last = keep[:, -1:]
    kept = (union > t) | ((union == t) & (jnp.arange(union.shape[1]) <= last))
    # In the block: its entries above t are candidates (non-candidates rank
    # after the block's K-th largest in (value, position) order, hence after
    # the K-th kept: none is above t, and one equal to t lies past the last
    # kept); ties up to the block position of the K-th kept, when it came from
    # the block (block ties are candidates in increasing position).
    from_block = last >= window
    last_in_block = jnp.where(from_block, jnp.take_along_axis(
        positions, jnp.maximum(last - window, 0), axis=1), -1)
    block = canonical_zero(u)
    kept_block = (block > t) | ((block == t) & (jnp.arange(num_keys) <= last_in_block))
    evicted = jnp.where(kept[:, :window], -jnp.inf, carry.top)
    block_out = jnp.where(kept_block, -jnp.inf, u)
    # Everything not kept joins the outside sums, relative to its largest entry.
    ref = jnp.maximum(jnp.max(evicted, axis=1), jnp.max(block_out, axis=1))
    shift = _finite_or_zero(ref)[:, None]
    e_evicted = jnp.exp(evicted - shift)
    # The barrier keeps XLA (CPU) from fusing the exp into the value product's
    # operand, which turned that product into a slow loop.
    e_block = lax.optimization_barrier(jnp.exp(block_out - shift))
    log_new = jnp.log(jnp.sum(e_evicted, axis=1) + jnp.sum(e_block, axis=1)) + ref
    log_new_sq = jnp.log(jnp.sum(e_evicted ** 2, axis=1) + jnp.sum(e_block ** 2, axis=1)) + 2 * ref
    max_outside = jnp.maximum(carry.max_outside, ref)
    weighted = None
    if values is not None:
        # Evicted former top entries need their value rows; the block's own
        # entries use the value block.
        added = (jnp.einsum("bk,bkv->bv", e_evicted, values[carry.top_indices])
                 + e_block @ value_block)
        m = _finite_or_zero(max_outside)[:, None]
        weighted = (carry.weighted_values * jnp.exp(carry.max_outside[:, None] - m)
                    + added * jnp.exp(ref[:, None] - m))
    return _Running(
        top, top_indices,
        jnp.logaddexp(carry.log_outside, jnp.where(ref == -jnp.inf, -jnp.inf, log_new)),
        jnp.logaddexp(carry.log_outside_sq, jnp.where(ref == -jnp.inf, -jnp.inf, log_new_sq)),
        max_outside, weighted,
        jnp.minimum(carry.min_logit, jnp.min(jnp.where(valid[None, :], u, jnp.inf), axis=1)),
        carry.sum_logit + jnp.sum(jnp.where(valid[None, :], u, 0.0), axis=1),
    )


def _count_small(q, key_blocks, log_normaliser, log_eps, n, scale):
    """Second pass: ``#{j : u_j - lse <= log eps}`` per row and eps."""
    def step(count, block):
        start, keys = block
        u, valid = _block_scores(q, keys, start, n, scale)
        # Clamped at log 1 = 0, as in sparsity.num_small_entries.
        log_s = jnp.minimum(u - log_normaliser[:, None], 0.0)
        small = log_s[:, :, None] <= log_eps[None, None, :]
        return count + count_true(small & valid[None, :, None], axis=1), None

    starts = jnp.arange(key_blocks.shape[0], dtype=jnp.int32) * key_blocks.shape[1]
    zero = jnp.zeros((q.shape[0], log_eps.shape[0]), _count_dtype())
    return lax.scan(step, zero, (starts, key_blocks))[0]


def _query_block(q, key_blocks, value_blocks, values, log_eps, scale, n, windows):
    window = max(windows)
    b = q.shape[0]
    dtype = q.dtype
    inf = jnp.full((b,), jnp.inf, dtype)
    init = _Running(
        jnp.full((b, window), -jnp.inf, dtype), jnp.zeros((b, window), jnp.int32), -inf, -inf,
        -inf, None if values is None else jnp.zeros((b, values.shape[1]), dtype),
        inf, jnp.zeros((b,), dtype),
    )
    starts = jnp.arange(key_blocks.shape[0], dtype=jnp.int32) * key_blocks.shape[1]

    def step(carry, block):
        if values is None:
            start, keys = block
            value_block = None
        else:
            start, keys, value_block = block
        u, valid = _block_scores(q, keys, start, n, scale)
        return _merge(carry, u, valid, start, values, value_block, window), None

    xs = (starts, key_blocks) if values is None else (starts, key_blocks, value_blocks)
    run = lax.scan(step, init, xs)[0]

    def row(top, top_indices, log_out, log_out_sq, max_out, weighted):
        lse = jnp.logaddexp(jax.nn.logsumexp(top), log_out)
        prof = profile_from_top(lse, top, top_indices, log_out, log_out_sq, max_out)
        if values is None:
            return prof, errors_from_profile(prof, windows)
        none = log_out == -jnp.inf
        mean_out = weighted / jnp.where(none, 1.0, jnp.exp(log_out - _finite_or_zero(max_out)))
        return prof, errors_from_profile(prof, windows, values[top_indices], mean_out)

    weighted = run.weighted_values if values is not None else jnp.zeros((b, 1), dtype)
    prof, (tau, l1, l2, linf, out) = jax.vmap(row)(
        run.top, run.top_indices, run.log_outside, run.log_outside_sq, run.max_outside, weighted)
    lse = prof.log_normaliser

    # |S_eps| from the top K when the K-th largest entry is already small.
    threshold = log_eps[None, :]
    log_top = jnp.minimum(run.top - lse[:, None], 0.0)  # clamped as in _count_small
    kth = log_top[:, -1:]
    large_in_top = count_true(log_top[:, :, None] > threshold[:, None, :], axis=1)
    resolved = (kth <= threshold) | (window == n)
    num_small = lax.cond(
        jnp.all(resolved),
        lambda: (n - large_in_top).astype(_count_dtype()),
        lambda: _count_small(q, key_blocks, lse, log_eps, n, scale),
    )
    # Smallest k <= K with log tau(k) <= log eps (log tau is non-increasing in
    # k), else K + 1: censored.
    certified = 1 + count_true(prof.log_tail[:, :, None] > threshold[:, None, :], axis=1)
    return RowStatistics(
        lse, run.top[:, 0], run.min_logit, run.sum_logit / n, num_small,
        certified.astype(_count_dtype()), tau, l1, l2, linf, out,
    )


@functools.partial(jax.jit, static_argnames=("windows", "query_block", "key_block"))
def _stream(queries, keys, values, log_eps, scale, windows, query_block, key_block):
    n = keys.shape[0]
    key_blocks = row_blocks(keys, key_block)
    value_blocks = None if values is None else row_blocks(values, key_block)
    return map_row_blocks(
        lambda q: _query_block(q, key_blocks, value_blocks, values, log_eps, scale, n, windows),
        queries, query_block)


def stream_rows(
    queries: Array,
    keys: Array,
    values: Optional[Array] = None,
    *,
    windows=(1,),
    eps=(1e-3,),
    scale: float = 1.0,
    query_block: int = 64,
    key_block: int = 16384,
) -> RowStatistics:
    """Per-row statistics of attention with scores ``scale * Q K^T``, streamed
    over key blocks (see the module docstring).

    Same arguments and result as :func:`sparsity_theory.evaluate_rows`, except:

    * memory is O(query_block x (max(windows) + key_block)) besides the inputs,
      whatever n;
    * ``certified_window`` is censored at ``max(windows) + 1`` ("more than the
      largest window"); it is exact wherever it is at most ``max(windows)``.

    Top-k sets are exactly those of the dense computation (same scores, ties to
    the lower index); sums agree to rounding.

    Args:
      queries: (m, d) query rows (m may be a sample of the n rows).
      keys: (n, d) key rows.
      values: optional (n, d_v) value rows, for the output error.
      windows: window sizes k in [1, n] (Definition 3.3).
      eps: thresholds in (0, 1] (Definition 3.2).
      scale: the score scale lambda (1 in the paper).
      query_block: query rows per block.
      key_block: keys per block. The default 16384 lets windows up to 64 use
        the two-stage selection on float32 blocks (see the module docstring);
        measured on 2 CPU cores, it was about 20% faster than 4096 at
        n = 16384-65536 with windows up to 16, 64 or 128.
    """
    queries, keys, values, log_eps, scale, windows = validated_rows_arguments(
        queries, keys, values, windows, eps, scale)
    query_block = _checks.check_block_size(query_block, "query_block")
    key_block = _checks.check_block_size(key_block, "key_block")
    return _stream(queries, keys, values, log_eps, scale, windows,
                   min(query_block, max(1, queries.shape[0])), min(key_block, keys.shape[0]))
