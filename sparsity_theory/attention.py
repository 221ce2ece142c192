"""Exact and top-k sparse attention (Definitions 3.1, 3.3 and 3.4).

Conventions. ``queries`` is (..., m, d), ``keys`` is (..., n, d), ``values`` is
(..., n, d_v). Scores ``u_ij = scale * <q_i, k_j>`` (the paper has scale 1; the
usual transformer scale is 1/sqrt(d)). Rows of the attention matrix are
``s_i = softmax(u_i)``, always computed as ``exp(u_i - logsumexp(u_i))``.

Top-k (Definition 3.3): ``T_i`` holds the indices of the k largest scores of row
i; ties go to the lower index (``lax.top_k``'s documented order), so the set is
deterministic. Sparse row (Definition 3.4): ``s^_i = s_i 1[T_i] / (1 - tau_i)``,
the softmax restricted to ``T_i``, computed directly as a softmax over the kept
scores so that no ``1 - tau`` is ever formed.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from sparsity_theory import _checks
from sparsity_theory import selection

Array = jax.Array


def _check_qkv(queries, keys, values=None) -> None:
    _checks.check_min_ndim(queries, 2, "queries")
    _checks.check_min_ndim(keys, 2, "keys")
    _checks.check_same(jnp.shape(queries)[-1], jnp.shape(keys)[-1], "queries vs keys last axis (d)")
    _checks.check_finite_array(queries, "queries")
    _checks.check_finite_array(keys, "keys")
    if values is not None:
        _checks.check_min_ndim(values, 2, "values")
        _checks.check_same(jnp.shape(values)[-2], jnp.shape(keys)[-2], "values rows vs keys rows (n)")
        _checks.check_finite_array(values, "values")


def _check_logits(logits) -> None:
    _checks.check_min_ndim(logits, 1, "logits")
    if jnp.shape(logits)[-1] < 1:
        raise ValueError("logits must have at least one entry per row (n >= 1).")
    _checks.check_finite_array(logits, "logits")


@jax.jit
def _scores(queries: Array, keys: Array, scale) -> Array:
    return scale * jnp.einsum("...md,...nd->...mn", queries, keys)


def attention_logits(queries: Array, keys: Array, scale: float = 1.0) -> Array:
    """Scores ``U = scale * Q K^T`` (Definition 3.1), shape (..., m, n)."""
    _check_qkv(queries, keys)
    _checks.check_finite_scalar(scale, "scale")
    return _scores(queries, keys, scale)


@jax.jit
def _log_softmax(logits: Array) -> Array:
    return logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)


def log_attention_matrix(logits: Array) -> Array:
    """``log s_ij = u_ij - logsumexp_j u_ij`` (row log-softmax, Definition 3.1)."""
    _check_logits(logits)
    return _log_softmax(logits)


def attention_matrix(logits: Array) -> Array:
    """Row softmax ``S = softmax(U)`` (Definition 3.1), computed in log space."""
    return jnp.exp(log_attention_matrix(logits))


@jax.jit
def _exact_attention(queries, keys, values, scale):
    return jnp.exp(_log_softmax(_scores(queries, keys, scale))) @ values


def exact_attention(queries: Array, keys: Array, values: Array, scale: float = 1.0) -> Array:
    """``Att = softmax(scale Q K^T) V`` (Definition 3.1), shape (..., m, d_v).

    Materialises the (m, n) attention matrix; use :func:`sparsity_theory.evaluate_rows`
    for row statistics of long contexts, which works in row blocks.
    """
    _check_qkv(queries, keys, values)
    _checks.check_finite_scalar(scale, "scale")
    return _exact_attention(queries, keys, values, scale)


def _top_k_mask_row(u: Array, k: int) -> Array:
    # A scatter of the k indices: O(n) memory, not the O(k n) of comparing index lists.
    return jnp.zeros(u.shape, bool).at[selection.top_k_indices(u, k)].set(True)


@functools.partial(jax.jit, static_argnames="k")
def _top_k_mask(logits: Array, k: int) -> Array:
    return jnp.vectorize(lambda u: _top_k_mask_row(u, k), signature="(n)->(n)")(logits)


def top_k_indices(logits: Array, k: int) -> Array:
    """Indices of the k largest scores of each row, largest first (Definition 3.3).

    Ties go to the lower index.
    """
    _check_logits(logits)
    k = _checks.check_window(k, jnp.shape(logits)[-1])
    return selection.top_k_indices(jnp.asarray(logits), k)


def top_k_mask(logits: Array, k: int) -> Array:
    """Boolean indicator of ``T_i`` (Definition 3.3), same shape as ``logits``."""
    _check_logits(logits)
    k = _checks.check_window(k, jnp.shape(logits)[-1])
    return _top_k_mask(jnp.asarray(logits), k)


@functools.partial(jax.jit, static_argnames="k")
def _sparse_log_rows(logits: Array, k: int) -> Array:
    kept = jnp.where(_top_k_mask(logits, k), logits, -jnp.inf)
    return kept - jax.nn.logsumexp(kept, axis=-1, keepdims=True)


def sparse_attention_matrix(logits: Array, k: int) -> Array:
    """Renormalised top-k rows ``s^_i = s_i 1[T_i] / (1 - tau_i)`` (Definition 3.4)."""
    _check_logits(logits)
    k = _checks.check_window(k, jnp.shape(logits)[-1])
    return jnp.exp(_sparse_log_rows(jnp.asarray(logits), k))


@functools.partial(jax.jit, static_argnames="k")
def _sparse_attention(queries, keys, values, k, scale):
    return jnp.exp(_sparse_log_rows(_scores(queries, keys, scale), k)) @ values


def sparse_attention(
    queries: Array, keys: Array, values: Array, k: int, scale: float = 1.0
) -> Array:
    """``Att_k = S^ V`` with window size k (Definition 3.4), shape (..., m, d_v)."""
    _check_qkv(queries, keys, values)
    _checks.check_finite_scalar(scale, "scale")
    k = _checks.check_window(k, jnp.shape(keys)[-2])
    return _sparse_attention(queries, keys, values, k, scale)
