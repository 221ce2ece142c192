"""The inputs of the bounds from a user's own tensors: the row score scale
sigma_i and the row score mean mu_i of Lemma 4.2.

The bounds of :mod:`sparsity_theory.bounds` take, per query row i, the scale
sigma_i of the centred scores ``u_ij - mu_i`` (Lemma 4.2: a sub-Gaussian
variance proxy, ``P(|u_ij - mu_i| > t) <= 2 exp(-t^2 / (2 sigma_i^2))``).
:func:`sparsity_theory.bounds.row_score_scale` computes it from the paper's
input model and weights (``sigma_i = nu ||w_i||``, ``w_i = scale W_K W_Q^T x_i``).
Here the same numbers come from what an attention layer already has:

* the projected query rows ``Q`` (m x d; row i is ``q_i``) and
* the law of the projected keys ``k_j`` (d,): their mean ``E k`` and covariance
  ``Sigma_K``, known (:func:`score_scale_from_covariance`,
  :func:`score_mean_from_key_mean`) or estimated from sampled keys
  (:func:`key_moments`, :func:`score_scale_from_keys`, :func:`score_mean_from_keys`).

With scores ``u_ij = scale <q_i, k_j>`` and keys i.i.d. and independent of q_i,
given q_i the scores of row i are i.i.d. with

    ``mu_i = E[u_ij | q_i] = scale <q_i, E k>``,
    ``Var(u_ij | q_i) = scale^2 q_i^T Sigma_K q_i``,

so ``sigma_i = |scale| sqrt(q_i^T Sigma_K q_i)`` is the exact standard deviation
of the centred score. It is the sub-Gaussian variance proxy the theorems need
when the keys are Gaussian (then ``u_ij - mu_i ~ N(0, sigma_i^2)``), and also for
the paper's input models, whose keys ``k_j = W_K^T y_j`` are linear images of
vectors with independent strictly sub-Gaussian entries (proxy = variance;
:func:`model_key_moments` gives their moments, and the result equals
``bounds.row_score_scale``). For other key laws the standard deviation is only a
lower bound on the proxy: bounds computed from it need not hold.

Self attention: the key j = i is the query itself; as in :mod:`bounds`, the
bounds then count ``n - 1`` keys and leave the diagonal out.

All functions are pure JAX (jit, vmap, grad), keep the floating dtype of their
array arguments (integer arrays become JAX's default float), and, eagerly,
reject bad input with a one-line ValueError naming the argument.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from sparsity_theory import _checks
from sparsity_theory.inputs import AttentionWeights, InputModel

Array = jax.Array

__all__ = [
    "KeyMoments",
    "key_moments",
    "model_key_moments",
    "score_mean_from_key_mean",
    "score_mean_from_keys",
    "score_scale_from_covariance",
    "score_scale_from_keys",
]


class KeyMoments(NamedTuple):
    """Mean ``E k`` (d,) and covariance ``Sigma_K`` (d, d) of the projected keys."""

    mean: Array
    covariance: Array


# --- validation ---------------------------------------------------------------------


def _array(x):
    """Lists and tuples as NumPy arrays (JAX's dtype rules do not take them);
    arrays and tracers as given."""
    return np.asarray(x) if isinstance(x, (list, tuple)) else x


def _dtype(*arrays) -> jnp.dtype:
    """The floating dtype the arrays promote to (integers: JAX's default float)."""
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)


def _check_scale(scale) -> None:
    # A Python or NumPy scalar is checked eagerly; a traced one (grad in scale) is not.
    if _checks.is_concrete(scale):
        if np.ndim(scale) != 0:
            raise ValueError(f"scale must be a scalar, got shape {np.shape(scale)}.")
        _checks.check_finite_scalar(scale, "scale")


def _check_queries(queries, d_name: str = "queries") -> int:
    """Queries are (d,) or (m, d), finite; returns d."""
    if np.ndim(queries) not in (1, 2):
        raise ValueError(f"{d_name} must have shape (d,) or (m, d), got shape {np.shape(queries)}.")
    if np.shape(queries)[-1] < 1:
        raise ValueError(f"{d_name} must have d >= 1 columns, got shape {np.shape(queries)}.")
    _checks.check_finite_array(queries, d_name)
    return int(np.shape(queries)[-1])


def _check_covariance(covariance, d: int) -> None:
    """Shape (d, d), finite, and the cheap necessary conditions of positive
    semi-definiteness: symmetric, diagonal >= 0, ``|S_ab| <= sqrt(S_aa S_bb)``
    (each 2 x 2 principal minor >= 0), up to rounding."""
    if np.shape(covariance) != (d, d):
        raise ValueError(f"key_covariance must have shape (d, d) = ({d}, {d}) to match the "
                         f"queries, got shape {np.shape(covariance)}.")
    _checks.check_finite_array(covariance, "key_covariance")
    if not _checks.is_concrete(covariance):
        return
    s = np.asarray(covariance, dtype=np.float64)
    tol = 64 * float(np.finfo(np.asarray(covariance).dtype
                                if np.issubdtype(np.asarray(covariance).dtype, np.floating)
                                else np.float64).eps)
    diag = np.diagonal(s)
    size = float(np.max(np.abs(s))) if s.size else 0.0
    if np.any(diag < -tol * size):
        raise ValueError(f"key_covariance is not positive semi-definite: its diagonal has a "
                         f"negative entry (min {float(diag.min()):.3g}).")
    if not np.allclose(s, s.T, rtol=tol, atol=tol * size):
        raise ValueError("key_covariance must be symmetric (a covariance matrix).")
    bound = np.sqrt(np.outer(np.maximum(diag, 0.0), np.maximum(diag, 0.0)))
    if np.any(np.abs(s) > bound * (1 + tol) + tol * size):
        raise ValueError("key_covariance is not positive semi-definite: an off-diagonal entry "
                         "exceeds sqrt(S_aa S_bb) (a 2 x 2 principal minor is negative).")


def _check_key_mean(key_mean, d: int) -> None:
    if np.shape(key_mean) != (d,):
        raise ValueError(f"key_mean must have shape (d,) = ({d},) to match the queries, "
                         f"got shape {np.shape(key_mean)}.")
    _checks.check_finite_array(key_mean, "key_mean")


def _check_keys(keys, d: int) -> None:
    if np.ndim(keys) != 2 or np.shape(keys)[-1] != d:
        raise ValueError(f"keys must have shape (n, d) with d = {d} to match the queries, "
                         f"got shape {np.shape(keys)}.")
    if np.shape(keys)[0] < 2:
        raise ValueError(f"keys must have n >= 2 rows to estimate a covariance, "
                         f"got shape {np.shape(keys)}.")
    _checks.check_finite_array(keys, "keys")


# --- known key law -------------------------------------------------------------------


def score_scale_from_covariance(queries, key_covariance, scale=1.0) -> Array:
    """Lemma 4.2's sigma_i from the key covariance:
    ``sigma_i = |scale| sqrt(q_i^T Sigma_K q_i)``.

    The exact standard deviation of ``u_ij = scale <q_i, k_j>`` given q_i when
    the keys are i.i.d. with covariance Sigma_K and independent of q_i; the
    sub-Gaussian variance proxy of Lemma 4.2 when the keys are Gaussian (or a
    linear image of independent strictly sub-Gaussian entries, as in the
    paper's input models). See the module docstring.

    Shapes: ``queries`` (m, d) or (d,), ``key_covariance`` (d, d); returns (m,)
    or (), in the promoted floating dtype of the two. The quadratic form is
    clipped at 0 (rounding can make it slightly negative for a singular
    Sigma_K); a clearly negative one raises, since Sigma_K is then not PSD.

    Raises:
        ValueError: naming the argument, for bad shapes, non-finite entries, a
            non-scalar or non-finite scale, or a covariance that fails the cheap
            PSD checks (symmetry, diagonal >= 0, 2 x 2 minors >= 0, and
            ``q_i^T Sigma_K q_i >= 0`` on the given rows).
    """
    queries, key_covariance = _array(queries), _array(key_covariance)
    d = _check_queries(queries)
    _check_covariance(key_covariance, d)
    _check_scale(scale)
    dtype = _dtype(queries, key_covariance)
    q = jnp.asarray(queries).astype(dtype)
    s = jnp.asarray(key_covariance).astype(dtype)
    quad = jnp.einsum("...a,ab,...b->...", q, s, q)
    if _checks.is_concrete(quad):
        # Rounding bound of the quadratic form: d * eps * ||q||^2 * max|S| (times a margin).
        slack = 64 * d * float(jnp.finfo(dtype).eps) * np.sum(np.square(np.asarray(q)), axis=-1) \
            * float(np.max(np.abs(np.asarray(s))))
        if np.any(np.asarray(quad) < -slack):
            raise ValueError("key_covariance is not positive semi-definite: q_i^T Sigma_K q_i < 0 "
                             "for a query row.")
    return (jnp.abs(jnp.asarray(scale, dtype)) * jnp.sqrt(jnp.maximum(quad, 0))).astype(dtype)


def score_mean_from_key_mean(queries, key_mean, scale=1.0) -> Array:
    """Lemma 4.2's mu_i: ``mu_i = E[u_ij | q_i] = scale <q_i, E k>``, the same for
    every key j, so the softmax ignores it (Fact B.1) and only Lemma 4.2 Parts 1
    and 3 use it (the centring of the scores, the normaliser's lower bound).

    Shapes: ``queries`` (m, d) or (d,), ``key_mean`` (d,); returns (m,) or (),
    in the promoted floating dtype. ValueError naming the argument for bad
    shapes or non-finite values.
    """
    queries, key_mean = _array(queries), _array(key_mean)
    d = _check_queries(queries)
    _check_key_mean(key_mean, d)
    _check_scale(scale)
    dtype = _dtype(queries, key_mean)
    q = jnp.asarray(queries).astype(dtype)
    return (jnp.asarray(scale, dtype) * (q @ jnp.asarray(key_mean).astype(dtype))).astype(dtype)


# --- the paper's input model (agreement with bounds.row_score_scale) -----------------


def model_key_moments(weights: AttentionWeights, model: InputModel) -> KeyMoments:
    """Moments of the projected keys ``k_j = W_K^T y_j`` under the paper's input
    model (entries ``m + Z``, Z centred with proxy nu^2):
    ``E k = m W_K^T 1`` and ``Sigma_K = nu^2 W_K^T W_K``.

    nu^2 is ``model.variance_proxy``, which for the library's three models is
    the entries' variance, so this is the keys' exact covariance. With it,
    :func:`score_scale_from_covariance` applied to ``q_i = W_Q^T x_i`` equals
    ``bounds.row_score_scale(x_i, weights, model, scale)`` = nu ||w_i||, and
    :func:`score_mean_from_key_mean` equals ``bounds.row_score_mean``:
    ``scale^2 q_i^T W_K^T W_K q_i nu^2 = nu^2 ||scale W_K q_i||^2`` with
    ``w_i = scale W_K W_Q^T x_i``. Shapes (d',) and (d', d') for W_K of shape
    (d, d'); the dtype of W_K.
    """
    w_k = jnp.asarray(weights.key)
    _checks.check_ndim(w_k, 2, "weights.key")
    nu2 = jnp.asarray(model.variance_proxy, w_k.dtype)
    mean = jnp.asarray(model.mean, w_k.dtype) * jnp.sum(w_k, axis=0)
    return KeyMoments(mean, nu2 * (w_k.T @ w_k))


# --- estimated from sampled keys -----------------------------------------------------


def key_moments(keys) -> KeyMoments:
    """Empirical mean and unbiased covariance (divisor n - 1) of sampled keys
    ``K`` (n x d, n >= 2), in K's floating dtype.

    An estimate: its error is O(1/sqrt(n)) relative for a well-conditioned
    Sigma_K. The theorems condition on a sigma_i that does not depend on the
    keys the bound is checked on, so estimate from an independent calibration
    sample of keys (or use the known law), not from the keys of the checked
    row. ValueError naming ``keys`` for a bad shape or non-finite entries.
    """
    keys = _array(keys)
    if np.ndim(keys) != 2:
        raise ValueError(f"keys must have shape (n, d), got shape {np.shape(keys)}.")
    _check_keys(keys, int(np.shape(keys)[-1]))
    k = jnp.asarray(keys)
    k = k.astype(_dtype(k))
    mean = jnp.mean(k, axis=0)
    centred = k - mean
    return KeyMoments(mean, centred.T @ centred / (k.shape[0] - 1))


def _queries_and_key_moments(queries, keys, scale):
    """The validated query rows and the sample moments of the keys."""
    queries, keys = _array(queries), _array(keys)
    _check_keys(keys, _check_queries(queries))
    _check_scale(scale)
    return queries, key_moments(keys)


def score_scale_from_keys(queries, keys, scale=1.0) -> Array:
    """Estimated sigma_i: :func:`score_scale_from_covariance` with the empirical
    covariance of ``keys`` (n x d), i.e. the sample standard deviation
    (divisor n - 1) of the scores ``scale <q_i, k_j>`` over j. An estimate, valid
    for the theorems only if the keys are independent of the query and of the
    keys the bound is then checked on (see :func:`key_moments`). Shapes as in
    :func:`score_scale_from_covariance`."""
    queries, moments = _queries_and_key_moments(queries, keys, scale)
    dtype = _dtype(queries, moments.covariance)
    return score_scale_from_covariance(jnp.asarray(queries).astype(dtype),
                                       moments.covariance.astype(dtype), scale)


def score_mean_from_keys(queries, keys, scale=1.0) -> Array:
    """Estimated mu_i: ``scale <q_i, mean_j k_j>``, the mean of row i's scores
    over the sampled keys (n x d). An estimate; see :func:`key_moments`."""
    queries, moments = _queries_and_key_moments(queries, keys, scale)
    dtype = _dtype(queries, moments.mean)
    return score_mean_from_key_mean(jnp.asarray(queries).astype(dtype),
                                    moments.mean.astype(dtype), scale)

