"""Special functions for Theorem 4.3's exact binomial form, in JAX.

Theorem 4.3 counts the keys whose centred score exceeds a threshold: that
count N is dominated by Binomial(n, p), whose tail is a regularised incomplete
beta function (DLMF 8.17.5)::

    P(Binomial(n, p) > q) = I_p(q + 1, n - q)        (0 <= q < n).

The bounds need the two inverses of that identity: the largest p with a given
tail (``betaincinv``, the forward bound) and the smallest q with a given tail
(``binomial_isf``, the converse). ``jax.scipy.special.betainc`` is not accurate
enough for them: it forms ``lgamma(a) + lgamma(b) - lgamma(a + b)`` directly, which
cancels catastrophically for large a and b (relative error ~1e-9 at n = 1e6 in
float64, and O(1) in float32). So this module evaluates ``log I_x(a, b)`` itself:

* the log prefactor ``a log x + b log(1-x) - log B(a, b)`` is regrouped around
  ``x0 = a / (a + b)`` with Stirling's series for the remainder of ``log B``,
  so no large terms cancel (see :func:`_log_prefactor`);
* the continued fraction (DLMF 8.17.22, modified Lentz) is summed on the side
  ``x < (a + 1) / (a + b + 2)`` where it converges, the other side by the
  symmetry ``I_x(a, b) = 1 - I_{1-x}(b, a)`` (DLMF 8.17.4);
* everything is a natural log, so tails far below the float range (delta = 1e-12
  at n = 1e6 is ``x ~ 1e-18``) stay representable.

Every function here is pure JAX (and jitted, so eager calls compile once per
shape and dtype): it works under ``jit`` and ``vmap`` (all
arguments broadcast against each other), on CPU and accelerators, keeps the
floating dtype it is given (float32 in, float32 out) and does not need
``jax_enable_x64``. float32 is accurate to a few ulps for moderate parameters
(a + b up to ~1e4) and degrades beyond: counts above 2**24 are not even
representable there. Loops whose trip count depends on the values are
``lax.while_loop`` (fine under jit and vmap, not reverse-differentiable); the
one function meant for ``grad``, :func:`betaincinv`, has a custom JVP in y.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax

Array = jax.Array

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# Stirling's series lgamma(x) = (x - 1/2) log x - x + log(2 pi)/2 + sum_k c_k / x^(2k-1),
# c_k = B_2k / (2k (2k - 1)); from x = 10 on, 7 terms leave an error below 3e-17.
_STIRLING = (1.0 / 12.0, -1.0 / 360.0, 1.0 / 1260.0, -1.0 / 1680.0, 1.0 / 1188.0,
             -691.0 / 360360.0, 1.0 / 156.0)
_STIRLING_FROM = 10.0


def _float_dtype(*args) -> jnp.dtype:
    """The floating dtype the arguments promote to (Python scalars are weak, so a
    float32 array keeps float32; all-integer input gets JAX's default float)."""
    dtype = jnp.result_type(*args)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return dtype


def _stirling_remainder(x: Array) -> Array:
    """``lgamma(x) - ((x - 1/2) log x - x + log(2 pi)/2)``, accurate for every x > 0.

    The series for x >= 10 (no cancellation: the terms shrink like x^-(2k-1)), the
    direct difference below (where every term is O(1), so it is exact to rounding).
    """
    big = jnp.maximum(x, _STIRLING_FROM)
    inv, inv2 = 1.0 / big, 1.0 / (big * big)
    series = jnp.zeros_like(x)
    for c in reversed(_STIRLING):  # Horner in 1/x^2
        series = series * inv2 + c
    series = series * inv
    small = jnp.minimum(x, _STIRLING_FROM)
    direct = lax.lgamma(small) - ((small - 0.5) * jnp.log(small) - small + _HALF_LOG_2PI)
    return jnp.where(x >= _STIRLING_FROM, series, direct)


def _log_beta_remainder(a: Array, b: Array) -> Array:
    """``R(a, b) = log B(a, b) - a log x0 - b log(1 - x0)``, ``x0 = a / (a + b)``.

    From Stirling's formula for each lgamma:
    ``R = log(2 pi)/2 + (1/2) log((a + b) / (a b)) + c(a) + c(b) - c(a + b)`` with c
    the remainder of :func:`_stirling_remainder`: O(log) terms only.
    """
    return (_HALF_LOG_2PI + 0.5 * (jnp.log(a + b) - jnp.log(a) - jnp.log(b))
            + _stirling_remainder(a) + _stirling_remainder(b) - _stirling_remainder(a + b))


def _log_x0(a: Array, b: Array) -> tuple[Array, Array]:
    """``(log x0, log(1 - x0))`` for ``x0 = a / (a + b)``, each to relative rounding."""
    return -jnp.log1p(b / a), -jnp.log1p(a / b)


@jax.jit
def betaln(a, b) -> Array:
    """``log B(a, b) = lgamma(a) + lgamma(b) - lgamma(a + b)`` for a, b > 0, without the
    cancellation of that sum for large a and b (:func:`_log_beta_remainder`)."""
    dtype = _float_dtype(a, b)
    a, b = jnp.asarray(a, dtype), jnp.asarray(b, dtype)
    log_x0, log_1mx0 = _log_x0(a, b)
    return a * log_x0 + b * log_1mx0 + _log_beta_remainder(a, b)


def _log_prefactor(a: Array, b: Array, log_x: Array, log_1mx: Array) -> Array:
    """``log(x^a (1-x)^b / B(a, b))``, regrouped as
    ``a (log x - log x0) + b (log(1-x) - log(1-x0)) - R(a, b)``: the two brackets
    vanish at the mean x0 and R is O(log(a + b)), so nothing large cancels."""
    log_x0, log_1mx0 = _log_x0(a, b)
    # x = 0 (log_x = -inf) with a > 0 gives -inf, as it should; 0 * inf never occurs.
    return a * (log_x - log_x0) + b * (log_1mx - log_1mx0) - _log_beta_remainder(a, b)


def _max_cf_terms(a: Array, b: Array) -> Array:
    """Cap on the continued fraction's terms: it needs O(sqrt(max(a, b))) of them
    near the mean x0 (Numerical Recipes, Section 6.4) and far fewer in the tails."""
    return 64.0 + 8.0 * jnp.sqrt(jnp.maximum(a, b))


def _continued_fraction(a: Array, b: Array, x: Array) -> Array:
    """The continued fraction of DLMF 8.17.22 by the modified Lentz method:
    ``I_x(a, b) = x^a (1-x)^b / (a B(a, b)) * cf``; it converges quickly for
    ``x < (a + 1) / (a + b + 2)``. Near that boundary with a large a and small b
    its value grows (to ``1/(1 - x)`` for b = 1) and the recurrence loses digits
    in proportion: ~1e-10 relative at a = 1e7, the accuracy limit of this module
    (1e-13 up to a + b ~ 1e6). A ``while_loop`` until every lane has converged
    to the dtype's rounding (or hit :func:`_max_cf_terms`)."""
    dtype = x.dtype
    tiny = jnp.asarray(jnp.finfo(dtype).tiny * 1e3, dtype)
    tol = jnp.asarray(jnp.finfo(dtype).eps, dtype)
    max_terms = _max_cf_terms(a, b)

    def clamp(v):
        return jnp.where(jnp.abs(v) < tiny, tiny, v)

    d = 1.0 / clamp(1.0 - (a + b) * x / (a + 1.0))
    state = (jnp.asarray(1.0, dtype), jnp.ones_like(x), d, d, jnp.ones(x.shape, bool))

    def cond(s):
        m, _, _, _, active = s
        return jnp.any(active & (m <= max_terms))

    def body(s):
        m, c, d, h, active = s
        m2 = 2.0 * m
        num = m * (b - m) * x / ((a + m2 - 1.0) * (a + m2))  # even step d_2m
        d1 = 1.0 / clamp(1.0 + num * d)
        c1 = clamp(1.0 + num / c)
        h1 = h * d1 * c1
        num = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1.0))  # odd step d_2m+1
        d2 = 1.0 / clamp(1.0 + num * d1)
        c2 = clamp(1.0 + num / c1)
        step = d2 * c2
        h2 = h1 * step
        keep = active & (m <= max_terms)  # converged lanes stay frozen
        return (m + 1.0, jnp.where(keep, c2, c), jnp.where(keep, d2, d),
                jnp.where(keep, h2, h), keep & (jnp.abs(step - 1.0) > tol))

    return lax.while_loop(cond, body, state)[3]


