"""Bounds on the error of top-k sparse attention (Section 6: Theorems 6.1 and 6.2;
Appendix E, Theorems E.1 and E.2), deterministic and with high probability.

One softmax row ``s`` of n entries with scores u, the top-k window T and its
renormalised restriction ``s^`` (Definition 3.4); ``tau = sum_{j not in T} s_j``
is the tail mass and ``spread = max_j u_j - min_j u_j = ln r``. Deterministic
facts (docs/theory.md, "Theorems 6.1 and 6.2", has the proofs):

* D5: ``(n-k) / (n-k + k r) <= tau <= min(1 - k/n, (n-k) r / (k + (n-k) r))``;
  since r >= 1 the minimum is always ``1 - k/n`` (D4): the spread only
  sharpens the lower bound;
* D6 lower: ``||s - s^||_2 >= tau sqrt(n / (k (n-k)))`` (Cauchy-Schwarz on the
  kept and the dropped entries);
* D6 upper: ``||s - s^||_2 <= r sqrt((n-k) / (n k))``. This is tighter than the
  theory notes' ``(r/n) sqrt((n-k)(1 + (n-k) r^2 / k))``: the odds
  ``tau / (1 - tau)`` are at most ``(n-k)/k`` without any r, because every
  dropped entry is at most every kept one; it is attained at r = 1;
* output (values V, any centre c, since ``s - s^`` sums to 0):
  ``||(s - s^)^T V||_2 <= min(2 tau max_j ||v_j - c||_2, ||s - s^||_2 ||V - 1 c^T||_2)``.

High-probability forms (Theorems 6.1 / 6.2 per row): Lemma 4.2 Part 2 bounds
the spread by ``rho = 2 sigma_i sqrt(2 ln(2 n / delta))`` with probability at
least 1 - delta, and every bound above is monotone in r, so substituting
``r <= e^rho`` gives a per-row upper bound (Theorem 6.1) and lower bound
(Theorem 6.2) that hold together with probability at least 1 - delta. Over all
n rows of a matrix (the Frobenius forms), each row uses delta / n.

Everything is a natural log (``-inf`` for an exact zero, e.g. at k = n), so
errors far below the float range stay representable.

Every function is pure JAX: it works under ``jit`` and ``vmap`` over its array
arguments (spread, sigma, delta, the logs, the values; n and k are Python ints,
static, because the windows shape the bounds), differentiates with ``grad``
where real-valued, and keeps the floating dtype it is given (float32 in,
float32 out). Bad input raises a one-line ValueError naming the argument when
called eagerly; under jit traced values are checked only with ``checked=True``
inside ``checkify.checkify(..., errors=checkify.user_checks)`` (see
``sparsity_theory._checks``).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from sparsity_theory import _checks
from sparsity_theory.bounds import num_independent_keys, score_deviation_bound

Array = jax.Array


def _check_nk(n, k):
    """n >= 1 and k in [1, n]: Python ints, or integer arrays (for vmap over n and
    k; concrete values are range-checked, traced ones cannot be)."""
    if isinstance(n, (int, np.integer)) and isinstance(k, (int, np.integer)):
        n = _checks.check_int(n, "n")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}.")
        return n, _checks.check_window(k, n)
    n = _checks.check_count(n, "n", 1)
    k = _checks.check_count(k, "k", 1)
    if _checks.is_concrete(n) and _checks.is_concrete(k) and np.any(np.asarray(k) > np.asarray(n)):
        raise ValueError(f"k must be in [1, n], got k = {k!r} for n = {n!r}.")
    return n, k


def _log(x, dtype) -> Array:
    """``ln x`` of a count: exact ``math.log`` for a Python int, else in ``dtype``."""
    return math.log(x) if isinstance(x, int) else jnp.log(jnp.asarray(x).astype(dtype))


def _as_float(x) -> Array:
    """``x`` as a floating JAX array, keeping a floating dtype as given (float32
    stays float32); integers and bools become JAX's default float."""
    x = jnp.asarray(np.asarray(x) if isinstance(x, (list, tuple)) else x)
    return x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(jnp.result_type(float))


def _check_spread(spread, checked: bool = False) -> Array:
    spread = _as_float(spread)
    _checks.check_finite_values(spread, "spread", checked=checked)
    _checks.check_values(spread >= 0, "spread = max u - min u must be >= 0 (it is ln r, r >= 1).",
                         checked=checked)
    return spread


