"""High-probability bounds of Section 4, with explicit constants.

Lemma 4.2 (Parts 1-3), precise forms (docs/theory.md has statements and proofs).
Setting: cross attention, one query row x_i, keys y_1..y_n independent of x_i
with i.i.d. entries ``m + Z`` (Z centred, sub-Gaussian variance proxy nu^2).
With ``w_i = scale * W^T x_i`` (W = W_Q W_K^T), the scores are
``u_ij = <w_i, y_j> = mu_i + <w_i, z_j>``, where ``mu_i = m <w_i, 1>`` is the
same for every key, and conditional on x_i the centred scores are independent
and sub-Gaussian with proxy ``sigma_i^2 = nu^2 ||w_i||_2^2``.

Self attention: for j != i the same holds with the n - 1 keys other than i;
pass ``num_keys = n - 1`` and leave the diagonal out of the checked quantity.
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

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
