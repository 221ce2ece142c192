"""Sharp large-n laws of Gaussian scores (sparsity_theory/gaussian_laws.py).

Closed forms: every law against an independent computation with
``scipy.stats.norm`` and numerical integration (``scipy.integrate.quad`` of the
tilted density), over hypothesis-drawn sigma in (0.05, 5), eps in (1e-6, 0.5),
q in (0.001, 0.999) and n; the Phi^{-1}((1 - delta)^{1/n}) part of the
largest-entry quantile against a 60-digit ``decimal`` reference at small delta
and huge n (no cancellation).

Identities between laws: the window law is the fraction above the threshold
whose mass above is 1 - eps (solved with brentq); the tail-mass law inverts the
window law; the gaps to the paper's bounds are the ones the docstrings state.

Monte Carlo (fixed keys, n = 2^16): certified window, normaliser, tail mass at
n/10 and effective entries against their laws, and the same criteria rejecting
the laws at sigma/2 (the tests have power). The Gaussian largest-entry quantile
is exceeded at a rate near delta.

Collapse length, the Random Energy Model exponents (the laws at n up to 2^1000
and, in log form, e^2000) and argument validation.
"""

from __future__ import annotations

import functools
import math
from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import integrate, optimize, stats

import sparsity_theory as st
from sparsity_theory import bounds
from sparsity_theory import gaussian_laws as gl
from _shared import SETTINGS

SIGMAS = hs.floats(0.05, 5.0)
# eps log-uniform over (1e-6, 0.5): the small values are where cancellation would show.
EPSILONS = hs.floats(math.log(1e-6), math.log(0.5)).map(math.exp)
QS = hs.floats(0.001, 0.999)
LENGTHS = hs.integers(1, 2**50)


def _f(x) -> float:
    return float(np.asarray(x))


def _tilted_integral(lower: float, upper: float, sigma: float) -> float:
    """``int_lower^upper e^{sigma z} phi(z) dz`` by quadrature, the integrand
    evaluated as ``exp(sigma z - z^2/2) / sqrt(2 pi)`` so that it cannot overflow."""
    def integrand(z):
        return math.exp(sigma * z - 0.5 * z * z) / math.sqrt(2 * math.pi)

    # The integrand peaks at z = sigma: split there so quad sees the bump.
    points = [p for p in (sigma,) if lower < p < upper]
    value, _ = integrate.quad(integrand, lower, upper, points=points or None,
                              epsabs=0.0, epsrel=1e-12, limit=200)
    return value


# ---------------------------------------------------------------- closed forms


@settings(max_examples=60, **SETTINGS)
@given(x=hs.floats(-8.0, 30.0))
def test_log_phibar_matches_scipy_far_into_the_tail(x):
    got = _f(gl.log_phibar(x))
    want = stats.norm.logsf(x)
    # Near x = -8 the value is ~ -6e-16: only absolute accuracy is possible there.
    # Beyond x = 20 jax's log_ndtr switches to a 3-term asymptotic series, whose
    # relative error peaks at 2e-11 at x = 20 (4e-9 absolute): accurate, not exact.
    assert got == pytest.approx(want, rel=5e-11, abs=1e-15)


def test_log_phibar_extreme_tail_is_finite_and_quadratic():
    x = np.array([10.0, 20.0, 30.0, 37.0, 38.5])
    got = np.asarray(gl.log_phibar(x))
    np.testing.assert_allclose(got, stats.norm.logsf(x), rtol=5e-11)
    # Mills ratio: log Phibar(x) = -x^2/2 - log(x sqrt(2 pi)) + log(1 - 1/x^2 + 3/x^4
    # - 15/x^6 + ...); the truncation error is below 105/x^8 (1e-6 at x = 10).
    series = 1 - 1 / x**2 + 3 / x**4 - 15 / x**6
    mills = -0.5 * x**2 - np.log(x * math.sqrt(2 * math.pi)) + np.log(series)
    assert np.all(np.abs(got - mills) <= 2 * 105 / x**8 + 5e-11 * np.abs(mills)), got - mills
    assert np.all(np.isfinite(got)) and np.all(np.diff(got) < 0)