def _check_log(x, name: str, checked: bool) -> Array:
    """A natural log of a nonnegative quantity: any value but NaN and +inf
    (-inf is an exact zero)."""
    x = _as_float(x)
    _checks.check_values(~jnp.isnan(x) & (x < jnp.inf),
                         f"{name} must be a log: not NaN and not +inf (shape {jnp.shape(x)}).",
                         checked=checked)
    return x


def _check_values_matrix(values, checked: bool) -> Array:
    _checks.check_min_ndim(values, 2, "values")
    _checks.check_nonempty(values, "values")
    v = _as_float(values)
    _checks.check_finite_values(v, "values", checked=checked)
    return v


def _log_dropped(n, k, dtype=None):
    """``ln(n - k)``, -inf at k = n."""
    if isinstance(n, int) and isinstance(k, int):
        return math.log(n - k) if k < n else -math.inf
    gap = jnp.asarray(n - k).astype(dtype)
    return jnp.where(gap > 0, jnp.log(jnp.maximum(gap, 1)), -jnp.inf)


# --- deterministic forms (every finite row) ----------------------------------------


def log_tail_mass_bounds(spread, n: int, k: int, *, checked: bool = False) -> tuple[Array, Array]:
    """D5: ``(log lower, log upper)`` of the tail mass tau of a row with
    ``spread = ln r = max u - min u``:
    ``(n-k)/(n-k + k r) <= tau <= min(1 - k/n, (n-k) r / (k + (n-k) r))``.
    Each shaped like ``spread`` (finite, >= 0) broadcast with n and k: n >= 1 and
    k in [1, n], Python ints or integer arrays (vmap over them works)."""
    n, k = _check_nk(n, k)
    spread = _check_spread(spread, checked)
    log_nk, log_k = _log_dropped(n, k, spread.dtype), _log(k, spread.dtype)
    lower = log_nk - jnp.logaddexp(log_nk, log_k + spread)
    upper = jnp.minimum(log_nk + spread - jnp.logaddexp(log_k, log_nk + spread),
                        log_nk - _log(n, spread.dtype))
    return lower, upper


def log_l2_error_lower_bound(log_tail_mass, n: int, k: int, *, checked: bool = False) -> Array:
    """D6 lower: ``log ||s - s^||_2 >= log tau + (1/2) log(n / (k (n-k)))``.

    The kept entries sum to 1 - tau and the dropped ones to tau, so by
    Cauchy-Schwarz ``||s - s^||_2^2 >= (tau/(1-tau))^2 (1-tau)^2 / k + tau^2 / (n-k)``.
    Increasing in tau: pass a lower bound on tau to get a lower bound. Shaped
    like ``log_tail_mass`` (not NaN, not +inf), broadcast with n and k (Python
    ints or integer arrays).
    """
    n, k = _check_nk(n, k)
    log_tail_mass = _check_log(log_tail_mass, "log_tail_mass", checked)
    if isinstance(n, int) and isinstance(k, int) and k == n:
        return jnp.full_like(log_tail_mass, -jnp.inf)
    dtype = log_tail_mass.dtype
    log_nk = _log_dropped(n, k, dtype)
    value = log_tail_mass + 0.5 * (_log(n, dtype) - _log(k, dtype) - log_nk)
    return value if isinstance(log_nk, float) else jnp.where(jnp.isinf(log_nk), -jnp.inf, value)


def log_l2_error_upper_bound(spread, n: int, k: int, *, checked: bool = False) -> Array:
    """D6 upper (tightened): ``log ||s - s^||_2 <= ln r + (1/2) log((n-k) / (n k))``.

    Every entry is at most ``r / n``, and the odds ``tau/(1-tau)`` are at most
    ``(n-k)/k``; so ``||s - s^||_2^2 <= (r/n)^2 ((n-k)^2/k + (n-k))``.
    Increasing in the spread: pass an upper bound on it to get an upper bound.
    Shaped like ``spread``, broadcast with n and k (Python ints or integer arrays).
    """
    n, k = _check_nk(n, k)
    spread = _check_spread(spread, checked)
    dtype = spread.dtype
    return spread + 0.5 * (_log_dropped(n, k, dtype) - _log(n, dtype) - _log(k, dtype))


def value_radius(values: Array, *, checked: bool = False) -> Array:
    """``max_j ||v_j - vbar||_2`` over the rows of V (..., n, d_v), vbar their mean;
    shape ``values.shape[:-2]``. V must be non-empty and finite."""
    v = _check_values_matrix(values, checked)
    return jnp.max(jnp.linalg.norm(v - jnp.mean(v, axis=-2, keepdims=True), axis=-1), axis=-1)


