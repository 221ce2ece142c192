"""Lemma 4.2 (Parts 1-3) at its stated probability (sparsity_theory/bounds.py).

Each check runs many independent seeds and asks the exact binomial test whether
the failure count is consistent with P(failure) <= delta (alpha = 1e-6, so a
valid bound is never flagged by chance); each also plants a wrong bound that
the same test must report VIOLATED, and reports how loose the bound is.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sparsity_theory as st
from sparsity_theory import bounds
from verify.sampling import sample_rows
from verify.statistics import binomial_check, looseness, looseness_from_logs

SEEDS = 1000
DELTA = 0.05


def _rows(model, n, d, mode, seed=1):
    """Per seed: sigma_i, mu_i and row 0's scores (self mode: diagonal removed)."""
    return sample_rows(model, n, d, mode, SEEDS, seed_base=seed)


CONFIGS = [
    (st.Gaussian(1.0), 256, 8, "cross"),
    (st.Gaussian(0.7, mean=0.5), 64, 4, "cross"),
    (st.Uniform(1.0), 256, 8, "cross"),
    (st.Rademacher(1.0, mean=-0.3), 128, 2, "cross"),
    (st.Gaussian(1.0), 256, 8, "self"),
    (st.Uniform(2.0, mean=1.0), 64, 4, "self"),
]
# The planted wrong bound is this factor times the true one: small enough that
# the data violate it. Rademacher with d = 2 has |u_ij - mu_i| <= ||w_i||_1 <=
# sqrt(2) sigma_i surely, against Part 1's ~4.1 sigma_i, so 0.3 x the bound is
# still never crossed there (the bound is >= 2.9x loose): it needs 0.2.
WRONG_FACTOR = {3: 0.2}


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_lemma_4_2_parts_1_and_2_hold_and_wrong_bound_is_caught(index):
    model, n, d, mode = CONFIGS[index]
    sig, mu, u = _rows(model, n, d, mode)
    num_keys = u.shape[1]
    t = np.asarray(bounds.score_deviation_bound(sig, num_keys, DELTA))
    deviation = np.max(np.abs(u - mu[:, None]), axis=1)
    part1 = binomial_check(int(np.sum(deviation > t)), SEEDS, DELTA)
    assert part1.verdict == "HOLDS", part1
    loose = looseness(deviation / t)
    assert 0 < loose.median < 1  # informative: it is neither violated nor vacuous
    spread = u.max(axis=1) - u.min(axis=1)
    part2 = binomial_check(int(np.sum(spread > np.asarray(bounds.score_spread_bound(sig, num_keys, DELTA)))),
                           SEEDS, DELTA)
    assert part2.verdict == "HOLDS", part2
    # A deliberately wrong bound must be rejected.
    factor = WRONG_FACTOR.get(index, 0.3)
    wrong = binomial_check(int(np.sum(deviation > factor * t)), SEEDS, DELTA)
    assert wrong.verdict == "VIOLATED", wrong
    if isinstance(model, st.Rademacher):  # bounded scores: looseness known in advance
        assert loose.worst <= math.sqrt(d) / math.sqrt(2 * math.log(2 * num_keys / DELTA))


@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_lemma_4_2_part_3_holds_and_wrong_bound_is_caught(index):
    model, n, d, mode = CONFIGS[index]
    sig, mu, u = _rows(model, n, d, mode)
    num_keys = u.shape[1]
    # Self mode: the normaliser over j != i is a lower bound for the full one.
    log_alpha = np.asarray(jax.nn.logsumexp(jnp.asarray(u), axis=1))
    lower = np.asarray(bounds.log_normaliser_lower_bound(sig, num_keys, DELTA, mu))
    part3 = binomial_check(int(np.sum(log_alpha < lower)), SEEDS, DELTA)
    assert part3.verdict == "HOLDS", part3
    # Wrong: claim the normaliser is at least n exp(mu + sigma^2), above the
    # Gaussian mean n exp(mu + sigma^2/2) (and above sub-Gaussian ones alike).
    wrong_lower = math.log(num_keys) + mu + sig**2
    wrong = binomial_check(int(np.sum(log_alpha < wrong_lower)), SEEDS, DELTA)
    assert wrong.verdict == "VIOLATED", wrong


