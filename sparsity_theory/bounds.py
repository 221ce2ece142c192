"""High-probability bounds of Sections 4 and 5, with explicit constants.

Lemma 4.2 (Parts 1-3), Theorem 4.3 (natural sparsity, both directions) and
Theorem 5.1 (attention collapse), in precise forms (docs/theory.md has the
statements and proofs).
Setting: cross attention, one query row x_i, keys y_1..y_n independent of x_i
with i.i.d. entries ``m + Z`` (Z centred, sub-Gaussian variance proxy nu^2).
With ``w_i = scale * W^T x_i`` (W = W_Q W_K^T), the scores are
``u_ij = <w_i, y_j> = mu_i + <w_i, z_j>``, where ``mu_i = m <w_i, 1>`` is the
same for every key, and conditional on x_i the centred scores are independent
and sub-Gaussian with proxy ``sigma_i^2 = nu^2 ||w_i||_2^2``.

Self attention: for j != i the same holds with the n - 1 keys other than i;
pass ``num_keys = num_independent_keys(n, "self") = n - 1`` and leave the
diagonal out of the checked quantity.

Row-free forms: every bound here is increasing in sigma (eps_k, thresholds,
the largest-entry bound) or decreasing (the guaranteed count, the normaliser
bound), so passing ``gamma = row_free_score_scale(...) >= sigma_i`` in place of
sigma_i gives the row-free form, valid for every row at once.

Every bound is a pure JAX function (jit, vmap, grad; float32 or float64 kept as
given; no SciPy at call time): Theorem 4.3's exact binomial form uses the JAX
incomplete-beta inverses of :mod:`sparsity_theory.special`. See "shared
argument handling" below for shapes, validation and ``checked=True``.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from sparsity_theory import _checks, special
from sparsity_theory.inputs import AttentionWeights, InputModel

Array = jax.Array


def row_weight_vector(x_row: Array, weights: AttentionWeights, scale: float = 1.0) -> Array:
    """``w_i = scale * W^T x_i`` with ``W = W_Q W_K^T``, so that ``u_ij = <w_i, y_j>``."""
    return scale * (weights.key @ (weights.query.T @ x_row))


def row_score_scale(x_row: Array, weights: AttentionWeights, model: InputModel,
                    scale: float = 1.0) -> Array:
    """``sigma_i = nu ||w_i||_2``: the sub-Gaussian scale of row i's centred scores."""
    return math.sqrt(model.variance_proxy) * jnp.linalg.norm(
        row_weight_vector(x_row, weights, scale), axis=-1)


def row_score_mean(x_row: Array, weights: AttentionWeights, model: InputModel,
                   scale: float = 1.0) -> Array:
    """``mu_i = E[u_ij | x_i] = m <w_i, 1>``: the same for every key j, so the
    softmax ignores it (Fact B.1)."""
    return model.mean * jnp.sum(row_weight_vector(x_row, weights, scale), axis=-1)


def row_free_score_scale(weights: AttentionWeights, model: InputModel, d: int,
                         scale: float = 1.0) -> float:
    """``gamma = nu * scale * ||W||_2 * R * sqrt(d) >= sigma_i`` for every row
    (Definition 4.1's single constant), with R the model's almost-sure bound.

    Since ``||x_i||_2 <= R sqrt(d)`` surely. Unavailable (ValueError) for an
    unbounded model such as Gaussian.
    """
    bound = model.almost_sure_bound
    if bound is None:
        raise ValueError(f"{model!r} has no almost-sure bound R: the row-free gamma needs one.")
    spectral = float(np.linalg.norm(np.asarray(weights.score_matrix), 2))
    return math.sqrt(model.variance_proxy) * abs(scale) * spectral * bound * math.sqrt(d)