def _log_betainc_logs(a: Array, b: Array, log_x: Array, log_1mx: Array) -> Array:
    """``log I_x(a, b)`` from ``log x`` and ``log(1 - x)`` (both given, so x near 0 and
    near 1 are resolved). On the far side of ``(a + 1) / (a + b + 2)`` the
    symmetry relation gives ``log1p(-I_{1-x}(b, a))``."""
    x = jnp.exp(log_x)
    direct = x < (a + 1.0) / (a + b + 2.0)
    a_, b_ = jnp.where(direct, a, b), jnp.where(direct, b, a)
    lx, l1mx = jnp.where(direct, log_x, log_1mx), jnp.where(direct, log_1mx, log_x)
    cf = _continued_fraction(a_, b_, jnp.exp(lx))
    log_side = _log_prefactor(a_, b_, lx, l1mx) - jnp.log(a_) + jnp.log(cf)
    log_side = jnp.minimum(log_side, 0.0)  # a probability; rounding must not push it above 1
    return jnp.where(direct, log_side, jnp.log1p(-jnp.exp(log_side)))


def _check_domain(out: Array, a: Array, b: Array, extra_bad: Array) -> Array:
    """NaN wherever a or b is not a positive number or ``extra_bad`` holds."""
    bad = ~(a > 0) | ~(b > 0) | extra_bad
    return jnp.where(bad, jnp.nan, out)