def value_spectral_norm(values: Array, *, checked: bool = False) -> Array:
    """``||V - 1 vbar^T||_2``, the spectral norm of the centred values (..., n, d_v).

    For tall V (n > d_v) the singular values are those of the d_v x d_v factor R
    of ``V_c = Q R``: the SVD then costs O(n d_v^2) time and O(n d_v) memory
    (an SVD of V_c itself allocated n x n on CPU). Shape ``values.shape[:-2]``;
    V must be non-empty and finite.
    """
    v = _check_values_matrix(values, checked)
    centred = v - jnp.mean(v, axis=-2, keepdims=True)
    if centred.shape[-2] > centred.shape[-1]:
        centred = jnp.linalg.qr(centred, mode="r")
    return jnp.linalg.norm(centred, ord=2, axis=(-2, -1))


def log_output_error_upper_bound(log_tail_upper, log_l2_upper, values: Array, *,
                                 checked: bool = False) -> Array:
    """``log ||(s - s^)^T V||_2 <= log min(2 tau R_V, ||s - s^||_2 ||V_c||_2)``.

    ``s - s^`` sums to zero, so ``(s - s^)^T V = (s - s^)^T (V - 1 vbar^T)``; then
    Hoelder (l1 = 2 tau, D2) and Cauchy-Schwarz with the spectral norm. Pass
    upper bounds on log tau and on the l2 error (deterministic or
    high-probability ones); ``values`` (..., n, d_v) broadcasts against them
    after its last two axes are reduced.
    """
    return log_output_error_bound_from_norms(
        log_tail_upper, log_l2_upper, value_radius(values, checked=checked),
        value_spectral_norm(values, checked=checked), checked=checked)


def log_output_error_bound_from_norms(log_tail_upper, log_l2_upper, radius, spectral, *,
                                      checked: bool = False) -> Array:
    """:func:`log_output_error_upper_bound` from ``R_V = value_radius(V)`` and
    ``||V_c||_2 = value_spectral_norm(V)``, for when V itself is not kept (long
    contexts: the two norms are O(1) numbers, V is n x d_v). The four arguments
    broadcast; the norms must be finite and >= 0, the logs not NaN or +inf."""
    log_tail_upper = _check_log(log_tail_upper, "log_tail_upper", checked)
    log_l2_upper = _check_log(log_l2_upper, "log_l2_upper", checked)
    _checks.check_nonnegative_values(radius, "radius", checked=checked)
    _checks.check_nonnegative_values(spectral, "spectral", checked=checked)
    return jnp.minimum(math.log(2.0) + log_tail_upper + jnp.log(_as_float(radius)),
                       log_l2_upper + jnp.log(_as_float(spectral)))


# --- high-probability forms (Theorems 6.1 and 6.2) ----------------------------------


def row_spread_bound(sigma, n: int, delta, mode: str = "cross",
                     diagonal_offset: Optional[Array] = None, *, checked: bool = False) -> Array:
    """Lemma 4.2 Part 2 for a whole row: ``max_j u_ij - min_j u_ij <= rho`` with
    probability at least 1 - delta (given x_i).

    Cross mode: ``rho = 2 t``, ``t = sigma_i sqrt(2 ln(2n/delta))``. Self mode: the
    n - 1 off-diagonal scores lie within ``mu_i +- t`` (t for n - 1 keys), and the
    diagonal score ``u_ii = mu_i + diagonal_offset`` is fixed given x_i, so
    ``rho = t + max(t, |diagonal_offset|)``. sigma, delta and diagonal_offset
    broadcast; n is a Python int or an integer array (vmap over n works).
    """
    keys = num_independent_keys(n, mode) if isinstance(n, (int, np.integer)) else _array_keys(n, mode)
    sigma = _as_float(sigma)
    _checks.check_finite_values(sigma, "sigma", checked=checked)
    _checks.check_values(sigma >= 0, "sigma (the row's score scale) must be >= 0.", checked=checked)
    t = score_deviation_bound(sigma, keys, delta, checked=checked)
    if mode == "cross":
        if diagonal_offset is not None:
            raise ValueError("diagonal_offset is for self mode only.")
        return 2.0 * t
    if diagonal_offset is None:
        raise ValueError("self mode needs diagonal_offset = u_ii - mu_i (the query's own score).")
    _checks.check_finite_values(diagonal_offset, "diagonal_offset", checked=checked)
    return t + jnp.maximum(t, jnp.abs(_as_float(diagonal_offset)))


