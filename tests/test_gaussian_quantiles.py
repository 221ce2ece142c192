"""sparsity_theory.gaussian_quantiles: exact quantiles of Gaussian score
statistics, checked against their defining probabilities (SciPy), closed forms
and Monte Carlo, and the paper's bounds held against them."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from sparsity_theory import bounds
from sparsity_theory import gaussian_quantiles as gq

LENGTHS = (2, 4, 256, 65536, 2**20)
DELTAS = (0.05, 1e-3, 1e-6)


@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("delta", DELTAS)
def test_max_and_abs_quantiles_solve_their_defining_equations(n, delta):
    # In logs: n log P(one score below the level) = log(1 - delta).
    z = float(gq.max_score_quantile(1.0, n, delta))
    assert n * special.log_ndtr(z) == pytest.approx(math.log1p(-delta), rel=1e-9)
    a = float(gq.abs_deviation_quantile(1.0, n, delta))
    assert n * math.log1p(-2 * stats.norm.sf(a)) == pytest.approx(math.log1p(-delta), rel=1e-9)
    assert a > z  # |Z| exceeds any level more often than Z


@pytest.mark.parametrize("n", LENGTHS[1:])
@pytest.mark.parametrize("delta", DELTAS)
def test_spread_quantile_solves_the_range_integral(n, delta):
    w = float(gq.spread_quantile(1.0, n, delta))

    def density(x):
        return n * stats.norm.pdf(x) * (stats.norm.cdf(x + w) - stats.norm.cdf(x)) ** (n - 1)
    cdf, _ = integrate.quad(density, -14, 8, limit=500, points=[-math.sqrt(2 * math.log(n))])
    assert 1 - cdf == pytest.approx(delta, rel=1e-5)


@pytest.mark.parametrize("delta", DELTAS)
def test_spread_of_two_scores_is_a_scaled_half_normal(delta):
    # Z1 - Z2 ~ N(0, 2): the range of two scores is sqrt(2) |N(0, 1)|.
    assert float(gq.spread_quantile(1.0, 2, delta)) == pytest.approx(
        math.sqrt(2) * stats.norm.isf(delta / 2), rel=1e-7)
    assert float(gq.spread_quantile(3.0, 1, delta)) == 0.0


def test_quantiles_against_monte_carlo():
    rng = np.random.default_rng(0)
    n, delta, trials = 64, 0.1, 200_000
    z = rng.standard_normal((trials, n)) * 1.5
    measured = {
        "max": np.quantile(z.max(axis=1), 1 - delta),
        "abs": np.quantile(np.abs(z).max(axis=1), 1 - delta),
        "spread": np.quantile(z.max(axis=1) - z.min(axis=1), 1 - delta),
        "k=8": np.quantile(np.sort(z, axis=1)[:, 7], 1 - delta),
    }
    exact = {"max": gq.max_score_quantile(1.5, n, delta), "abs": gq.abs_deviation_quantile(1.5, n, delta),
             "spread": gq.spread_quantile(1.5, n, delta), "k=8": gq.kth_smallest_score_quantile(1.5, n, 8, delta)}
    for name in measured:
        assert float(exact[name]) == pytest.approx(measured[name], abs=0.02), name


@pytest.mark.parametrize("n, k", [(1, 1), (10, 1), (10, 10), (256, 128), (4096, 7), (2**20, 2**19)])
@pytest.mark.parametrize("delta", (0.05, 1e-6))
def test_kth_smallest_quantile_solves_the_binomial_tail(n, k, delta):
    t = float(gq.kth_smallest_score_quantile(1.0, n, k, delta))
    # At least k of n scores <= t  <=>  Binomial(n, Phi(t)) >= k.
    assert stats.binom.sf(k - 1, n, stats.norm.cdf(t)) == pytest.approx(1 - delta, abs=1e-9)
    if k == n:  # the largest score
        assert t == pytest.approx(float(gq.max_score_quantile(1.0, n, delta)), rel=1e-7)


def test_scale_dtype_and_transformations():
    sigma = jnp.array([0.5, 1.0, 2.0])
    for f in (lambda s: gq.max_score_quantile(s, 256, 0.05), lambda s: gq.abs_deviation_quantile(s, 256, 0.05),
              lambda s: gq.spread_quantile(s, 256, 0.05), lambda s: gq.kth_smallest_score_quantile(s, 256, 8, 0.05)):
        eager = f(sigma)
        np.testing.assert_allclose(eager, eager[1] * np.asarray(sigma), rtol=1e-12)  # linear in sigma
        np.testing.assert_allclose(jax.jit(f)(sigma), eager, rtol=1e-12)
        np.testing.assert_allclose(jax.vmap(f)(sigma), eager, rtol=1e-12)
        low = f(sigma.astype(jnp.float32))
        assert low.dtype == jnp.float32
        np.testing.assert_allclose(low, eager, rtol=1e-3)  # the documented float32 accuracy


@pytest.mark.parametrize("call, match", [
    (lambda: gq.max_score_quantile(-1.0, 8, 0.05), "sigma"),
    (lambda: gq.spread_quantile(float("nan"), 8, 0.05), "sigma"),
    (lambda: gq.abs_deviation_quantile(1.0, 0, 0.05), "num_keys"),
    (lambda: gq.max_score_quantile(1.0, 8, 1.5), "delta"),
    (lambda: gq.kth_smallest_score_quantile(1.0, 8, 9, 0.05), "num_small"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# --- the paper's bounds against the exact quantiles ------------------------------------------

@pytest.mark.parametrize("n", (16, 256, 4096, 2**20))
@pytest.mark.parametrize("delta", (0.05, 1e-3))
def test_bounds_are_at_least_the_exact_quantiles(n, delta):
    """Valid bounds at probability 1 - delta lie above the Gaussian quantile."""
    assert float(bounds.score_deviation_bound(1.0, n, delta)) >= float(gq.abs_deviation_quantile(1.0, n, delta))
    assert float(bounds.score_spread_bound(1.0, n, delta)) >= float(gq.spread_quantile(1.0, n, delta))
    t = float(bounds.small_entry_score_threshold(1.0, n, n // 2, delta))
    assert t >= float(gq.kth_smallest_score_quantile(1.0, n, n // 2, delta))