def test_gaussian_cross_scores_are_exactly_normal_with_scale_sigma():
    """Calibration: Gaussian input, cross mode: (u_ij - mu_i)/sigma_i ~ N(0, 1)."""
    sig, mu, u = _rows(st.Gaussian(1.3, mean=0.4), 64, 4, "cross")
    z = ((u - mu[:, None]) / sig[:, None]).ravel()
    assert stats.kstest(z, "norm").pvalue > 1e-6
    # The same test has power: a sigma 10% too small is detected.
    assert stats.kstest(z * 1.1, "norm").pvalue < 1e-6
    # And the exceedance rate of a threshold matches the exact Gaussian rate.
    t = 2.0
    # Two-sided exact test at 1e-6 (a 95% interval would miss the truth 5% of the time).
    exceed = int(np.sum(np.abs(z) > t))
    assert stats.binomtest(exceed, z.size, 2 * stats.norm.sf(t)).pvalue > 1e-6
    assert stats.binomtest(exceed, z.size, 2 * stats.norm.sf(t * 0.95)).pvalue < 1e-6


def test_row_free_gamma_dominates_every_row():
    model = st.Uniform(1.5, mean=0.2)
    d = 6
    weights = st.gaussian_weights(jax.random.PRNGKey(3), d)
    gamma = bounds.row_free_score_scale(weights, model, d, scale=0.5)
    x = model.sample(jax.random.PRNGKey(4), (2000, d))
    sig = jax.vmap(lambda r: bounds.row_score_scale(r, weights, model, 0.5))(x)
    assert float(jnp.max(sig)) <= gamma
    with pytest.raises(ValueError, match="almost-sure"):
        bounds.row_free_score_scale(weights, st.Gaussian(), d)


def test_closed_forms_and_bad_input():
    np.testing.assert_allclose(bounds.score_deviation_bound(2.0, 50, 0.1), 2 * math.sqrt(2 * math.log(1000)))
    np.testing.assert_allclose(bounds.score_spread_bound(1.0, 50, 0.1), 2 * math.sqrt(2 * math.log(1000)))
    np.testing.assert_allclose(bounds.normaliser_deficit(3.0, 8, 0.5), 3 * math.sqrt(2 * math.log(2) / 8))
    np.testing.assert_allclose(bounds.log_normaliser_lower_bound(0.0, 10, 0.1, 1.5), math.log(10) + 1.5)
    for bad in (0.0, 1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="delta"):
            bounds.score_deviation_bound(1.0, 10, bad)
    with pytest.raises(ValueError, match="num_keys"):
        bounds.normaliser_deficit(1.0, 0, 0.1)


def _collapse_trials(n, mode, wrong_factor=1.0, eps=0.01, d1=0.025, d2=0.025):
    """Seeds whose row meets Theorem 5.1's condition, and whether the row then
    had an entry above eps (self mode: off-diagonal entries, n - 1 keys)."""
    model = st.Gaussian(1.0)
    sig, mu, u = sample_rows(model, n, 4, mode, SEEDS, seed_base=11, scale=0.25)
    num_keys = u.shape[1]
    rhs = np.asarray(bounds.largest_entry_log_bound(sig, num_keys, d1, d2)) + math.log(num_keys)
    meets = math.log(num_keys * eps) >= wrong_factor * rhs
    log_s = u - np.logaddexp.reduce(u, axis=1, keepdims=True)
    effective = np.sum(log_s > math.log(eps), axis=1)
    # Looseness: largest entry over its bound exp(t_1 + eta) / n.
    log_ratio = log_s.max(axis=1) - (rhs - math.log(num_keys))
    return meets, effective > 0, d1 + d2, log_ratio