def num_independent_keys(n: int, mode: str) -> int:
    """The number of keys the bounds count for a row of an n-key attention:
    n in cross mode, n - 1 in self mode (the diagonal key is the query itself, so
    its score is not sub-Gaussian given x_i; the bounds cover the off-diagonal
    entries and the diagonal only enlarges the normaliser)."""
    n = _checks.check_int(n, "n")
    if mode not in ("self", "cross"):
        raise ValueError(f"mode must be 'self' or 'cross', got {mode!r}.")
    keys = n - 1 if mode == "self" else n
    if keys < 1:
        raise ValueError(f"{mode} mode needs n >= {2 if mode == 'self' else 1}, got {n}.")
    return keys


# --- shared argument handling ------------------------------------------------------
#
# Every bound below is a pure JAX function: it works under ``jit``, ``vmap`` (over
# sigma, delta, eps, and over num_keys / num_small passed as integer arrays) and,
# for the real-valued ones, ``grad`` with respect to sigma and the deltas. It keeps
# the floating dtype it is given (float32 in, float32 out; Python floats are
# weakly typed and follow the arrays) and needs neither SciPy nor x64.
#
# Validation: eagerly, bad input raises a one-line ValueError naming the
# argument. Under jit, shapes and Python-int counts are still checked; traced
# values are checked only with ``checked=True``, as ``checkify`` checks:
#
#     f = functools.partial(score_deviation_bound, num_keys=64, checked=True)
#     err, t = checkify.checkify(jax.jit(f), errors=checkify.user_checks)(sigma, delta=0.05)
#     err.throw()
#
# Pass the arguments by keyword where they are easy to confuse (the deltas).

# Theorem 4.3's functions evaluate binomial tails at n: counts must stay exact
# integers in float64 (the library's reference precision).
MAX_BINOMIAL_KEYS = 2**53


def _floating(*args) -> jnp.dtype:
    """The floating dtype the array arguments promote to (JAX's rules: Python
    scalars are weak, so a float32 sigma with ``delta=0.05`` stays float32)."""
    arrays = (np.asarray(a) if isinstance(a, (list, tuple)) else a for a in args if a is not None)
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _as_float(x, dtype) -> Array:
    """``x`` as an array of the computation's floating dtype (from :func:`_floating`)."""
    return jnp.asarray(np.asarray(x) if isinstance(x, (list, tuple)) else x).astype(dtype)


def _num_keys(num_keys, maximum=None):
    return _checks.check_count(num_keys, "num_keys", 1, maximum)


def _log_count(n, dtype):
    """``log n`` for a Python int of any size (``math.log`` is exact-rounded for big
    ints, so n = 10**30 needs no float conversion) or an integer array."""
    if isinstance(n, int):
        return math.log(n)
    return jnp.log(n.astype(dtype))


def _check_sigma(sigma, checked: bool) -> None:
    _checks.check_nonnegative_values(sigma, "sigma", checked=checked)


def _check_delta(delta, name: str, checked: bool) -> None:
    _checks.check_probability_values(delta, name, checked=checked)


# --- Lemma 4.2 -------------------------------------------------------------------


def score_deviation_bound(sigma, num_keys, delta, *, checked: bool = False) -> Array:
    """Lemma 4.2 Part 1: ``P(max_j |u_ij - mu_i| > t) <= delta`` for
    ``t = sigma_i sqrt(2 ln(2 n / delta))`` (n = ``num_keys``).

    Shapes: sigma and delta broadcast (a Python-int num_keys of any size, or an
    integer array that broadcasts with them, e.g. under vmap). sigma must be
    finite and >= 0, delta in (0, 1), num_keys >= 1.
    """
    n = _num_keys(num_keys)
    _check_sigma(sigma, checked)
    _check_delta(delta, "delta", checked)
    dtype = _floating(sigma, delta)
    sigma, delta = _as_float(sigma, dtype), _as_float(delta, dtype)
    # ln(2n/delta) = ln 2 + ln n - ln delta: no float overflow for huge n.
    return sigma * jnp.sqrt(2.0 * (math.log(2.0) + _log_count(n, dtype) - jnp.log(delta)))


