"""A catalogue of semantic mutants: small wrong changes to the mathematics and to
the verdict pipeline, each run against the tests that cover its module. A mutant
is *killed* when one of those tests fails; a survivor is a change the tests
cannot see (or an equivalent change, argued in its note).

Run on demand, not in CI (it takes tens of minutes on 2 cores):

    python tests/mutation_catalogue.py [--only ID ...] [--out docs/mutation_catalogue.md]

Each mutant replaces one exact piece of source text (found exactly once) and is
undone in a ``finally`` whatever happens. The table (mutant, what it changes,
killed by which test or survived) and the kill rate go to the output file.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import subprocess
import sys
import time
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BOUNDS_TESTS = ("tests/test_bounds.py", "tests/test_bounds_theorem43.py", "tests/test_bounds_properties.py")
ERROR_BOUND_TESTS = ("tests/test_error_bounds.py",)
CORE_TESTS = ("tests/test_identities.py", "tests/test_reference.py", "tests/test_masked_errors.py")
CLAIM_TESTS = ("tests/test_claims.py", "tests/test_verify.py")
LEDGER_TESTS = ("tests/test_rules.py", "tests/test_claims.py", "tests/test_strategies.py")
SPECIAL_TESTS = ("tests/test_special.py", "tests/test_bounds_theorem43.py")
QUANTILE_TESTS = ("tests/test_gaussian_quantiles.py", "tests/test_tightness.py")
SHARP_TESTS = ("tests/test_sharp_laws.py",)
SELECTION_TESTS = ("tests/test_selection.py", "tests/test_streaming.py")
LLM_TESTS = ("tests/test_llm_statistics.py", "tests/test_llm.py")


class Mutant(NamedTuple):
    id: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    note: str = ""  # for a survivor argued equivalent


MUTANTS = (
    # ---- sparsity_theory/bounds.py: Lemma 4.2, Theorems 4.3 and 5.1
    Mutant("B1", "sparsity_theory/bounds.py",
           "jnp.sqrt(2.0 * (math.log(2.0) + _log_count(n, dtype) - jnp.log(delta)))",
           "jnp.sqrt(2.0 * (_log_count(n, dtype) - jnp.log(delta)))", BOUNDS_TESTS,
           "Lemma 4.2 Part 1: union over n tails instead of 2n"),
    Mutant("B2", "sparsity_theory/bounds.py",
           "jnp.sqrt(2.0 * (math.log(2.0) + _log_count(n, dtype) - jnp.log(delta)))",
           "jnp.sqrt(1.0 * (math.log(2.0) + _log_count(n, dtype) - jnp.log(delta)))", BOUNDS_TESTS,
           "Lemma 4.2 Part 1: sqrt(ln) instead of sqrt(2 ln)"),
    Mutant("B3", "sparsity_theory/bounds.py",
           "    return sigma * jnp.sqrt(2.0 * -jnp.log(delta) * inv_n)",
           "    return sigma * jnp.sqrt(2.0 * -jnp.log(delta) / inv_n)", BOUNDS_TESTS,
           "Lemma 4.2 Part 3: eta multiplied by n instead of divided"),
    Mutant("B4", "sparsity_theory/bounds.py",
           "    return jnp.maximum(0.0, 1.0 - kf / nf - jnp.sqrt(-jnp.log(delta) / (2.0 * nf))).astype(dtype)",
           "    return jnp.maximum(0.0, 1.0 - kf / nf + jnp.sqrt(-jnp.log(delta) / (2.0 * nf))).astype(dtype)",
           BOUNDS_TESTS, "Theorem 4.3 (Hoeffding): the deviation term added instead of subtracted"),
    Mutant("B5", "sparsity_theory/bounds.py", "    t = sigma * jnp.sqrt(2.0 * -jnp.log(safe_p))",
           "    t = sigma * jnp.sqrt(-jnp.log(safe_p))", BOUNDS_TESTS,
           "Theorem 4.3: score threshold sqrt(ln(1/p)) instead of sqrt(2 ln(1/p))"),
    Mutant("B6", "sparsity_theory/bounds.py",
           "    t1 = sigma * jnp.sqrt(2.0 * (log_n - jnp.log(_as_float(delta_scores, dtype))))",
           "    t1 = sigma * jnp.sqrt(2.0 * (0.0 - jnp.log(_as_float(delta_scores, dtype))))", BOUNDS_TESTS,
           "Theorem 5.1: max over n keys without the union bound"),
    Mutant("B7", "sparsity_theory/bounds.py", "        if g(mid) >= 0:", "        if g(mid) < 0:",
           BOUNDS_TESTS, "collapse length: bisection moves the wrong end"),
    Mutant("B8", "sparsity_theory/bounds.py",
           "        q = jnp.floor(nf * p + jnp.sqrt(nf * -jnp.log(d1) / 2.0))",
           "        q = jnp.floor(nf * p + jnp.sqrt(nf * -jnp.log(d1) / 4.0))",
           BOUNDS_TESTS, "Theorem 4.3 converse (Hoeffding): deviation too small"),
    Mutant("B9", "sparsity_theory/bounds.py",
           "    return model.mean * jnp.sum(row_weight_vector(x_row, weights, scale), axis=-1)",
           "    return model.mean * jnp.mean(row_weight_vector(x_row, weights, scale), axis=-1)",
           BOUNDS_TESTS, "mu_i: mean instead of sum of the weight vector"),
    Mutant("B10", "sparsity_theory/bounds.py", "        if k > n:\n",
           "        if k >= n:\n", BOUNDS_TESTS,
           "Theorem 4.3: k = n refused (edge of the valid range)"),
    # ---- sparsity_theory/special.py: the inverse incomplete beta behind Theorem 4.3
    # ---- sparsity_theory/selection.py and the real model's kept set (issue 16)
    Mutant("G1", "sparsity_theory/selection.py",
           "    exact = jnp.all(f[..., count - 1] < f[..., k - 1])",
           "    exact = jnp.all(f[..., count - 1] <= f[..., k - 1])", SELECTION_TESTS,
           "float64 preselection trusted when float32 values collide at the boundary"),
    Mutant("G2", "sparsity_theory/selection.py",
           "    chosen = lax.sort(lax.top_k(maxima, k)[1], dimension=maxima.ndim - 1)",
           "    chosen = lax.top_k(maxima, k)[1]", SELECTION_TESTS,
           "two-stage selection: chosen groups not in ascending order (tie order lost)"),
    Mutant("G3", "sparsity_theory/selection.py",
           "        candidates = canonical_zero(jnp.take_along_axis(x, pos, axis=-1))",
           "        candidates = jnp.take_along_axis(x, pos, axis=-1)", SELECTION_TESTS,
           "float64 preselection's finish ranks -0.0 below +0.0 (canonical zero applied too late)"),
    Mutant("G4", "sparsity_theory/selection.py",
           "        return (jnp.where(ok, lo, jnp.minimum(above, hi) - 1),",
           "        return (jnp.where(ok, lo, jnp.minimum(above, hi)),", SELECTION_TESTS,
           "snapped bisection: lo moved onto the data key above the probe (reached may hold there)"),
    Mutant("G5", "sparsity_theory/selection.py",
           "        return lo + 1 < hi  # hi - lo can overflow when the keys straddle zero",
           "        return hi - lo > 1", SELECTION_TESTS,
           "snapped bisection: the loop test overflows on keys of both signs"),
    Mutant("G6", "sparsity_theory/selection.py",
           "    return jnp.sum(mask, axis=axis, dtype=jnp.int32).astype(default)",
           "    return jnp.sum(mask, axis=axis, dtype=jnp.int16).astype(default)", SELECTION_TESTS,
           "boolean counts accumulated in int16: long rows' counts wrap around"),
    Mutant("F1", "sparsity_theory/llm/llama.py",
           "            masked, jnp.broadcast_to(k, masked.shape[:-1]))",
           "            masked, jnp.broadcast_to(jnp.maximum(k - 1, 1), masked.shape[:-1]))", LLM_TESTS,
           "real-model top-k keeps the (k-1) largest scores"),
    Mutant("F2", "sparsity_theory/llm/gguf_file.py",
           "        start = -(-cursor.pos // alignment) * alignment",
           "        start = cursor.pos", ("tests/test_llm.py",),
           "GGUF tensor data read without the alignment padding"),
    Mutant("F3", "sparsity_theory/llm/llama.py",
           "    stacked = q.reshape(kv, (heads // kv) * m, d)",
           "    stacked = q.reshape(heads // kv, kv, m, d).swapaxes(0, 1).reshape(kv, (heads // kv) * m, d)",
           LLM_TESTS, "grouped-query scores: query head h read key head h % kv_heads"),
    Mutant("H1", "verify/workers.py", "        compilation_cache.enable(cache)", "        pass",
           ("tests/test_compilation_cache.py",), "worker processes compile without the run's cache"),
    Mutant("H2", "sparsity_theory/sparsity.py",
           "    chunks = tuple(x.reshape((r // chunk, chunk) + x.shape[1:]) for x in (rows,) + per_row)",
           "    chunks = tuple(x[::-1].reshape((r // chunk, chunk) + x.shape[1:]) for x in (rows,) + per_row)",
           ("tests/test_reference.py", "tests/test_evaluate.py"),
           "long rows (searched in chunks) paired with another row's ranks or thresholds"),
    Mutant("H4", "sparsity_theory/evaluate.py",
           "        num_small, certified = small_counts_and_certified_windows_of_rows(logits, log_eps)",
           "        certified, num_small = small_counts_and_certified_windows_of_rows(logits, log_eps)",
           ("tests/test_evaluate.py", "tests/test_reference.py"),
           "evaluate_rows: small-entry counts and certified windows swapped"),
    Mutant("H3", "verify/report/figures.py", "        fig.draw_without_rendering()  # runs the constrained layout",
           "        pass", ("tests/test_figures.py",),
           "figures saved without their constrained layout (frozen before it ran)"),
    Mutant("X1", "sparsity_theory/special.py",
           "        small = binomial_log_sf(mid, n, p) <= log_delta",
           "        small = binomial_log_sf(mid, n, p) < log_delta", SPECIAL_TESTS,
           "binomial quantile: a tail exactly delta not accepted (<= read as <)"),
    Mutant("X2", "sparsity_theory/special.py",
           "    return jnp.where(jnp.isnan(p) | jnp.isnan(delta), jnp.nan, hi)",
           "    return jnp.where(jnp.isnan(p) | jnp.isnan(delta), jnp.nan, hi + 1)", SPECIAL_TESTS,
           "binomial quantile one count too large"),
    Mutant("X3", "sparsity_theory/bounds.py",
           "        p = special.betaincinv(_as_float(nf - kf + 1, dtype), _as_float(kf, dtype), delta)",
           "        p = special.betaincinv(_as_float(nf - kf, dtype), _as_float(kf, dtype), delta)",
           BOUNDS_TESTS, "Theorem 4.3: exceedance probability for n - k instead of n - k + 1 exceedances"),
    # ---- sparsity_theory/gaussian_quantiles.py: the tightness yardstick
    Mutant("Q1", "sparsity_theory/gaussian_quantiles.py",
           "    return -sigma * special.ndtri(0.5 * _per_key_tail(num_keys, delta, sigma.dtype))",
           "    return -sigma * special.ndtri(_per_key_tail(num_keys, delta, sigma.dtype))", QUANTILE_TESTS,
           "largest |deviation|: one-sided instead of two-sided tail"),
    Mutant("Q2", "sparsity_theory/gaussian_quantiles.py",
           "        below = _log_spread_cdf(mid, num_keys, grid) < target",
           "        below = _log_spread_cdf(mid, num_keys, grid) > target", QUANTILE_TESTS,
           "spread quantile: the bisection moves the wrong end"),
    # ---- sparsity_theory/error_bounds.py: D5, D6, Theorems 6.1 and 6.2
    Mutant("E1", "sparsity_theory/error_bounds.py",
           "    lower = log_nk - jnp.logaddexp(log_nk, log_k + spread)",
           "    lower = log_nk - jnp.logaddexp(log_nk, log_k + 0.5 * spread)", ERROR_BOUND_TESTS,
           "D5 lower: r^(1/2) instead of r"),
    Mutant("E2", "sparsity_theory/error_bounds.py",
           "    return spread + 0.5 * (_log_dropped(n, k, dtype) - _log(n, dtype) - _log(k, dtype))",
           "    return 0.5 * spread + 0.5 * (_log_dropped(n, k, dtype) - _log(n, dtype) - _log(k, dtype))",
           ERROR_BOUND_TESTS, "D6 upper: sqrt(r) instead of r"),
    Mutant("E3", "sparsity_theory/error_bounds.py", "        return 2.0 * t", "        return t",
           ERROR_BOUND_TESTS, "Theorem 6.1 cross mode: spread bound t instead of 2t"),
    Mutant("E4", "sparsity_theory/error_bounds.py",
           "    return t + jnp.maximum(t, jnp.abs(_as_float(diagonal_offset)))",
           "    return t + jnp.abs(_as_float(diagonal_offset))", ERROR_BOUND_TESTS,
           "Theorem 6.1 self mode: the diagonal offset alone, not max(t, |offset|)"),
    Mutant("E5", "sparsity_theory/error_bounds.py",
           "    return jnp.minimum(math.log(2.0) + log_tail_upper + jnp.log(_as_float(radius)),",
           "    return jnp.minimum(log_tail_upper + jnp.log(_as_float(radius)),", ERROR_BOUND_TESTS,
           "output bound: tau R_V instead of 2 tau R_V"),
    Mutant("E6", "sparsity_theory/error_bounds.py",
           "    return jnp.max(jnp.linalg.norm(v - jnp.mean(v, axis=-2, keepdims=True), axis=-1), axis=-1)",
           "    return jnp.max(jnp.linalg.norm(v, axis=-1), axis=-1)", ERROR_BOUND_TESTS,
           "value radius about 0 instead of about the mean (the bound is then loose, still valid)"),
    # ---- sparsity_theory/attention.py, sparsity.py, errors.py: the exact quantities
    Mutant("A1", "sparsity_theory/attention.py",
           "    return logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)",
           "    return logits - jax.nn.logsumexp(logits, axis=-2, keepdims=True)", CORE_TESTS,
           "softmax normalised over the wrong axis"),
    Mutant("A2", "sparsity_theory/attention.py",
           "    return jnp.zeros(u.shape, bool).at[selection.top_k_indices(u, k)].set(True)",
           "    return jnp.zeros(u.shape, bool).at[selection.top_k_indices(-u, k)].set(True)",
           CORE_TESTS, "top-k keeps the k smallest scores"),
    Mutant("S1", "sparsity_theory/sparsity.py",
           "    below = log_s.reshape(log_s.shape + (1,) * log_eps.ndim) <= log_eps",
           "    below = log_s.reshape(log_s.shape + (1,) * log_eps.ndim) < log_eps",
           ("tests/test_identities.py", "tests/test_reference.py", "tests/test_validation.py",
            "tests/test_bounds_theorem43.py"),
           "number of small entries: s <= eps read as s < eps (Definition 3.2)"),
    Mutant("S2", "sparsity_theory/sparsity.py",
           "    log_tail = jnp.logaddexp(log_outside, _reverse_cumulative_after(top)) - lse",
           "    log_tail = _reverse_cumulative_after(top) - lse", CORE_TESTS,
           "tail mass forgets the keys outside the max window"),
    Mutant("S3", "sparsity_theory/sparsity.py", "    return n - num_small_entries(logits, eps)",
           "    return n - num_small_entries(logits, eps) - 1", CORE_TESTS,
           "effective entries off by one"),
    Mutant("R1", "sparsity_theory/errors.py",
           "    log_l2 = 0.5 * jnp.logaddexp(2 * log_ratio + prof.log_head_sq, prof.log_tail_sq)",
           "    log_l2 = 0.5 * jnp.logaddexp(log_ratio + prof.log_head_sq, prof.log_tail_sq)", CORE_TESTS,
           "l2 error: (tau/(1-tau)) instead of its square on the kept part"),
    Mutant("R2", "sparsity_theory/errors.py",
           "    log_linf = jnp.maximum(jnp.max(kept_u) - lse + log_ratio, jnp.max(drop_u) - lse)",
           "    log_linf = jnp.max(kept_u) - lse + log_ratio", CORE_TESTS,
           "linf error of masked attention ignores the dropped entries"),
    Mutant("R3", "sparsity_theory/errors.py",
           "    return log_total, log_total - 0.5 * jnp.log(jnp.asarray(m, log_total.dtype))",
           "    return log_total, log_total - jnp.log(jnp.asarray(m, log_total.dtype))", CORE_TESTS,
           "RMS over rows divides by m instead of sqrt(m)"),
    Mutant("R4", "sparsity_theory/errors.py",
           "    w_head = jnp.where(jnp.arange(num_top)[None, :] <= pos[:, None], w[None, :], 0.0)  # (W, K)",
           "    w_head = jnp.where(jnp.arange(num_top)[None, :] <= pos[:, None] + 1, w[None, :], 0.0)  # (W, K)",
           CORE_TESTS, "output error: the kept mean of window k takes one entry too many"),
    # ---- verify/statistics.py: the tests behind every verdict
    Mutant("T1", "verify/statistics.py",
           "p_value = 1.0 if f == 0 else float(min(1.0, max(0.0, stats.binom.sf(f - 1, n, d))))",
           "p_value = 1.0 if f == 0 else float(min(1.0, max(0.0, stats.binom.sf(f, n, d))))",
           ("tests/test_statistics.py",), "binomial p-value P(N > F) instead of P(N >= F)"),
    Mutant("T2", "verify/statistics.py",
           "        return count >= 1 and stats.binom.sf(count - 1, n, d) < a",
           "        return count >= 1 and stats.binom.sf(count - 1, n, d) <= a", ("tests/test_statistics.py",),
           "critical count: <= alpha instead of < alpha"),
    Mutant("T3", "verify/statistics.py", "    return float(stats.binom.sf(c - 1, n, p1))",
           "    return float(stats.binom.sf(c, n, p1))", ("tests/test_statistics.py",),
           "detection power one count too strict"),
    Mutant("T4", "verify/statistics.py",
           "    return float(stats.beta.ppf(check_probability(power, \"power\"), c, n - c + 1))",
           "    return float(stats.beta.ppf(check_probability(power, \"power\"), c, n - c))",
           ("tests/test_statistics.py", "tests/test_claims.py"), "detectable rate: wrong beta parameter"),
    Mutant("T5", "verify/statistics.py",
           "    result = stats.bootstrap(samples, slope, n_resamples=BOOTSTRAP, vectorized=True, paired=False,\n"
           "                             method=\"percentile\", rng=np.random.default_rng(seed))",
           "    result = stats.bootstrap(samples, slope, n_resamples=BOOTSTRAP, vectorized=True, paired=False,\n"
           "                             method=\"basic\", rng=np.random.default_rng(seed))",
           ("tests/test_statistics.py",), "bootstrap slope: basic instead of percentile interval",
           "both are valid 95% bootstrap intervals (the basic one is the percentile one reflected "
           "about the estimate; they coincide for a symmetric bootstrap distribution), so no "
           "correct test can reject the change; the choice of percentile is a convention"),
    Mutant("T6", "verify/statistics.py",
           "    half = z * float(np.std(x, ddof=1)) / math.sqrt(x.size) if x.size > 1 else float(\"nan\")",
           "    half = z * float(np.std(x, ddof=0)) / math.sqrt(x.size) if x.size > 1 else float(\"nan\")",
           ("tests/test_statistics.py",), "mean interval: population sd instead of sample sd"),
    Mutant("T7", "verify/statistics.py", "BOOTSTRAP = rule(SHARED, \"bootstrap_resamples\", 400,",
           "BOOTSTRAP = rule(SHARED, \"bootstrap_resamples\", 40,", ("tests/test_statistics.py",
                                                                      "tests/test_rules.py"),
           "bootstrap resamples cut to 40"),
    # ---- verify/claims.py: pooling and verdicts
    Mutant("C1", "verify/claims.py", "        failures = sum(p[\"failures\"] for p in parts)",
           "        failures = max(p[\"failures\"] for p in parts)", CLAIM_TESTS,
           "pooled failures: the maximum over cells instead of the sum"),
    Mutant("C2", "verify/claims.py", "p[\"check\"][\"p_value\"] < alpha / len(tested)",
           "p[\"check\"][\"p_value\"] < alpha", CLAIM_TESTS, "Bonferroni dropped"),
    Mutant("C3", "verify/claims.py", "p[\"check\"][\"p_value\"] < alpha / len(tested)",
           "p[\"check\"][\"p_value\"] < alpha / len(tested) ** 2", CLAIM_TESTS, "Bonferroni applied twice"),
    Mutant("C4", "verify/claims.py", "rule(SHARED, \"alpha\", 1e-6,", "rule(SHARED, \"alpha\", 0.05,",
           CLAIM_TESTS, "the level raised from 1e-6 to 0.05"),
    Mutant("C5", "verify/claims.py", "    log_ratio = log_ratio[~np.isnan(log_ratio)]",
           "    log_ratio = log_ratio[~np.isnan(log_ratio) & ~failed]", CLAIM_TESTS,
           "looseness computed without the failed trials"),
    Mutant("C6", "verify/claims.py", "            verdict = \"CAUGHT\" if rejected else \"MISSED\"",
           "            verdict = \"CAUGHT\"", CLAIM_TESTS, "a planted wrong bound is always CAUGHT"),
    Mutant("C7", "verify/claims.py",
           "        rejected = pooled is not None and (pooled.verdict == \"VIOLATED\" or cells_rejected > 0)",
           "        rejected = pooled is not None and pooled.verdict == \"VIOLATED\"", CLAIM_TESTS,
           "the per-cell tests ignored"),
    Mutant("C8", "verify/claims.py", "            verdict = \"HOLDS\" if violations == 0 else \"VIOLATED\"",
           "            verdict = \"HOLDS\" if violations <= 1 else \"VIOLATED\"", CLAIM_TESTS,
           "an exact fact tolerates one violation"),
    Mutant("C9", "verify/claims.py", "\"biting\": int(np.sum(x < -BITING_MARGIN))",
           "\"biting\": int(np.sum(x <= 0))", CLAIM_TESTS,
           "vacuity: a bound equal to its trivial maximum counted as biting"),
    Mutant("C10", "verify/claims.py",
           "        result[\"score_step_over_exact\"] = [float(x.min()), float(x.max())] if x.size else None",
           "        result[\"score_step_over_exact\"] = [float(x.min()), float(x.min())] if x.size else None",
           ("tests/test_tightness.py",), "tightness: a cell's range reported as its minimum only"),
    Mutant("C11", "verify/suites/lemma42.py",
           "    exact_p2 = 2 * unit / float(gaussian_quantiles.spread_quantile(1.0, num_keys, delta))",
           "    exact_p2 = unit / float(gaussian_quantiles.spread_quantile(1.0, num_keys, delta))",
           ("tests/test_tightness.py",), "tightness of Part 2 against the half spread bound"),
    # ---- verify/suites/sharp_analysis.py: the REM rules (statistics, not tolerances)
    Mutant("K1", "verify/suites/sharp_analysis.py",
           "    return fit[\"low\"] <= max(band) and min(band) <= fit[\"high\"]",
           "    return fit[\"low\"] <= min(band) and max(band) <= fit[\"high\"]", SHARP_TESTS,
           "slope band: the whole band required inside the interval (instead of meeting it)"),
    Mutant("K2", "verify/suites/sharp_analysis.py", "        return curvature[\"high\"] < 0",
           "        return curvature[\"curvature\"] < 0", SHARP_TESTS,
           "drift judged on the curvature's point estimate, not its interval"),
    Mutant("K3", "verify/suites/sharp_analysis.py", "    return fit[\"low\"] <= 0",
           "    return fit[\"slope\"] <= 0", SHARP_TESTS, "'no growth detected' judged on the point estimate"),
    Mutant("K4", "verify/suites/sharp_analysis.py",
           "    return eps * jnp.exp(laws.log_phibar(sigma - typical_max))",
           "    return eps", SHARP_TESTS, "the quenched reading of the window law dropped"),
    Mutant("K5", "verify/suites/real_analysis.py",
           "    return (ratio >= 1 / LAW_FACTOR) & (ratio <= LAW_FACTOR)",
           "    return (ratio > 1 / LAW_FACTOR) & (ratio <= LAW_FACTOR)", ("tests/test_real_attention.py",),
           "law factor: a ratio exactly 1/2 no longer 'within'"),
    # ---- verify/sampling.py: independent trials
    Mutant("P1", "verify/sampling.py", "    keys = jax.random.split(base, seeds)",
           "    keys = jnp.repeat(jax.random.split(base, 1), seeds, axis=0)", ("tests/test_sampling.py",),
           "every seed drawn from one key (trials not independent)"),
    Mutant("P2", "verify/sampling.py",
           "    if np.unique(rows, axis=0).shape[0] != rows.shape[0]:",
           "    if False:", ("tests/test_sampling.py",), "the duplicate-key check switched off"),
    Mutant("P3", "verify/sampling.py", "    inp = st.sample_inputs(key, n, d, model, mode, rows=1)",
           "    inp = st.sample_inputs(jax.random.PRNGKey(0), n, d, model, mode, rows=1)",
           ("tests/test_sampling.py",), "the sampler ignores its key: one draw repeated"),
    # ---- verify/suite.py and verify/runner.py: seeds, plans, resumes
    Mutant("U1", "verify/suite.py",
           "NOT_IDENTITY = (\"seed_base\", \"seeds\", \"recheck_seeds\")",
           "NOT_IDENTITY = (\"seed_base\", \"seeds\", \"recheck_seeds\", \"n\")", ("tests/test_suite.py",),
           "the context length left out of a cell's identity: cells share streams"),
    Mutant("U2", "verify/suite.py", "    return int.from_bytes(digest[:4], \"big\") & 0x7FFFFFFF",
           "    return int.from_bytes(digest[:4], \"big\") & 0xFF", ("tests/test_suite.py",),
           "seeds truncated to 8 bits"),
    Mutant("U3", "verify/runner.py", "        if base in seen:", "        if False:", ("tests/test_runner.py",),
           "the runner's shared-stream check switched off"),
    Mutant("U4", "verify/runner.py", "    return record.result if record.cell == cell else None",
           "    return record.result", ("tests/test_runner.py", "tests/test_verify.py"),
           "a saved cell reused although its configuration differs"),
    Mutant("U5", "verify/runner.py", "        raise OutputError(f\"another run is writing {out_dir}",
           "        return lock\n        raise OutputError(f\"another run is writing {out_dir}",
           ("tests/test_runner.py",), "the --out lock not enforced"),
    Mutant("U7", "verify/runner.py", "            figures.start(suite, suite_results(suite.name))",
           "            pass", ("tests/test_runner.py",),
           "a suite's figures drawn only after every suite's cells"),
    Mutant("U6", "verify/runner.py", "    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:",
           "    if seeds is not None and not 1 <= seeds:", ("tests/test_runner.py",),
           "no upper limit on --seeds"),
    # ---- the ledger and its rules
    Mutant("L1", "verify/report/ledger.py",
           "    verdict = (\"NOT CHECKED\" if not rows else \"SUPPORTED\" if held and caught else \"NOT SUPPORTED\")",
           "    verdict = (\"NOT CHECKED\" if not rows else \"SUPPORTED\" if held else \"NOT SUPPORTED\")",
           LEDGER_TESTS, "a bound SUPPORTED though its planted wrong bound was MISSED"),
    Mutant("L2", "verify/report/ledger.py", "        if moved and not accept_new_rules:", "        if False:",
           LEDGER_TESTS, "runs judged under rules changed after them"),
    Mutant("L3", "verify/report/ledger.py", "    if not held and not failed:\n        return \"NOT CHECKED\"\n",
           "", LEDGER_TESTS, "SUPPORTED from no evidence"),
    Mutant("L4", "verify/report/ledger.py",
           "    vacuous = [r[\"claim\"] for r in known if r[\"biting_fraction\"] == 0]",
           "    vacuous = []", LEDGER_TESTS, "vacuous bounds reported SUPPORTED"),
    Mutant("L5", "verify/suites/strategy_analysis.py", "                     lambda s: s[\"high\"] < 0, \"slope interval below 0\"),",
           "                     lambda s: s[\"high\"] > 0, \"slope interval below 0\"),", LEDGER_TESTS,
           "'decreasing in n' judged as the interval above 0"),
    Mutant("L6", "verify/suites/strategy_analysis.py",
           "                     lambda s: s[\"low\"] > PERSIST_SLOPE, f\"slope interval above {PERSIST_SLOPE}\"),",
           "                     lambda s: s[\"high\"] > PERSIST_SLOPE, f\"slope interval above {PERSIST_SLOPE}\"),",
           LEDGER_TESTS, "'persists' judged on the interval's upper end"),
    Mutant("L7", "verify/suites/strategy_analysis.py",
           "    sublinear = [o for o in rows if o[\"high\"] < ORACLE_SUBLINEAR]",
           "    sublinear = [o for o in rows if o[\"slope\"] < ORACLE_SUBLINEAR]", LEDGER_TESTS,
           "n^C-sparsity judged on the point estimate, not the interval"),
    Mutant("L8", "verify/rules.py", "    if digest(then) == digest(now):\n        return []\n", "    return []\n",
           ("tests/test_rules.py",), "rule changes never detected"),
    Mutant("L9", "verify/rules.py",
           "    values = {name: (r.value if isinstance(r, Rule) else r[\"value\"]) for name, r in rules.items()}",
           "    values = {name: 0 for name in rules}", ("tests/test_rules.py",),
           "the digest ignores the rules' values"),
)
_IDS = [m.id for m in MUTANTS]
assert len(set(_IDS)) == len(_IDS), sorted({i for i in _IDS if _IDS.count(i) > 1})  # --only and --update go by id


def _run_tests(tests: tuple[str, ...], timeout: float) -> tuple[bool, str, float]:
    """(all passed, the first failing test or why, seconds)."""
    started = time.time()
    try:
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                             cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s", time.time() - started
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", out.stdout, re.M)
    if out.returncode == 0:
        return True, "", time.time() - started
    return False, failed[0] if failed else f"pytest exit {out.returncode}", time.time() - started


def run_mutant(m: Mutant, timeout: float) -> dict:
    path = os.path.join(REPO, m.path)
    with open(path) as f:
        original = f.read()
    if original.count(m.old) != 1:
        return {"id": m.id, "status": "NOT APPLIED", "by": f"the text occurs {original.count(m.old)} times",
                "seconds": 0.0}
    try:
        with open(path, "w") as f:
            f.write(original.replace(m.old, m.new))
        passed, by, seconds = _run_tests(m.tests, timeout)
    finally:
        with open(path, "w") as f:
            f.write(original)
    status = "SURVIVED" if passed else "KILLED"
    if passed and m.note:
        status = "EQUIVALENT"
    return {"id": m.id, "status": status, "by": by, "seconds": seconds}


ROW = re.compile(r"^\| (?P<id>[A-Z]+\d+) \| `[^`]+` \| .*? \| \*\*(?P<status>[A-Z ]+)\*\* \| (?P<by>.*) \| "
                 r"(?P<seconds>\d+) \|$")


def read_table(path: str) -> tuple[list[dict], str]:
    """The results and the header line of an earlier table (for ``--update``)."""
    with open(path) as f:
        text = f.read()
    header = next(line for line in text.splitlines() if line.startswith("Generated by"))
    results = []
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            by = m["by"] if not m["by"].startswith("survived; equivalent") else ""
            results.append({"id": m["id"], "status": m["status"], "by": "" if by == "-" else by,
                            "seconds": float(m["seconds"])})
    return results, header


def markdown(results: list[dict], started: str, commit: str, reruns: str = "") -> str:
    by_id = {m.id: m for m in MUTANTS}
    killed = sum(r["status"] == "KILLED" for r in results)
    equivalent = sum(r["status"] == "EQUIVALENT" for r in results)
    counted = len(results) - equivalent
    lines = [
        "# Mutation catalogue", "",
        f"Generated by `python tests/mutation_catalogue.py` (`tests/mutation_catalogue.py`) on {started}, "
        f"git commit `{commit}`; do not edit by hand.{reruns}", "",
        f"**{killed} of {counted} non-equivalent mutants killed ({100 * killed / max(counted, 1):.1f}%)**; "
        f"{equivalent} argued equivalent; {len(results)} in all. A mutant is one small wrong change to "
        "the source; it is killed when a test of its module fails.", "",
        "| mutant | file | what it changes | result | killed by (first failing test) | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        m = by_id[r["id"]]
        by = r["by"] if r["status"] != "EQUIVALENT" else f"survived; equivalent: {m.note}"
        lines.append(f"| {m.id} | `{m.path}` | {m.what} | **{r['status']}** | {by or '-'} | {r['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="mutant ids to run (default: all)")
    p.add_argument("--out", default=os.path.join(REPO, "docs", "mutation_catalogue.md"))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per mutant's tests")
    p.add_argument("--update", action="store_true",
                   help="re-run only the --only mutants and replace their rows in the existing --out table "
                        "(the header then names the re-run and its commit)")
    args = p.parse_args(argv)
    if args.update and not args.only:
        print("error: --update needs --only", file=sys.stderr)
        return 2
    chosen = [m for m in MUTANTS if args.only is None or m.id in args.only]
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *sorted({m.path for m in chosen})],
                           cwd=REPO, capture_output=True, text=True).stdout.strip()
    if dirty:
        print(f"error: uncommitted changes in mutated files:\n{dirty}", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    results = []
    for i, m in enumerate(chosen):
        r = run_mutant(m, args.timeout)
        results.append(r)
        print(f"[{i + 1}/{len(chosen)}] {m.id} {r['status']} {r['by']} ({r['seconds']:.0f} s)", flush=True)
    reruns = ""
    if args.update:
        earlier, header = read_table(args.out)
        fresh = {r["id"]: r for r in results}
        results = [fresh.get(r["id"], r) for r in earlier] + [r for r in results if r["id"] not in
                                                               {e["id"] for e in earlier}]
        started, commit = re.search(r" on (\d{4}-\d\d-\d\d \d\d:\d\d UTC), git commit `([^`]+)`", header).groups()
        reruns = (f" Mutants {', '.join(fresh)} re-run with `--update` on "
                  f"{datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} at git commit "
                  f"`{subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=REPO, capture_output=True, text=True).stdout.strip()}`.")
        # Keep the notes of other re-runs, whole and in their order (a note was
        # once looked up by its mutant list, and "G1, G2" found "G1, G2, F1").
        kept = [note[0] for note in re.finditer(r" Mutants ([A-Z0-9, ]+) re-run with [^.]*\.", header)
                if not set(note[1].split(", ")) <= set(fresh)]
        reruns = "".join(kept) + reruns
    with open(args.out, "w") as f:
        f.write(markdown(results, started, commit, reruns))
    print(f"wrote {args.out}")
    return 0 if all(r["status"] in ("KILLED", "EQUIVALENT") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
