"""Sharp large-n laws for Gaussian scores: exact limits to hold the paper's bounds
(Theorem 4.3, Theorem 5.1) and its title's n^C against.

Setting: one softmax row of n scores ``u_j = mu + sigma Z_j`` with ``Z_j`` i.i.d.
N(0, 1). This is exact in cross mode with Gaussian keys: given the query,
``u_ij = <w_i, y_j>`` with ``y_j ~ N(m 1, nu^2 I)`` is ``N(mu_i, sigma_i^2)``,
``sigma_i = nu ||w_i||_2``, independently over j (Lemma 4.2's setting, where the
paper only uses the sub-Gaussian tail). mu cancels in the softmax (Fact B.1), so
every law below is stated for mu = 0. docs/theory.md, "Sharp Gaussian laws", has
the derivations; in short:

* normaliser: ``sum_j e^{u_j} = n e^{sigma^2/2} (1 + o_P(1))`` while
  ``sigma^2 < 2 ln n`` (law of large numbers; the Random Energy Model's high
  temperature phase), against Lemma 4.2 Part 3's Jensen bound ``n e^{-eta}``;
* exponential tilting: the softmax mass on the scores above ``mu + t`` tends to
  ``Phibar(t/sigma - sigma)`` and the fraction of entries there is
  ``Phibar(t/sigma)``;
* hence the smallest window with tail mass <= eps (``certified_window``) obeys
  ``k_eps / n -> Phibar(sigma + Phi^{-1}(eps))``, and the number of effective
  entries ``E(eps) = #{j : s_j > eps}`` has mean ``n Phibar((ln(n eps) + sigma^2/2)/sigma)``;
* with ``sigma = c sqrt(ln n)`` (the Random Energy Model) the window grows like
  ``n^{1 - c^2/2 + o(1)}`` for ``c < sqrt(2)``: the title's n^C with
  ``C = 1 - c^2/2``; at ``c >= sqrt(2)`` the normaliser is carried by O(1)
  entries (collapse, Theorem 5.1 Part 2). E(eps) decays like
  ``n^{-(1 - c^2/2)^2 / (2 c^2)}``.

Every function takes arrays and broadcasts; masses, fractions and entries are
returned as natural logs where they can be tiny.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.scipy import special

from sparsity_theory import _checks, x64

Array = jax.Array

REM_COLLAPSE_C = math.sqrt(2.0)  # c at which sigma = c sqrt(ln n) collapses the row


def _finite(x, name: str) -> Array:
    x = jnp.asarray(x, dtype=float)
    if _checks.is_concrete(x):
        _checks.check_finite_array(x, name)
    return x


def _sigma(sigma) -> Array:
    sigma = _finite(sigma, "sigma")
    if _checks.is_concrete(sigma) and bool(jnp.any(sigma <= 0)):
        raise ValueError("sigma (the row's score standard deviation) must be > 0.")
    return sigma


def _positive_c(c) -> Array:
    c = _finite(c, "c")
    if _checks.is_concrete(c) and bool(jnp.any(c <= 0)):
        raise ValueError("c must be > 0.")
    return c


def _num_keys(num_keys) -> int:
    num_keys = _checks.check_int(num_keys, "num_keys")
    if num_keys < 1:
        raise ValueError(f"num_keys must be >= 1, got {num_keys}.")
    return num_keys


def _eps(eps) -> Array:
    _checks.check_eps(eps)
    return jnp.asarray(eps, dtype=float)


def _n(n) -> Array:
    n = jnp.asarray(n, dtype=float)
    if _checks.is_concrete(n) and bool(jnp.any(~(n >= 1))):
        raise ValueError("n must be >= 1.")
    return n


def log_phibar(x) -> Array:
    """``log Phibar(x) = log P(Z > x)`` for Z ~ N(0, 1), accurate far into the tail."""
    return special.log_ndtr(-jnp.asarray(x, dtype=float))


def inverse_phibar(p) -> Array:
    """``Phibar^{-1}(p)``: the x with ``P(Z > x) = p``."""
    return -special.ndtri(jnp.asarray(p, dtype=float))


def log_normaliser_law(n, sigma) -> Array:
    """``ln n + sigma^2/2``: the limit of ``log sum_j e^{u_j - mu}``.

    ``E e^{sigma Z} = e^{sigma^2/2}``; the relative fluctuation of the sum is
    ``sqrt((e^{sigma^2} - 1)/n)``, small when ``sigma^2 < ln n``, and the sum over
    its mean still tends to 1 in probability while ``sigma^2 < 2 ln n``.
    Lemma 4.2 Part 3 gives only ``ln n - eta``: Jensen drops the ``sigma^2/2``.
    """
    return jnp.log(_n(n)) + 0.5 * jnp.square(_sigma(sigma))


def log_mass_above(threshold, sigma) -> Array:
    """``log`` of the limit of the softmax mass on the entries with
    ``u_j - mu > threshold``: ``Phibar(threshold/sigma - sigma)``.

    Exponential tilting: ``E[e^{sigma Z} 1{sigma Z > t}] / E e^{sigma Z}`` is
    ``P(Z' > t/sigma)`` for ``Z' ~ N(sigma, 1)``.
    """
    sigma = _sigma(sigma)
    return log_phibar(jnp.asarray(threshold, dtype=float) / sigma - sigma)


def log_fraction_above(threshold, sigma) -> Array:
    """``log Phibar(threshold/sigma)``: the expected fraction of entries with
    ``u_j - mu > threshold``."""
    return log_phibar(jnp.asarray(threshold, dtype=float) / _sigma(sigma))


def log_tail_mass_law(window_fraction, sigma) -> Array:
    """``log`` of the limit of the tail mass ``tau(k)`` of top-k attention with
    ``k = q n`` (q = ``window_fraction`` in (0, 1)): ``Phi(Phibar^{-1}(q) - sigma)``.

    The top q n entries are those above ``sigma Phibar^{-1}(q)``; the rest carry
    one minus :func:`log_mass_above` there.
    """
    q = _finite(window_fraction, "window_fraction")
    if _checks.is_concrete(q) and bool(jnp.any((q <= 0) | (q >= 1))):
        raise ValueError("window_fraction must be in (0, 1).")
    return special.log_ndtr(inverse_phibar(q) - _sigma(sigma))


def window_fraction_law(sigma, eps) -> Array:
    """``lim k_eps / n = Phibar(sigma + Phi^{-1}(eps))``: the fraction of the row
    the smallest window with tail mass <= eps keeps.

    Keeping the entries above ``mu + t`` leaves tail mass ``Phi(t/sigma - sigma)``;
    setting it to eps gives ``t/sigma = sigma + Phi^{-1}(eps)``, and the kept
    fraction is ``Phibar(t/sigma)``. It does not depend on n: at fixed sigma the
    certified window grows linearly in n.
    """
    return jnp.exp(log_phibar(_sigma(sigma) + special.ndtri(_eps(eps))))


def window_size_law(n, sigma, eps) -> Array:
    """``n Phibar(sigma + Phi^{-1}(eps))``, floored at 1 (a window keeps at least
    one entry): the finite-n law for the certified window ``k_eps``. With
    ``sigma = c sqrt(ln n)`` it is ``n^{1 - c^2/2 + o(1)}`` (:func:`rem_window_exponent`)."""
    return jnp.maximum(1.0, _n(n) * window_fraction_law(sigma, eps))


def effective_entries_law(n, sigma, eps) -> Array:
    """Mean of ``E(eps) = #{j : s_j > eps}``: ``n Phibar((ln(n eps) + sigma^2/2) / sigma)``.

    ``s_j > eps`` iff ``u_j - mu > ln(n eps) + sigma^2/2`` once the normaliser is
    at its law :func:`log_normaliser_law`. Compare Theorem 5.1, whose condition
    (``ln(n eps) >= sigma sqrt(2 ln(n/delta_1)) + eta``) makes this count zero with
    probability 1 - delta.
    """
    n, sigma = _n(n), _sigma(sigma)
    x = (jnp.log(n * _eps(eps)) + 0.5 * jnp.square(sigma)) / sigma
    return n * jnp.exp(log_phibar(x))


def log_kth_smallest_entry_law(n, k, sigma) -> Array:
    """``log`` of the k-th smallest softmax entry: ``sigma Phi^{-1}(k/(n+1)) -
    sigma^2/2 - ln n`` (the k-th order statistic at its mean rank, over the
    normaliser's law). Theorem 4.3's ``eps_k`` bounds it from above."""
    n = _n(n)
    k = _finite(k, "k")
    if _checks.is_concrete(k) and bool(jnp.any((k < 1) | (k > n))):
        raise ValueError("k must be in [1, n].")
    sigma = _sigma(sigma)
    return sigma * special.ndtri(k / (n + 1.0)) - 0.5 * jnp.square(sigma) - jnp.log(n)


def small_entry_log_bound_gaussian(sigma, num_keys: int, exceedance_probability) -> Array:
    """Theorem 4.3 with Gaussian tails instead of Chernoff's: ``log eps_k`` with
    ``eps_k = e^{sigma Phibar^{-1}(p) - sigma^2/2} / n``.

    p is the same per-key exceedance probability as Theorem 4.3's
    (``bounds.count_exceedance_probability``: at most n - k keys exceed the
    threshold except with probability delta), so the score part is exact for
    Gaussian scores; the normaliser is at its law ``n e^{sigma^2/2}`` instead of
    Jensen's ``n e^{-eta}``. The gap to ``bounds.small_entry_log_bound`` is what
    the sub-Gaussian argument leaves on the table:
    ``sigma (sqrt(2 ln(1/p)) - Phibar^{-1}(p)) + sigma^2/2 + eta``.
    """
    sigma = _sigma(sigma)
    p = _finite(exceedance_probability, "exceedance_probability")
    if _checks.is_concrete(p) and bool(jnp.any((p <= 0) | (p >= 1))):
        raise ValueError("exceedance_probability must be in (0, 1).")
    return (sigma * inverse_phibar(p) - 0.5 * jnp.square(sigma) - math.log(_num_keys(num_keys)))


def largest_entry_log_quantile_gaussian(sigma, num_keys: int, delta) -> Array:
    """Theorem 5.1's quantity at its exact Gaussian ``1 - delta`` quantile:
    ``log max_j s_j <= sigma Phi^{-1}((1 - delta)^{1/n}) - sigma^2/2 - ln n``.

    ``P(max_j Z_j <= z) = Phi(z)^n`` exactly; the normaliser is at its law. The
    gap to ``bounds.largest_entry_log_bound`` is
    ``sigma (sqrt(2 ln(n/delta_1)) - z) + sigma^2/2 + eta``.
    """
    delta = _checks.check_probability(delta, "delta")
    num_keys = _num_keys(num_keys)
    sigma = _sigma(sigma)
    # 1 - (1 - delta)^{1/n}, without cancellation.
    tail = -jnp.expm1(jnp.log1p(-jnp.asarray(delta, dtype=float)) / num_keys)
    return sigma * inverse_phibar(tail) - 0.5 * jnp.square(sigma) - math.log(num_keys)


_log_phibar_compiled = jax.jit(log_phibar)


@functools.lru_cache(maxsize=1024)  # pure in its float arguments; the analysis asks repeatedly
def collapse_length_law(eps: float, sigma: float, delta: float, max_length: float = 2.0**62):
    """The smallest n from which :func:`effective_entries_law` stays <= delta, so
    ``P(E(eps) >= 1) <= delta`` by Markov's inequality: the sharp counterpart of
    Theorem 5.1's ``n0`` (``bounds.collapse_length``). None beyond ``max_length``.

    In ``L = ln n``, ``f(L) = L + log Phibar((L + ln eps + sigma^2/2)/sigma)`` has
    ``f'(L) = 1 - h(x)/sigma`` with the Gaussian hazard ``h`` increasing, so f is
    concave: past its maximum it decreases, and n is found by bisection there.
    """
    _checks.check_eps(eps)
    sigma = _checks.check_positive(sigma, "sigma")
    _checks.check_probability(delta, "delta")

    def f(L: float) -> float:
        # float64 whatever the caller's JAX mode: the answer is a Python int, and
        # the derivative test below (a 1e-9 step in L ~ 40) means nothing in
        # float32, whose spacing there is 4e-6 (float32 gave n = 1 where it is 64287).
        with x64():
            x = jnp.asarray((L + math.log(eps) + sigma**2 / 2) / sigma, jnp.float64)
            return L + float(_log_phibar_compiled(x))

    lo, hi = 0.0, math.log(max_length)
    # Bisect for the maximum of the concave f on [0, hi] (derivative sign), then
    # for the crossing f = ln delta to its right.
    a, b = lo, hi
    for _ in range(200):
        m = 0.5 * (a + b)
        if f(m + 1e-9) > f(m):
            a = m
        else:
            b = m
    peak = a
    target = math.log(delta)
    if f(peak) <= target:
        return 1
    if f(hi) > target:
        return None
    a, b = peak, hi
    for _ in range(200):
        m = 0.5 * (a + b)
        if f(m) > target:
            a = m
        else:
            b = m
    return math.ceil(math.exp(b))


def rem_score_scale(c, n) -> Array:
    """``sigma = c sqrt(ln n)``: the Random Energy Model scaling of the score scale."""
    return _positive_c(c) * jnp.sqrt(jnp.log(_n(n)))


def rem_window_exponent(c) -> Array:
    """The limit C of ``log k_eps / log n`` at ``sigma = c sqrt(ln n)``:
    ``max(0, 1 - c^2/2)`` (any fixed eps). From :func:`window_size_law`:
    ``ln Phibar(c sqrt(L) + O(1)) = -c^2 L/2 + O(sqrt(L))``; at ``c >= sqrt(2)``
    the window stays O(1)."""
    c = _positive_c(c)
    return jnp.maximum(0.0, 1.0 - 0.5 * jnp.square(c))


def rem_effective_entries_exponent(c) -> Array:
    """The limit of ``log E[E(eps)] / log n`` at ``sigma = c sqrt(ln n)``, c < sqrt(2):
    ``-(1 - c^2/2)^2 / (2 c^2)`` (negative: the effective entries above a fixed eps
    vanish, only more slowly as c approaches sqrt(2))."""
    c = _positive_c(c)
    return -jnp.square(1.0 - 0.5 * jnp.square(c)) / (2.0 * jnp.square(c))


__all__ = [
    "REM_COLLAPSE_C",
    "collapse_length_law",
    "effective_entries_law",
    "inverse_phibar",
    "largest_entry_log_quantile_gaussian",
    "log_fraction_above",
    "log_kth_smallest_entry_law",
    "log_mass_above",
    "log_normaliser_law",
    "log_phibar",
    "log_tail_mass_law",
    "rem_effective_entries_exponent",
    "rem_score_scale",
    "rem_window_exponent",
    "small_entry_log_bound_gaussian",
    "window_fraction_law",
    "window_size_law",
]