def score_spread_bound(sigma, num_keys, delta, *, checked: bool = False) -> Array:
    """Lemma 4.2 Part 2: ``max_j u_ij - min_j u_ij <= 2 sigma_i sqrt(2 ln(2n/delta))``
    with probability at least 1 - delta (on the event of Part 1). Shapes as in
    :func:`score_deviation_bound`."""
    return 2.0 * score_deviation_bound(sigma, num_keys, delta, checked=checked)


def _deficit(sigma: Array, n, delta: Array, dtype) -> Array:
    # 1/n as exp(-ln n): exact to rounding, and 0 (not an overflow) for huge n.
    inv_n = 1 / n if isinstance(n, int) else jnp.exp(-_log_count(n, dtype))  # int / int: no overflow
    return sigma * jnp.sqrt(2.0 * -jnp.log(delta) * inv_n)


def normaliser_deficit(sigma, num_keys, delta, *, checked: bool = False) -> Array:
    """``eta = sigma_i sqrt(2 ln(1/delta) / n)`` of Lemma 4.2 Part 3. Shapes as in
    :func:`score_deviation_bound`."""
    n = _num_keys(num_keys)
    _check_sigma(sigma, checked)
    _check_delta(delta, "delta", checked)
    dtype = _floating(sigma, delta)
    return _deficit(_as_float(sigma, dtype), n, _as_float(delta, dtype), dtype)


def log_normaliser_lower_bound(sigma, num_keys, delta, mean: Optional[Array] = 0.0, *,
                               checked: bool = False) -> Array:
    """Lemma 4.2 Part 3: ``log sum_j exp(u_ij) >= log n + mu_i - eta`` with
    probability at least 1 - delta (Jensen, then the sub-Gaussian mean).

    ``mean`` is mu_i (finite); sigma, delta and mean broadcast; num_keys as in
    :func:`score_deviation_bound` (any Python int: ``log n`` is taken exactly).
    """
    n = _num_keys(num_keys)
    _checks.check_finite_values(mean, "mean", checked=checked)
    eta = normaliser_deficit(sigma, n, delta, checked=checked)
    return _log_count(n, eta.dtype) + _as_float(mean, _floating(eta, mean)) - eta


# --- Theorem 4.3: attention is naturally sparse --------------------------------

COUNT_METHODS = ("binomial", "hoeffding")


def _check_method(method: str) -> str:
    if method not in COUNT_METHODS:
        raise ValueError(f"method must be one of {COUNT_METHODS}, got {method!r}.")
    return method


def _check_counts(num_keys, num_small):
    """(n, k) with 1 <= k <= n <= MAX_BINOMIAL_KEYS; Python ints or integer arrays."""
    n = _num_keys(num_keys, MAX_BINOMIAL_KEYS)
    k = _checks.check_count(num_small, "num_small", 1)
    if isinstance(n, int) and isinstance(k, int):
        if k > n:
            raise ValueError(f"num_small must be in [1, num_keys={n}], got {k}.")
    elif _checks.is_concrete(n) and _checks.is_concrete(k) and np.any(np.asarray(k) > np.asarray(n)):
        raise ValueError(f"num_small must be in [1, num_keys], got {k!r} for num_keys {n!r}.")
    return n, k


def _safety_factor(dtype) -> float:
    """The relative step below the exact binomial p: 1e-12 in float64 (the inverse
    is accurate to ~1e-13 there), 2**13 ulps in lower precisions (float32: ~1e-3,
    above its inverse's ~1e-4 error at n = 1e7), so the tail is <= delta."""
    eps = float(jnp.finfo(dtype).eps)
    return 1.0 - (1e-12 if eps < 1e-12 else min(0.5, 2.0**13 * eps))