@pytest.mark.parametrize("mode", ["cross", "self"])
def test_theorem_5_1_collapse_holds_where_its_condition_does(mode):
    meets, has_effective, delta, log_ratio = _collapse_trials(4096, mode)
    assert meets.sum() >= 200  # enough rows meet the condition to test it
    check = binomial_check(int(np.sum(has_effective[meets])), int(meets.sum()), delta)
    assert check.verdict == "HOLDS", check
    # The largest-entry bound behind it holds at its own probability and is informative.
    bound_check = binomial_check(int(np.sum(log_ratio > 0)), log_ratio.size, delta)
    assert bound_check.verdict == "HOLDS", bound_check
    assert 0.05 < looseness_from_logs(log_ratio).median < 1
    np.testing.assert_array_equal(
        np.asarray(bounds.collapse_condition(np.array([0.1, 5.0]), 4095 if mode == "self" else 4096,
                                             0.01, 0.025, 0.025)), [True, False])


def test_theorem_5_1_wrong_condition_is_caught():
    """Claiming collapse already when ln(n eps) >= 0.3 x the condition's right side
    is refuted by the data at n = 256."""
    meets, has_effective, delta, _ = _collapse_trials(256, "cross", wrong_factor=0.3)
    check = binomial_check(int(np.sum(has_effective[meets])), int(meets.sum()), delta)
    assert meets.sum() >= 100 and check.verdict == "VIOLATED", check


def test_collapse_length_is_the_threshold():
    for eps in (1e-2, 1e-3):
        for sigma in (0.5, 1.0, 2.0):
            n0 = bounds.collapse_length(eps, sigma, 0.05, 0.05)
            assert bool(bounds.collapse_condition(sigma, n0, eps, 0.05, 0.05))
            assert not bool(bounds.collapse_condition(sigma, n0 - 1, eps, 0.05, 0.05))
            # and it keeps holding beyond n0
            for n in (2 * n0, 10 * n0, 1000 * n0):
                assert bool(bounds.collapse_condition(sigma, n, eps, 0.05, 0.05))
    # n0 grows like exp(sigma^2/2)-ish: sigma = 3 needs far longer contexts than sigma = 1.
    assert bounds.collapse_length(1e-2, 3.0, 0.05, 0.05) > 1e6 * bounds.collapse_length(1e-2, 1.0, 0.05, 0.05)
    assert bounds.collapse_length(1e-2, 50.0, 0.05, 0.05, max_length=2**40) is None
    with pytest.raises(ValueError, match="eps"):
        bounds.collapse_length(0.0, 1.0, 0.05, 0.05)


def test_num_independent_keys():
    assert bounds.num_independent_keys(10, "cross") == 10
    assert bounds.num_independent_keys(10, "self") == 9
    with pytest.raises(ValueError, match="mode"):
        bounds.num_independent_keys(10, "both")
    with pytest.raises(ValueError, match="n >= 2"):
        bounds.num_independent_keys(1, "self")


