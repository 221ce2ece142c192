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