def count_exceedance_probability(num_keys, num_small, delta, method: str = "binomial", *,
                                 checked: bool = False) -> Array:
    """The largest per-key exceedance probability p for which at most
    ``num_keys - num_small`` of ``num_keys`` independent keys exceed a threshold,
    except with probability delta (Theorem 4.3's counting step).

    The exceedance count N is dominated by Binomial(n, p). ``binomial``: the exact
    largest p with ``P(Binomial(n, p) >= n - k + 1) <= delta``, which is
    ``I^{-1}_delta(n - k + 1, k)`` (the binomial tail is a regularised incomplete
    beta function, increasing in p; :func:`sparsity_theory.special.betaincinv`),
    stepped down by a relative 1e-12 (float64) so the tail stays <= delta.
    ``hoeffding``: ``p = 1 - k/n - sqrt(ln(1/delta) / (2n))`` from
    ``N <= n p + sqrt(n ln(1/delta) / 2)``; zero or less means Hoeffding
    certifies nothing (returned as 0).

    Shapes: a 0-d array for scalar arguments; num_keys, num_small (Python ints
    or integer arrays, 1 <= k <= n <= 2**53) and delta broadcast.
    """
    n, k = _check_counts(num_keys, num_small)
    _check_delta(delta, "delta", checked)
    dtype = _floating(delta)
    delta = _as_float(delta, dtype)
    nf = n if isinstance(n, int) else n.astype(dtype)
    kf = k if isinstance(k, int) else k.astype(dtype)
    if _check_method(method) == "binomial":
        p = special.betaincinv(_as_float(nf - kf + 1, dtype), _as_float(kf, dtype), delta)
        return p * _safety_factor(dtype)
    return jnp.maximum(0.0, 1.0 - kf / nf - jnp.sqrt(-jnp.log(delta) / (2.0 * nf))).astype(dtype)


def _threshold_from_p(sigma: Array, p: Array) -> Array:
    """``sigma sqrt(2 ln(1/p))``: inf where p <= 0 (nothing certified), 0 where p >= 1.
    The middle branch sees a safe p, so gradients stay finite where it is unused."""
    usable = (p > 0) & (p < 1)
    safe_p = jnp.where(usable, p, 0.5)
    t = sigma * jnp.sqrt(2.0 * -jnp.log(safe_p))
    return jnp.where(usable, t, jnp.where(p <= 0, jnp.inf, jnp.zeros_like(t)))


def small_entry_score_threshold(sigma, num_keys, num_small, delta, method: str = "binomial", *,
                                checked: bool = False) -> Array:
    """Theorem 4.3's threshold t: with probability at least 1 - delta, at least
    ``num_small`` of the n centred scores satisfy ``u_ij - mu_i <= t``.

    Each centred score exceeds t with probability at most ``exp(-t^2/(2 sigma_i^2))``
    (sub-Gaussian Chernoff bound); t is the smallest value making that at most
    ``count_exceedance_probability(...)``. ``inf`` where no t works (Hoeffding
    with ``n - k < sqrt(n ln(1/delta)/2)``).

    Shapes: sigma broadcasts with the shape of the exceedance probability
    (num_keys, num_small, delta broadcast; see :func:`count_exceedance_probability`).
    """
    _check_method(method)
    _check_sigma(sigma, checked)
    _check_delta(delta, "delta", checked)
    # p in the computation's dtype (a float32 sigma makes it a float32 computation).
    dtype = _floating(sigma, delta)
    p = count_exceedance_probability(num_keys, num_small, _as_float(delta, dtype), method,
                                     checked=checked)
    return _threshold_from_p(_as_float(sigma, dtype), p)