def test_row_free_gamma_gives_weaker_valid_bounds():
    """gamma >= sigma_i for every row of a bounded model, and every bound is
    monotone in sigma, so the row-free forms are the per-row forms at gamma."""
    model, d, n = st.Uniform(1.0, mean=0.2), 6, 128
    weights = st.gaussian_weights(jax.random.PRNGKey(3), d)
    x = model.sample(jax.random.PRNGKey(4), (200, d))
    sigma = np.asarray(jax.vmap(lambda r: bounds.row_score_scale(r, weights, model))(x))
    gamma = bounds.row_free_score_scale(weights, model, d)
    assert np.all(sigma <= gamma)
    args = (0.025, 0.025)
    for k in (1, n // 2, n):
        assert np.all(bounds.small_entry_log_bound(sigma, n, k, *args)
                      <= bounds.small_entry_log_bound(gamma, n, k, *args))
    assert np.all(bounds.guaranteed_small_entries(sigma, n, 4 / n, *args)
                  >= bounds.guaranteed_small_entries(gamma, n, 4 / n, *args))
    assert np.all(np.asarray(bounds.largest_entry_log_bound(sigma, n, *args))
                  <= float(bounds.largest_entry_log_bound(gamma, n, *args)))
    assert np.all(np.asarray(bounds.log_normaliser_lower_bound(sigma, n, 0.05))
                  >= float(bounds.log_normaliser_lower_bound(gamma, n, 0.05)))


# ------------------------------------------- JAX transformations, dtypes, validation

from jax.experimental import checkify  # noqa: E402

N, K, D1, D2 = 300, 120, 0.025, 0.025
SIG = np.array([0.0, 0.3, 1.0, 2.5])

# Every real-valued bound as a function of (sigma, delta_a, delta_b), n and k fixed.
REAL_BOUNDS = {
    "deviation": lambda s, a, b: bounds.score_deviation_bound(s, N, a),
    "spread": lambda s, a, b: bounds.score_spread_bound(s, N, a),
    "deficit": lambda s, a, b: bounds.normaliser_deficit(s, N, b),
    "normaliser": lambda s, a, b: bounds.log_normaliser_lower_bound(s, N, a, mean=0.5 * s),
    "threshold-binomial": lambda s, a, b: bounds.small_entry_score_threshold(s, N, K, a),
    "threshold-hoeffding": lambda s, a, b: bounds.small_entry_score_threshold(s, N, K, a, "hoeffding"),
    "small-binomial": lambda s, a, b: bounds.small_entry_log_bound(s, N, K, delta_count=a, delta_normaliser=b),
    "small-hoeffding": lambda s, a, b: bounds.small_entry_log_bound(s, N, K, a, b, method="hoeffding"),
    "largest": lambda s, a, b: bounds.largest_entry_log_bound(s, N, delta_scores=a, delta_normaliser=b),
}


@pytest.mark.parametrize("name", REAL_BOUNDS)
def test_every_bound_jits_vmaps_and_differentiates_like_eager(name):
    f = REAL_BOUNDS[name]
    eager = np.asarray(f(SIG, D1, D2))
    np.testing.assert_allclose(np.asarray(jax.jit(f)(SIG, D1, D2)), eager, rtol=1e-14)
    deltas = np.array([1e-6, 0.01, 0.1, 0.4])
    mapped = np.asarray(jax.vmap(f)(SIG, deltas, deltas[::-1]))
    expected = np.array([np.asarray(f(s, a, b)) for s, a, b in zip(SIG, deltas, deltas[::-1])])
    np.testing.assert_allclose(mapped, expected, rtol=1e-14)
    # grad in sigma against a central difference (every bound is smooth in sigma > 0).
    g = jax.grad(lambda s: f(s, D1, D2))
    for s0 in (0.4, 1.7):
        h = 1e-6
        fd = (float(f(s0 + h, D1, D2)) - float(f(s0 - h, D1, D2))) / (2 * h)
        np.testing.assert_allclose(float(g(s0)), fd, rtol=1e-7)
        np.testing.assert_allclose(float(jax.jit(g)(s0)), float(g(s0)), rtol=1e-14)
    # grad in delta too (the binomial p depends on delta through betaincinv's JVP).
    gd = jax.grad(lambda d: f(1.3, d, d))
    h = 1e-8
    fd = (float(f(1.3, D1 + h, D1 + h)) - float(f(1.3, D1 - h, D1 - h))) / (2 * h)
    np.testing.assert_allclose(float(gd(D1)), fd, rtol=1e-5, atol=1e-9)


def test_closed_form_gradients():
    n, d, s = 64, 0.05, 1.3
    log_term = math.log(2 * n / d)
    np.testing.assert_allclose(float(jax.grad(bounds.score_deviation_bound)(s, n, d)),
                               math.sqrt(2 * log_term), rtol=1e-14)
    np.testing.assert_allclose(float(jax.grad(bounds.score_deviation_bound, argnums=2)(s, n, d)),
                               -s / (d * math.sqrt(2 * log_term)), rtol=1e-13)
    # k = n: p = (1 - (1 - delta)^(1/n)) (1 - 1e-12), so dp/ddelta = (1 - delta)^(1/n - 1) / n (1 - 1e-12).
    dp = jax.grad(lambda x: bounds.count_exceedance_probability(n, n, x))(d)
    np.testing.assert_allclose(float(dp), (1 - d) ** (1 / n - 1) / n * (1 - 1e-12), rtol=1e-12)


def test_counts_as_arrays_vmap():
    ns = np.array([5, 64, 1000, 10**6])
    ks = np.array([1, 32, 999, 500_000])
    for method in bounds.COUNT_METHODS:
        mapped = np.asarray(jax.vmap(lambda n, k: bounds.count_exceedance_probability(n, k, D1, method))(ns, ks))
        expected = [float(bounds.count_exceedance_probability(int(n), int(k), D1, method)) for n, k in zip(ns, ks)]
        np.testing.assert_allclose(mapped, expected, rtol=1e-14)
        got = np.asarray(jax.jit(lambda n, k: bounds.small_entry_log_bound(1.2, n, k, D1, D2, method))(ns, ks))
        expected = [float(bounds.small_entry_log_bound(1.2, int(n), int(k), D1, D2, method)) for n, k in zip(ns, ks)]
        np.testing.assert_allclose(got, expected, rtol=1e-13)
    for f in (bounds.score_deviation_bound, bounds.normaliser_deficit, bounds.log_normaliser_lower_bound):
        mapped = np.asarray(jax.vmap(lambda n: f(0.7, n, 0.05))(ns))
        np.testing.assert_allclose(mapped, [float(f(0.7, int(n), 0.05)) for n in ns], rtol=1e-14)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(lambda n: bounds.guaranteed_small_entries(0.8, n, 0.05, D1, D2))(ns)),
        [int(bounds.guaranteed_small_entries(0.8, int(n), 0.05, D1, D2)) for n in ns])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bounds_keep_the_dtype_they_are_given(dtype):
    s = SIG.astype(dtype)
    for name, f in REAL_BOUNDS.items():
        assert np.asarray(f(s, D1, D2)).dtype == dtype, name
        assert np.asarray(f(s, dtype(D1), dtype(D2))).dtype == dtype, name
    assert bounds.count_exceedance_probability(N, K, dtype(D1)).dtype == dtype
    assert bounds.collapse_condition(s, N, 0.01, D1, D2).dtype == bool
    g = bounds.guaranteed_small_entries(s, N, dtype(0.05), D1, D2)
    assert jnp.issubdtype(g.dtype, jnp.integer)
    # float32 agrees with float64 to float32 precision (the binomial step below the
    # quantile is ~1e-3 relative in float32, hence the looser threshold tolerance).
    for name, f in REAL_BOUNDS.items():
        np.testing.assert_allclose(np.asarray(f(s, D1, D2), dtype=np.float64), np.asarray(f(SIG, D1, D2)),
                                   rtol=1e-3 if dtype == np.float32 else 1e-15, atol=1e-5, err_msg=name)