@settings(max_examples=60, **SETTINGS)
@given(x=hs.floats(-5.0, 35.0))
def test_inverse_phibar_inverts_scipy_sf(x):
    p = stats.norm.sf(x)
    got = _f(gl.inverse_phibar(p))
    # p carries a relative rounding error ~1e-16, which moves x by p/phi(x) times that.
    tol = 1e-12 * max(1.0, abs(x)) + 1e-15 * p / stats.norm.pdf(x)
    assert abs(got - x) <= tol


@settings(max_examples=60, **SETTINGS)
@given(sigma=SIGMAS, eps=EPSILONS)
def test_window_fraction_law_closed_form(sigma, eps):
    want = stats.norm.sf(sigma + stats.norm.ppf(eps))
    assert _f(gl.window_fraction_law(sigma, eps)) == pytest.approx(want, rel=1e-11)


@settings(max_examples=60, **SETTINGS)
@given(sigma=SIGMAS, q=QS)
def test_log_tail_mass_law_closed_form_and_quadrature(sigma, q):
    got = _f(gl.log_tail_mass_law(q, sigma))
    assert got == pytest.approx(stats.norm.logcdf(stats.norm.isf(q) - sigma), rel=1e-11, abs=1e-14)
    # Independently: the mass of the tilted density below the top-q threshold
    # z_q (in units of Z), i.e. E[e^{sigma Z} 1{Z < z_q}] / E e^{sigma Z}.
    z_q = stats.norm.isf(q)
    mass = _tilted_integral(min(z_q, sigma) - 40.0, z_q, sigma) / math.exp(0.5 * sigma**2)
    assert math.exp(got) == pytest.approx(mass, rel=1e-8, abs=1e-300)


@settings(max_examples=60, **SETTINGS)
@given(sigma=SIGMAS, y=hs.floats(-6.0, 6.0))
def test_log_mass_above_is_the_tilted_density_integral(sigma, y):
    t = sigma * (sigma + y)  # so that t/sigma - sigma = y: masses from ~1e-9 to ~1
    got = _f(gl.log_mass_above(t, sigma))
    mass = _tilted_integral(t / sigma, max(t / sigma, sigma) + 40.0, sigma) / math.exp(0.5 * sigma**2)
    assert math.exp(got) == pytest.approx(mass, rel=1e-8)
    assert got == pytest.approx(stats.norm.logsf(t / sigma - sigma), rel=1e-11, abs=1e-15)
    # The fraction of entries above t is the untilted tail.
    assert _f(gl.log_fraction_above(t, sigma)) == pytest.approx(stats.norm.logsf(t / sigma),
                                                                rel=1e-11, abs=1e-15)


@settings(max_examples=40, **SETTINGS)
@given(n=LENGTHS, sigma=SIGMAS)
def test_log_normaliser_law_is_log_n_plus_log_mgf(n, sigma):
    mgf = _tilted_integral(-40.0, sigma + 40.0, sigma)  # E e^{sigma Z}
    assert _f(gl.log_normaliser_law(n, sigma)) == pytest.approx(math.log(n) + math.log(mgf), rel=1e-9)


@settings(max_examples=40, **SETTINGS)
@given(n=LENGTHS, sigma=SIGMAS, eps=EPSILONS)
def test_window_size_and_effective_entries_closed_forms(n, sigma, eps):
    fraction = stats.norm.sf(sigma + stats.norm.ppf(eps))
    assert _f(gl.window_size_law(n, sigma, eps)) == pytest.approx(max(1.0, n * fraction), rel=1e-10)
    x = (math.log(n * eps) + 0.5 * sigma**2) / sigma
    want = n * math.exp(stats.norm.logsf(x))
    # rel 1e-8: log_phibar's absolute error is up to 4e-9 around x = 20 (jax's series).
    assert _f(gl.effective_entries_law(n, sigma, eps)) == pytest.approx(want, rel=1e-8, abs=1e-300)


