"""sigma_i and mu_i of Lemma 4.2 from a user's own tensors (issue 14 item 3):
sparsity_theory.score_scales."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

import sparsity_theory as st
from sparsity_theory import bounds, score_scales as ss

MODELS = [st.Gaussian(1.3, 0.4), st.Uniform(2.0, -0.7), st.Rademacher(0.5, 1.5)]


def _weights(seed: int, d: int, d_out: int) -> st.AttentionWeights:
    """Rectangular W_Q, W_K (d x d_out): the scores live in the projected space."""
    rng = np.random.default_rng(seed)
    return st.attention_weights(rng.normal(size=(d, d_out)), rng.normal(size=(d, d_out)),
                                rng.normal(size=(d, 3)))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("d,d_out", [(1, 1), (4, 4), (5, 3), (3, 7)])
@pytest.mark.parametrize("scale", [1.0, 0.37, -2.0])
def test_model_case_equals_row_score_scale_and_mean(model, d, d_out, scale):
    """(c) Sigma_K = nu^2 W_K^T W_K and E k = m W_K^T 1 give bounds.row_score_scale
    and bounds.row_score_mean on every query row q_i = W_Q^T x_i."""
    weights = _weights(d * 10 + d_out, d, d_out)
    x = model.sample(jax.random.PRNGKey(d), (6, d))
    q = x @ weights.query
    moments = ss.model_key_moments(weights, model)
    sigma = ss.score_scale_from_covariance(q, moments.covariance, scale)
    mu = ss.score_mean_from_key_mean(q, moments.mean, scale)
    expected_sigma = jnp.stack([bounds.row_score_scale(row, weights, model, scale) for row in x])
    expected_mu = jnp.stack([bounds.row_score_mean(row, weights, model, scale) for row in x])
    np.testing.assert_allclose(sigma, expected_sigma, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(mu, expected_mu, rtol=1e-12, atol=1e-12)
    assert sigma.shape == mu.shape == (6,)


def test_model_key_moments_are_the_keys_moments():
    """The model's moments are those of K = Y W_K (checked on a large sample)."""
    model, weights = st.Uniform(1.0, 0.5), _weights(1, 3, 2)
    y = model.sample(jax.random.PRNGKey(7), (400_000, 3))
    moments = ss.model_key_moments(weights, model)
    empirical = ss.key_moments(y @ weights.key)
    np.testing.assert_allclose(empirical.mean, moments.mean, atol=0.02)
    np.testing.assert_allclose(empirical.covariance, moments.covariance, atol=0.03)


def test_sigma_is_the_exact_standard_deviation_of_the_scores():
    """For Gaussian keys N(m, L L^T): the scores scale <q, k_j> have mean mu_i and
    standard deviation sigma_i (empirically, within a few standard errors)."""
    rng = np.random.default_rng(3)
    d, n = 4, 200_000
    lower = np.tril(rng.normal(size=(d, d)))
    mean = rng.normal(size=d)
    keys = mean + rng.normal(size=(n, d)) @ lower.T
    q = rng.normal(size=(3, d))
    sigma = np.asarray(ss.score_scale_from_covariance(q, lower @ lower.T, 0.5))
    mu = np.asarray(ss.score_mean_from_key_mean(q, mean, 0.5))
    u = 0.5 * q @ keys.T
    # Standard errors: sigma/sqrt(n) for the mean, about sigma/sqrt(2n) for the std.
    assert np.all(np.abs(u.mean(axis=1) - mu) < 5 * sigma / np.sqrt(n))
    assert np.all(np.abs(u.std(axis=1) - sigma) < 5 * sigma / np.sqrt(2 * n))


