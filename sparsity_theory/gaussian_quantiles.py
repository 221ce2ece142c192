"""Exact ``1 - delta`` quantiles of Gaussian score statistics: the yardstick of
a bound's tightness.

In cross mode with Gaussian keys, the centred scores ``u_ij - mu_i`` of row i
are exactly i.i.d. ``N(0, sigma_i^2)`` given the query row (docs/theory.md,
setting). For the statistics that the score steps of the paper's bounds
control, the exact ``1 - delta`` quantile is then a closed form or a
one-dimensional integral:

* Lemma 4.2 Part 1, ``max_j |u_ij - mu_i|``: ``P(max <= z) = (2 Phi(z/sigma) - 1)^n``;
* Lemma 4.2 Part 2, ``max_j u_ij - min_j u_ij`` (the spread behind Theorems 6.1
  and 6.2): ``P(range <= w) = n int phi(x) (Phi(x + w) - Phi(x))^{n-1} dx``;
* Theorem 5.1's score step, ``max_j (u_ij - mu_i)``: ``P(max <= z) = Phi(z/sigma)^n``;
* Theorem 4.3's count step, the k-th smallest centred score:
  ``P(Z_(k) <= t) = P(Binomial(n, Phi(t/sigma)) >= k) = I_{Phi(t/sigma)}(k, n - k + 1)``.

A valid bound at probability ``1 - delta`` is at least its quantity's exact
``1 - delta`` quantile; ``bound / quantile`` says what the bound gives away, and
it is what a loosened constant changes (a sub-Gaussian bound doubled doubles it,
while the share of trials under the bound barely moves). These are properties
of the Gaussian model only: for other inputs they are a reference, not a
quantile.

All functions take ``sigma`` as an array (broadcast), ``num_keys`` (n) and
``num_small`` (k) as Python ints, ``delta`` as a float in (0, 1); they keep
sigma's floating dtype and run under ``jit`` and ``vmap`` over sigma.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.scipy import special

from sparsity_theory import _checks
from sparsity_theory.special import betaincinv

Array = jax.Array

# The spread's distribution is an integral over the smallest score's position x:
# a fixed grid wide enough for n up to 2^40 (the smallest of n standard normals
# lies within [-sqrt(2 ln n) - 6, 6] except with probability far below 1e-9).
_SPREAD_GRID_POINTS = 8001
_BISECTION_STEPS = 80


def _check(num_keys, delta) -> int:
    num_keys = _checks.check_int(num_keys, "num_keys")
    if num_keys < 1:
        raise ValueError(f"num_keys must be >= 1, got {num_keys}.")
    _checks.check_probability(delta, "delta")
    return num_keys


def _sigma(sigma) -> Array:
    sigma = jnp.asarray(sigma)
    if not jnp.issubdtype(sigma.dtype, jnp.floating):
        sigma = sigma.astype(jnp.result_type(float))
    _checks.check_finite_array(sigma, "sigma")
    if _checks.is_concrete(sigma) and bool(jnp.any(sigma < 0)):
        raise ValueError("sigma must be >= 0.")
    return sigma


def _per_key_tail(num_keys: int, delta, dtype) -> Array:
    """``1 - (1 - delta)^{1/n}`` without cancellation."""
    return -jnp.expm1(jnp.log1p(-jnp.asarray(delta, dtype)) / num_keys)


def max_score_quantile(sigma, num_keys: int, delta) -> Array:
    """Exact ``1 - delta`` quantile of ``max_j (u_ij - mu_i)`` for n i.i.d.
    ``N(0, sigma^2)`` scores: ``sigma Phibar^{-1}(1 - (1 - delta)^{1/n})``
    (Theorem 5.1 bounds it by ``sigma sqrt(2 ln(n / delta_1))``)."""
    num_keys = _check(num_keys, delta)
    sigma = _sigma(sigma)
    return -sigma * special.ndtri(_per_key_tail(num_keys, delta, sigma.dtype))


def abs_deviation_quantile(sigma, num_keys: int, delta) -> Array:
    """Exact ``1 - delta`` quantile of ``max_j |u_ij - mu_i|``:
    ``sigma Phibar^{-1}((1 - (1 - delta)^{1/n}) / 2)`` (Lemma 4.2 Part 1 bounds
    it by ``sigma sqrt(2 ln(2n / delta))``)."""
    num_keys = _check(num_keys, delta)
    sigma = _sigma(sigma)
    return -sigma * special.ndtri(0.5 * _per_key_tail(num_keys, delta, sigma.dtype))


def _log_spread_cdf(width: Array, num_keys: int, grid: Array) -> Array:
    """``log P(max - min <= width)`` for n i.i.d. standard normals, by the
    trapezoid rule over the position x of the smallest."""
    upper = special.log_ndtr(grid + width)
    # log(Phi(x + w) - Phi(x)), stable for w > 0: log Phi(x + w) + log1p(-Phi(x)/Phi(x + w)).
    log_mass = upper + jnp.log1p(-jnp.exp(special.log_ndtr(grid) - upper))
    log_density = -0.5 * grid**2 - 0.5 * jnp.log(2.0 * jnp.pi)
    integrand = log_density + (num_keys - 1) * log_mass
    step = grid[1] - grid[0]
    weights = jnp.full_like(grid, jnp.log(step)).at[jnp.array([0, -1])].add(jnp.log(0.5))
    return jnp.log(num_keys) + jax.nn.logsumexp(integrand + weights)


def spread_quantile(sigma, num_keys: int, delta) -> Array:
    """Exact ``1 - delta`` quantile of ``max_j u_ij - min_j u_ij`` for n i.i.d.
    ``N(0, sigma^2)`` scores (Lemma 4.2 Part 2 bounds it by
    ``2 sigma sqrt(2 ln(2n / delta))``; Theorem 6.1's ``rho`` is that bound).

    The standard-normal quantile is found by bisection on the integral
    ``P(range <= w) = n int phi(x) (Phi(x + w) - Phi(x))^{n-1} dx`` between 0
    and twice the quantile of ``max |Z_j|`` (the range is at most twice the
    largest deviation), then scaled by sigma. Accurate to about 1e-6 relative
    for delta >= 1e-6 in float64 (the integral carries ``1 - delta``, so a
    smaller delta loses digits), about 1e-3 in float32; n = 1 gives 0."""
    num_keys = _check(num_keys, delta)
    sigma = _sigma(sigma)
    if num_keys == 1:
        return jnp.zeros_like(sigma)
    return sigma * _unit_spread_quantile(jnp.asarray(num_keys, sigma.dtype),
                                         jnp.asarray(delta, sigma.dtype))


@jax.jit
def _unit_spread_quantile(num_keys: Array, delta: Array) -> Array:
    """:func:`spread_quantile` at sigma = 1; compiled once per dtype (run eagerly,
    the bisection's loop would be traced and compiled again at every call)."""
    dtype = num_keys.dtype
    reach = jnp.sqrt(2.0 * jnp.log(num_keys)) + 6.0
    grid = jnp.linspace(-reach, 6.0, _SPREAD_GRID_POINTS, dtype=dtype)
    target = jnp.log1p(-delta)
    high0 = 2.0 * -special.ndtri(0.5 * -jnp.expm1(jnp.log1p(-delta) / num_keys))

    def step(_, bracket):
        low, high = bracket
        mid = 0.5 * (low + high)
        below = _log_spread_cdf(mid, num_keys, grid) < target
        return jnp.where(below, mid, low), jnp.where(below, high, mid)

    low, high = jax.lax.fori_loop(0, _BISECTION_STEPS, step, (jnp.zeros((), dtype), high0))
    return 0.5 * (low + high)


def kth_smallest_score_quantile(sigma, num_keys: int, num_small: int, delta) -> Array:
    """Exact ``1 - delta`` quantile of the k-th smallest centred score
    (k = ``num_small``): the smallest t with at least k of the n scores at most
    t with probability ``1 - delta``, ``sigma Phibar^{-1}(p)`` with
    ``p = I^{-1}_delta(n - k + 1, k)``. Theorem 4.3's threshold is
    ``sigma sqrt(2 ln(1/p))`` at the same p (the Chernoff step), so the ratio of
    the two is what that step gives away."""
    num_keys = _check(num_keys, delta)
    num_small = _checks.check_int(num_small, "num_small")
    if not 1 <= num_small <= num_keys:
        raise ValueError(f"num_small must be in [1, num_keys={num_keys}], got {num_small}.")
    sigma = _sigma(sigma)
    # By the symmetry I_x(a, b) = 1 - I_{1-x}(b, a), the per-key exceedance
    # probability is I^{-1}_delta(n - k + 1, k): the p of Theorem 4.3's binomial
    # form, inverted at delta rather than at 1 - delta (no digits lost near 1).
    exceedance = betaincinv(jnp.asarray(num_keys - num_small + 1, sigma.dtype),
                            jnp.asarray(num_small, sigma.dtype), jnp.asarray(delta, sigma.dtype))
    return -sigma * special.ndtri(exceedance)


__all__ = ["abs_deviation_quantile", "kth_smallest_score_quantile", "max_score_quantile",
           "spread_quantile"]
