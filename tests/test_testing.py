"""sparsity_theory.testing (issue 14 item 4): the binomial assertions, their
calibration and power, seeds_for_power, and the hypothesis strategies."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import find, given, settings
from hypothesis import strategies as hst
from scipy import stats

import sparsity_theory as st
from sparsity_theory import bounds
from sparsity_theory import testing as stt
from verify import statistics as vstats

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(deadline=None, database=None, max_examples=60)


# --- the exact test: agreement with verify.statistics (an independent implementation) ---


@pytest.mark.parametrize("trials", [1, 2, 7, 50, 400, 3000])
@pytest.mark.parametrize("delta", [1e-4, 0.05, 0.3, 0.9])
def test_binomial_test_agrees_with_verify_on_every_count(trials, delta):
    counts = range(trials + 1) if trials <= 50 else range(0, trials + 1, 1 + trials // 60)
    for alpha in (1e-6, 0.01):
        for f in counts:
            ours = stt.binomial_test(f, trials, delta, alpha=alpha)
            theirs = vstats.binomial_check(f, trials, delta, alpha=alpha)
            assert ours.p_value == pytest.approx(theirs.p_value, rel=1e-12, abs=1e-300)
            assert ours.ci_low == pytest.approx(theirs.ci_low, rel=1e-9, abs=1e-15)
            assert ours.ci_high == pytest.approx(theirs.ci_high, rel=1e-9, abs=1e-15)
            assert ours.rejected == (theirs.verdict == "VIOLATED")
        assert stt.critical_failures(trials, delta, alpha) == vstats.critical_count(
            trials, delta, alpha)
        if trials > 1:
            assert stt.detection_power(trials, delta, 2.0, alpha) == pytest.approx(
                vstats.detection_power(trials, delta, 2.0, alpha), rel=1e-12, abs=1e-300)


def test_clopper_pearson_by_definition():
    """The interval ends solve the defining tail equations:
    P(Bin(N, low) >= F) = P(Bin(N, high) <= F) = (1 - c)/2."""
    r = stt.binomial_test(13, 200, 0.05, confidence=0.9)
    assert stats.binom.sf(12, 200, r.ci_low) == pytest.approx(0.05, rel=1e-8)
    assert stats.binom.cdf(13, 200, r.ci_high) == pytest.approx(0.05, rel=1e-8)
    assert stt.binomial_test(0, 10, 0.1).ci_low == 0.0
    assert stt.binomial_test(10, 10, 0.1).ci_high == 1.0


# --- calibration: the false-alarm rate, computed exactly -----------------------------


def _rejection_probability(trials: int, true_rate: float, delta: float, alpha: float) -> float:
    """P(the test rejects) when F ~ Binomial(N, true_rate): the sum of the pmf
    over the counts that binomial_test rejects, each count tested."""
    counts = np.arange(trials + 1)
    rejects = np.array([stt.binomial_test(int(f), trials, delta, alpha=alpha).rejected
                        for f in counts])
    return float(stats.binom.pmf(counts[rejects], trials, true_rate).sum())


@pytest.mark.parametrize("trials", [5, 40, 200, 1000])
@pytest.mark.parametrize("delta", [0.01, 0.05, 0.2])
@pytest.mark.parametrize("alpha", [1e-6, 1e-3, 0.05])
def test_false_alarm_rate_is_at_most_alpha_and_not_needlessly_below(trials, delta, alpha):
    """Under the null with failure rate exactly delta (the least favourable one)
    the assertion fails with probability <= alpha, for every N; a rate below
    delta does not raise it. Size: one count less in the rejection region
    would exceed alpha, so the test is the exact one, not a looser one."""
    size = _rejection_probability(trials, delta, delta, alpha)
    assert size <= alpha
    assert _rejection_probability(trials, delta / 2, delta, alpha) <= size
    c = stt.critical_failures(trials, delta, alpha)
    if c <= trials:
        assert stats.binom.sf(c - 2, trials, delta) >= alpha  # P(F >= c - 1)


def test_assertion_raises_exactly_on_the_rejection_region():
    """assert_holds_with_probability raises iff the failure count is >= the
    critical count (checked at every count of N = 300)."""
    trials, delta = 300, 0.05
    c = stt.critical_failures(trials, delta)
    for f in range(trials + 1):
        failed = np.zeros(trials, bool)
        failed[:f] = True
        if f >= c:
            with pytest.raises(AssertionError):
                stt.assert_holds_with_probability(failed, delta)
            stt.assert_rejects(failed, delta)
        else:
            stt.assert_holds_with_probability(failed, delta)
            with pytest.raises(AssertionError):
                stt.assert_rejects(failed, delta)


# --- a right and a wrong bound on real scores ------------------------------------------


def _lemma42_part1_failures(factor: float, seeds: int = 2000, n: int = 128, delta: float = 0.05):
    """One Gaussian score row per seed (sigma 1.7); True where
    max_j |u_j - mu| exceeds ``factor`` times Lemma 4.2 Part 1's bound."""
    rng = np.random.default_rng(11)
    sigma = 1.7
    u = sigma * rng.normal(size=(seeds, n)) + 3.0
    bound = float(bounds.score_deviation_bound(sigma, n, delta))
    return np.max(np.abs(u - 3.0), axis=1) > factor * bound


