"""Row-block evaluation of every per-row quantity, without the n x n matrix.

:func:`evaluate_rows` takes query rows and all keys (and values), and computes for
each query row the statistics the bounds of Sections 4-6 are checked against. The
query rows are processed ``block_size`` at a time with ``lax.map``, so only a
(block_size x n) slab of scores lives at once: memory O(block_size x n), not
O(m x n). Blocking changes nothing but memory: every row's statistics depend on
that row alone, and the result equals the unblocked computation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from sparsity_theory import _checks
from sparsity_theory.attention import _check_qkv, _scores
from sparsity_theory.errors import _row_errors, centred_values
from sparsity_theory.sparsity import log_eps_array, small_counts_and_certified_windows_of_rows

Array = jax.Array


class RowStatistics(NamedTuple):
    """Per-query-row statistics; leading axis m (query rows).

    ``windows`` axis W, ``eps`` axis E. Logs are natural logs.

    Attributes:
      log_normaliser: ``log alpha_i = logsumexp_j u_ij`` (Lemma 4.2 Part 3).
      max_logit, min_logit, mean_logit: ``max_j u_ij``, ``min_j u_ij`` and
        ``mean_j u_ij`` (Lemma 4.2 Parts 1-3; the spread is max - min).
      num_small: (m, E) ``|S_eps(s_i)|`` (Definition 3.2).
      certified_window: (m, E) smallest k with ``tau_i(k) <= eps``.
      log_tail_mass, log_l1_error, log_l2_error, log_linf_error: (m, W).
      log_output_error: (m, W) ``log ||(s_i - s^_i)^T V||_2``, or None.
    """

    log_normaliser: Array
    max_logit: Array
    min_logit: Array
    mean_logit: Array
    num_small: Array
    certified_window: Array
    log_tail_mass: Array
    log_l1_error: Array
    log_l2_error: Array
    log_linf_error: Array
    log_output_error: Optional[Array]


def _row_statistics(u, values, windows, num_small, window):
    lse = jax.nn.logsumexp(u)
    tau, l1, l2, linf, out = _row_errors(u, values, windows)
    return RowStatistics(
        lse, jnp.max(u), jnp.min(u), jnp.mean(u), num_small, window, tau, l1, l2, linf, out
    )


def row_blocks(x: Array, block_size: int) -> Array:
    """``x`` (r, ...) zero-padded to a multiple of ``block_size`` rows and split
    into blocks: (ceil(r / block_size), block_size, ...)."""
    num_blocks = -(-x.shape[0] // block_size)
    pad = ((0, num_blocks * block_size - x.shape[0]),) + ((0, 0),) * (x.ndim - 1)
    return jnp.pad(x, pad).reshape((num_blocks, block_size) + x.shape[1:])


def map_row_blocks(fn, rows: Array, block_size: int):
    """``fn`` applied to ``block_size`` rows at a time with ``lax.map``; the
    per-row results are joined again and the padding rows dropped."""
    out = jax.lax.map(fn, row_blocks(rows, block_size))
    return jax.tree_util.tree_map(
        lambda a: a.reshape((-1,) + a.shape[2:])[:rows.shape[0]], out)


@functools.partial(jax.jit, static_argnames=("windows", "block_size"))
def _evaluate(queries, keys, values, log_eps, scale, windows, block_size):
    def block(q):
        logits = _scores(q, keys, scale)
        num_small, certified = small_counts_and_certified_windows_of_rows(logits, log_eps)
        return jax.vmap(_row_statistics, in_axes=(0, None, None, 0, 0))(
            logits, values, windows, num_small, certified
        )

    return map_row_blocks(block, queries, block_size)


def evaluate_rows(
    queries: Array,
    keys: Array,
    values: Optional[Array] = None,
    *,
    windows=(1,),
    eps=(1e-3,),
    scale: float = 1.0,
    block_size: int = 128,
) -> RowStatistics:
    """All per-row statistics of attention with scores ``scale * Q K^T``.

    Args:
      queries: (m, d) query rows (m may be a sample of the n rows).
      keys: (n, d) key rows.
      values: optional (n, d_v) value rows, for the output error.
      windows: window sizes k in [1, n] (Definition 3.3).
      eps: thresholds in (0, 1] (Definition 3.2).
      scale: the score scale lambda (1 in the paper).
      block_size: query rows per block; memory is O(block_size x n).

    Returns:
      :class:`RowStatistics` with leading axis m. ``jax.vmap`` it over seeds.
    """
    queries, keys, values, log_eps, scale, windows = validated_rows_arguments(
        queries, keys, values, windows, eps, scale)
    block_size = _checks.check_block_size(block_size)
    return _evaluate(queries, keys, values, log_eps, scale, windows,
                     min(block_size, max(1, queries.shape[0])))


def validated_rows_arguments(queries, keys, values, windows, eps, scale) -> tuple:
    """The shared argument checks of the row engines (:func:`evaluate_rows`,
    :func:`sparsity_theory.stream_rows`): shapes, finiteness, windows in [1, n],
    eps in (0, 1], a finite scale. Returns ``(queries, keys, values, log_eps,
    scale, windows)`` in one floating dtype (integers become the default float)."""
    _check_qkv(queries, keys, values)
    _checks.check_ndim(queries, 2, "queries")
    _checks.check_ndim(keys, 2, "keys")
    if values is not None:
        _checks.check_ndim(values, 2, "values")
    n = jnp.shape(keys)[0]
    windows = _checks.check_windows(windows, n)
    eps = _checks.as_tuple_of_floats(eps, "eps")
    _checks.check_eps(eps)
    _checks.check_finite_scalar(scale, "scale")
    queries = jnp.asarray(queries)
    dtype = jnp.result_type(queries.dtype, jnp.asarray(keys).dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    if values is not None:  # centred: the output error is exact under a common offset
        values = centred_values(jnp.asarray(values, dtype))
    return (queries.astype(dtype), jnp.asarray(keys, dtype), values,
            log_eps_array(eps, dtype), jnp.asarray(scale, dtype), windows)