@settings(max_examples=40, **SETTINGS)
@given(n=hs.integers(1, 10**6), u=hs.floats(0.0, 1.0), sigma=SIGMAS)
def test_log_kth_smallest_entry_law_closed_form(n, u, sigma):
    k = 1 + min(n - 1, int(u * n))
    want = sigma * stats.norm.ppf(k / (n + 1)) - 0.5 * sigma**2 - math.log(n)
    assert _f(gl.log_kth_smallest_entry_law(n, k, sigma)) == pytest.approx(want, rel=1e-10, abs=1e-10)


def test_laws_broadcast_over_arrays_and_trace_under_jit():
    """Arrays broadcast; under jit the value checks are skipped and the laws still
    compute (one compilation, where eager new shapes would compile op by op)."""
    sigma = np.array([0.5, 1.0, 2.0])
    eps = np.array([[0.1], [0.01]])
    got = np.asarray(jax.jit(gl.window_fraction_law)(sigma, eps))
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, stats.norm.sf(sigma + stats.norm.ppf(eps)), rtol=1e-11)
    n = np.array([[256.0], [65536.0]])
    size = np.asarray(jax.jit(gl.window_size_law)(n, sigma, 0.1))
    np.testing.assert_allclose(size, np.maximum(1, n * stats.norm.sf(sigma + stats.norm.ppf(0.1))),
                               rtol=1e-11)


# ---------------------------------------------------------- identities between laws


@settings(max_examples=25, **SETTINGS)
@given(sigma=SIGMAS, eps=EPSILONS)
def test_window_law_is_the_fraction_above_the_eps_threshold(sigma, eps):
    """k_eps / n is the fraction of entries above the t whose mass above is 1 - eps."""
    def excess(t):
        return math.exp(_f(gl.log_mass_above(t, sigma))) - (1.0 - eps)

    # t/sigma - sigma from -12 (mass ~1) to 12 (mass ~0) brackets the root.
    t = optimize.brentq(excess, sigma * (sigma - 12.0), sigma * (sigma + 12.0), xtol=1e-14, rtol=1e-15)
    fraction = math.exp(_f(gl.log_fraction_above(t, sigma)))
    assert _f(gl.window_fraction_law(sigma, eps)) == pytest.approx(fraction, rel=1e-7)


@settings(max_examples=60, **SETTINGS)
@given(sigma=SIGMAS, eps=EPSILONS)
def test_tail_mass_law_inverts_window_law(sigma, eps):
    q = _f(gl.window_fraction_law(sigma, eps))
    assert _f(gl.log_tail_mass_law(q, sigma)) == pytest.approx(math.log(eps), rel=1e-9)


@settings(max_examples=40, **SETTINGS)
@given(sigma=SIGMAS, n=hs.integers(2, 10**6), eps=EPSILONS)
def test_effective_entries_law_counts_entries_above_eps_at_the_normaliser_law(sigma, n, eps):
    """s_j > eps iff u_j > log eps + log normaliser: the fraction above that threshold."""
    threshold = math.log(eps) + _f(gl.log_normaliser_law(n, sigma))
    want = n * math.exp(_f(gl.log_fraction_above(threshold, sigma)))
    assert _f(gl.effective_entries_law(n, sigma, eps)) == pytest.approx(want, rel=1e-8, abs=1e-300)


# ---------------------------------------------------------------- Monte Carlo

MC_LENGTH = 2**16
MC_ROWS = 32
MC_WINDOW_EPS = (0.1, 0.01)
MC_EFFECTIVE_EPS = 1e-4  # the mean count is O(1) to O(10^3) at n = 2^16 for sigma in {0.5, 1, 2}
MC_Q = 0.1


def _numpy_tail_mass(u: np.ndarray, k: int) -> np.ndarray:
    """Per row, the softmax mass outside the top k entries (sort based)."""
    w = np.exp(u - u.max(axis=1, keepdims=True))
    asc = np.sort(w, axis=1)
    return asc[:, : u.shape[1] - k].sum(axis=1) / w.sum(axis=1)


