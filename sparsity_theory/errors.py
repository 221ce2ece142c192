"""Errors of top-k sparse attention, from exact factorised forms (Section 6).

For one row with softmax ``s``, window k, kept set T and tail mass tau (D2, D3, D6
of the theory notes; docs/theory.md):

* l1:   ``||s - s^||_1 = 2 tau``;
* l2:   ``||s - s^||_2^2 = (tau / (1 - tau))^2 sum_T s_j^2 + sum_{not T} s_j^2``;
* linf: ``||s - s^||_inf = max(s_(1) tau / (1 - tau), s_(k+1))`` (the largest kept
  entry is inflated most; the largest dropped entry is lost);
* output: ``(s - s^)^T V = tau (mu_tail - mu_head)`` where mu_head / mu_tail are
  the s-weighted means of the kept / dropped value rows, so
  ``||(s - s^)^T V||_2 = tau ||mu_tail - mu_head||_2``.

None of these is formed as a difference of two nearly equal matrices: when tau is
below the float epsilon, ``s - s^`` rounds to noise, while these forms keep full
relative precision. All errors are returned as natural logarithms (-inf for an
exact zero, e.g. at k = n).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from sparsity_theory import _checks
from sparsity_theory.attention import _check_logits
from sparsity_theory.sparsity import (
    WindowProfile, _as_batch, window_positions, window_profile,
)

Array = jax.Array


class SparseAttentionErrors(NamedTuple):
    """Per-row errors of top-k attention, as natural logs, shape (..., len(windows)).

    ``log_output`` is None when no values were given.
    """

    log_tail_mass: Array
    log_l1: Array
    log_l2: Array
    log_linf: Array
    log_output: Optional[Array]


def _log_output_error(top_values: Array, mean_outside: Array, prof: WindowProfile,
                      windows: tuple[int, ...]) -> Array:
    """``log(tau(k) ||mu_tail(k) - mu_head(k)||_2)`` for each k in ``windows``.

    ``top_values`` (K, d_v) are the value rows of the top K, largest first;
    ``mean_outside`` (d_v,) the s-weighted mean of the value rows outside the
    top K (any finite vector when there are none).
    """
    num_top = prof.top_logits.shape[0]
    pos = window_positions(windows)
    # Kept means: weights relative to the largest logit lie in (0, 1] and their
    # sum is >= 1, so a plain sum is accurate. Only the W windows' heads, as
    # (W, K) masked products: a cumulative sum over all K prefixes of the (K, d_v)
    # rows cost 27 of 40 ms here (1024 rows, K = d_v = 64, float32, 2-core CPU).
    w = jnp.exp(prof.top_logits - prof.top_logits[0])
    w_head = jnp.where(jnp.arange(num_top)[None, :] <= pos[:, None], w[None, :], 0.0)  # (W, K)
    mu_head = (w_head @ top_values) / jnp.sum(w_head, axis=1)[:, None]
    # Dropped means, per window, relative to the largest dropped logit (top[k], or
    # the outside maximum when k = K): every weight is <= 1 and one equals 1, so
    # the mean is exact however small the tail's mass is. O(W K d_v), no scan.
    max_out = prof.max_outside
    ref = jnp.where(pos + 1 < num_top, prof.top_logits[jnp.minimum(pos + 1, num_top - 1)], max_out)
    ref = jnp.where(ref == -jnp.inf, 0.0, ref)
    dropped = jnp.arange(num_top)[None, :] > pos[:, None]  # (W, K): top entries k.. dropped
    w_drop = jnp.where(dropped, jnp.exp(prof.top_logits[None, :] - ref[:, None]), 0.0)
    w_rest = jnp.exp(prof.log_outside - ref)  # (W,), 0 when nothing lies outside the top K
    total = jnp.sum(w_drop, axis=1) + w_rest
    mu_tail = (w_drop @ top_values + w_rest[:, None] * mean_outside[None, :]) / jnp.where(
        total > 0, total, 1.0)[:, None]
    return prof.log_tail[pos] + log_norm(mu_tail - mu_head)


def _mean_outside(u: Array, values: Array, outside: Array, prof: WindowProfile) -> Array:
    """s-weighted mean of the value rows outside the top K, weights relative to
    their own maximum (exact however small their mass); 0 when there are none."""
    none = prof.log_outside == -jnp.inf
    w_out = jnp.where(outside, jnp.exp(u - jnp.where(none, 0.0, prof.max_outside)), 0.0)
    return (w_out @ values) / jnp.where(none, 1.0, jnp.sum(w_out))


def log_norm(x: Array) -> Array:
    """``log ||x||_2`` over the last axis, scaled by the largest entry so that
    vectors below 1e-154 (whose squares underflow) keep their norm."""
    big = jnp.max(jnp.abs(x), axis=-1, keepdims=True)
    safe = jnp.where(big > 0, big, 1.0)
    return jnp.log(big[..., 0]) + 0.5 * jnp.log(jnp.sum((x / safe) ** 2, axis=-1))


def errors_from_profile(prof: WindowProfile, windows: tuple[int, ...],
                        top_values: Optional[Array] = None,
                        mean_outside: Optional[Array] = None) -> tuple:
    """``(log tau, log l1, log l2, log linf, log output or None)`` at ``windows``
    from a row's :class:`WindowProfile` (the factorised forms of the module
    docstring); shared by the dense rows and the key-streamed rows."""
    pos = window_positions(windows)
    log_tau = prof.log_tail
    log_ratio = log_tau - prof.log_head  # log(tau / (1 - tau))
    log_l2 = 0.5 * jnp.logaddexp(2 * log_ratio + prof.log_head_sq, prof.log_tail_sq)
    log_s1 = prof.top_logits[0] - prof.log_normaliser
    log_linf = jnp.maximum(log_s1 + log_ratio, prof.log_first_dropped)
    out = (log_tau[pos], math.log(2.0) + log_tau[pos], log_l2[pos], log_linf[pos])
    if top_values is None:
        return out + (None,)
    return out + (_log_output_error(top_values, mean_outside, prof, windows),)


def _row_errors(u: Array, values: Optional[Array], windows: tuple[int, ...]):
    prof = window_profile(u, max(windows))
    if values is None:
        return errors_from_profile(prof, windows)
    outside = jnp.ones(u.shape, bool).at[prof.top_indices].set(False)
    return errors_from_profile(prof, windows, values[prof.top_indices],
                               _mean_outside(u, values, outside, prof))


@functools.partial(jax.jit, static_argnames="windows")
def _errors_no_values(logits, windows):
    f = jnp.vectorize(
        lambda u: _row_errors(u, None, windows)[:4], signature="(n)->(w),(w),(w),(w)"
    )
    return SparseAttentionErrors(*f(logits), None)


def centred_values(values: Array) -> Array:
    """Value rows minus their mean row (over the n keys).

    The output error ``(s - s^)^T V`` is unchanged by any common row added to V,
    since s and s^ both sum to 1; it is computed as ``tau (mu_tail - mu_head)``,
    a difference of two weighted means of V, which with a large common offset
    (V + 1e6) would cancel to a few digits. Centred first, V carries no offset;
    and where the values do share one, each subtraction ``v - c`` is exact
    (Sterbenz: v and c within a factor 2), so the error is exact to rounding of
    the centred values."""
    return values - jnp.mean(values, axis=-2, keepdims=True)


@functools.partial(jax.jit, static_argnames="windows")
def _errors_with_values(logits, values, windows):
    f = jnp.vectorize(
        lambda u, v: _row_errors(u, v, windows), signature="(n),(n,v)->(w),(w),(w),(w),(w)"
    )
    return SparseAttentionErrors(*f(logits, values[..., None, :, :]))


def sparse_attention_errors(
    logits: Array, windows, values: Optional[Array] = None
) -> SparseAttentionErrors:
    """Errors of top-k attention (Definition 3.4) for each window in ``windows``.

    Args:
      logits: scores (..., m, n).
      windows: window sizes k in [1, n].
      values: optional value rows (..., n, d_v) shared by the m rows; enables the
        output error ``||(s_i - s^_i)^T V||_2``.

    Returns:
      :class:`SparseAttentionErrors` of natural logs with shape (..., m, len(windows)):
      the tail mass tau, the attention-matrix row errors in l1 (= 2 tau), l2 and
      l-infinity, and the output row error.
    """
    _check_logits(logits)
    n = jnp.shape(logits)[-1]
    windows = _checks.check_windows(windows, n)
    logits = _as_batch(logits)
    if values is None:
        return _errors_no_values(logits, windows)
    _checks.check_min_ndim(values, 2, "values")
    _checks.check_same(jnp.shape(values)[-2], n, "values rows vs logits columns (n)")
    _checks.check_finite_array(values, "values")
    if jnp.ndim(logits) < 2:
        raise ValueError("with values, logits must be (..., m, n): add a row axis.")
    return _errors_with_values(logits, centred_values(jnp.asarray(values, logits.dtype)), windows)


def _masked_row_errors(u: Array, kept: Array, values: Optional[Array]):
    lse = jax.nn.logsumexp(u)
    kept_u = jnp.where(kept, u, -jnp.inf)
    drop_u = jnp.where(kept, -jnp.inf, u)
    log_head = jax.nn.logsumexp(kept_u) - lse
    log_tail = jax.nn.logsumexp(drop_u) - lse
    log_ratio = log_tail - log_head
    log_head_sq = jax.nn.logsumexp(2 * kept_u) - 2 * lse
    log_tail_sq = jax.nn.logsumexp(2 * drop_u) - 2 * lse
    log_l2 = 0.5 * jnp.logaddexp(2 * log_ratio + log_head_sq, log_tail_sq)
    log_linf = jnp.maximum(jnp.max(kept_u) - lse + log_ratio, jnp.max(drop_u) - lse)
    out = (log_tail, math.log(2.0) + log_tail, log_l2, log_linf)
    if values is None:
        return out + (None,)

    def mean_of(logits):
        # Weighted mean of the value rows, weights relative to their own maximum
        # (exact however small the set's mass); 0 for an empty set.
        top = jnp.max(logits)
        w = jnp.exp(logits - jnp.where(top == -jnp.inf, 0.0, top))
        return (w @ values) / jnp.where(top == -jnp.inf, 1.0, jnp.sum(w))

    return out + (log_tail + log_norm(mean_of(drop_u) - mean_of(kept_u)),)


@jax.jit
def _masked_no_values(logits, kept):
    f = jnp.vectorize(lambda u, m: _masked_row_errors(u, m, None)[:4],
                      signature="(n),(n)->(),(),(),()")
    return SparseAttentionErrors(*f(logits, kept), None)


@jax.jit
def _masked_with_values(logits, kept, values):
    f = jnp.vectorize(lambda u, m, v: _masked_row_errors(u, m, v),
                      signature="(n),(n),(n,v)->(),(),(),(),()")
    return SparseAttentionErrors(*f(logits, kept, values[..., None, :, :]))


def masked_attention_errors(logits: Array, kept: Array,
                            values: Optional[Array] = None) -> SparseAttentionErrors:
    """Errors of attention restricted to any kept set (not only the top k).

    For a row with softmax s and a kept set T (``kept``, boolean, broadcast
    against ``logits``), ``s^`` is s on T renormalised; the exact forms of the
    module docstring hold with T in place of the top-k window (they never used
    that T holds the largest entries), except that the l-infinity error is
    ``max(max_T s_j tau / (1 - tau), max_{not T} s_j)``. Used for positional
    windows (sink plus recent, StreamingLLM) and per-row thresholds (the
    certified-window oracle). Every row must keep at least one entry.

    Returns :class:`SparseAttentionErrors` of natural logs with shape
    ``logits.shape[:-1]``.
    """
    _check_logits(logits)
    kept = jnp.asarray(kept)
    if kept.dtype != jnp.bool_:
        raise ValueError(f"kept must be a boolean mask, got dtype {kept.dtype}.")
    try:
        kept = jnp.broadcast_to(kept, jnp.shape(logits))
    except ValueError:
        raise ValueError(f"kept {kept.shape} does not broadcast against logits "
                         f"{jnp.shape(logits)}.") from None
    if _checks.is_concrete(kept) and not bool(jnp.all(jnp.any(kept, axis=-1))):
        raise ValueError("every row must keep at least one entry (kept is all False in a row).")
    logits = _as_batch(logits)  # integer logits become floats (values follow their dtype)
    if values is None:
        return _masked_no_values(logits, kept)
    _checks.check_min_ndim(values, 2, "values")
    _checks.check_same(jnp.shape(values)[-2], jnp.shape(logits)[-1],
                       "values rows vs logits columns (n)")
    _checks.check_finite_array(values, "values")
    if jnp.ndim(logits) < 2:
        raise ValueError("with values, logits must be (..., m, n): add a row axis.")
    return _masked_with_values(logits, kept, centred_values(jnp.asarray(values, logits.dtype)))


@functools.partial(jax.jit, static_argnames="axis")
def frobenius_aggregate(log_row_errors: Array, axis: int = -2) -> tuple[Array, Array]:
    """Aggregate per-row errors over the rows (the Frobenius norm of Section 6).

    With ``e_i`` the row errors along ``axis`` (m rows):
    ``total = sqrt(sum_i e_i^2)`` (``||S - S^||_F`` for the l2 row errors) and
    ``rms = total / sqrt(m)`` (root mean square per row). Both are returned as
    natural logs, computed with a log-sum-exp so tiny errors do not underflow.
    """
    m = log_row_errors.shape[axis]
    log_total = 0.5 * jax.nn.logsumexp(2 * log_row_errors, axis=axis)
    return log_total, log_total - 0.5 * jnp.log(jnp.asarray(m, log_total.dtype))