def test_huge_num_keys_is_handled_consistently():
    """n = 10**30 (and 10**400, beyond any float): log n is taken exactly on the int."""
    for n in (10**30, 10**400):
        log_n = math.log(n)
        np.testing.assert_allclose(float(bounds.score_deviation_bound(1.0, n, 0.05)),
                                   math.sqrt(2 * (math.log(2) + log_n - math.log(0.05))), rtol=1e-14)
        np.testing.assert_allclose(float(bounds.log_normaliser_lower_bound(1.0, n, 0.05)),
                                   log_n - math.sqrt(2 * math.log(20)) * math.exp(-log_n / 2), rtol=1e-14)
        np.testing.assert_allclose(float(bounds.largest_entry_log_bound(1.0, n, 0.05, 0.05)),
                                   math.sqrt(2 * (log_n - math.log(0.05))) - log_n, rtol=1e-13)
    with pytest.raises(ValueError, match="num_keys"):
        bounds.count_exceedance_probability(2**60, 5, 0.05)  # exact counts need n <= 2**53


def test_bad_input_raises_naming_the_argument():
    with pytest.raises(ValueError, match="sigma"):
        bounds.score_deviation_bound(-1.0, 64, 0.05)
    for bad in (float("nan"), float("inf"), -float("inf"), [1.0, float("nan")]):
        for f in (lambda s: bounds.score_deviation_bound(s, 64, 0.05),
                  lambda s: bounds.log_normaliser_lower_bound(s, 64, 0.05),
                  lambda s: bounds.largest_entry_log_bound(s, 64, 0.05, 0.05),
                  lambda s: bounds.normaliser_deficit(s, 64, 0.05)):
            with pytest.raises(ValueError, match="sigma"):
                f(bad)
    for bad_mean in (float("nan"), float("inf"), [0.0, float("nan")]):
        with pytest.raises(ValueError, match="mean"):
            bounds.log_normaliser_lower_bound(1.0, 64, 0.05, mean=bad_mean)
    with pytest.raises(ValueError, match="delta_scores"):
        bounds.largest_entry_log_bound(1.0, 64, 1.5, 0.05)
    with pytest.raises(ValueError, match="delta_normaliser"):
        bounds.largest_entry_log_bound(1.0, 64, 0.05, 0.0)
    for bad_n in (0, -3, 2.0, "8", True):
        with pytest.raises(ValueError, match="num_keys"):
            bounds.score_deviation_bound(1.0, bad_n, 0.05)
    with pytest.raises(ValueError, match="num_keys"):
        bounds.score_deviation_bound(1.0, np.array([4, 0]), 0.05)
    with pytest.raises(ValueError, match="num_keys"):
        bounds.score_deviation_bound(1.0, np.array([4.0]), 0.05)
    with pytest.raises(ValueError, match="num_small"):
        bounds.count_exceedance_probability(np.array([10, 10]), np.array([3, 11]), 0.05)
    # One line each.
    with pytest.raises(ValueError) as info:
        bounds.score_deviation_bound(np.full(3, np.nan), 64, 0.05)
    assert "\n" not in str(info.value)