def test_passes_on_a_right_bound_and_fails_on_a_wrong_one():
    right = _lemma42_part1_failures(1.0)
    result = stt.assert_holds_with_probability(right, 0.05)
    assert result.trials == 2000 and not result.rejected
    wrong = _lemma42_part1_failures(0.3)  # a planted wrong bound: fails almost always
    with pytest.raises(AssertionError, match="does not hold with probability 1 - delta"):
        stt.assert_holds_with_probability(wrong, 0.05)
    assert stt.assert_rejects(wrong, 0.05).rejected
    with pytest.raises(AssertionError, match="is not rejected"):
        stt.assert_rejects(right, 0.05)


def test_failure_message_gives_counts_interval_and_p_value():
    failed = np.zeros(500, bool)
    failed[:61] = True  # 12.2% against delta = 5%
    with pytest.raises(AssertionError) as info:
        stt.assert_holds_with_probability(failed, 0.05, name="Lemma 4.2 Part 1")
    message = str(info.value)
    r = stt.binomial_test(61, 500, 0.05)
    assert message.startswith("Lemma 4.2 Part 1 does not hold")
    assert "61 failures in 500 independent trials" in message
    assert f"[{r.ci_low:.4g}, {r.ci_high:.4g}]" in message
    assert "Clopper-Pearson" in message
    assert f"p-value {r.p_value:.3g}" in message and r.p_value < 1e-6
    assert "delta = 0.05" in message and "alpha = 1e-06" in message
    assert "\n" not in message


def test_rejects_message_says_what_the_trials_can_detect():
    failed = np.zeros(100, bool)
    failed[:8] = True
    with pytest.raises(AssertionError) as info:
        stt.assert_rejects(failed, 0.05)
    c = stt.critical_failures(100, 0.05)
    rate = stats.beta.ppf(0.9, c, 100 - c + 1)
    assert f"{c} failures are needed to reject" in str(info.value)
    assert f"{rate:.4g}" in str(info.value)
    with pytest.raises(AssertionError, match="no failure count can reject"):
        stt.assert_rejects(np.ones(3, bool), 0.05)  # 0.05**3 > 1e-6


def test_accepts_jax_and_integer_arrays_and_rejects_others():
    import jax.numpy as jnp

    assert stt.assert_holds_with_probability(jnp.zeros(10, bool), 0.1).failures == 0
    assert stt.assert_holds_with_probability(np.array([0, 1, 0]), 0.5).failures == 1
    assert stt.assert_holds_with_probability(np.zeros((4, 5), bool), 0.1).trials == 20
    for bad, match in [(np.array([0.2, 1.5]), "failed must be a boolean"),
                       (np.array([0, 2]), "failed must be a boolean"),
                       (np.zeros(0, bool), "at least one trial")]:
        with pytest.raises(ValueError, match=match):
            stt.assert_holds_with_probability(bad, 0.1)
    for delta in (0.0, 1.0, float("nan")):
        with pytest.raises(ValueError, match="delta"):
            stt.assert_holds_with_probability(np.zeros(3, bool), delta)
    with pytest.raises(ValueError, match="alpha"):
        stt.assert_rejects(np.zeros(3, bool), 0.1, alpha=2.0)
    with pytest.raises(ValueError, match="failures"):
        stt.binomial_test(4, 3, 0.1)
    with pytest.raises(ValueError, match="factor"):
        stt.seeds_for_power(0.1, factor=1.0)
    with pytest.raises(ValueError, match="power"):
        stt.seeds_for_power(0.1, power=1.0)