@jax.jit
def log_betainc(a, b, x) -> Array:
    """``log I_x(a, b)``, the log of the regularised incomplete beta function
    ``I_x(a, b) = B(a, b)^-1 int_0^x t^(a-1) (1-t)^(b-1) dt`` (DLMF 8.17.2), accurate
    to a few ulps relative to ``log I`` in the lower tail and to ``I`` itself near 1.

    a, b > 0 and x in [0, 1] broadcast against each other; NaN outside that
    domain. ``-inf`` at x = 0 and 0 at x = 1. Not reverse-differentiable (it
    iterates a ``while_loop``).
    """
    dtype = _float_dtype(a, b, x)
    a, b, x = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (a, b, x)))
    safe_x = jnp.clip(jnp.where(jnp.isnan(x), 0.5, x), 0.0, 1.0)
    out = _log_betainc_logs(a, b, jnp.log(safe_x), jnp.log1p(-safe_x))
    return _check_domain(out, a, b, ~((x >= 0) & (x <= 1)))


@jax.jit
def binomial_log_sf(q, n, p) -> Array:
    """``log P(Binomial(n, p) > q)`` for integer-valued q and n >= 0, p in [0, 1]:
    0 for q < 0, ``-inf`` for q >= n, else ``log I_p(q + 1, n - q)`` (DLMF 8.17.5).

    Arguments broadcast; q and n may be floats holding integers (exact up to
    2**53 in float64 and 2**24 in float32)."""
    dtype = _float_dtype(p)
    q, n, p = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (q, n, p)))
    inside = (q >= 0) & (q < n)
    a = jnp.where(inside, q + 1.0, 1.0)
    b = jnp.where(inside, n - q, 1.0)
    safe_p = jnp.clip(jnp.where(jnp.isnan(p), 0.5, p), 0.0, 1.0)
    log_tail = _log_betainc_logs(a, b, jnp.log(safe_p), jnp.log1p(-safe_p))
    out = jnp.where(q < 0, 0.0, jnp.where(q >= n, -jnp.inf, log_tail))
    return jnp.where(~((p >= 0) & (p <= 1)) | ~(n >= 0), jnp.nan, out)


# --- the inverse in x --------------------------------------------------------------


def _log_range(dtype) -> float:
    """Search range for log x: below ``-_log_range`` x rounds to 0 in this dtype."""
    return float(-math.log(jnp.finfo(dtype).smallest_subnormal)) + 2.0


def _log1mexp(s: Array) -> Array:
    """``log(1 - e^s)`` for s <= 0, accurate at both ends (Maechler's switch at -ln 2)."""
    return jnp.where(s > -math.log(2.0), jnp.log(-jnp.expm1(s)), jnp.log1p(-jnp.exp(s)))


