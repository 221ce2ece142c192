"""The JAX special functions behind Theorem 4.3's exact binomial form
(sparsity_theory/special.py).

References: ``scipy.special.betaincinv`` / ``betainc`` / ``betaln`` and
``scipy.stats.binom`` where they are accurate; where SciPy itself loses digits
(tails near 1e-300, where its ``betaincinv`` is off by up to 0.6%) an exact
reference: for integer a, b, ``I_x(a, b) = P(Binomial(a + b - 1, x) >= a)``, a
finite sum evaluated in 60-digit decimal arithmetic. Closed forms at k = 1 and
k = n reach n = 1e9. The binomial quantile is compared for EXACT equality with
the SciPy implementation the library used before (``stats.binom.isf`` plus
fix-ups), kept here as the reference.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special as sp
from scipy import stats

from sparsity_theory import special


def _grid(ns, ys):
    """(a, b, y) = (n - k + 1, k, y) for k in {1, 2, n/3, n/2, n-1, n}: Theorem 4.3's
    arguments, both tails and the centre."""
    rows = [(n - k + 1, k, y) for n in ns
            for k in sorted({1, 2, max(1, n // 3), max(1, n // 2), max(1, n - 1), n}) if k <= n
            for y in ys]
    return tuple(np.array(v, dtype=np.float64) for v in zip(*rows))


def _exact_betainc(a: int, b: int, x: float) -> Decimal:
    """I_x(a, b) for integers a, b >= 1 as the binomial tail sum, in 60 digits."""
    with localcontext() as ctx:
        ctx.prec = 60
        n, xd = a + b - 1, Decimal(x)
        return sum(math.comb(n, j) * xd**j * (1 - xd) ** (n - j) for j in range(a, n + 1))


# ------------------------------------------------------------------ betaincinv


def test_betaincinv_matches_scipy_in_float64_over_a_wide_grid():
    ys = [1e-12, 1e-6, 0.025, 0.5, 0.9, 1 - 1e-9, 1 - 1e-12]
    a, b, y = _grid([1, 2, 7, 64, 1000, 10**4, 10**5, 10**6, 10**7], ys)
    got = np.asarray(special.betaincinv(a, b, y))
    assert got.dtype == np.float64
    ref = sp.betaincinv(a, b, y)
    # Rounding of log I grows like eps * sqrt(n) near the centre: ~1e-14 for small
    # n, ~1e-13 at 1e4. From n = 1e6 the continued fraction near its boundary (k = n,
    # y = 0.9) loses up to ~2e-10 (see special._continued_fraction).
    n = a + b - 1
    rtol = np.where(n < 5e5, np.maximum(3e-14, 4e-15 * np.sqrt(n)), 5e-10)
    err = np.abs(got / ref - 1)
    assert np.all(err <= rtol), (a[np.argmax(err / rtol)], b[np.argmax(err / rtol)], err.max())


@pytest.mark.parametrize("a,b", [(44, 21), (33, 32), (1, 64), (64, 1), (3, 150), (150, 3), (100, 100)])
@pytest.mark.parametrize("y", [1e-300, 1e-100, 1e-30])
def test_betaincinv_far_tails_against_the_exact_sum(a, b, y):
    """Down to y = 1e-300 (SciPy's own betaincinv drifts there): I at the
    returned x equals y to 1e-12 relative, by exact arithmetic."""
    x = float(special.betaincinv(float(a), float(b), y))
    assert 0 < x < 1
    exact = _exact_betainc(a, b, x)
    assert abs(float(exact / Decimal(y)) - 1) < 1e-12
    np.testing.assert_allclose(float(special.log_betainc(float(a), float(b), x)), float(exact.ln()),
                               rtol=1e-14)


@pytest.mark.parametrize("n", [1, 3, 1000, 10**6, 10**9])
@pytest.mark.parametrize("y", [1e-12, 1e-3, 0.5, 1 - 1e-9])
def test_betaincinv_closed_forms_at_k_equal_1_and_n(n, y):
    """I_x(n, 1) = x^n and I_x(1, n) = 1 - (1 - x)^n: Theorem 4.3 at k = 1 and k = n."""
    x_k1 = float(special.betaincinv(float(n), 1.0, y))
    np.testing.assert_allclose(x_k1, math.exp(math.log(y) / n), rtol=1e-14)
    x_kn = float(special.betaincinv(1.0, float(n), y))
    np.testing.assert_allclose(x_kn, -math.expm1(math.log1p(-y) / n), rtol=1e-10)


def test_betaincinv_float32_is_sensible_and_stays_float32():
    a, b, y = _grid([2, 7, 64, 1000, 10**4], [1e-30, 1e-12, 1e-6, 0.025, 0.5, 0.9, 1 - 1e-6])
    a32, b32, y32 = (v.astype(np.float32) for v in (a, b, y))
    got = np.asarray(special.betaincinv(a32, b32, y32))
    assert got.dtype == np.float32
    ref = sp.betaincinv(a, b, y32.astype(np.float64))  # the float32 y, exactly
    rtol = 2e-5 * np.maximum(1.0, np.sqrt(a + b - 1) / 30)
    err = np.abs(got / ref - 1)
    assert np.all(err <= rtol), err.max()


def test_betaincinv_edges_and_domain():
    out = np.asarray(special.betaincinv(jnp.array([3.0, 3.0, 3.0, -1.0, 3.0, 3.0]),
                                        jnp.array([2.0, 2.0, 2.0, 2.0, 0.0, 2.0]),
                                        jnp.array([0.0, 1.0, 1.5, 0.5, 0.5, jnp.nan])))
    assert out[0] == 0.0 and out[1] == 1.0
    assert np.all(np.isnan(out[2:]))


def test_betaincinv_jit_vmap_and_grad():
    a, b, y = _grid([5, 300, 10**5], [1e-9, 0.3, 0.99])
    eager = np.asarray(special.betaincinv(a, b, y))
    np.testing.assert_array_equal(np.asarray(jax.jit(special.betaincinv)(a, b, y)), eager)
    np.testing.assert_allclose(np.asarray(jax.vmap(special.betaincinv)(a, b, y)), eager, rtol=1e-15)
    # Broadcasting: a scalar (a, b) against a vector of y.
    ys = jnp.array([1e-6, 0.5])
    np.testing.assert_allclose(np.asarray(special.betaincinv(4.0, 9.0, ys)),
                               sp.betaincinv(4.0, 9.0, np.asarray(ys)), rtol=1e-14)
    # dx/dy at k = n: x = 1 - (1 - y)^(1/n), dx/dy = (1 - y)^(1/n - 1) / n.
    for n, y0 in ((7, 0.3), (1000, 1e-6)):
        g = float(jax.grad(special.betaincinv, argnums=2)(1.0, float(n), y0))
        np.testing.assert_allclose(g, (1 - y0) ** (1 / n - 1) / n, rtol=1e-12)
    # A generic point against a central difference of SciPy's inverse.
    h = 1e-7
    fd = (sp.betaincinv(20.0, 7.0, 0.2 + h) - sp.betaincinv(20.0, 7.0, 0.2 - h)) / (2 * h)
    np.testing.assert_allclose(float(jax.grad(special.betaincinv, argnums=2)(20.0, 7.0, 0.2)), fd,
                               rtol=1e-6)


# -------------------------------------------------------- log_betainc, betaln


def test_log_betainc_and_betaln_match_scipy():
    rng = np.random.default_rng(1)
    # a, b up to 1e4 (beyond, any float64 reference built on betaln carries an
    # absolute error ~eps |log B| ~ 1e-10 itself; the inverse tests cover 1e7).
    a = np.exp(rng.uniform(0, math.log(1e4), 400))
    b = np.exp(rng.uniform(0, math.log(1e4), 400))
    x = sp.betaincinv(a, b, np.exp(-rng.uniform(0, 60, 400)))  # tails down to e^-60
    ref = np.log(sp.betainc(a, b, x))
    got = np.asarray(special.log_betainc(a, b, x))
    np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(np.asarray(special.betainc(a, b, x)), sp.betainc(a, b, x), rtol=1e-10)
    for aa, bb in ((a, b), (np.array([1e12, 0.5, 3.0]), np.array([1e12, 1e-3, 1e9]))):
        # SciPy's betaln sums lgammas: its own error is ~eps |lgamma(a + b)|.
        np.testing.assert_allclose(np.asarray(special.betaln(aa, bb)), sp.betaln(aa, bb), rtol=1e-11)
    # JAX's own betainc loses ~1e-9 to lgamma cancellation at n = 1e6; this one does not.
    assert abs(float(special.log_betainc(5e5 + 1, 5e5, 0.4964833024612899)) - math.log(1e-12)) < 1e-9


def test_log_betainc_domain_and_ends():
    got = np.asarray(special.log_betainc(2.0, 3.0, jnp.array([0.0, 1.0, -0.1, 1.1, jnp.nan])))
    assert got[0] == -np.inf and got[1] == 0.0
    assert np.all(np.isnan(got[2:]))
    assert np.isnan(float(special.log_betainc(-1.0, 3.0, 0.5)))


# -------------------------------------------------------------- binomial tails


def _scipy_isf(delta, n, p):
    """The library's former converse quantile: stats.binom.isf, then fix-ups making
    q exactly the smallest count with P(N > q) <= delta."""
    q = stats.binom.isf(delta, n, p)
    q = np.where(stats.binom.sf(q, n, p) > delta, q + 1, q)
    return np.where((q > 0) & (stats.binom.sf(q - 1, n, p) <= delta), q - 1, q)


def _isf_grid(seed):
    rng = np.random.default_rng(seed)
    rows = []
    for n in (1, 2, 5, 64, 1000, 12345, 10**6):
        ps = np.r_[0.0, 1.0, 1e-300, 1e-12, 1e-7, 1 - 1e-12, rng.uniform(size=5),
                   np.exp(-rng.uniform(0, 30, size=5))]
        rows += [(d, n, p) for p in ps for d in (1e-12, 1e-6, 0.025, 0.3, 0.5, 0.9, 1 - 1e-9)]
    return tuple(np.array(v, dtype=np.float64) for v in zip(*rows))


def test_binomial_isf_equals_the_scipy_quantile_exactly():
    d, n, p = _isf_grid(0)
    got = np.asarray(special.binomial_isf(d, n, p))
    ref = _scipy_isf(d, n, p)
    np.testing.assert_array_equal(got, ref)
    # and it is the defining smallest q: the tail at q is <= delta, at q - 1 above it.
    assert np.all(stats.binom.sf(got, n, p) <= d)
    assert np.all((got == 0) | (stats.binom.sf(got - 1, n, p) > d))


def test_binomial_isf_under_jit_and_vmap_over_n():
    d, n, p = _isf_grid(1)
    ref = _scipy_isf(d, n, p)
    np.testing.assert_array_equal(np.asarray(jax.jit(special.binomial_isf)(d, n, p)), ref)
    np.testing.assert_array_equal(np.asarray(jax.vmap(special.binomial_isf)(d, n, p)), ref)


def test_binomial_isf_float32_stays_float32_and_matches_on_small_n():
    d, n, p = _isf_grid(2)
    keep = (n <= 1000) & (d.astype(np.float32) < 1)  # 1 - 1e-9 rounds to 1 in float32
    d32, n32, p32 = (v[keep].astype(np.float32) for v in (d, n, p))
    got = np.asarray(special.binomial_isf(d32, n32, p32))
    assert got.dtype == np.float32
    ref = _scipy_isf(d32.astype(float), n32.astype(float), p32.astype(float))
    # float32 tails carry ~1e-6 relative error: a quantile may move by one count
    # only where the tail sits within that of delta.
    assert np.mean(got == ref) > 0.97 and np.all(np.abs(got - ref) <= 1)


def test_binomial_log_sf_matches_scipy():
    rng = np.random.default_rng(3)
    n = rng.integers(1, 5000, 300).astype(float)
    q = np.floor(rng.uniform(-1, 1.1, 300) * n)
    p = rng.uniform(size=300)
    got = np.asarray(special.binomial_log_sf(q, n, p))
    ref = stats.binom.logsf(q, n, p)
    finite = np.isfinite(ref) & (ref > -700)
    np.testing.assert_allclose(got[finite], ref[finite], rtol=1e-10, atol=1e-13)
    assert np.all(got[q < 0] == 0.0) and np.all(got[q >= n] == -np.inf)


def test_binomial_isf_accepts_a_tail_exactly_equal_to_delta():
    """Definition: the smallest q with P(N > q) <= delta, so a tail equal to delta
    is accepted. For n = 1 the tail P(N > 0) = p is computed exactly: q = 0."""
    assert float(special.binomial_isf(0.5, 1, 0.5)) == 0.0
    assert float(special.binomial_isf(0.25, 1, 0.25)) == 0.0
    # Just above the tail the next count is needed; just below, q = 0 still.
    assert float(special.binomial_isf(0.5 * (1 - 1e-12), 1, 0.5)) == 1.0
    assert float(special.binomial_isf(0.5 * (1 + 1e-12), 1, 0.5)) == 0.0