# --- power: seeds_for_power against an exact power computation -----------------------


def _exact_power(trials: int, delta: float, factor: float, alpha: float) -> float:
    """Power from first principles: the rejection region {F : P(Bin(N, delta) >= F) < alpha}
    by direct tail sums of the pmf, its probability under Bin(N, factor delta)."""
    counts = np.arange(trials + 1)
    null_tail = np.cumsum(stats.binom.pmf(counts, trials, delta)[::-1])[::-1]  # P(F' >= F)
    region = (counts >= 1) & (null_tail < alpha)
    return float(stats.binom.pmf(counts[region], trials, min(1.0, factor * delta)).sum())


@pytest.mark.parametrize("delta,factor,power,alpha", [
    (0.2, 2.5, 0.8, 1e-3), (0.05, 3.0, 0.9, 1e-2), (0.1, 2.0, 0.5, 1e-4), (0.3, 1.5, 0.9, 1e-6)])
def test_seeds_for_power_is_the_smallest_n_with_the_power(delta, factor, power, alpha):
    n = stt.seeds_for_power(delta, factor, power, alpha)
    assert _exact_power(n, delta, factor, alpha) >= power
    assert all(_exact_power(m, delta, factor, alpha) < power for m in range(1, n))
    # verify's bisection returns an N with the power too, never a smaller one.
    assert n <= vstats.min_trials_to_detect(delta, factor, alpha, power)


def test_seeds_for_power_default():
    """delta = 0.05, factor 2, power 0.9, alpha 1e-6: 932 seeds (verify's
    bisection gives 943)."""
    n = stt.seeds_for_power(0.05)
    assert n == 932
    assert _exact_power(n, 0.05, 2.0, 1e-6) >= 0.9 > _exact_power(n - 1, 0.05, 2.0, 1e-6)
    assert stt.detection_power(n, 0.05) == pytest.approx(_exact_power(n, 0.05, 2.0, 1e-6),
                                                         rel=1e-10)


def test_power_is_attained_in_simulation():
    """At the returned N, a rate of 2 delta is rejected in about 90% of
    simulated runs (binomial counts; 4000 runs, 6 standard errors)."""
    n = stt.seeds_for_power(0.05, 2.0, 0.9, 1e-6)
    counts = np.random.default_rng(0).binomial(n, 0.1, size=4000)
    c = stt.critical_failures(n, 0.05)
    assert abs(np.mean(counts >= c) - 0.9) < 6 * math.sqrt(0.09 / 4000)


# --- hypothesis strategies ---------------------------------------------------------------


@settings(**SETTINGS)
@given(stt.attention_configs())
def test_attention_configs_are_valid(config):
    assert config.mode in st.MODES
    assert config.n >= (2 if config.mode == "self" else 1) and config.d >= 1
    assert config.weight_scale > 0 and math.isfinite(config.weight_scale)
    assert config.score_scale > 0 and math.isfinite(config.score_scale)
    assert isinstance(config.model, (st.Uniform, st.Rademacher, st.Gaussian))
    # The library accepts it.
    st.bounds.num_independent_keys(config.n, config.mode)
    assert config.model.variance_proxy > 0


def test_attention_configs_drive_the_library():
    """A few configurations through sampling, weights and the attention row."""
    import jax

    @settings(deadline=None, database=None, max_examples=5)
    @given(stt.attention_configs(ns=(8,), ds=(2,)))
    def run(config):
        key = jax.random.PRNGKey(0)
        inputs = st.sample_inputs(key, config.n, config.d, config.model, config.mode)
        q, k, _ = st.project(inputs, st.gaussian_weights(key, config.d, config.weight_scale))
        u = st.attention_logits(q, k, config.score_scale)
        assert u.shape == (config.n, config.n) and bool(np.all(np.isfinite(np.asarray(u))))

    run()


