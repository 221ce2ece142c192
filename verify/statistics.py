"""Statistics engine: is a probabilistic claim ``P(violation) <= delta`` borne out?

A claim of the form "with probability at least ``1 - delta`` the bound holds" is
checked by running ``N`` independent trials (seeds) and counting the trials ``F``
in which the bound failed. Under the claim, each trial fails independently with
some probability ``p <= delta``, so ``F ~ Binomial(N, p)``. Three things are
reported:

* how often the bound held: the empirical failure rate ``F/N`` and ``1 - F/N``,
  with an exact (Clopper-Pearson) confidence interval for ``p``
  (:func:`binomial_check`);
* whether that is consistent with the stated probability: the exact one-sided
  binomial test of ``H0: p <= delta`` against ``H1: p > delta``
  (:func:`binomial_check`, sized by :func:`min_trials_to_detect`), or Wald's
  sequential probability ratio test when trials arrive one by one
  (:func:`sprt`);
* how loose the bound is: order statistics of the per-trial ratio
  ``quantity / bound`` (:func:`looseness`, :func:`looseness_from_logs`).

All distributions come from :mod:`scipy.stats`; nothing here is hand-written
beyond the arithmetic of the likelihood ratio.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from sparsity_theory._checks import check_int, check_probability
from verify.rules import SHARED, rule

__all__ = [
    "BinomialCheck",
    "Looseness",
    "SPRTResult",
    "binomial_check",
    "critical_count",
    "detectable_rate",
    "detection_power",
    "looseness",
    "looseness_from_logs",
    "loglog_slope",
    "mean_interval",
    "t_interval",
    "min_trials_to_detect",
    "sprt",
]

Verdict = Literal["HOLDS", "VIOLATED"]
SequentialVerdict = Literal["HOLDS", "VIOLATED", "UNDECIDED"]


# --------------------------------------------------------------------------- helpers


def _plain(value: Any) -> Any:
    """Convert numpy scalars to the Python int/float/str/bool/None they stand for."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    raise TypeError(f"cannot convert {type(value).__name__} to a JSON value")


