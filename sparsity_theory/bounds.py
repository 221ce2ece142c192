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
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special, stats

from sparsity_theory import _checks
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


def _check_common(num_keys, delta) -> int:
    num_keys = _checks.check_int(num_keys, "num_keys")
    if num_keys < 1:
        raise ValueError(f"num_keys must be >= 1, got {num_keys}.")
    _checks.check_probability(delta, "delta")
    return num_keys


def score_deviation_bound(sigma, num_keys: int, delta) -> Array:
    """Lemma 4.2 Part 1: ``P(max_j |u_ij - mu_i| > t) <= delta`` for
    ``t = sigma_i sqrt(2 ln(2 n / delta))`` (n = ``num_keys``)."""
    num_keys = _check_common(num_keys, delta)
    return jnp.asarray(sigma) * jnp.sqrt(2.0 * jnp.log(2.0 * num_keys / jnp.asarray(delta)))


def score_spread_bound(sigma, num_keys: int, delta) -> Array:
    """Lemma 4.2 Part 2: ``max_j u_ij - min_j u_ij <= 2 sigma_i sqrt(2 ln(2n/delta))``
    with probability at least 1 - delta (on the event of Part 1)."""
    return 2.0 * score_deviation_bound(sigma, num_keys, delta)


def normaliser_deficit(sigma, num_keys: int, delta) -> Array:
    """``eta = sigma_i sqrt(2 ln(1/delta) / n)`` of Lemma 4.2 Part 3."""
    num_keys = _check_common(num_keys, delta)
    return jnp.asarray(sigma) * jnp.sqrt(2.0 * jnp.log(1.0 / jnp.asarray(delta)) / num_keys)


def log_normaliser_lower_bound(sigma, num_keys: int, delta, mean: Optional[Array] = 0.0) -> Array:
    """Lemma 4.2 Part 3: ``log sum_j exp(u_ij) >= log n + mu_i - eta`` with
    probability at least 1 - delta (Jensen, then the sub-Gaussian mean)."""
    eta = normaliser_deficit(sigma, num_keys, delta)
    return math.log(_checks.check_int(num_keys, "num_keys")) + jnp.asarray(mean) - eta


# --- Theorem 4.3: attention is naturally sparse --------------------------------

COUNT_METHODS = ("binomial", "hoeffding")


def _check_method(method: str) -> str:
    if method not in COUNT_METHODS:
        raise ValueError(f"method must be one of {COUNT_METHODS}, got {method!r}.")
    return method


def _check_sigma(sigma) -> np.ndarray:
    sigma = np.asarray(sigma, dtype=np.float64)
    if not np.all(np.isfinite(sigma)) or np.any(sigma < 0):
        raise ValueError("sigma must be finite and >= 0.")
    return sigma


def count_exceedance_probability(num_keys: int, num_small: int, delta, method: str = "binomial") -> float:
    """The largest per-key exceedance probability p for which at most
    ``num_keys - num_small`` of ``num_keys`` independent keys exceed a threshold,
    except with probability delta.

    The exceedance count N is dominated by Binomial(n, p). ``binomial``: the exact
    largest p with ``P(Binomial(n, p) >= n - k + 1) <= delta``, which is
    ``I^{-1}_delta(n - k + 1, k)`` (the binomial tail is a regularised incomplete
    beta function, increasing in p). ``hoeffding``: ``p = 1 - k/n -
    sqrt(ln(1/delta) / (2n))`` from ``N <= n p + sqrt(n ln(1/delta) / 2)``; zero or
    less means Hoeffding certifies nothing (returned as 0.0).
    """
    num_keys = _check_common(num_keys, delta)
    num_small = _checks.check_int(num_small, "num_small")
    if not 1 <= num_small <= num_keys:
        raise ValueError(f"num_small must be in [1, num_keys={num_keys}], got {num_small}.")
    delta = float(delta)
    if _check_method(method) == "binomial":
        p = float(special.betaincinv(num_keys - num_small + 1, num_small, delta))
        # betaincinv is accurate to rounding; step below it so the tail is <= delta.
        return p * (1.0 - 1e-12)
    return max(0.0, 1.0 - num_small / num_keys - math.sqrt(math.log(1.0 / delta) / (2.0 * num_keys)))


def small_entry_score_threshold(sigma, num_keys: int, num_small: int, delta,
                                method: str = "binomial") -> np.ndarray:
    """Theorem 4.3's threshold t: with probability at least 1 - delta, at least
    ``num_small`` of the n centred scores satisfy ``u_ij - mu_i <= t``.

    Each centred score exceeds t with probability at most ``exp(-t^2/(2 sigma_i^2))``
    (sub-Gaussian Chernoff bound); t is the smallest value making that at most
    ``count_exceedance_probability(...)``. ``inf`` where no t works (Hoeffding
    with ``n - k < sqrt(n ln(1/delta)/2)``).
    """
    sigma = _check_sigma(sigma)
    p = count_exceedance_probability(num_keys, num_small, delta, method)
    if p <= 0.0:
        return np.full_like(sigma, np.inf)
    if p >= 1.0:
        return np.zeros_like(sigma)
    return sigma * math.sqrt(2.0 * math.log(1.0 / p))


