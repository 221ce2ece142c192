"""Test helpers for a researcher's own CI: check the paper's high-probability
bounds on your own attention, with a negligible false-alarm rate and a known
power (docs/testing.md is the walk-through).

* Assertions on independent trials (one entry per seed, True where the bound
  failed), by the exact one-sided binomial test of ``P(failure) <= delta``:
  :func:`assert_holds_with_probability` (the bound holds at its stated
  probability) and :func:`assert_rejects` (a planted wrong bound is caught:
  the check has power). :func:`binomial_test` gives the numbers without
  asserting.
* Sizing: :func:`seeds_for_power` (how many seeds catch a true failure rate
  ``factor * delta`` with a given power), :func:`detection_power`,
  :func:`critical_failures`.
* Hypothesis strategies: :func:`input_models`, :func:`attention_configs`,
  :func:`logit_rows` (ties, huge and tiny scales, ``-inf`` masked entries),
  :func:`window_sizes`, :func:`eps_values`, :func:`deltas`.

This module needs ``hypothesis`` (the ``test`` extra: ``pip install
'sparsity-theory[test]'``); ``import sparsity_theory`` does not import it.
The statistics are a small implementation with :mod:`scipy.stats` (the library
may not import ``verify/``, which depends on it); tests/test_testing.py checks
that they agree with ``verify.statistics`` on every count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np
from scipy import stats

from sparsity_theory import _checks
from sparsity_theory.inputs import MODES, Gaussian, InputModel, Rademacher, Uniform

try:
    from hypothesis import strategies as hst
except ImportError as error:  # pragma: no cover - exercised only without the test extra
    raise ImportError(
        "sparsity_theory.testing needs hypothesis (a test dependency): "
        "pip install 'sparsity-theory[test]' or pip install hypothesis."
    ) from error

__all__ = [
    "AttentionConfig",
    "BinomialTest",
    "assert_holds_with_probability",
    "assert_rejects",
    "attention_configs",
    "binomial_test",
    "critical_failures",
    "deltas",
    "detection_power",
    "eps_values",
    "input_models",
    "logit_rows",
    "seeds_for_power",
    "window_sizes",
]

DEFAULT_ALPHA = 1e-6  # false-alarm rate per assertion: a CI that never flakes


# --- the exact binomial test ----------------------------------------------------------


@dataclass(frozen=True)
class BinomialTest:
    """The exact one-sided binomial test of ``H0: P(failure) <= delta``.

    ``failures`` F of ``trials`` N independent trials; ``p_value`` is
    ``P(Binomial(N, delta) >= F)`` (1 for F = 0); ``rejected`` when it is below
    ``alpha``; ``[ci_low, ci_high]`` is the two-sided Clopper-Pearson interval
    for the failure probability at level ``confidence``.
    """

    failures: int
    trials: int
    delta: float
    alpha: float
    confidence: float
    p_value: float
    ci_low: float
    ci_high: float

    @property
    def rate(self) -> float:
        """The empirical failure rate F / N."""
        return self.failures / self.trials

    @property
    def rejected(self) -> bool:
        """True when the data contradict ``P(failure) <= delta`` at level alpha."""
        return self.p_value < self.alpha

    def describe(self) -> str:
        """One line: counts, rate, interval, p-value and level."""
        return (f"{self.failures} failures in {self.trials} independent trials (rate "
                f"{self.rate:.4g}; {self.confidence:.0%} Clopper-Pearson interval "
                f"[{self.ci_low:.4g}, {self.ci_high:.4g}]) against delta = {self.delta:.4g}: "
                f"exact one-sided binomial p-value {self.p_value:.3g} (alpha = {self.alpha:.3g})")


def _check_trials(trials) -> int:
    n = _checks.check_int(trials, "trials")
    if n < 1:
        raise ValueError(f"trials must be >= 1, got {trials!r}.")
    return n


def binomial_test(failures: int, trials: int, delta: float, *, alpha: float = DEFAULT_ALPHA,
                  confidence: float = 0.95) -> BinomialTest:
    """The exact binomial test of ``P(failure) <= delta`` from F failures in N trials.

    Under H0 the count is dominated by Binomial(N, delta) (the least favourable
    null; ``P_p(F' >= F)`` increases in p), so rejecting when
    ``P(Binomial(N, delta) >= F) < alpha`` has false-alarm probability at most
    alpha for every N and every true rate ``p <= delta`` (conservative, as F is
    discrete). The interval is Clopper-Pearson's,
    ``[Beta.ppf((1-c)/2; F, N-F+1), Beta.ppf((1+c)/2; F+1, N-F)]`` (0 and 1 at
    the ends), which covers p with probability at least c.

    ValueError naming the argument unless ``N >= 1``, ``0 <= F <= N`` and
    delta, alpha, confidence lie in (0, 1).
    """
    n = _check_trials(trials)
    f = _checks.check_int(failures, "failures")
    if not 0 <= f <= n:
        raise ValueError(f"failures must be in [0, trials={n}], got {failures!r}.")
    d = float(_checks.check_probability(delta, "delta"))
    a = float(_checks.check_probability(alpha, "alpha"))
    c = float(_checks.check_probability(confidence, "confidence"))
    p_value = 1.0 if f == 0 else float(min(1.0, max(0.0, stats.binom.sf(f - 1, n, d))))
    half = (1.0 - c) / 2.0
    low = 0.0 if f == 0 else float(stats.beta.ppf(half, f, n - f + 1))
    high = 1.0 if f == n else float(stats.beta.isf(half, f + 1, n - f))
    return BinomialTest(f, n, d, a, c, p_value, low, high)


def _count_failures(failed) -> tuple[int, int]:
    """(F, N) from a boolean array of trials (integer 0/1 accepted; JAX arrays too)."""
    arr = np.asarray(failed)
    if arr.size == 0:
        raise ValueError("failed must hold at least one trial, got an empty array.")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.integer) or np.any((arr != 0) & (arr != 1)):
            raise ValueError(f"failed must be a boolean array (True where the bound failed), "
                             f"got dtype {arr.dtype}; compare the quantity with its bound first.")
    return int(np.count_nonzero(arr)), int(arr.size)


def assert_holds_with_probability(failed, delta: float, *, alpha: float = DEFAULT_ALPHA,
                                  confidence: float = 0.95,
                                  name: str = "the bound") -> BinomialTest:
    """Assert that a bound claimed to hold with probability ``1 - delta`` does.

    ``failed``: a boolean array, one entry per *independent* trial (e.g. one
    query row per seed with fresh keys: rows of one draw share their keys and
    are not independent), True where the bound failed. The exact one-sided
    binomial test of ``P(failure) <= delta`` at level ``alpha``
    (:func:`binomial_test`); AssertionError (counts, Clopper-Pearson interval,
    p-value) when it rejects. A valid bound fails this with probability at most
    alpha (1e-6 by default). Passing is "no evidence against the claim": size
    the number of trials with :func:`seeds_for_power` and check the power with
    :func:`assert_rejects` on a planted wrong bound.

    Returns the :class:`BinomialTest` (for logging).
    """
    f, n = _count_failures(failed)
    result = binomial_test(f, n, delta, alpha=alpha, confidence=confidence)
    if result.rejected:
        raise AssertionError(f"{name} does not hold with probability 1 - delta: "
                             f"{result.describe()}.")
    return result


def assert_rejects(failed, delta: float, *, alpha: float = DEFAULT_ALPHA,
                   confidence: float = 0.95, name: str = "the planted wrong bound") -> BinomialTest:
    """Assert that the test rejects ``P(failure) <= delta`` (the power side).

    Use it on a planted wrong bound (e.g. a bound scaled by 0.3): if the
    binomial test of :func:`assert_holds_with_probability` cannot reject it,
    the check has no power against such errors and a passing
    :func:`assert_holds_with_probability` says little. AssertionError with the
    counts, interval, p-value, and the smallest failure rate these trials
    detect with power 0.9. Returns the :class:`BinomialTest`.
    """
    f, n = _count_failures(failed)
    result = binomial_test(f, n, delta, alpha=alpha, confidence=confidence)
    if not result.rejected:
        c = critical_failures(n, delta, alpha)
        reach = ("no failure count can reject at this N" if c > n else
                 f"{c} failures are needed to reject; a true failure rate of "
                 f"{float(stats.beta.ppf(0.9, c, n - c + 1)):.4g} is detected with power 0.9")
        raise AssertionError(f"{name} is not rejected: {result.describe()}; {reach} "
                             f"(seeds_for_power sizes N).")
    return result


# --- power -----------------------------------------------------------------------------


def _critical_counts(trials: np.ndarray, delta: float, alpha: float) -> np.ndarray:
    """Vectorised :func:`critical_failures`: ``binom.isf`` as a guess, corrected
    by exact ``sf`` evaluations so it agrees with :func:`binomial_test`."""
    n = np.asarray(trials, dtype=np.int64)

    def rejects(count: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return (count >= 1) & (stats.binom.sf(count - 1, n, delta) < alpha)

    guess = stats.binom.isf(alpha, n, delta)
    guess = np.where(np.isfinite(guess), guess + 1, n + 1)
    c = np.clip(guess, 0, n + 1).astype(np.int64)
    while True:  # step down while one fewer failure also rejects
        down = (c > 0) & rejects(c - 1)
        if not down.any():
            break
        c = c - down
    while True:  # step up while c itself does not reject
        up = (c <= n) & ~rejects(c)
        if not up.any():
            break
        c = c + up
    return c


def critical_failures(trials: int, delta: float, alpha: float = DEFAULT_ALPHA) -> int:
    """The smallest failure count F at which :func:`binomial_test` rejects,
    ``min{F : P(Binomial(N, delta) >= F) < alpha}``; ``N + 1`` when none can
    (``delta**N >= alpha``)."""
    n = _check_trials(trials)
    d = float(_checks.check_probability(delta, "delta"))
    a = float(_checks.check_probability(alpha, "alpha"))
    return int(_critical_counts(np.array([n]), d, a)[0])


def _check_factor(factor) -> float:
    try:
        fac = float(factor)
    except (TypeError, ValueError):
        raise ValueError(f"factor must be a finite number > 1, got {factor!r}.") from None
    if not fac > 1.0 or not math.isfinite(fac):
        raise ValueError(f"factor must be a finite number > 1, got {factor!r}.")
    return fac


def _powers(trials: np.ndarray, delta: float, factor: float, alpha: float) -> np.ndarray:
    c = _critical_counts(trials, delta, alpha)
    p1 = min(1.0, factor * delta)
    return np.where(c <= trials, stats.binom.sf(c - 1, trials, p1), 0.0)


def detection_power(trials: int, delta: float, factor: float = 2.0,
                    alpha: float = DEFAULT_ALPHA) -> float:
    """Exact probability that :func:`binomial_test` on N trials rejects when the
    true failure rate is ``min(1, factor * delta)``:
    ``P(Binomial(N, factor delta) >= c(N))`` with c(N) = :func:`critical_failures`."""
    n = _check_trials(trials)
    d = float(_checks.check_probability(delta, "delta"))
    a = float(_checks.check_probability(alpha, "alpha"))
    return float(_powers(np.array([n]), d, _check_factor(factor), a)[0])


_MAX_SEEDS = 1 << 34
_CHUNK = 1 << 14


def seeds_for_power(delta: float, factor: float = 2.0, power: float = 0.9,
                    alpha: float = DEFAULT_ALPHA) -> int:
    """The smallest number of independent seeds N whose binomial test at level
    alpha rejects ``P(failure) <= delta`` with probability at least ``power``
    when the true failure rate is ``factor * delta`` (exact binomial power,
    :func:`detection_power`).

    The method of verify.statistics.min_trials_to_detect (double N until the
    power is reached), then, instead of bisecting, every N up to that one is
    evaluated (vectorised): the power of a discrete test is not monotone in N
    (it dips each time the critical count steps up), so bisection finds *an* N
    with enough power, this finds the smallest. For the same reason use exactly
    this N, or check ``detection_power`` at the N you use: a few more seeds can
    have slightly less power.

    Cost: O(N) binomial evaluations on the host, about 0.01 s at delta = 0.05,
    1 s at 1e-4 and 10 s at 1e-5 (factor 2).

    ValueError naming the argument unless delta, power, alpha lie in (0, 1)
    and factor > 1 is finite.
    """
    d = float(_checks.check_probability(delta, "delta"))
    target = float(_checks.check_probability(power, "power"))
    a = float(_checks.check_probability(alpha, "alpha"))
    fac = _check_factor(factor)
    hi = 1
    while detection_power(hi, d, fac, a) < target:
        if hi >= _MAX_SEEDS:
            raise ValueError(f"no N <= {_MAX_SEEDS} detects factor={fac} at delta={d}, "
                             f"alpha={a}, power={target}.")
        hi *= 2
    # Below delta**N >= alpha not even N failures reject: the power is 0 there.
    lo = max(1, int(math.floor(math.log(a) / math.log(d))))
    for start in range(min(lo, hi), hi + 1, _CHUNK):
        trials = np.arange(start, min(start + _CHUNK, hi + 1), dtype=np.int64)
        hit = np.flatnonzero(_powers(trials, d, fac, a) >= target)
        if hit.size:
            return int(trials[hit[0]])
    return hi  # not reached: hi itself has the power


# --- hypothesis strategies ---------------------------------------------------------------


class AttentionConfig(NamedTuple):
    """One attention configuration: n keys (n >= 2 in self mode), dimension d,
    mode ("self" or "cross"), input model, weight scale (of
    :func:`sparsity_theory.gaussian_weights`) and score scale (the lambda of
    ``u = lambda Q K^T``)."""

    n: int
    d: int
    mode: str
    model: InputModel
    weight_scale: float
    score_scale: float


def input_models(max_spread: float = 4.0, max_abs_mean: float = 2.0):
    """Strategy: a Uniform, Rademacher or Gaussian input model with spread
    (radius or std) in [1e-3, max_spread] and mean in [-max_abs_mean, max_abs_mean]."""
    spread = hst.floats(1e-3, max_spread, allow_nan=False, allow_infinity=False)
    mean = hst.floats(-max_abs_mean, max_abs_mean, allow_nan=False, allow_infinity=False)
    return hst.one_of(hst.builds(Uniform, radius=spread, mean=mean),
                      hst.builds(Rademacher, radius=spread, mean=mean),
                      hst.builds(Gaussian, std=spread, mean=mean))


def attention_configs(ns=(2, 3, 8, 33, 64), ds=(1, 2, 4, 8), modes=MODES,
                      score_scales=None):
    """Strategy: an :class:`AttentionConfig`. n and d come from short lists
    (JAX compiles once per shape, so a few sizes keep a property test fast);
    the score scale defaults to ``c / sqrt(d)`` with c in [1e-3, 4] or one of
    the extremes 1e-8 and 1e3 (collapse and one-hot rows)."""
    for m in modes:
        if m not in MODES:
            raise ValueError(f"modes must be a subset of {MODES}, got {modes!r}.")

    @hst.composite
    def build(draw):
        mode = draw(hst.sampled_from(tuple(modes)))
        n = draw(hst.sampled_from(tuple(k for k in ns if mode == "cross" or k >= 2)))
        d = draw(hst.sampled_from(tuple(ds)))
        if score_scales is None:
            c = draw(hst.one_of(hst.floats(1e-3, 4.0), hst.sampled_from((1e-8, 1e3))))
            scale = c / math.sqrt(d)
        else:
            scale = draw(score_scales)
        return AttentionConfig(n, d, mode, draw(input_models()),
                               draw(hst.floats(0.1, 4.0)), float(scale))

    return build()


def logit_rows(min_n: int = 1, max_n: int = 64, allow_masked: bool = True,
               dtype=np.float64):
    """Strategy: one row of logits (a 1-D NumPy array) as attention produces
    them, including the hard cases: ties (values drawn from few levels),
    huge and tiny scales (levels times 1e-300 ... 1e150, so that differences
    neither overflow nor all vanish), and, with ``allow_masked``, ``-inf``
    masked entries (at least one entry stays finite). No NaN, no ``+inf``.

    Masked rows are for your own masked-softmax code: this library's row
    functions (``log_tail_mass``, ``num_small_entries``, ...) take finite
    logits and reject ``-inf``, and take a mask as a boolean ``kept`` set
    (``masked_attention_errors``); pass ``allow_masked=False`` for them.
    """
    min_n = _checks.check_int(min_n, "min_n")
    max_n = _checks.check_int(max_n, "max_n")
    if not 1 <= min_n <= max_n:
        raise ValueError(f"need 1 <= min_n <= max_n, got {min_n}, {max_n}.")
    finfo = np.finfo(dtype)
    scales = tuple(s for s in (1e-300, 1e-30, 1e-6, 1.0, 30.0, 1e6, 1e30, 1e150)
                   if float(finfo.tiny) <= s <= float(finfo.max) / 1e3)

    @hst.composite
    def build(draw):
        n = draw(hst.integers(min_n, max_n))
        levels = draw(hst.one_of(
            hst.lists(hst.integers(-3, 3).map(float), min_size=n, max_size=n),  # ties
            hst.lists(hst.floats(-10, 10, allow_nan=False), min_size=n, max_size=n)))
        row = np.asarray(levels, dtype) * np.asarray(draw(hst.sampled_from(scales)), dtype)
        if allow_masked and n > 1:
            masked = draw(hst.lists(hst.booleans(), min_size=n, max_size=n))
            keep = draw(hst.integers(0, n - 1))  # one entry is never masked
            masked[keep] = False
            row[np.asarray(masked)] = -np.inf
        return row

    return build()


def window_sizes(n: int):
    """Strategy: a window size k in [1, n] (Definition 3.3), the ends often."""
    n = _checks.check_int(n, "n")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    return hst.one_of(hst.sampled_from((1, n)), hst.integers(1, n))


def eps_values(min_value: float = 1e-300):
    """Strategy: a softmax threshold eps in [min_value, 1] (Definition 3.2's
    (0, 1]; 1 and the smallest values included)."""
    _checks.check_eps(min_value, "min_value")
    return hst.one_of(hst.sampled_from((min_value, 1.0)),
                      hst.floats(min_value, 1.0, allow_nan=False))


def deltas(min_value: float = 1e-300, max_value: Optional[float] = None):
    """Strategy: a failure probability delta in the open interval (0, 1),
    from ``min_value`` up to ``max_value`` (default: the largest float below 1)."""
    top = float(np.nextafter(1.0, 0.0)) if max_value is None else float(max_value)
    _checks.check_probability(min_value, "min_value")
    _checks.check_probability(top, "max_value")
    if min_value > top:
        raise ValueError(f"need min_value <= max_value, got {min_value}, {top}.")
    return hst.one_of(hst.sampled_from((min_value, top)),
                      hst.floats(min_value, top, allow_nan=False))