def small_entry_log_bound(sigma, num_keys, num_small, delta_count, delta_normaliser,
                          method: str = "binomial", *, checked: bool = False) -> Array:
    """Theorem 4.3 (attention is naturally sparse): ``log eps_k`` such that at
    least k = ``num_small`` softmax entries of row i are at most
    ``eps_k = exp(t + eta) / n``, i.e. ``|S_eps_k(s_i)| >= k`` (Definition 3.2),
    with probability at least ``1 - delta_count - delta_normaliser``.

    t is ``small_entry_score_threshold`` at ``delta_count`` and eta is Lemma 4.2
    Part 3's deficit at ``delta_normaliser``. mu_i cancels (Fact B.1), so the
    bound does not depend on it. Self mode: ``num_keys = n - 1``, and the k
    entries are off-diagonal ones (the diagonal only enlarges the normaliser).
    ``method``: ``binomial`` (exact quantile, tighter) or ``hoeffding``.
    ``inf`` where the method certifies nothing.

    Shapes: sigma, delta_count, delta_normaliser (and num_keys, num_small as
    integer arrays) broadcast; the deltas are best passed by keyword.
    """
    _check_delta(delta_normaliser, "delta_normaliser", checked)
    n, _ = _check_counts(num_keys, num_small)
    _check_delta(delta_count, "delta_count", checked)
    dtype = _floating(sigma, delta_count, delta_normaliser)
    t = small_entry_score_threshold(_as_float(sigma, dtype), num_keys, num_small,
                                    _as_float(delta_count, dtype), method, checked=checked)
    eta = _deficit(_as_float(sigma, dtype), n, _as_float(delta_normaliser, dtype), dtype)
    return t + eta - _log_count(n, dtype)


def guaranteed_small_entries(sigma, num_keys, eps, delta_count, delta_normaliser,
                             method: str = "binomial", *, checked: bool = False) -> Array:
    """Converse of Theorem 4.3: a count k such that at least k softmax entries of
    row i are at most eps (``|S_eps(s_i)| >= k``), with probability at least
    ``1 - delta_count - delta_normaliser``.

    ``t = ln(n eps) - eta``: on Part 3's event every key with ``u_ij - mu_i <= t``
    has ``s_ij <= eps``. The number of keys above t is dominated by
    Binomial(n, p), ``p = exp(-t^2/(2 sigma_i^2))``; k is n minus its
    ``1 - delta_count`` quantile (``binomial``: the exact quantile q, the smallest
    with ``P(Binomial(n, p) > q) <= delta_count``, by integer bisection on the
    incomplete beta, :func:`sparsity_theory.special.binomial_isf`; ``hoeffding``:
    ``floor(n p + sqrt(n ln(1/delta_count)/2))``). k = 0 where t <= 0: the
    Chernoff bound says nothing below the mean. Self mode: ``num_keys = n - 1``.

    Shapes: sigma, eps, the deltas (and num_keys as an integer array)
    broadcast. Returns JAX's default integer dtype (int64 with x64, else int32);
    counts are computed in the floating dtype of the inputs (exact up to 2**24
    in float32). Not differentiable (a count).
    """
    n = _num_keys(num_keys, MAX_BINOMIAL_KEYS)
    _check_delta(delta_count, "delta_count", checked)
    _check_delta(delta_normaliser, "delta_normaliser", checked)
    _check_method(method)
    _check_sigma(sigma, checked)
    _checks.check_eps_values(eps, "eps", checked=checked)
    dtype = _floating(sigma, eps, delta_count, delta_normaliser)
    sigma, eps = _as_float(sigma, dtype), _as_float(eps, dtype)
    d1, d2 = _as_float(delta_count, dtype), _as_float(delta_normaliser, dtype)
    nf = n if isinstance(n, int) else n.astype(dtype)
    t = jnp.log(nf * eps) - _deficit(sigma, n, d2, dtype)
    # sigma = 0 and t > 0: p = 0, every key is small (safe divisor avoids 0/0).
    safe_sigma = jnp.where(sigma > 0, sigma, 1.0)
    log_p = jnp.where(t > 0, jnp.where(sigma > 0, -jnp.square(t) / (2.0 * jnp.square(safe_sigma)),
                                       -jnp.inf), 0.0)
    p = jnp.exp(log_p)
    if method == "hoeffding":
        q = jnp.floor(nf * p + jnp.sqrt(nf * -jnp.log(d1) / 2.0))
    else:
        q = special.binomial_isf(d1, nf, p)
    int_dtype = jax.dtypes.canonicalize_dtype(jnp.int64)
    return jnp.clip(nf - q, 0, nf).astype(int_dtype)


# --- Theorem 5.1: attention collapse ----------------------------------------------