@pytest.fixture(scope="module")
def monte_carlo():
    """Per sigma: per-row certified windows / n and effective entries (the library's
    functions), normaliser offsets and tail masses at n/10 (NumPy, sort based),
    from fixed keys (one compilation per function)."""
    out = {}
    tail_window = round(MC_Q * MC_LENGTH)
    for i, sigma in enumerate((0.5, 1.0, 2.0)):
        keys = jax.random.split(jax.random.PRNGKey(20240 + i), MC_ROWS)
        u = sigma * jax.vmap(lambda k: jax.random.normal(k, (MC_LENGTH,), jnp.float64))(keys)
        out[sigma] = {
            "window": np.asarray(st.certified_window(u, jnp.asarray(MC_WINDOW_EPS))) / MC_LENGTH,
            "offset": np.asarray(jax.nn.logsumexp(u, axis=-1)) - math.log(MC_LENGTH),
            "tail": _numpy_tail_mass(np.asarray(u), tail_window),
            "effective": np.asarray(st.num_effective_entries(u, MC_EFFECTIVE_EPS), dtype=float),
        }
    return out


def _mean_se(x):
    return float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(len(x)))


@pytest.mark.parametrize("sigma", (0.5, 1.0, 2.0))
def test_monte_carlo_window_fraction(monte_carlo, sigma):
    for j, eps in enumerate(MC_WINDOW_EPS):
        mean, _ = _mean_se(monte_carlo[sigma]["window"][:, j])
        law = _f(gl.window_fraction_law(sigma, eps))
        assert abs(mean / law - 1) <= 0.01, (eps, mean, law)
        wrong = _f(gl.window_fraction_law(sigma / 2, eps))
        assert abs(mean / wrong - 1) > 0.01, (eps, mean, wrong)  # power


@pytest.mark.parametrize("sigma", (0.5, 1.0, 2.0))
def test_monte_carlo_normaliser(monte_carlo, sigma):
    mean, se = _mean_se(monte_carlo[sigma]["offset"])
    law = _f(gl.log_normaliser_law(MC_LENGTH, sigma)) - math.log(MC_LENGTH)
    assert law == pytest.approx(0.5 * sigma**2)
    assert abs(mean - law) <= 5 * se, (mean, law, se)
    wrong = _f(gl.log_normaliser_law(MC_LENGTH, sigma / 2)) - math.log(MC_LENGTH)
    assert abs(mean - wrong) > 5 * se
    # Lemma 4.2 Part 3's Jensen value (offset 0) is not the law either.
    assert mean > 5 * se


@pytest.mark.parametrize("sigma", (0.5, 1.0, 2.0))
def test_monte_carlo_tail_mass(monte_carlo, sigma):
    mean, _ = _mean_se(monte_carlo[sigma]["tail"])
    law = math.exp(_f(gl.log_tail_mass_law(MC_Q, sigma)))
    assert abs(mean / law - 1) <= 0.01, (mean, law)
    wrong = math.exp(_f(gl.log_tail_mass_law(MC_Q, sigma / 2)))
    assert abs(mean / wrong - 1) > 0.01


@pytest.mark.parametrize("sigma", (0.5, 1.0, 2.0))
def test_monte_carlo_effective_entries(monte_carlo, sigma):
    mean, se = _mean_se(monte_carlo[sigma]["effective"])
    assert se > 0  # the count is not degenerate at this eps
    law = _f(gl.effective_entries_law(MC_LENGTH, sigma, MC_EFFECTIVE_EPS))
    assert abs(mean - law) <= 5 * se, (mean, law, se)
    wrong = _f(gl.effective_entries_law(MC_LENGTH, sigma / 2, MC_EFFECTIVE_EPS))
    assert abs(mean - wrong) > 5 * se


# ------------------------------------------------------ Gaussian forms of the bounds


@settings(max_examples=40, **SETTINGS)
@given(sigma=SIGMAS, n=hs.integers(2, 10**5), frac=hs.floats(0.0, 1.0),
       delta=hs.floats(1e-6, 0.5))