def _array_keys(n, mode: str) -> Array:
    """:func:`num_independent_keys` for an integer array of lengths."""
    if mode not in ("self", "cross"):
        raise ValueError(f"mode must be 'self' or 'cross', got {mode!r}.")
    n = _checks.check_count(n, "n", 2 if mode == "self" else 1)
    return n - 1 if mode == "self" else n


class ErrorBounds(NamedTuple):
    """Natural logs of the bounds on one row's top-k error: the tail mass tau
    (D5) and the attention-matrix l2 error ``||s_i - s^_i||_2`` (D6)."""

    log_tail_lower: Array
    log_tail_upper: Array
    log_l2_lower: Array
    log_l2_upper: Array


def deterministic_error_bounds(spread, n: int, k: int, *, checked: bool = False) -> ErrorBounds:
    """D5 and D6 for a row with the given ``spread = max u - min u``: they hold
    for every finite row (the identities the high-probability forms rest on).
    Each field shaped like ``spread``."""
    lower, upper = log_tail_mass_bounds(spread, n, k, checked=checked)
    return ErrorBounds(lower, upper, log_l2_error_lower_bound(lower, n, k),
                       log_l2_error_upper_bound(spread, n, k, checked=checked))


def row_error_bounds(sigma, n: int, k: int, delta, mode: str = "cross",
                     diagonal_offset: Optional[Array] = None, *, checked: bool = False) -> ErrorBounds:
    """Theorems 6.1 (upper) and 6.2 (lower), per row: with probability at least
    1 - delta, all four bounds hold for row i (D5 and D6 with ``r <= e^rho``,
    rho from :func:`row_spread_bound`).

    With ``k = alpha n^C`` the upper bound is ``e^rho n^{-C/2} / sqrt(alpha)``,
    and ``rho = O(sqrt(ln n))`` for a fixed sigma, so it goes to 0 (Theorem 6.1,
    per row). With k fixed (or ``O(ln n)``), ``k e^rho = n^{o(1)}``, so the tail
    lower bound goes to 1 and the l2 lower bound to ``1/sqrt(k)``: the error does
    not vanish (Theorem 6.2). Each field shaped like sigma (broadcast with delta,
    diagonal_offset, n and k; n and k Python ints or integer arrays).
    """
    _checks.check_probability_values(delta, "delta", checked=checked)
    spread = row_spread_bound(sigma, n, delta, mode, diagonal_offset, checked=checked)
    return deterministic_error_bounds(spread, n, k, checked=checked)


def frobenius_error_bounds(sigma, n: int, k: int, delta, mode: str = "cross",
                           diagonal_offset: Optional[Array] = None, *,
                           checked: bool = False) -> tuple[Array, Array]:
    """Theorems 6.1 / 6.2 in Frobenius norm: ``(log lower, log upper)`` of
    ``||S - S^||_F = sqrt(sum_i ||s_i - s^_i||_2^2)`` over the m rows given (the
    last axis of ``sigma``; pass all n rows of the matrix). Each row uses
    ``delta / m``, so both hold together with probability at least 1 - delta.
    The RMS row error is the total divided by sqrt(m). Both shaped
    ``sigma.shape[:-1]`` (m >= 1 rows).
    """
    sigma = _as_float(sigma)
    _checks.check_min_ndim(sigma, 1, "sigma")
    _checks.check_nonempty(sigma, "sigma")
    m = sigma.shape[-1]
    _checks.check_probability_values(delta, "delta", checked=checked)
    rows = row_error_bounds(sigma, n, k, jnp.asarray(delta) / m, mode, diagonal_offset, checked=checked)
    return (0.5 * jax.nn.logsumexp(2.0 * rows.log_l2_lower, axis=-1),
            0.5 * jax.nn.logsumexp(2.0 * rows.log_l2_upper, axis=-1))


__all__ = [
    "ErrorBounds",
    "deterministic_error_bounds",
    "frobenius_error_bounds",
    "log_l2_error_lower_bound",
    "log_l2_error_upper_bound",
    "log_output_error_bound_from_norms",
    "log_output_error_upper_bound",
    "log_tail_mass_bounds",
    "row_error_bounds",
    "row_spread_bound",
    "value_radius",
    "value_spectral_norm",
]