def _solve_log_x(a: Array, b: Array, log_y: Array, iterations: int) -> Array:
    """``s = log x`` solving ``log I_x(a, b) = log y`` (so x = e^s and 1 - x =
    -expm1(s), both to relative rounding).

    ``g(s) = log I_{e^s}(a, b)`` is the log CDF of ``S = log X``, X ~ Beta(a, b),
    whose log density ``a s + (b - 1) log(1 - e^s) - log B`` is concave for b >= 1:
    then g is concave and increasing, so a Newton step from the right of the root
    lands left of it and from there Newton climbs monotonically. In s the
    dominant term ``a s`` is linear, so the steps are nearly exact even where
    the root is close to x = 1 (a logit variable made them crawl there). Every
    step is safeguarded by the bracket [lo, hi] (bisection when Newton leaves
    it or is not finite, which also covers b < 1), and the trip count is fixed,
    so it jits. ``g'(s) = x^a (1-x)^(b-1) / (B(a, b) I_x(a, b))``.
    """
    dtype = log_y.dtype
    lo = jnp.full(log_y.shape, -_log_range(dtype), dtype)
    hi = jnp.zeros(log_y.shape, dtype)
    # Start from the normal approximation of T = logit(X): mean ~ log(a/b),
    # variance ~ 1/a + 1/b (digamma and trigamma at large arguments).
    z = jax.scipy.special.ndtri(jnp.exp(log_y))
    t = jnp.log(a) - jnp.log(b) + z * jnp.sqrt(1.0 / a + 1.0 / b)
    s = jnp.clip(-jax.nn.softplus(-t), 0.5 * lo, -jnp.finfo(dtype).tiny)

    def body(_, state):
        s, lo, hi = state
        log_1mx = _log1mexp(s)
        log_i = _log_betainc_logs(a, b, s, log_1mx)
        g = log_i - log_y
        lo = jnp.where(g < 0, s, lo)
        hi = jnp.where(g < 0, hi, s)
        slope = jnp.exp(_log_prefactor(a, b, s, log_1mx) - log_1mx - log_i)
        newton = s - g / slope
        # Non-strict: at convergence the step drops below an ulp and newton == s == lo.
        ok = jnp.isfinite(newton) & (newton >= lo) & (newton <= hi)
        s_new = jnp.where(ok, newton, 0.5 * (lo + hi))
        return jnp.where(g == 0, s, s_new), lo, hi

    return lax.fori_loop(0, iterations, body, (s, lo, hi))[0]


def _betaincinv_impl(a: Array, b: Array, y: Array) -> Array:
    dtype = y.dtype
    # Solve in the lower tail of whichever side is smaller: y <= 1/2 directly,
    # else I_{1-x}(b, a) = 1 - y, so that log y keeps full relative precision.
    lower = y <= 0.5
    a_, b_ = jnp.where(lower, a, b), jnp.where(lower, b, a)
    # 1 - y is exact for y in [1/2, 1] (Sterbenz), so log(1 - y) loses nothing.
    y_ = jnp.clip(jnp.where(lower, y, 1.0 - y), jnp.finfo(dtype).tiny, 0.5)
    s = _solve_log_x(a_, b_, jnp.log(y_), _ITERATIONS.get(jnp.dtype(dtype), 40))
    x = jnp.where(lower, jnp.exp(s), -jnp.expm1(s))
    x = jnp.where(y <= 0, 0.0, jnp.where(y >= 1, 1.0, x))
    return _check_domain(x, a, b, ~((y >= 0) & (y <= 1)))


# Newton steps of betaincinv: enough for every case of the tests (a, b up to 1e7,
# y down to the smallest normal float) with margin; the steps are cheap next to
# the continued fractions they evaluate.
_ITERATIONS = {jnp.dtype(jnp.float64): 24, jnp.dtype(jnp.float32): 16}


@jax.custom_jvp
def _betaincinv(a: Array, b: Array, y: Array) -> Array:
    return _betaincinv_impl(a, b, y)