@settings(**SETTINGS)
@given(stt.logit_rows(max_n=20))
def test_logit_rows_are_valid(row):
    assert row.ndim == 1 and 1 <= row.size <= 20 and row.dtype == np.float64
    assert not np.any(np.isnan(row)) and not np.any(row == np.inf)
    assert np.any(np.isfinite(row))
    # The softmax is well defined: differences of finite entries do not overflow.
    finite = row[np.isfinite(row)]
    assert np.isfinite(finite.max() - finite.min())


def test_logit_rows_reach_the_hard_cases():
    """Each hard case is generated (hypothesis.find raises if none is found)."""
    rows = stt.logit_rows(max_n=12)
    find_settings = settings(database=None, max_examples=2000)
    find(rows, lambda r: np.any(np.isneginf(r)), settings=find_settings)
    find(rows, lambda r: r.size >= 3 and np.unique(r).size < r.size and np.all(np.isfinite(r)),
         settings=find_settings)
    find(rows, lambda r: np.max(np.abs(r[np.isfinite(r)])) > 1e100, settings=find_settings)
    find(rows, lambda r: 0 < np.max(np.abs(r[np.isfinite(r)])) < 1e-200, settings=find_settings)
    find(stt.logit_rows(max_n=4, dtype=np.float32), lambda r: r.dtype == np.float32,
         settings=find_settings)


def test_logit_rows_without_masking_drive_the_library():
    """Unmasked rows are finite, and the library's row functions take them at
    every scale: tail masses are log-probabilities, -inf at k = n, and the
    count of small entries is in [0, n - 1] (the largest entry is >= 1/n)."""
    import jax.numpy as jnp

    @settings(deadline=None, database=None, max_examples=40)
    @given(stt.logit_rows(min_n=8, max_n=8, allow_masked=False))
    def run(row):
        assert np.all(np.isfinite(row))
        u = jnp.asarray(row)[None]
        log_tail = np.asarray(st.log_tail_mass(u, (1, 4, 8)))[0]
        assert np.all(log_tail <= 0) and log_tail[-1] == -np.inf
        assert 0 <= int(st.num_small_entries(u, 1e-3)[0]) <= 7

    run()


@settings(**SETTINGS)
@given(hst.integers(1, 500).flatmap(lambda n: hst.tuples(hst.just(n), stt.window_sizes(n))),
       stt.eps_values(), stt.deltas())
def test_windows_eps_and_deltas_are_in_range(n_and_k, eps, delta):
    n, k = n_and_k
    assert 1 <= k <= n
    assert 0 < eps <= 1
    assert 0 < delta < 1
    # The library's validators agree.
    st.bounds.score_deviation_bound(1.0, n, delta)
    st.bounds.guaranteed_small_entries(1.0, n, eps, delta_count=delta / 2,
                                       delta_normaliser=delta / 2)


def test_range_strategies_reach_their_ends():
    find_settings = settings(database=None, max_examples=500)
    find(stt.window_sizes(7), lambda k: k == 1, settings=find_settings)
    find(stt.window_sizes(7), lambda k: k == 7, settings=find_settings)
    find(stt.eps_values(), lambda e: e == 1.0, settings=find_settings)
    find(stt.deltas(), lambda d: d < 1e-100, settings=find_settings)
    find(stt.deltas(), lambda d: d > 0.999, settings=find_settings)
    find(stt.input_models(), lambda m: isinstance(m, st.Rademacher), settings=find_settings)
    for bad in (lambda: stt.window_sizes(0), lambda: stt.deltas(0.5, 0.1),
                lambda: stt.eps_values(0.0), lambda: stt.logit_rows(3, 2),
                lambda: stt.attention_configs(modes=("both",))):
        with pytest.raises(ValueError):
            bad()


# --- import hygiene ------------------------------------------------------------------------


def test_import_sparsity_theory_does_not_import_hypothesis():
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    code = ("import json, sys, sparsity_theory; print(json.dumps("
            "['hypothesis' in sys.modules, 'sparsity_theory.testing' in sys.modules]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False, False]


def test_public_names():
    for name in stt.__all__:
        assert hasattr(stt, name), name
    assert re.search(r"needs ``hypothesis``", stt.__doc__)