def test_values_are_checked_under_jit_with_checkify():
    """Under jit the value checks are skipped unless ``checked=True``, which stages
    them as checkify checks."""
    f = jax.jit(lambda s, d: bounds.score_deviation_bound(s, 64, d))
    assert np.isnan(float(f(jnp.nan, 0.05)))  # unchecked: no error, a NaN
    checked = checkify.checkify(
        jax.jit(lambda s, d: bounds.score_deviation_bound(s, 64, d, checked=True)),
        errors=checkify.user_checks)
    err, out = checked(jnp.array([1.0, 2.0]), 0.05)
    assert err.get() is None
    np.testing.assert_allclose(np.asarray(out), np.asarray(bounds.score_deviation_bound(np.array([1.0, 2.0]), 64, 0.05)))
    err, _ = checked(jnp.array([1.0, -2.0]), 0.05)
    with pytest.raises(checkify.JaxRuntimeError, match="sigma"):
        err.throw()
    err, _ = checked(jnp.array([1.0]), 1.5)
    with pytest.raises(checkify.JaxRuntimeError, match="delta"):
        err.throw()
    g = checkify.checkify(jax.jit(lambda s, e: bounds.guaranteed_small_entries(s, 64, e, 0.05, 0.05, checked=True)),
                          errors=checkify.user_checks)
    err, _ = g(1.0, 2.0)
    with pytest.raises(checkify.JaxRuntimeError, match="eps"):
        err.throw()
    err, _ = g(1.0, 0.5)
    assert err.get() is None