def test_from_keys_is_the_sample_moment_of_the_scores():
    """(b) The estimates are exactly the sample mean and the sample standard
    deviation (divisor n - 1) of row i's scores over the given keys."""
    rng = np.random.default_rng(4)
    q, keys = rng.normal(size=(5, 3)), rng.normal(size=(50, 3)) * [1.0, 3.0, 0.1] + 2.0
    u = -1.5 * q @ keys.T
    np.testing.assert_allclose(ss.score_scale_from_keys(q, keys, -1.5), u.std(axis=1, ddof=1),
                               rtol=1e-12)
    np.testing.assert_allclose(ss.score_mean_from_keys(q, keys, -1.5), u.mean(axis=1), rtol=1e-12)
    moments = ss.key_moments(keys)
    np.testing.assert_allclose(moments.mean, keys.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(moments.covariance, np.cov(keys, rowvar=False), rtol=1e-12)


@settings(max_examples=40, deadline=None, database=None)
@given(seed=hst.integers(0, 2**31 - 1), d=hst.sampled_from([1, 2, 5]),
       scale=hst.floats(-10, 10, allow_nan=False))
def test_homogeneous_and_single_row(seed, d, scale):
    """sigma(c q) = |c| sigma(q) (a scale of 0 gives 0), and a (d,) query gives
    the () value of the matching (1, d) row."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(d + 1, d))
    cov, q = a.T @ a, rng.normal(size=(2, d))
    base = np.asarray(ss.score_scale_from_covariance(q, cov))
    np.testing.assert_allclose(ss.score_scale_from_covariance(q, cov, scale), abs(scale) * base,
                               rtol=1e-12, atol=1e-300)
    one = ss.score_scale_from_covariance(q[0], cov, scale)
    assert one.shape == ()
    np.testing.assert_allclose(one, abs(scale) * base[0], rtol=1e-12, atol=1e-300)
    assert ss.score_mean_from_key_mean(q[1], np.ones(d), scale).shape == ()


def test_singular_covariance_gives_zero_not_nan():
    """A rank-one Sigma_K and a query orthogonal to it: sigma = 0 (the rounding
    of the quadratic form may be slightly negative; it is clipped, not NaN)."""
    v = np.array([1.0, 1e-8, 3.0])
    cov = np.outer(v, v)
    q = np.array([[3.0, 0.0, -1.0 - 1e-9], [1.0, 2.0, 3.0]])
    sigma = np.asarray(ss.score_scale_from_covariance(q, cov))
    assert np.all(np.isfinite(sigma)) and sigma[0] < 1e-7
    np.testing.assert_allclose(sigma[1], abs(q[1] @ v), rtol=1e-12)


def test_dtype_is_kept():
    q32, cov32 = np.ones((2, 3), np.float32), np.eye(3, dtype=np.float32)
    assert ss.score_scale_from_covariance(q32, cov32).dtype == jnp.float32
    assert ss.score_mean_from_key_mean(q32, np.zeros(3, np.float32)).dtype == jnp.float32
    assert ss.score_scale_from_keys(q32, np.arange(12, dtype=np.float32).reshape(4, 3) ** 2
                                    ).dtype == jnp.float32
    assert ss.key_moments(np.ones((4, 3), np.float32)).covariance.dtype == jnp.float32
    assert ss.score_scale_from_covariance(q32, np.eye(3)).dtype == jnp.float64  # promoted
    # Integer arrays become JAX's default float.
    assert ss.score_scale_from_covariance(np.ones((2, 3), int), np.eye(3, dtype=int)).dtype \
        == jnp.float64
    with st.x64(False):
        out = ss.score_scale_from_covariance(jnp.ones((2, 3)), jnp.eye(3), 0.5)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, 0.5 * np.sqrt(3.0), rtol=1e-6)


def test_jit_vmap_grad():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(3, 3))
    cov, q = a @ a.T, rng.normal(size=(4, 3))
    eager = ss.score_scale_from_covariance(q, cov, 0.7)
    np.testing.assert_allclose(jax.jit(ss.score_scale_from_covariance)(q, cov, 0.7), eager,
                               rtol=1e-12)
    np.testing.assert_allclose(jax.vmap(ss.score_scale_from_covariance, (0, None, None))(q, cov, 0.7),
                               eager, rtol=1e-12)
    # d sigma / d q = scale^2 Sigma q / sigma.
    g = jax.grad(lambda row: ss.score_scale_from_covariance(row, cov, 0.7))(jnp.asarray(q[0]))
    np.testing.assert_allclose(g, 0.49 * cov @ q[0] / eager[0], rtol=1e-10)


BAD = [
    (lambda: ss.score_scale_from_covariance(np.ones((2, 2, 3)), np.eye(3)), "queries"),
    (lambda: ss.score_scale_from_covariance(np.ones((2, 3)), np.eye(2)), "key_covariance"),
    (lambda: ss.score_scale_from_covariance(np.ones((2, 0)), np.eye(0)), "queries"),
    (lambda: ss.score_scale_from_covariance([[1.0, np.nan]], np.eye(2)), "queries"),
    (lambda: ss.score_scale_from_covariance([[1.0, 1.0]], [[1.0, np.inf], [0, 1]]),
     "key_covariance"),
    (lambda: ss.score_scale_from_covariance([[1.0, 1.0]], [[1.0, 0.0], [0.0, -1.0]]),
     "key_covariance is not positive semi-definite: its diagonal"),
    (lambda: ss.score_scale_from_covariance([[1.0, 1.0]], [[1.0, 0.5], [0.0, 1.0]]),
     "key_covariance must be symmetric"),
    (lambda: ss.score_scale_from_covariance([[1.0, 1.0]], [[1.0, 2.0], [2.0, 1.0]]),
     "2 x 2 principal minor"),
    # Passes the diagonal and 2 x 2 checks; (1, 1, 1) sees the negative eigenvalue.
    (lambda: ss.score_scale_from_covariance(
        [[1.0, 1.0, 1.0]], np.full((3, 3), -0.9) + 1.9 * np.eye(3)), "q_i^T Sigma_K q_i < 0"),
    (lambda: ss.score_scale_from_covariance([[1.0]], [[1.0]], scale=np.nan), "scale"),
    (lambda: ss.score_scale_from_covariance([[1.0]], [[1.0]], scale=np.ones(2)), "scale"),
    (lambda: ss.score_mean_from_key_mean(np.ones((2, 3)), np.ones(2)), "key_mean"),
    (lambda: ss.score_mean_from_key_mean(np.ones((2, 3)), [1.0, np.nan, 0.0]), "key_mean"),
    (lambda: ss.score_scale_from_keys(np.ones((2, 3)), np.ones((1, 3))), "keys"),
    (lambda: ss.score_scale_from_keys(np.ones((2, 3)), np.ones((5, 2))), "keys"),
    (lambda: ss.score_mean_from_keys(np.ones((2, 3)), np.full((5, 3), np.inf)), "keys"),
    (lambda: ss.key_moments(np.ones(5)), "keys"),
]


@pytest.mark.parametrize("call,match", BAD, ids=[m for _, m in BAD])
def test_bad_input_raises_a_one_line_value_error_naming_the_argument(call, match):
    with pytest.raises(ValueError, match=match.replace("^", r"\^")) as info:
        call()
    assert "\n" not in str(info.value)


def test_valid_psd_edge_cases_are_accepted():
    """PSD matrices at the edge of the checks: zero, rank one with perfect
    negative correlation, float32 rounding of a Gram matrix."""
    q = np.array([[1.0, 2.0]])
    assert float(ss.score_scale_from_covariance(q, np.zeros((2, 2)))[0]) == 0.0
    np.testing.assert_allclose(ss.score_scale_from_covariance(q, [[1.0, -1.0], [-1.0, 1.0]]),
                               [1.0], rtol=1e-12)
    a = np.random.default_rng(0).normal(size=(2, 8)).astype(np.float32)
    ss.score_scale_from_covariance(q.astype(np.float32), a @ a.T / 3)  # no error


def test_exported_from_the_package():
    assert st.score_scales is ss
    assert "score_scales" in st.__all__