def largest_entry_log_bound(sigma, num_keys, delta_scores, delta_normaliser, *,
                            checked: bool = False) -> Array:
    """``log`` of the bound ``s_ij <= exp(t_1 + eta) / n`` on every softmax entry.

    ``t_1 = sigma_i sqrt(2 ln(n / delta_1))`` bounds ``max_j (u_ij - mu_i)``
    (one-sided Part 1) and ``eta`` is Part 3's deficit at ``delta_2``; together
    with probability at least ``1 - delta_1 - delta_2`` (Theorem 5.1's proof).
    sigma and the deltas broadcast; num_keys as in :func:`score_deviation_bound`.
    """
    n = _num_keys(num_keys)
    _check_sigma(sigma, checked)
    _check_delta(delta_scores, "delta_scores", checked)
    _check_delta(delta_normaliser, "delta_normaliser", checked)
    dtype = _floating(sigma, delta_scores, delta_normaliser)
    sigma = _as_float(sigma, dtype)
    log_n = _log_count(n, dtype)
    t1 = sigma * jnp.sqrt(2.0 * (log_n - jnp.log(_as_float(delta_scores, dtype))))
    return t1 + _deficit(sigma, n, _as_float(delta_normaliser, dtype), dtype) - log_n


def collapse_condition(sigma, num_keys, eps, delta_scores, delta_normaliser, *,
                       checked: bool = False) -> Array:
    """Theorem 5.1 (attention collapse): True where
    ``ln(n eps) >= sigma_i sqrt(2 ln(n/delta_1)) + eta``; then, with probability
    at least ``1 - delta_1 - delta_2``, no entry of the row exceeds eps
    (``E_i(eps) = 0``; in self mode, no off-diagonal entry, using n - 1 keys).
    sigma, eps and the deltas broadcast; a boolean array."""
    _checks.check_eps_values(eps, "eps", checked=checked)
    bound = largest_entry_log_bound(sigma, num_keys, delta_scores, delta_normaliser, checked=checked)
    return bound <= jnp.log(_as_float(eps, _floating(bound, eps)))


def collapse_length(eps: float, sigma: float, delta_scores: float, delta_normaliser: float,
                    max_length: int = 2**62) -> Optional[int]:
    """``n0(eps, sigma, delta)``: the smallest n from which Theorem 5.1's condition
    holds for every larger n, for a row scale sigma that does not grow with n.

    ``g(n) = ln(n eps) - sigma sqrt(2 ln(n/delta_1)) - sigma sqrt(2 ln(1/delta_2)/n)``
    has ``g'(n) = (1 - sigma / sqrt(2 ln(n/delta_1)) + eta(n)/2) / n``, which is
    positive once ``sqrt(2 ln(n/delta_1)) >= sigma``; from there g only grows, so n0
    is found by bisection on that range. None if n0 exceeds ``max_length``.
    """
    _checks.check_eps(eps)
    sigma = _checks.check_positive(sigma, "sigma")
    for p, name in ((delta_scores, "delta_scores"), (delta_normaliser, "delta_normaliser")):
        _checks.check_probability(p, name)

    def g(n: int) -> float:
        return (math.log(n * eps) - sigma * math.sqrt(2 * math.log(n / delta_scores))
                - sigma * math.sqrt(2 * math.log(1 / delta_normaliser) / n))

    # g increases for n >= n_mono (everywhere when sigma is small).
    log_n_mono = math.log(delta_scores) + sigma**2 / 2
    if log_n_mono > math.log(max_length):
        return None
    n_mono = max(1, math.ceil(math.exp(log_n_mono)))
    if g(n_mono) >= 0:
        # Holds from n_mono on; below it g need not be monotone: walk down while it holds.
        n = n_mono
        while n > 1 and g(n - 1) >= 0:
            n -= 1
        return n
    lo, hi = n_mono, 2 * n_mono  # invariant once found: g(lo) < 0 <= g(hi)
    while g(hi) < 0:
        lo, hi = hi, 2 * hi
        if lo > max_length:
            return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if g(mid) >= 0:
            hi = mid
        else:
            lo = mid
    return hi if hi <= max_length else None
