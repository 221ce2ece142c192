"""Theorem 4.3 (attention is naturally sparse) in sparsity_theory/bounds.py.

Deterministic part: closed forms of the exceedance probability (binomial and
Hoeffding), the binomial form being the largest valid p and never looser than
Hoeffding, monotonicity in k, eps and sigma, the sigma = 0 limit, the converse
against a brute-force binomial quantile, forward/converse consistency (a
hypothesis property) and argument validation.

Statistical part: the forward bound (the k-th smallest softmax entry is at most
eps_k) and the converse (at least k_eps entries are at most eps) at their stated
probability 1 - delta_count - delta_normaliser, on 1000 independent query rows
per configuration, with the exact binomial test (alpha = 1e-6); planted wrong
bounds must be reported VIOLATED by the same test.
"""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as hs
from scipy import stats

import sparsity_theory as st
from sparsity_theory import bounds
from _shared import SETTINGS
from verify.sampling import sample_row_scores
from verify.statistics import binomial_check, looseness_from_logs

METHODS = bounds.COUNT_METHODS
D1 = 0.025  # delta_count
D2 = 0.025  # delta_normaliser
DELTA = D1 + D2
SEEDS = 1000


# ----------------------------------------------------------------- closed forms


@pytest.mark.parametrize("n", [1, 2, 7, 64, 1000, 100_000])
@pytest.mark.parametrize("delta", [1e-9, 1e-3, 0.05, 0.5, 0.99])
def test_binomial_exceedance_at_k_equals_n_is_the_closed_form(n, delta):
    """k = n: no key may exceed, P(Bin(n, p) >= 1) = 1 - (1 - p)^n = delta."""
    p = bounds.count_exceedance_probability(n, n, delta, "binomial")
    exact = -math.expm1(math.log1p(-delta) / n)
    assert p <= exact  # nudged down, never up
    np.testing.assert_allclose(p, exact, rtol=1e-10)