def small_entry_log_bound(sigma, num_keys: int, num_small: int, delta_count, delta_normaliser,
                          method: str = "binomial") -> np.ndarray:
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
    """
    _checks.check_probability(delta_normaliser, "delta_normaliser")
    t = small_entry_score_threshold(sigma, num_keys, num_small, delta_count, method)
    eta = np.asarray(normaliser_deficit(_check_sigma(sigma), num_keys, delta_normaliser))
    return t + eta - math.log(num_keys)


def guaranteed_small_entries(sigma, num_keys: int, eps, delta_count, delta_normaliser,
                             method: str = "binomial") -> np.ndarray:
    """Converse of Theorem 4.3: a count k such that at least k softmax entries of
    row i are at most eps (``|S_eps(s_i)| >= k``), with probability at least
    ``1 - delta_count - delta_normaliser``.

    ``t = ln(n eps) - eta``: on Part 3's event every key with ``u_ij - mu_i <= t``
    has ``s_ij <= eps``. The number of keys above t is dominated by
    Binomial(n, p), ``p = exp(-t^2/(2 sigma_i^2))``; k is n minus its
    ``1 - delta_count`` quantile (``binomial``: the exact quantile q, the smallest
    with ``P(Binomial(n, p) > q) <= delta_count``; ``hoeffding``:
    ``floor(n p + sqrt(n ln(1/delta_count)/2))``). k = 0 where t <= 0: the
    Chernoff bound says nothing below the mean. Self mode: ``num_keys = n - 1``.
    Returns an int64 array shaped like sigma (broadcast with eps).
    """
    num_keys = _check_common(num_keys, delta_count)
    _checks.check_probability(delta_normaliser, "delta_normaliser")
    _check_method(method)
    sigma = _check_sigma(sigma)
    eps = np.asarray(eps, dtype=np.float64)
    if np.any(~(eps > 0)) or np.any(eps > 1):
        raise ValueError("eps must be in (0, 1].")
    eta = np.asarray(normaliser_deficit(sigma, num_keys, delta_normaliser))
    t = np.log(num_keys * eps) - eta
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.where(t > 0, -np.square(t) / (2.0 * np.square(sigma)), 0.0)
    p = np.exp(log_p)  # sigma = 0 and t > 0: p = 0, every key is small
    if method == "hoeffding":
        q = np.floor(num_keys * p + math.sqrt(num_keys * math.log(1.0 / delta_count) / 2.0))
    else:
        q = stats.binom.isf(delta_count, num_keys, p)
        # Make q exactly the smallest count with P(N > q) <= delta_count.
        q = np.where(stats.binom.sf(q, num_keys, p) > delta_count, q + 1, q)
        q = np.where((q > 0) & (stats.binom.sf(q - 1, num_keys, p) <= delta_count), q - 1, q)
    return np.clip(num_keys - q, 0, num_keys).astype(np.int64)


# --- Theorem 5.1: attention collapse ----------------------------------------------


def largest_entry_log_bound(sigma, num_keys: int, delta_scores, delta_normaliser) -> Array:
    """``log`` of the bound ``s_ij <= exp(t_1 + eta) / n`` on every softmax entry.

    ``t_1 = sigma_i sqrt(2 ln(n / delta_1))`` bounds ``max_j (u_ij - mu_i)``
    (one-sided Part 1) and ``eta`` is Part 3's deficit at ``delta_2``; together
    with probability at least ``1 - delta_1 - delta_2`` (Theorem 5.1's proof).
    """
    num_keys = _check_common(num_keys, delta_scores)
    _checks.check_probability(delta_normaliser, "delta_normaliser")
    sigma = jnp.asarray(sigma)
    t1 = sigma * jnp.sqrt(2.0 * jnp.log(num_keys / jnp.asarray(delta_scores)))
    return t1 + normaliser_deficit(sigma, num_keys, delta_normaliser) - math.log(num_keys)


def collapse_condition(sigma, num_keys: int, eps, delta_scores, delta_normaliser) -> Array:
    """Theorem 5.1 (attention collapse): True where
    ``ln(n eps) >= sigma_i sqrt(2 ln(n/delta_1)) + eta``; then, with probability
    at least ``1 - delta_1 - delta_2``, no entry of the row exceeds eps
    (``E_i(eps) = 0``; in self mode, no off-diagonal entry, using n - 1 keys)."""
    _checks.check_eps(eps)
    return largest_entry_log_bound(sigma, num_keys, delta_scores, delta_normaliser) <= jnp.log(
        jnp.asarray(eps))


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