def _to_dict(obj: Any) -> dict[str, Any]:
    return {f.name: _plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


# --------------------------------------------------------------------------- binomial test


@dataclass(frozen=True)
class BinomialCheck:
    """Outcome of the exact binomial check of ``P(violation) <= delta``.

    Attributes:
        failures, trials: ``F`` and ``N``.
        delta: the claimed bound on the failure probability.
        alpha: significance level of the test (the false-alarm probability).
        confidence: level of the two-sided Clopper-Pearson interval.
        empirical_rate: ``F / N``.
        held_rate: ``1 - F / N``, how often the bound held.
        p_value: ``P(Binomial(N, delta) >= F)``, the exact one-sided p-value
            of ``H0: p <= delta`` against ``H1: p > delta``.
        ci_low, ci_high: exact two-sided Clopper-Pearson interval for the
            failure probability ``p`` at level ``confidence``.
        verdict: ``"HOLDS"`` if ``p_value >= alpha``, else ``"VIOLATED"``.
    """

    failures: int
    trials: int
    delta: float
    alpha: float
    confidence: float
    empirical_rate: float
    held_rate: float
    p_value: float
    ci_low: float
    ci_high: float
    verdict: Verdict

    def to_dict(self) -> dict[str, Any]:
        """Fields as Python ints, floats and strings (``json.dumps``-ready)."""
        return _to_dict(self)


def binomial_check(
    failures: int,
    trials: int,
    delta: float,
    alpha: float = 1e-6,
    confidence: float = 0.95,
) -> BinomialCheck:
    """Exact binomial test of the claim ``P(violation) <= delta``.

    Model: the ``N = trials`` trials are independent and each fails with the same
    unknown probability ``p``, so the failure count ``F ~ Binomial(N, p)``.

    Test: ``H0: p <= delta`` against ``H1: p > delta``. Large ``F`` is evidence
    against ``H0``; since ``P_p(F' >= F)`` increases with ``p``, the least
    favourable null is ``p = delta`` and the exact p-value is

        ``pval = P(Binomial(N, delta) >= F) = binom.sf(F - 1, N, delta)``

    (``pval = 1`` for ``F = 0``). The verdict is ``"VIOLATED"`` when
    ``pval < alpha`` and ``"HOLDS"`` otherwise; under ``H0`` the probability of
    a ``"VIOLATED"`` verdict is at most ``alpha`` (exactly, for every ``N``; the
    test is conservative because ``F`` is discrete). ``"HOLDS"`` means "no
    evidence against the claim at level alpha", not a proof of it: use
    :func:`min_trials_to_detect` to size ``N`` so that a claim that is off by a
    given factor would be caught.

    Interval: the two-sided Clopper-Pearson interval at level
    ``c = confidence``,

        ``[Beta.ppf((1-c)/2; F, N-F+1), Beta.ppf((1+c)/2; F+1, N-F)]``

    with the lower end 0 when ``F = 0`` and the upper end 1 when ``F = N``,
    computed by ``scipy.stats.binomtest(F, N).proportion_ci(c, "exact")``. It
    covers ``p`` with probability at least ``c`` for every ``p``.

    Raises:
        ValueError: naming the argument, unless ``trials >= 1``,
            ``0 <= failures <= trials`` and ``delta``, ``alpha``, ``confidence``
            all lie in (0, 1).
    """
    n = check_int(trials, "trials")
    if n < 1:
        raise ValueError(f"trials must be >= 1, got {trials!r}")
    f = check_int(failures, "failures")
    if not 0 <= f <= n:
        raise ValueError(f"failures must be in [0, trials={n}], got {failures!r}")
    d = check_probability(delta, "delta")
    a = check_probability(alpha, "alpha")
    c = check_probability(confidence, "confidence")

    p_value = 1.0 if f == 0 else float(min(1.0, max(0.0, stats.binom.sf(f - 1, n, d))))
    # The interval is two-sided, so it comes from the two-sided test object: the
    # object built with alternative="greater" would give a one-sided interval.
    ci = stats.binomtest(f, n, d).proportion_ci(confidence_level=c, method="exact")
    return BinomialCheck(
        failures=f,
        trials=n,
        delta=d,
        alpha=a,
        confidence=c,
        empirical_rate=f / n,
        held_rate=1.0 - f / n,
        p_value=p_value,
        ci_low=float(ci.low),
        ci_high=float(ci.high),
        verdict="HOLDS" if p_value >= a else "VIOLATED",
    )


def critical_count(trials: int, delta: float, alpha: float) -> int:
    """Smallest failure count at which :func:`binomial_check` says ``"VIOLATED"``.

    ``c(N) = min{F : binom.sf(F - 1, N, delta) < alpha}``; returns ``N + 1`` when
    no ``F <= N`` qualifies (``delta**N >= alpha``: ``N`` is too small to ever
    reject). Found with ``binom.isf`` and corrected by exact ``sf`` evaluations,
    so it agrees with :func:`binomial_check` on every count.
    """
    n = check_int(trials, "trials")
    if n < 1:
        raise ValueError(f"trials must be >= 1, got {trials!r}")
    d = check_probability(delta, "delta")
    a = check_probability(alpha, "alpha")

    def rejects(count: int) -> bool:
        return count >= 1 and stats.binom.sf(count - 1, n, d) < a

    guess = stats.binom.isf(a, n, d)
    c = n + 1 if not np.isfinite(guess) else int(min(max(guess + 1, 0), n + 1))
    while c > 0 and rejects(c - 1):
        c -= 1
    while c <= n and not rejects(c):
        c += 1
    return c


def detection_power(trials: int, delta: float, factor: float, alpha: float) -> float:
    """Exact power of :func:`binomial_check` when the true rate is ``factor * delta``.

    ``power(N) = P(Binomial(N, min(1, factor * delta)) >= c(N))`` with ``c(N)``
    from :func:`critical_count`; 0 when ``c(N) > N``.
    """
    fac = float(factor)
    if not fac > 1.0 or not math.isfinite(fac):
        raise ValueError(f"factor must be a finite number > 1, got {factor!r}")
    c = critical_count(trials, delta, alpha)
    n = int(trials)
    if c > n:
        return 0.0
    p1 = min(1.0, fac * float(delta))
    return float(stats.binom.sf(c - 1, n, p1))


def detectable_rate(trials: int, delta: float, alpha: float, power: float = 0.9) -> Optional[float]:
    """The smallest true failure rate that :func:`binomial_check` at level ``alpha``
    reports VIOLATED with probability ``power`` after ``trials`` trials: with
    ``c`` the :func:`critical_count`, ``P(Binomial(N, p) >= c) = I_p(c, N - c + 1)``
    (regularised incomplete beta), increasing in p, so the rate is
    ``beta.ppf(power, c, N - c + 1)``; None when no count can reject (``c > N``).
    What HOLDS means for a run: rates below this one may go unseen."""
    c = critical_count(trials, delta, alpha)
    n = int(trials)
    if c > n:
        return None
    return float(stats.beta.ppf(check_probability(power, "power"), c, n - c + 1))


def min_trials_to_detect(
    delta: float, factor: float, alpha: float, power: float = 0.9
) -> int:
    """Number of trials ``N`` that catches a claim wrong by ``factor`` with ``power``.

    If the true failure rate is ``p1 = min(1, factor * delta)`` instead of the
    claimed ``delta``, :func:`binomial_check` at level ``alpha`` says
    ``"VIOLATED"`` with probability :func:`detection_power`
    ``= P(Binomial(N, p1) >= c(N))``. This returns an ``N`` with
    ``detection_power(N) >= power``, found by doubling ``N = 1, 2, 4, ...`` up
    to the first success and then bisecting between the last failure and it.

    Because ``F`` is discrete, the power is not monotone in ``N`` (it drops a
    little each time ``c(N)`` steps up), so the result is *approximately* the
    smallest such ``N``: the power at the returned ``N`` is guaranteed to be
    ``>= power``, and the power at ``N - 1`` (the bisection's last failure) is
    ``< power``, but a few smaller ``N`` further down may also reach ``power``.

    Raises:
        ValueError: naming the argument, unless ``delta``, ``alpha``, ``power``
            lie in (0, 1) and ``factor > 1``.
    """
    d = check_probability(delta, "delta")
    a = check_probability(alpha, "alpha")
    target = check_probability(power, "power")
    fac = float(factor)
    if not fac > 1.0 or not math.isfinite(fac):
        raise ValueError(f"factor must be a finite number > 1, got {factor!r}")

    def ok(n: int) -> bool:
        return detection_power(n, d, fac, a) >= target

    hi, max_n = 1, 1 << 40
    while not ok(hi):
        if hi >= max_n:
            raise ValueError(
                f"no N <= {max_n} detects factor={fac} at delta={d}, alpha={a}, power={target}"
            )
        hi *= 2
    lo = hi // 2  # fails (or 0, which never detects)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


# --------------------------------------------------------------------------- looseness


@dataclass(frozen=True)
class Looseness:
    """How loose a bound is, from the per-trial ratios ``r = quantity / bound``.

    ``r <= 1`` where the bound holds; the smaller ``r``, the looser the bound.
    Quantiles are empirical order statistics (the inverse of the empirical
    distribution function, numpy's ``method="inverted_cdf"``): the ``q``-quantile
    is the ``ceil(q * count)``-th smallest ratio. Order statistics commute with
    the monotone map ``exp``, so the plain and the log statistics describe the
    same trial, and :func:`looseness` and :func:`looseness_from_logs` agree.

    Attributes:
        count: number of ratios used (NaN excluded).
        nan_ignored: number of NaN ratios left out.
        median, p99, worst: the 0.5- and 0.99-quantiles and the maximum ratio
            (``None`` when ``count == 0``); from log-ratios these are ``exp`` of
            the log statistics and may underflow to 0.0 or overflow to inf.
        log_median, log_p99, log_worst: their natural logarithms (``-inf`` for
            a ratio of exactly 0; ``None`` when ``count == 0``).
        frac_above_1: fraction of the ``count`` ratios with ``r > 1`` (the
            bound failed); ``None`` when ``count == 0``.
    """

    count: int
    nan_ignored: int
    median: Optional[float]
    p99: Optional[float]
    worst: Optional[float]
    log_median: Optional[float]
    log_p99: Optional[float]
    log_worst: Optional[float]
    frac_above_1: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        """Fields as Python ints, floats and ``None`` (``json.dumps``-ready;
        a ratio of 0 gives ``log_* = -inf``, which ``json.dumps`` writes as
        ``-Infinity``)."""
        return _to_dict(self)


def _drop_nan(values: ArrayLike) -> tuple[np.ndarray, int]:
    """Flatten to float64 and remove NaN; return the rest and how many were removed."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    nan = np.isnan(arr)
    return arr[~nan], int(nan.sum())


def _order_stats(x: np.ndarray) -> tuple[float, float, float]:
    med, p99 = np.quantile(x, [0.5, 0.99], method="inverted_cdf")
    return float(med), float(p99), float(np.max(x))


def looseness(ratios: ArrayLike) -> Looseness:
    """Summarise per-trial ratios ``quantity / bound`` (see :class:`Looseness`).

    NaN entries are ignored and counted; ``+inf`` is kept (a bound of 0 broken
    by a positive quantity). Ratios must be ``>= 0``.

    Raises:
        ValueError: "ratios" if an entry is negative.
    """
    r, n_nan = _drop_nan(ratios)
    if np.any(r < 0):
        raise ValueError("ratios must be >= 0 (quantity / bound of non-negative values)")
    if r.size == 0:
        return Looseness(0, n_nan, None, None, None, None, None, None, None)
    med, p99, worst = _order_stats(r)
    with np.errstate(divide="ignore"):
        logs = np.log([med, p99, worst])
    return Looseness(
        count=int(r.size),
        nan_ignored=n_nan,
        median=med,
        p99=p99,
        worst=worst,
        log_median=float(logs[0]),
        log_p99=float(logs[1]),
        log_worst=float(logs[2]),
        frac_above_1=float(np.mean(r > 1.0)),
    )


def looseness_from_logs(log_ratios: ArrayLike) -> Looseness:
    """Summarise per-trial ``log(quantity / bound)`` without leaving log space.

    The order statistics are taken of the log-ratios themselves and only the
    three summaries are exponentiated, so a ratio like ``e^-2000`` is reported
    as ``log_median = -2000.0`` (exact) and ``median = 0.0`` (underflow), never
    as ``log(0) = -inf``. ``frac_above_1`` counts log-ratios ``> 0``. NaN is
    ignored and counted; ``-inf`` (a ratio of 0) and ``+inf`` are kept.
    """
    x, n_nan = _drop_nan(log_ratios)
    if x.size == 0:
        return Looseness(0, n_nan, None, None, None, None, None, None, None)
    lmed, lp99, lworst = _order_stats(x)
    with np.errstate(over="ignore", under="ignore"):
        med, p99, worst = (float(v) for v in np.exp([lmed, lp99, lworst]))
    return Looseness(
        count=int(x.size),
        nan_ignored=n_nan,
        median=med,
        p99=p99,
        worst=worst,
        log_median=lmed,
        log_p99=lp99,
        log_worst=lworst,
        frac_above_1=float(np.mean(x > 0.0)),
    )


# --------------------------------------------------------------------------- SPRT


@dataclass(frozen=True)
class SPRTResult:
    """Outcome of Wald's sequential probability ratio test (see :func:`sprt`).

    Attributes:
        verdict: ``"HOLDS"`` (accepted ``H0: p = delta``), ``"VIOLATED"``
            (accepted ``H1: p = factor * delta``) or ``"UNDECIDED"`` (the stream
            ended between the thresholds).
        trials_used: observations consumed, up to and including the crossing
            (the whole stream when undecided).
        failures: failures among those ``trials_used`` observations.
        log_likelihood_ratio: ``log L1/L0`` after ``trials_used`` observations.
        lower_threshold: ``log(beta / (1 - alpha))``.
        upper_threshold: ``log((1 - beta) / alpha)``.
        delta, factor, alpha, beta: the test's parameters.
    """

    verdict: SequentialVerdict
    trials_used: int
    failures: int
    log_likelihood_ratio: float
    lower_threshold: float
    upper_threshold: float
    delta: float
    factor: float
    alpha: float
    beta: float

    def to_dict(self) -> dict[str, Any]:
        """Fields as Python ints, floats and strings (``json.dumps``-ready)."""
        return _to_dict(self)


def sprt(
    failure_stream: ArrayLike,
    delta: float,
    factor: float = 2.0,
    alpha: float = 1e-6,
    beta: float = 1e-3,
) -> SPRTResult:
    """Wald's SPRT of ``H0: p = delta`` against ``H1: p = p1 = factor * delta``.

    ``failure_stream`` holds the 0/1 failure indicators ``x_1, x_2, ...`` of
    independent trials in the order they were run. After ``n`` trials with
    ``k_n`` failures the log-likelihood ratio is

        ``S_n = k_n log(p1/delta) + (n - k_n) log((1 - p1)/(1 - delta))``.

    The test stops at the first ``n`` with ``S_n >= A = log((1-beta)/alpha)``
    (verdict ``"VIOLATED"``) or ``S_n <= B = log(beta/(1-alpha))`` (verdict
    ``"HOLDS"``). Wald's bounds give ``P_H0(VIOLATED) <~ alpha`` and
    ``P_H1(HOLDS) <~ beta``; for true rates ``p <= delta`` the probability of
    ``"VIOLATED"`` is no larger than at ``p = delta``. If the stream ends first
    the verdict is ``"UNDECIDED"``. ``S_n`` is evaluated for all ``n`` at once
    from the integer cumulative failure count (no loop over trials, no
    accumulated rounding).

    Raises:
        ValueError: naming the argument, unless ``failure_stream`` is a 1-D
            array of 0/1 (or bool) values, ``delta``, ``alpha``, ``beta`` lie
            in (0, 1) with ``alpha + beta < 1``, and ``factor > 1`` with
            ``factor * delta < 1``.
    """
    d = check_probability(delta, "delta")
    a = check_probability(alpha, "alpha")
    b = check_probability(beta, "beta")
    if not a + b < 1.0:
        raise ValueError(f"alpha + beta must be < 1, got alpha={a}, beta={b}")
    fac = float(factor)
    if not (fac > 1.0 and fac * d < 1.0):
        raise ValueError(f"factor must be > 1 with factor * delta < 1, got {factor!r}")
    x = np.asarray(failure_stream)
    if x.ndim != 1:
        raise ValueError(f"failure_stream must be 1-D, got shape {x.shape}")
    if x.size and not np.all((x == 0) | (x == 1)):
        raise ValueError("failure_stream must contain only 0/1 failure indicators")

    p1 = fac * d
    step_fail = math.log(p1 / d)  # > 0
    step_pass = math.log1p(-p1) - math.log1p(-d)  # < 0
    upper = math.log((1.0 - b) / a)
    lower = math.log(b / (1.0 - a))

    k = np.cumsum(x.astype(np.int64))
    n = np.arange(1, x.size + 1, dtype=np.int64)
    s = k * step_fail + (n - k) * step_pass
    crossed = (s >= upper) | (s <= lower)
    if crossed.any():
        i = int(np.argmax(crossed))
        verdict: SequentialVerdict = "VIOLATED" if s[i] >= upper else "HOLDS"
    else:
        i = x.size - 1
        verdict = "UNDECIDED"
    used = i + 1
    return SPRTResult(
        verdict=verdict,
        trials_used=used,
        failures=int(k[i]) if used else 0,
        log_likelihood_ratio=float(s[i]) if used else 0.0,
        lower_threshold=lower,
        upper_threshold=upper,
        delta=d,
        factor=fac,
        alpha=a,
        beta=b,
    )


BOOTSTRAP = rule(SHARED, "bootstrap_resamples", 400, "percentile bootstrap resamples per interval "
                 "(generator seed 0): the 2.5% quantile's Monte Carlo error is about sqrt(0.025 x 0.975 / 400) "
                 "= 0.8 points of coverage")
Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def mean_interval(x: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Mean over the last axis and its normal-approximation interval."""
    x = np.asarray(x, dtype=float)
    mean = float(np.mean(x))
    half = z * float(np.std(x, ddof=1)) / math.sqrt(x.size) if x.size > 1 else float("nan")
    return mean, mean - half, mean + half


def loglog_slope(lengths: np.ndarray, values: np.ndarray, seed: int = 0) -> dict:
    """Least-squares slope of ``log mean(values[i])`` on ``log lengths[i]`` (values:
    (lengths, seeds)) with a percentile bootstrap 95% interval that resamples the
    seeds of each length independently (``scipy.stats.bootstrap``, BOOTSTRAP
    resamples, generator ``seed``): ``{"slope", "low", "high"}``."""
    x = np.log(np.asarray(lengths, dtype=float))
    centred = x - x.mean()

    def slope(*samples, axis=-1):
        log_means = np.log(np.stack([np.mean(v, axis=axis) for v in samples], axis=-1))
        return np.sum(centred * (log_means - log_means.mean(axis=-1, keepdims=True)), axis=-1) \
            / np.sum(centred**2)

    samples = tuple(np.asarray(values, dtype=float))
    result = stats.bootstrap(samples, slope, n_resamples=BOOTSTRAP, vectorized=True, paired=False,
                             method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"slope": float(slope(*samples)), "low": float(low), "high": float(high)}


def loglog_curvature(lengths: np.ndarray, values: np.ndarray, seed: int = 0) -> dict:
    """Curvature of ``log mean(values[i])`` in ``log lengths[i]``: the coefficient
    q of the least-squares quadratic ``a + b x + q x^2`` (x = log n, centred), so
    that the local exponent ``d log mean / d log n = b + 2 q x`` changes by
    ``2 q`` per unit of log n. Percentile bootstrap 95% interval resampling the
    seeds of each length independently, as :func:`loglog_slope`:
    ``{"curvature", "low", "high"}``. Needs at least three lengths."""
    x = np.log(np.asarray(lengths, dtype=float))
    if x.size < 3:
        raise ValueError(f"a curvature needs at least 3 lengths, got {x.size}.")
    x = x - x.mean()
    # Row 2 of the pseudo-inverse of [1, x, x^2] maps log means to q.
    to_curvature = np.linalg.pinv(np.stack([np.ones_like(x), x, x**2], axis=1))[2]

    def curvature(*samples, axis=-1):
        log_means = np.log(np.stack([np.mean(v, axis=axis) for v in samples], axis=-1))
        return np.sum(to_curvature * log_means, axis=-1)

    samples = tuple(np.asarray(values, dtype=float))
    result = stats.bootstrap(samples, curvature, n_resamples=BOOTSTRAP, vectorized=True, paired=False,
                             method="percentile", rng=np.random.default_rng(seed))
    low, high = result.confidence_interval
    return {"curvature": float(curvature(*samples)), "low": float(low), "high": float(high)}


def t_interval(x, bonferroni: int = 1) -> tuple[float, float, float]:
    """Mean over chunks with a Student t 95% interval (Bonferroni over ``bonferroni``)."""
    x = np.asarray(x, dtype=float)
    mean = float(np.mean(x))
    if x.size < 2:
        return mean, float("nan"), float("nan")
    half = stats.t.isf(0.025 / bonferroni, x.size - 1) * float(np.std(x, ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half