GRID = [(n, k) for n in (1, 5, 64, 257, 4096) for k in sorted({1, 2, n // 3, n // 2, n - 1, n}) if 1 <= k <= n]


@pytest.mark.parametrize("n,k", GRID)
@pytest.mark.parametrize("delta", [1e-6, 0.025, 0.3])
def test_binomial_exceedance_is_the_largest_valid_p(n, k, delta):
    """P(Bin(n, p) > n - k) <= delta at the returned p, and > delta just above it."""
    p = bounds.count_exceedance_probability(n, k, delta, "binomial")
    assert 0 < p < 1
    assert stats.binom.sf(n - k, n, p) <= delta
    above = p * (1 + 1e-6)
    if above < 1:
        assert stats.binom.sf(n - k, n, above) > delta


@pytest.mark.parametrize("n,k", GRID)
@pytest.mark.parametrize("delta", [1e-6, 0.025, 0.3])
def test_hoeffding_exceedance_closed_form(n, k, delta):
    p = bounds.count_exceedance_probability(n, k, delta, "hoeffding")
    expected = 1 - k / n - math.sqrt(math.log(1 / delta) / (2 * n))
    if expected <= 0:
        assert p == 0.0
        assert np.all(np.isinf(bounds.small_entry_score_threshold([0.0, 1.0], n, k, delta, "hoeffding")))
    else:
        np.testing.assert_allclose(p, expected, rtol=1e-14)
        # Hoeffding's p is itself valid for the binomial tail, hence below the exact one.
        assert stats.binom.sf(n - k, n, p) <= delta


def test_hoeffding_is_vacuous_at_k_equals_n():
    """Hoeffding needs n - k >= sqrt(n ln(1/delta)/2): k = n is never certified."""
    for n in (2, 64, 10_000):
        assert bounds.count_exceedance_probability(n, n, 0.5, "hoeffding") == 0.0
        assert math.isinf(bounds.small_entry_log_bound(1.0, n, n, D1, D2, "hoeffding"))


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5])
def test_score_threshold_and_log_bound_closed_forms(sigma):
    n, k = 300, 200
    for method in METHODS:
        p = bounds.count_exceedance_probability(n, k, D1, method)
        t = bounds.small_entry_score_threshold(sigma, n, k, D1, method)
        np.testing.assert_allclose(t, sigma * math.sqrt(2 * math.log(1 / p)), rtol=1e-14)
        eta = sigma * math.sqrt(2 * math.log(1 / D2) / n)
        np.testing.assert_allclose(bounds.small_entry_log_bound(sigma, n, k, D1, D2, method),
                                   t + eta - math.log(n), rtol=1e-13)
    # Vectorised over sigma, shape kept.
    sig = np.array([[0.0, 0.5], [1.0, sigma]])
    out = bounds.small_entry_log_bound(sig, n, k, D1, D2)
    assert out.shape == sig.shape
    np.testing.assert_allclose(out[1, 1], bounds.small_entry_log_bound(sigma, n, k, D1, D2), rtol=1e-14)


@pytest.mark.parametrize("n", [3, 50, 1000])
@pytest.mark.parametrize("delta", [1e-4, 0.05, 0.4])
def test_binomial_form_is_at_least_as_tight_as_hoeffding(n, delta):
    for k in range(1, n + 1, max(1, n // 40)):
        pb = bounds.count_exceedance_probability(n, k, delta, "binomial")
        ph = bounds.count_exceedance_probability(n, k, delta, "hoeffding")
        assert pb >= ph
        for sigma in (0.1, 1.0, 3.0):
            lb = bounds.small_entry_log_bound(sigma, n, k, delta, 0.05, "binomial")
            lh = bounds.small_entry_log_bound(sigma, n, k, delta, 0.05, "hoeffding")
            assert lb <= lh
    # The converse likewise: the exact quantile guarantees at least Hoeffding's count.
    eps = np.geomspace(1.0 / n, 1.0, 25)
    for sigma in (0.1, 1.0, 3.0):
        gb = bounds.guaranteed_small_entries(sigma, n, eps, delta, 0.05, "binomial")
        gh = bounds.guaranteed_small_entries(sigma, n, eps, delta, 0.05, "hoeffding")
        assert np.all(gb >= gh)


def _brute_force_guarantee(sigma, n, eps, d1, d2, method):
    """n minus the smallest q with P(Bin(n, p) > q) <= d1 (scan over q), written out."""
    eta = sigma * math.sqrt(2 * math.log(1 / d2) / n)
    t = math.log(n * eps) - eta
    if t <= 0:
        return 0
    p = 0.0 if sigma == 0 else math.exp(-t * t / (2 * sigma * sigma))
    if method == "hoeffding":
        q = math.floor(n * p + math.sqrt(n * math.log(1 / d1) / 2))
    else:
        q = next(q for q in range(n + 1) if stats.binom.sf(q, n, p) <= d1)
    return max(0, n - q)


@pytest.mark.parametrize("n", [1, 9, 128, 2000])
@pytest.mark.parametrize("sigma", [0.0, 0.2, 1.0, 2.0])
def test_converse_matches_a_brute_force_quantile(n, sigma):
    for method in METHODS:
        for eps in np.geomspace(0.5 / n, 1.0, 13):
            for d1, d2 in ((0.025, 0.025), (1e-5, 0.3)):
                got = bounds.guaranteed_small_entries(sigma, n, eps, d1, d2, method)
                assert got.dtype == np.int64
                assert int(got) == _brute_force_guarantee(sigma, n, float(eps), d1, d2, method), \
                    (method, eps, d1, d2)


# ----------------------------------------------------------------- monotonicity


@pytest.mark.parametrize("n", [2, 17, 300])
@pytest.mark.parametrize("method", METHODS)
def test_log_bound_is_non_decreasing_in_k(n, method):
    sig = np.array([0.0, 0.4, 1.0, 3.0])
    logs = np.stack([bounds.small_entry_log_bound(sig, n, k, D1, D2, method) for k in range(1, n + 1)])
    assert np.all(logs[1:] >= logs[:-1])  # (inf >= inf: Hoeffding is vacuous from some k on)
    if method == "binomial":
        assert np.all(np.isfinite(logs))  # the exact quantile certifies every k
    else:  # Hoeffding: finite exactly while n - k > sqrt(n ln(1/delta)/2)
        slack = math.sqrt(n * math.log(1 / D1) / 2)
        finite = np.array([n - k > slack for k in range(1, n + 1)])
        np.testing.assert_array_equal(np.isfinite(logs), np.broadcast_to(finite[:, None], logs.shape))


@pytest.mark.parametrize("n", [5, 64, 1000])
@pytest.mark.parametrize("method", METHODS)
def test_guarantee_is_monotone_in_eps_and_sigma(n, method):
    eps = np.geomspace(0.2 / n, 1.0, 60)
    sig = np.array([0.0, 0.05, 0.3, 0.7, 1.0, 1.5, 2.5, 5.0])
    g = bounds.guaranteed_small_entries(sig[:, None], n, eps[None, :], D1, D2, method)
    assert g.shape == (sig.size, eps.size)
    assert np.all((0 <= g) & (g <= n))
    assert np.all(np.diff(g, axis=1) >= 0)  # non-decreasing in eps
    assert np.all(np.diff(g, axis=0) <= 0)  # non-increasing in sigma
    # Both ends are reached (Hoeffding keeps its slack even at sigma = 0).
    slack = 0 if method == "binomial" else math.floor(math.sqrt(n * math.log(1 / D1) / 2))
    assert g[0, -1] == n - slack and g[-1, 0] == 0
    # Below 1/n nothing can be certified (the row's mean entry is 1/n).
    assert np.all(g[:, eps < 1 / n] == 0)


@pytest.mark.parametrize("n", [1, 2, 40, 999])
def test_sigma_zero_gives_eps_one_over_n(n):
    """sigma = 0: every score equals mu_i, every entry is 1/n."""
    for k in range(1, n + 1, max(1, n // 20)):
        np.testing.assert_allclose(bounds.small_entry_log_bound(0.0, n, k, D1, D2, "binomial"),
                                   -math.log(n), rtol=1e-15, atol=0)
        h = bounds.small_entry_log_bound(0.0, n, k, D1, D2, "hoeffding")
        assert math.isinf(h) or h == pytest.approx(-math.log(n), rel=1e-15, abs=0)
    if n > 1:
        assert bounds.guaranteed_small_entries(0.0, n, (1 + 1e-9) / n, D1, D2) == n
        assert bounds.guaranteed_small_entries(0.0, n, (1 - 1e-9) / n, D1, D2) == 0


# ------------------------------------------------- forward / converse consistency


@settings(max_examples=300, **SETTINGS)
@given(n=hs.integers(2, 5000), k_frac=hs.floats(0.0, 1.0), sigma_frac=hs.one_of(hs.just(0.0), hs.floats(0.0, 1.0)),
       d1=hs.floats(1e-8, 0.9), d2=hs.floats(1e-8, 0.9), method=hs.sampled_from(METHODS))
def test_converse_at_the_forward_eps_guarantees_k(n, k_frac, sigma_frac, d1, d2, method):
    """Feeding eps_k back into the converse certifies at least k small entries."""
    k = max(1, min(n, round(k_frac * n)))
    # log eps_k + ln n is linear in sigma: take sigma below the value where eps_k = 1.
    slope = float(bounds.small_entry_log_bound(1.0, n, k, d1, d2, method)) + math.log(n)
    assume(math.isfinite(slope))
    sigma = sigma_frac * (1 - 1e-9) * math.log(n) / slope
    log_eps = float(bounds.small_entry_log_bound(sigma, n, k, d1, d2, method))
    eps = min(1.0, math.exp(log_eps) * (1 + 1e-12))
    got = int(bounds.guaranteed_small_entries(sigma, n, eps, d1, d2, method))
    assert got >= k, (n, k, sigma, log_eps)


# ----------------------------------------------------------------- validation


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="num_small"):
        bounds.count_exceedance_probability(10, 0, 0.1)
    with pytest.raises(ValueError, match="num_small"):
        bounds.count_exceedance_probability(10, 11, 0.1)
    for bad_k in (2.5, 3.0, "3", True):
        with pytest.raises(ValueError, match="num_small"):
            bounds.small_entry_log_bound(1.0, 10, bad_k, D1, D2)
    with pytest.raises(ValueError, match="num_keys"):
        bounds.count_exceedance_probability(0, 1, 0.1)
    with pytest.raises(ValueError, match="num_keys"):
        bounds.guaranteed_small_entries(1.0, 10.0, 0.5, D1, D2)
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="delta"):
            bounds.count_exceedance_probability(10, 5, bad)
        with pytest.raises(ValueError, match="delta"):
            bounds.small_entry_log_bound(1.0, 10, 5, bad, D2)
        with pytest.raises(ValueError, match="delta"):
            bounds.small_entry_log_bound(1.0, 10, 5, D1, bad)
        with pytest.raises(ValueError, match="delta"):
            bounds.guaranteed_small_entries(1.0, 10, 0.5, bad, D2)
        with pytest.raises(ValueError, match="delta"):
            bounds.guaranteed_small_entries(1.0, 10, 0.5, D1, bad)
    for bad_sigma in (-1e-3, float("nan"), float("inf"), [1.0, -1.0]):
        with pytest.raises(ValueError, match="sigma"):
            bounds.small_entry_score_threshold(bad_sigma, 10, 5, D1)
        with pytest.raises(ValueError, match="sigma"):
            bounds.small_entry_log_bound(bad_sigma, 10, 5, D1, D2)
        with pytest.raises(ValueError, match="sigma"):
            bounds.guaranteed_small_entries(bad_sigma, 10, 0.5, D1, D2)
    for bad_eps in (0.0, -0.1, 1.0 + 1e-12, float("nan"), [0.5, 2.0]):
        with pytest.raises(ValueError, match="eps"):
            bounds.guaranteed_small_entries(1.0, 10, bad_eps, D1, D2)
    for fn, args in ((bounds.count_exceedance_probability, (10, 5, 0.1)),
                     (bounds.small_entry_score_threshold, (1.0, 10, 5, 0.1)),
                     (bounds.small_entry_log_bound, (1.0, 10, 5, D1, D2)),
                     (bounds.guaranteed_small_entries, (1.0, 10, 0.5, D1, D2))):
        with pytest.raises(ValueError, match="method"):
            fn(*args, method="chernoff")
    # eps = 1 is allowed.
    assert bounds.guaranteed_small_entries(0.5, 10, 1.0, D1, D2) > 0


# ------------------------------------------------------- at the stated probability

# scale = 1/sqrt(d) makes sigma_i about 1 (unit-variance entries, default weights).
# Uniform(sqrt(3)) has unit variance, so all four have sigma_i of order 1.
CONFIGS = {
    "gaussian-cross": (st.Gaussian(1.0), 256, 8, "cross"),
    "gaussian-shifted-self": (st.Gaussian(1.0, mean=0.5), 128, 8, "self"),
    "uniform-cross": (st.Uniform(math.sqrt(3.0)), 512, 4, "cross"),
    "rademacher-self": (st.Rademacher(1.0), 64, 8, "self"),
}


@functools.lru_cache(maxsize=None)
def _sample(name):
    """Per seed: sigma_0 and row 0's log softmax entries, sorted ascending (self
    mode: the n - 1 off-diagonal ones, normalised over the full row)."""
    model, n, d, mode = CONFIGS[name]
    rows = sample_row_scores(model, n, d, mode, SEEDS, seed_base=4300 + n, scale=1 / math.sqrt(d))
    log_entries = np.sort(rows.scores, axis=1) - rows.log_normaliser()[:, None]
    assert np.all(log_entries <= 0)
    return rows.sigma, log_entries


@pytest.mark.parametrize("name", CONFIGS)
def test_theorem_4_3_forward_holds_at_stated_probability(name):
    sig, log_entries = _sample(name)
    assert 0.3 < np.median(sig) < 3
    num_keys = log_entries.shape[1]
    for method in METHODS:
        for k in (num_keys // 4, num_keys // 2, 3 * num_keys // 4, num_keys):
            log_eps = bounds.small_entry_log_bound(sig, num_keys, k, D1, D2, method)
            if method == "hoeffding" and k == num_keys:
                assert np.all(np.isinf(log_eps))  # certifies nothing there
                continue
            assert np.all(np.isfinite(log_eps))
            kth = log_entries[:, k - 1]
            check = binomial_check(int(np.sum(kth > log_eps)), SEEDS, DELTA)
            assert check.verdict == "HOLDS", (method, k, check)
            loose = looseness_from_logs(kth - log_eps)
            assert 0 < loose.median < 1, (method, k, loose)


@pytest.mark.parametrize("name", CONFIGS)
def test_theorem_4_3_converse_holds_at_stated_probability(name):
    sig, log_entries = _sample(name)
    num_keys = log_entries.shape[1]
    for method in METHODS:
        useful_fraction, medians = [], []
        for c in (2, 4, 16):
            eps = c / num_keys
            count = np.sum(log_entries <= math.log(eps), axis=1)
            guaranteed = bounds.guaranteed_small_entries(sig, num_keys, eps, D1, D2, method)
            check = binomial_check(int(np.sum(count < guaranteed)), SEEDS, DELTA)
            assert check.verdict == "HOLDS", (method, c, check)
            useful = guaranteed > 0
            useful_fraction.append(useful.mean())
            if useful.sum() >= 100:
                # Looseness: guaranteed count over the actual count. It can be
                # exactly 1 at large eps, where nearly every entry is small and
                # the converse certifies all of them.
                loose = looseness_from_logs(np.log(guaranteed[useful]) - np.log(count[useful]))
                assert 0 < loose.median <= 1, (method, c, loose)
                medians.append(loose.median)
        assert min(medians) < 1  # informative, not only trivially exact
        assert max(useful_fraction) > 0.95  # the converse says something on almost every row
        assert useful_fraction == sorted(useful_fraction)  # and more as eps grows


@pytest.mark.parametrize("name", CONFIGS)
def test_theorem_4_3_planted_wrong_bounds_are_caught(name):
    sig, log_entries = _sample(name)
    num_keys = log_entries.shape[1]
    # Forward, k = n: eps = exp(0.3 t + eta) / n, with t the binomial threshold.
    t = bounds.small_entry_score_threshold(sig, num_keys, num_keys, D1, "binomial")
    eta = np.asarray(bounds.normaliser_deficit(sig, num_keys, D2))
    wrong_log_eps = 0.3 * t + eta - math.log(num_keys)
    wrong = binomial_check(int(np.sum(log_entries[:, -1] > wrong_log_eps)), SEEDS, DELTA)
    assert wrong.verdict == "VIOLATED", wrong
    # Converse, computed as if sigma_i were 0.3 sigma_i (eps = 4/n) ...
    count = np.sum(log_entries <= math.log(4 / num_keys), axis=1)
    g = bounds.guaranteed_small_entries(0.3 * sig, num_keys, 4 / num_keys, D1, D2, "binomial")
    wrong = binomial_check(int(np.sum(count < g)), SEEDS, DELTA)
    assert wrong.verdict == "VIOLATED", wrong
    # ... and claiming n/4 more small entries than the true converse (eps = 16/n).
    count = np.sum(log_entries <= math.log(16 / num_keys), axis=1)
    g = bounds.guaranteed_small_entries(sig, num_keys, 16 / num_keys, D1, D2, "binomial")
    wrong = binomial_check(int(np.sum(count < g + num_keys // 4)), SEEDS, DELTA)
    assert wrong.verdict == "VIOLATED", wrong


# ------------------------------------------- the former SciPy implementation as reference


def _scipy_guarantee(sigma, n, eps, d1, d2, method):
    """guaranteed_small_entries as the library computed it with NumPy/SciPy before
    it became a JAX function (stats.binom.isf plus the exactness fix-ups)."""
    sigma, eps = np.asarray(sigma, dtype=np.float64), np.asarray(eps, dtype=np.float64)
    eta = sigma * math.sqrt(2.0 * math.log(1.0 / d2) / n)
    t = np.log(n * eps) - eta
    with np.errstate(divide="ignore", invalid="ignore"):
        log_p = np.where(t > 0, -np.square(t) / (2.0 * np.square(sigma)), 0.0)
    p = np.exp(log_p)
    if method == "hoeffding":
        q = np.floor(n * p + math.sqrt(n * math.log(1.0 / d1) / 2.0))
    else:
        q = stats.binom.isf(d1, n, p)
        q = np.where(stats.binom.sf(q, n, p) > d1, q + 1, q)
        q = np.where((q > 0) & (stats.binom.sf(q - 1, n, p) <= d1), q - 1, q)
    return np.clip(n - q, 0, n).astype(np.int64)


@pytest.mark.parametrize("n", [1, 7, 256, 10_000, 10**6])
@pytest.mark.parametrize("method", METHODS)
def test_converse_equals_the_scipy_implementation_exactly(n, method):
    sig = np.array([0.0, 0.05, 0.3, 1.0, 2.0, 4.0])[:, None]
    eps = np.geomspace(0.5 / n, 1.0, 23)[None, :]
    for d1, d2 in ((1e-12, 0.3), (0.025, 0.025), (0.4, 1e-6)):
        got = np.asarray(bounds.guaranteed_small_entries(sig, n, eps, d1, d2, method))
        ref = _scipy_guarantee(sig, n, eps, d1, d2, method)
        np.testing.assert_array_equal(got, ref)
        jitted = jax.jit(lambda s, e: bounds.guaranteed_small_entries(s, n, e, d1, d2, method))(sig, eps)
        np.testing.assert_array_equal(np.asarray(jitted), ref)


@pytest.mark.parametrize("n", [1, 2, 64, 4096, 10**6])
@pytest.mark.parametrize("delta", [1e-12, 0.025, 0.5, 1 - 1e-9])
def test_exceedance_probability_matches_scipy_betaincinv(n, delta):
    from scipy import special as sp
    for k in sorted({1, 2, max(1, n // 3), n}):
        if k > n:
            continue
        got = float(bounds.count_exceedance_probability(n, k, delta))
        ref = float(sp.betaincinv(n - k + 1, k, delta)) * (1 - 1e-12)
        np.testing.assert_allclose(got, ref, rtol=2e-13 if n < 10**5 else 1e-12)
        assert got <= ref / (1 - 1e-12)  # the safety step keeps it below the exact quantile


def test_theorem_4_3_functions_jit_and_vmap():
    sig = np.array([0.0, 0.4, 1.3])
    for method in METHODS:
        eager = np.asarray(bounds.small_entry_log_bound(sig, 200, 150, D1, D2, method))
        jitted = jax.jit(lambda s, a, b: bounds.small_entry_log_bound(s, 200, 150, a, b, method))(sig, D1, D2)
        np.testing.assert_allclose(np.asarray(jitted), eager, rtol=1e-14)
        deltas = np.array([1e-6, 0.01, 0.3])
        mapped = jax.vmap(lambda s, d: bounds.guaranteed_small_entries(s, 200, 0.02, d, d, method))(sig, deltas)
        np.testing.assert_array_equal(np.asarray(mapped), [int(bounds.guaranteed_small_entries(s, 200, 0.02, d, d, method))
                                                            for s, d in zip(sig, deltas)])