def test_small_entry_gaussian_form_is_below_theorem43(sigma, n, frac, delta):
    k = 1 + min(n - 1, int(frac * n))
    d1 = d2 = delta / 2
    bound = float(bounds.small_entry_log_bound(sigma, n, k, d1, d2))
    # The suite's Gaussian form spends all of delta on the scores: still tighter.
    p_all = bounds.count_exceedance_probability(n, k, delta)
    assert _f(gl.small_entry_log_bound_gaussian(sigma, n, p_all)) < bound
    # At the same p, the gap is the one the docstring states, exactly.
    p = bounds.count_exceedance_probability(n, k, d1)
    gaussian = _f(gl.small_entry_log_bound_gaussian(sigma, n, p))
    eta = float(bounds.normaliser_deficit(sigma, n, d2))
    gap = sigma * (math.sqrt(2 * math.log(1 / p)) - stats.norm.isf(p)) + 0.5 * sigma**2 + eta
    assert gap > 0
    assert bound - gaussian == pytest.approx(gap, rel=1e-9, abs=1e-9)


@settings(max_examples=40, **SETTINGS)
@given(sigma=SIGMAS, n=hs.integers(1, 10**9), delta=hs.floats(1e-9, 0.5))
def test_largest_entry_gaussian_form_is_below_theorem51(sigma, n, delta):
    d1 = d2 = delta / 2
    bound = float(bounds.largest_entry_log_bound(sigma, n, d1, d2))
    gaussian = _f(gl.largest_entry_log_quantile_gaussian(sigma, n, delta))
    assert gaussian < bound
    z = stats.norm.isf(-math.expm1(math.log1p(-delta) / n))
    eta = float(bounds.normaliser_deficit(sigma, n, d2))
    gap = sigma * (math.sqrt(2 * math.log(n / d1)) - z) + 0.5 * sigma**2 + eta
    assert bound - gaussian == pytest.approx(gap, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("delta, n", [(1e-12, 10**12), (1e-15, 2**62), (1e-6, 2**40),
                                      (0.05, 1024), (0.05, 1), (0.3, 7)])
def test_largest_entry_quantile_has_no_cancellation(delta, n):
    """Phi^{-1}((1 - delta)^{1/n}) against a 60-digit reference; at small delta and
    large n, (1 - delta)^{1/n} rounds to 1 in float64, so the naive ppf is inf."""
    with localcontext() as ctx:
        ctx.prec = 60
        tail = float(1 - ((1 - Decimal(delta)).ln() / Decimal(n)).exp())  # 1 - (1 - delta)^{1/n}
    z = stats.norm.isf(tail)
    sigma = 1.3
    got = _f(gl.largest_entry_log_quantile_gaussian(sigma, n, delta))
    assert (got + 0.5 * sigma**2 + math.log(n)) / sigma == pytest.approx(z, rel=1e-13)
    if delta < 1e-5 and n > 10**10:
        assert math.isinf(stats.norm.ppf((1 - delta) ** (1 / n)))  # what the form avoids


def test_largest_entry_gaussian_quantile_is_exceeded_at_rate_delta():
    """Gaussian rows, n = 1024, sigma = 0.5, 2000 seeds: the log largest softmax
    entry exceeds the Gaussian 1 - delta form at a rate near delta; the score
    maximum alone exceeds its exact quantile at rate delta (binomial test)."""
    n, sigma, seeds, delta = 1024, 0.5, 2000, 0.05
    keys = jax.random.split(jax.random.PRNGKey(5150), seeds)
    u = np.asarray(sigma * jax.vmap(lambda k: jax.random.normal(k, (n,), jnp.float64))(keys))
    log_max = u.max(axis=1) - np.logaddexp.reduce(u, axis=1)
    form = _f(gl.largest_entry_log_quantile_gaussian(sigma, n, delta))
    rate = float(np.mean(log_max > form))
    assert delta / 2 <= rate <= 2 * delta, rate
    z = stats.norm.isf(-math.expm1(math.log1p(-delta) / n))
    hits = int(np.sum(u.max(axis=1) > sigma * z))
    assert stats.binomtest(hits, seeds, delta).pvalue > 1e-4, hits
    # Power: the form at a tenth of delta is exceeded far less often.
    loose = _f(gl.largest_entry_log_quantile_gaussian(sigma, n, delta / 10))
    assert float(np.mean(log_max > loose)) < delta / 2


def test_small_entry_gaussian_form_holds_for_gaussian_rows():
    """The k-th smallest entry (k = n/2) stays below the Gaussian form in about
    1 - delta of the rows (the form's score part is exact, its normaliser at its law)."""
    n, sigma, seeds, delta = 1024, 1.0, 1000, 0.05
    k = n // 2
    keys = jax.random.split(jax.random.PRNGKey(4343), seeds)
    u = sigma * jax.vmap(lambda kk: jax.random.normal(kk, (n,), jnp.float64))(keys)
    kth = np.asarray(st.log_kth_smallest_entry(u, k))
    p = bounds.count_exceedance_probability(n, k, delta)
    form = _f(gl.small_entry_log_bound_gaussian(sigma, n, p))
    assert float(np.mean(kth > form)) <= 2 * delta
    # The mean-rank law sits inside the measured spread.
    law = _f(gl.log_kth_smallest_entry_law(n, k, sigma))
    assert abs(np.mean(kth) - law) < 5 * np.std(kth) / math.sqrt(seeds) + 0.01


# ---------------------------------------------------------------- collapse length

COLLAPSE_CASES = [(1e-3, 0.5), (1e-2, 1.0), (1e-4, 2.0)]
COLLAPSE_DELTA = 0.05


@functools.lru_cache(maxsize=None)
def _collapse_n0(eps: float, sigma: float):
    """collapse_length_law is slow (~1-2 s a call, see test_sharp_laws): computed once per case."""
    return gl.collapse_length_law(eps, sigma, COLLAPSE_DELTA)


@pytest.mark.parametrize("eps, sigma", COLLAPSE_CASES)
def test_collapse_length_law_is_the_crossing(eps, sigma):
    delta = COLLAPSE_DELTA
    n0 = _collapse_n0(eps, sigma)
    assert isinstance(n0, int) and n0 > 1
    assert _f(gl.effective_entries_law(n0, sigma, eps)) <= delta
    assert _f(gl.effective_entries_law(n0 - 1, sigma, eps)) > delta
    # It stays below delta from n0 on.
    later = np.array([n0 + 1, 2 * n0, 10 * n0, 1e6 * n0, 2.0**62])
    assert np.all(np.asarray(gl.effective_entries_law(later, sigma, eps)) <= delta)
    # Theorem 5.1's n0 (delta split between scores and normaliser) is conservative.
    theorem = bounds.collapse_length(eps, sigma, delta / 2, delta / 2)
    assert theorem is not None and theorem > n0


def test_collapse_length_law_none_beyond_max_length():
    eps, sigma = COLLAPSE_CASES[1]
    n0 = _collapse_n0(eps, sigma)
    assert n0 is not None and n0 < 2**20
    assert gl.collapse_length_law(eps, sigma, COLLAPSE_DELTA, max_length=n0 / 2) is None


# ---------------------------------------------------------------- Random Energy Model


@pytest.mark.parametrize("c, want", [(0.5, 0.875), (1.0, 0.5), (math.sqrt(2), 0.0), (2.0, 0.0)])
def test_rem_window_exponent_values(c, want):
    assert _f(gl.rem_window_exponent(c)) == pytest.approx(want, abs=1e-15)
    assert gl.REM_COLLAPSE_C == pytest.approx(math.sqrt(2))


def test_rem_score_scale():
    n = np.array([2.0, 256.0, 2.0**200])
    np.testing.assert_allclose(np.asarray(gl.rem_score_scale(0.7, n)), 0.7 * np.sqrt(np.log(n)),
                               rtol=1e-14)


@pytest.mark.parametrize("c", (0.5, 1.0, math.sqrt(2), 2.0))
@pytest.mark.parametrize("eps", (0.1, 0.5))
def test_rem_window_law_exponent_approaches_limit(c, eps):
    """log window_size_law(n, c sqrt(ln n), eps) / log n -> max(0, 1 - c^2/2):
    the error shrinks over n = 2^50 .. 2^1000 and, in log form, is within 0.05
    at n = e^2000 (beyond float64's range for n itself)."""
    limit = _f(gl.rem_window_exponent(c))
    exps = (50, 100, 200, 1000)
    errors = []
    for e in exps:
        n = 2.0**e
        k = _f(gl.window_size_law(n, gl.rem_score_scale(c, n), eps))
        assert 1.0 <= k <= n
        errors.append(abs(math.log(k) / math.log(n) - limit))
        # The log form used below agrees with the law where both are finite.
        L = math.log(n)
        log_k = max(0.0, L + _f(gl.log_phibar(c * math.sqrt(L) + stats.norm.ppf(eps))))
        assert math.log(k) == pytest.approx(log_k, rel=1e-9, abs=1e-9)
    assert all(b <= a + 1e-12 for a, b in zip(errors, errors[1:])), errors
    if limit > 0:
        assert errors[-1] < errors[0]
    L = 2000.0
    log_k = max(0.0, L + _f(gl.log_phibar(c * math.sqrt(L) + stats.norm.ppf(eps))))
    assert abs(log_k / L - limit) < 0.05


@pytest.mark.parametrize("c", (0.5, 0.75, 1.0, 1.25))
def test_rem_effective_entries_exponent_is_the_log_slope(c):
    eps = 1e-3
    # ln n from 100 to 250: large, and E(eps) n-fold still above float64's underflow.
    L1, L2 = 100.0, 250.0
    logs = []
    for L in (L1, L2):
        n = math.exp(L)
        value = _f(gl.effective_entries_law(n, gl.rem_score_scale(c, n), eps))
        assert value > 0
        logs.append(math.log(value))
    slope = (logs[1] - logs[0]) / (L2 - L1)
    want = _f(gl.rem_effective_entries_exponent(c))
    assert want < 0
    assert slope == pytest.approx(want, abs=0.01)
    # Power: the window exponent is not this slope.
    assert abs(slope - _f(gl.rem_window_exponent(c))) > 0.1


# ---------------------------------------------------------------- bad input

BAD_INPUTS = [
    # sigma <= 0 or non-finite
    (gl.log_normaliser_law, (10, 0.0), "sigma"),
    (gl.log_normaliser_law, (10, -1.0), "sigma"),
    (gl.log_normaliser_law, (10, float("nan")), "sigma"),
    (gl.log_mass_above, (1.0, float("inf")), "sigma"),
    (gl.log_fraction_above, (1.0, -0.5), "sigma"),
    (gl.log_tail_mass_law, (0.5, 0.0), "sigma"),
    (gl.window_fraction_law, (np.array([1.0, -1.0]), 0.1), "sigma"),
    (gl.window_size_law, (100, float("nan"), 0.1), "sigma"),
    (gl.effective_entries_law, (100, 0.0, 0.1), "sigma"),
    (gl.log_kth_smallest_entry_law, (100, 5, -2.0), "sigma"),
    (gl.small_entry_log_bound_gaussian, (0.0, 100, 0.5), "sigma"),
    (gl.largest_entry_log_quantile_gaussian, (float("inf"), 100, 0.05), "sigma"),
    (gl.collapse_length_law, (0.01, 0.0, 0.05), "sigma"),
    (gl.collapse_length_law, (0.01, float("nan"), 0.05), "sigma"),
    # eps outside (0, 1]
    (gl.window_fraction_law, (1.0, 0.0), "eps"),
    (gl.window_fraction_law, (1.0, 1.5), "eps"),
    (gl.window_fraction_law, (1.0, -0.1), "eps"),
    (gl.window_fraction_law, (1.0, float("nan")), "eps"),
    (gl.window_size_law, (100, 1.0, 2.0), "eps"),
    (gl.effective_entries_law, (100, 1.0, 0.0), "eps"),
    (gl.collapse_length_law, (0.0, 1.0, 0.05), "eps"),
    (gl.collapse_length_law, (1.01, 1.0, 0.05), "eps"),
    # n < 1
    (gl.log_normaliser_law, (0, 1.0), "n"),
    (gl.window_size_law, (0.5, 1.0, 0.1), "n"),
    (gl.window_size_law, (float("nan"), 1.0, 0.1), "n"),
    (gl.effective_entries_law, (-3, 1.0, 0.1), "n"),
    (gl.log_kth_smallest_entry_law, (0, 1, 1.0), "n"),
    (gl.rem_score_scale, (1.0, 0.5), "n"),
    # q outside (0, 1)
    (gl.log_tail_mass_law, (0.0, 1.0), "window_fraction"),
    (gl.log_tail_mass_law, (1.0, 1.0), "window_fraction"),
    (gl.log_tail_mass_law, (-0.2, 1.0), "window_fraction"),
    (gl.log_tail_mass_law, (np.array([0.5, 1.5]), 1.0), "window_fraction"),
    # k outside [1, n]
    (gl.log_kth_smallest_entry_law, (100, 0, 1.0), "k"),
    (gl.log_kth_smallest_entry_law, (100, 101, 1.0), "k"),
    # c <= 0
    (gl.rem_score_scale, (0.0, 100), "c"),
    (gl.rem_score_scale, (-1.0, 100), "c"),
    # delta outside (0, 1)
    (gl.largest_entry_log_quantile_gaussian, (1.0, 100, 0.0), "delta"),
    (gl.largest_entry_log_quantile_gaussian, (1.0, 100, 1.0), "delta"),
    (gl.largest_entry_log_quantile_gaussian, (1.0, 100, float("nan")), "delta"),
    (gl.collapse_length_law, (0.01, 1.0, 0.0), "delta"),
    (gl.collapse_length_law, (0.01, 1.0, 1.5), "delta"),
    # num_keys not an integer
    (gl.small_entry_log_bound_gaussian, (1.0, 100.0, 0.5), "num_keys"),
    (gl.largest_entry_log_quantile_gaussian, (1.0, 2.5, 0.05), "num_keys"),
]


@pytest.mark.parametrize("func, args, name", BAD_INPUTS,
                         ids=[f"{f.__name__}-{i}" for i, (f, _, _) in enumerate(BAD_INPUTS)])
def test_bad_input_raises_a_clear_value_error(func, args, name):
    with pytest.raises(ValueError, match=rf"\b{name}\b"):
        func(*args)


# Validation gaps found while writing these tests (fixed since).

def test_tail_mass_law_rejects_nan_fraction():
    with pytest.raises(ValueError, match="window_fraction"):
        gl.log_tail_mass_law(float("nan"), 1.0)


def test_kth_smallest_law_rejects_nan_rank():
    with pytest.raises(ValueError, match=r"\bk\b"):
        gl.log_kth_smallest_entry_law(100, float("nan"), 1.0)


@pytest.mark.parametrize("c", (float("nan"), float("inf")))
def test_rem_score_scale_rejects_non_finite_c(c):
    with pytest.raises(ValueError, match=r"\bc\b"):
        gl.rem_score_scale(c, 100)


@pytest.mark.parametrize("func", (gl.rem_window_exponent, gl.rem_effective_entries_exponent))
@pytest.mark.parametrize("c", (0.0, -1.0))
def test_rem_exponents_reject_non_positive_c(func, c):
    with pytest.raises(ValueError, match=r"\bc\b"):
        func(c)


@pytest.mark.parametrize("call", (
    lambda: gl.small_entry_log_bound_gaussian(1.0, 0, 0.5),
    lambda: gl.largest_entry_log_quantile_gaussian(1.0, 0, 0.05),
    lambda: gl.largest_entry_log_quantile_gaussian(1.0, -3, 0.05)), ids=("small-0", "largest-0", "largest-neg"))
def test_gaussian_forms_reject_num_keys_below_one_clearly(call):
    with pytest.raises(ValueError, match="num_keys"):
        call()


@pytest.mark.parametrize("p", (0.0, 1.5, float("nan")))
def test_small_entry_gaussian_form_rejects_bad_probability(p):
    with pytest.raises(ValueError):
        gl.small_entry_log_bound_gaussian(1.0, 100, p)