@_betaincinv.defjvp
def _betaincinv_jvp(primals, tangents):
    # Implicit function theorem: I_x(a, b) = y gives dx/dy = B(a, b) / (x^(a-1) (1-x)^(b-1)).
    # a and b are counts in every use here; their tangents are ignored (treated as
    # constants, like stop_gradient), as documented in betaincinv.
    a, b, y = primals
    _, _, y_dot = tangents
    x = _betaincinv(a, b, y)
    log_pdf = _log_prefactor(a, b, jnp.log(x), jnp.log1p(-x)) - jnp.log(x) - jnp.log1p(-x)
    return x, y_dot * jnp.exp(-log_pdf)


@jax.jit
def betaincinv(a, b, y) -> Array:
    """The inverse of the regularised incomplete beta function in x: the x in
    [0, 1] with ``I_x(a, b) = y`` (``scipy.special.betaincinv`` in JAX).

    Theorem 4.3 uses it as ``betaincinv(n - k + 1, k, delta)``: the largest
    per-key exceedance probability p with ``P(Binomial(n, p) >= n - k + 1) <= delta``.

    Solved on the logit of x by safeguarded Newton steps on ``log I`` (concave in
    the logit, see :func:`_solve_logit`), in the lower tail of the smaller side,
    so ``y = 1e-12`` and ``y = 1 - 1e-12`` are both resolved and x keeps its
    relative precision near 0 (``x ~ 1e-18`` at ``a = 1, b = 1e6``). Fixed trip
    count: works under ``jit`` and ``vmap``; a, b > 0 and y broadcast against
    each other; y = 0 gives 0 and y = 1 gives 1; NaN outside the domain.
    ``grad`` with respect to y is ``1 / (dI/dx)`` (implicit function theorem);
    a and b are treated as constants by autodiff (their tangents are dropped).
    """
    dtype = _float_dtype(a, b, y)
    a, b, y = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (a, b, y)))
    return _betaincinv(a, b, y)


# --- the inverse in the count -------------------------------------------------------


@jax.jit
def binomial_isf(delta, n, p) -> Array:
    """The smallest integer q in [0, n] with ``P(Binomial(n, p) > q) <= delta``: the
    ``1 - delta`` quantile of the count (``scipy.stats.binom.isf`` plus the
    fix-ups that make it exactly that q).

    Bisection over integers on :func:`binomial_log_sf` (decreasing in q) with the
    invariant ``sf(lo) > delta >= sf(hi)``, from ``lo = -1`` (sf = 1) and
    ``hi = n`` (sf = 0); a ``while_loop`` of about ``log2(n)`` steps, so it works
    under ``jit`` and ``vmap`` (arguments broadcast; n may be an array). The
    comparison is ``log sf <= log delta``, which stays exact far below the float
    range. Returned as floats holding integers, in the floating dtype of p
    (exact up to 2**53 in float64, 2**24 in float32). A tail equal to delta
    only up to rounding (e.g. ``P(Binomial(3, 1/2) > 2) = 1/8`` at delta = 1/8,
    computed 2e-15 high) can give q one larger than exact: the conservative
    side, a smaller guaranteed count in Theorem 4.3's converse.
    """
    dtype = _float_dtype(p, delta)
    delta, n, p = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in (delta, n, p)))
    log_delta = jnp.log(delta)
    lo, hi = jnp.full_like(n, -1.0), n

    def cond(s):
        lo, hi = s
        return jnp.any(hi - lo > 1)

    def body(s):
        lo, hi = s
        mid = jnp.floor(0.5 * (lo + hi))
        small = binomial_log_sf(mid, n, p) <= log_delta
        busy = hi - lo > 1
        return jnp.where(busy & ~small, mid, lo), jnp.where(busy & small, mid, hi)

    hi = lax.while_loop(cond, body, (lo, hi))[1]
    return jnp.where(jnp.isnan(p) | jnp.isnan(delta), jnp.nan, hi)


__all__ = ["betainc", "betaincinv", "betaln", "binomial_isf", "binomial_log_sf", "log_betainc"]


def betainc(a, b, x) -> Array:
    """``I_x(a, b) = exp(log_betainc(a, b, x))`` (accurate where JAX's own
    ``betainc`` loses digits to ``lgamma`` cancellation at large a, b)."""
    return jnp.exp(log_betainc(a, b, x))
