"""Bounds on the error of top-k sparse attention (sparsity_theory/error_bounds.py).

Deterministic part (D5, D6 and the output bound hold for EVERY finite row):
hypothesis draws rows of length 2..64 (free floats, heavy ties, constant rows)
and, for every window k in [1, n-1], compares the bounds with an independent
dense NumPy reference built from the materialised softmax (extended precision,
so ``s - s^`` is meaningful down to tiny tail masses); closed cases (constant
rows, two-valued rows where the lower bounds are attained, k = n); the value
norms against NumPy; the spread bound of Lemma 4.2 Part 2 in cross and self mode
and argument validation.

Statistical part (Theorems 6.1 / 6.2 per row and in Frobenius norm): on 1000
independent query rows per configuration the per-row bounds must fail on at most
a fraction of rows consistent with delta (exact binomial test, alpha = 1e-6);
planted wrong bounds must be reported VIOLATED by the same test.

Scaling part: the n-dependence claimed by Theorems 6.1 / 6.2 as properties of
the bound functions (the upper bound with k = sqrt(n) goes to 0, the lower bound
with k = 8 stays bounded away from 0 and tends to 1/sqrt(k)).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import sparsity_theory as st
from sparsity_theory import bounds
from sparsity_theory import error_bounds as eb
from _shared import SETTINGS
from verify.sampling import STANDARD_MODELS, RowScores, sample_row_scores
from verify.statistics import binomial_check

SEEDS = 1000
DELTA = 0.05

# Reference precision: extended (80-bit on x86-64) when NumPy has it. The kept
# entries of ``s - s^`` are ``s_j - s_j / (1 - tau)``, a difference whose rounding
# error relative to its size is ~eps_ref / tau; the comparisons below allow that
# on top of the relative slack 1e-9 and only look at rows with tau > 1e-8.
REF = np.longdouble
EPS_REF = float(np.finfo(REF).eps)
REL_SLACK = 1e-9
MIN_TAU = 1e-8


# ------------------------------------------------------------ dense reference


def dense_reference(u, k: int, values=None):
    """(tau, ||s - s^||_2, ||(s - s^)^T V||_2 or None) from the materialised softmax.

    Top-k by a stable sort of -u (ties keep the first; tied entries carry equal
    mass, so tau and every norm are the same whichever tied entry is kept).
    """
    u = np.asarray(u, dtype=REF)
    s = np.exp(u - u.max())
    s = s / s.sum()
    order = np.argsort(-u, kind="stable")
    keep, drop = order[:k], order[k:]
    tau = s[drop].sum()
    s_hat = np.zeros_like(s)
    s_hat[keep] = s[keep] / s[keep].sum()
    diff = s - s_hat
    l2 = np.sqrt(np.sum(diff * diff))
    out = None
    if values is not None:
        o = diff @ np.asarray(values, dtype=REF)
        out = float(np.sqrt(np.sum(o * o)))
    return float(tau), float(l2), out


def _slack(tau):
    """Allowed error in log space: relative 1e-9 plus the reference's own error."""
    return REL_SLACK + 16 * EPS_REF / tau


# ---------------------------------------------------------------- strategies


# Row lengths: buckets spanning [2, 64], so that JAX compiles each shape of the
# output bound (the values are (n, d_v)) once rather than once per example.
ROW_LENGTHS = (2, 3, 5, 8, 13, 21, 34, 64)


@hs.composite
def rows(draw):
    """A row of n in [2, 64] scores in [-30, 30]: free floats, a few tied values, or constant."""
    n = draw(hs.sampled_from(ROW_LENGTHS))
    value = hs.floats(-30.0, 30.0, allow_nan=False, allow_infinity=False)
    kind = draw(hs.sampled_from(("free", "tied", "constant")))
    if kind == "free":
        u = draw(hs.lists(value, min_size=n, max_size=n))
    elif kind == "tied":
        pool = draw(hs.lists(hs.one_of(value, hs.sampled_from((-30.0, 0.0, 30.0))),
                             min_size=1, max_size=4, unique=True))
        u = draw(hs.lists(hs.sampled_from(pool), min_size=n, max_size=n))
    else:
        u = [draw(value)] * n
    return np.asarray(u, dtype=np.float64)


# -------------------------------------------------- deterministic forms (D5, D6)


@settings(max_examples=100, **SETTINGS)
@given(u=rows(), seed=hs.integers(0, 2**32 - 1), dv=hs.sampled_from((1, 3)))
def test_deterministic_bounds_hold_on_every_row(u, seed, dv):
    n = u.size
    spread = float(u.max() - u.min())
    values = np.random.default_rng(seed).normal(size=(n, dv))
    ks = np.arange(1, n)
    ref = np.array([dense_reference(u, k, values) for k in ks], dtype=float)  # (n-1, 3)
    tau, l2, out = ref.T
    with np.errstate(divide="ignore"):
        log_tau, log_l2, log_out = np.log(tau), np.log(l2), np.log(out)
    got = np.empty((n - 1, 5))
    for i, k in enumerate(ks):
        lo, hi = (float(b) for b in eb.log_tail_mass_bounds(spread, n, k))
        # D6 lower from D5's lower bound on tau, and from the actual tau (tighter).
        l2_lo, l2_lo_exact = np.asarray(eb.log_l2_error_lower_bound(np.array([lo, log_tau[i]]), n, k))
        l2_hi = float(eb.log_l2_error_upper_bound(spread, n, k))
        # The bundle is exactly the composition of its parts.
        assert [float(b) for b in eb.deterministic_error_bounds(spread, n, k)] == [lo, hi, l2_lo, l2_hi]
        got[i] = lo, hi, l2_lo, l2_hi, l2_lo_exact
    lo, hi, l2_lo, l2_hi, l2_lo_exact = got.T
    # The output bound broadcasts over the windows: one call for all of them.
    out_hi = np.asarray(eb.log_output_error_upper_bound(hi, l2_hi, values))
    out_hi_exact = np.asarray(eb.log_output_error_upper_bound(log_tau, log_l2, values))
    assert out_hi.shape == out_hi_exact.shape == (n - 1,)
    assert np.all(lo <= hi + 1e-12)

    ok = tau > MIN_TAU  # where the dense difference is meaningful
    if spread <= 2.0:  # nothing is tiny: every window is compared
        assert ok.all()
    slack = _slack(np.where(ok, tau, 1.0))
    ctx = dict(spread=spread, ks=ks[ok], ref=ref[ok], bounds=got[ok], out_hi=out_hi[ok])
    assert (((lo - slack <= log_tau) & (log_tau <= hi + slack)) | ~ok).all(), ctx  # D5
    assert (((l2_lo - slack <= log_l2) & (log_l2 <= l2_hi + slack)) | ~ok).all(), ctx  # D6
    assert ((l2_lo_exact - slack <= log_l2) | ~ok).all(), ctx
    assert ((log_out <= out_hi + slack) | ~ok).all(), ctx
    assert ((log_out <= out_hi_exact + slack) | ~ok).all(), ctx


@settings(max_examples=40, **SETTINGS)
@given(n=hs.integers(2, 64), c=hs.floats(-30.0, 30.0))
def test_constant_row_is_the_equality_case(n, c):
    """r = 1: tau = (n-k)/n and ||s - s^||_2^2 = (n-k)/(n k); D5's two bounds and
    D6's two bounds all meet there."""
    u = np.full(n, c)
    for k in range(1, n):
        tau, l2, _ = dense_reference(u, k)
        det = eb.deterministic_error_bounds(0.0, n, k)
        np.testing.assert_allclose(float(det.log_tail_lower), math.log((n - k) / n), rtol=0, atol=1e-13)
        np.testing.assert_allclose(float(det.log_tail_upper), math.log((n - k) / n), rtol=0, atol=1e-13)
        exact = 0.5 * math.log((n - k) / (n * k))
        np.testing.assert_allclose(float(det.log_l2_upper), exact, rtol=0, atol=1e-13)
        np.testing.assert_allclose(float(det.log_l2_lower), exact, rtol=0, atol=1e-13)
        # and that is the row's actual error
        np.testing.assert_allclose(math.log(tau), math.log((n - k) / n), rtol=0, atol=1e-12)
        np.testing.assert_allclose(2 * math.log(l2), math.log((n - k) / (n * k)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("n,k", [(2, 1), (5, 2), (64, 1), (64, 8), (64, 63)])
@pytest.mark.parametrize("spread", [0.5, 3.0, 12.0])
def test_two_valued_row_attains_both_lower_bounds(n, k, spread):
    """k entries at the maximum and n - k at the minimum: every kept entry is r
    times every dropped one, so tau is exactly D5's lower bound, and the kept and
    dropped parts are flat, so D6's Cauchy-Schwarz lower bound is attained too."""
    u = np.r_[np.full(k, spread), np.zeros(n - k)]
    tau, l2, _ = dense_reference(u, k)
    det = eb.deterministic_error_bounds(spread, n, k)
    np.testing.assert_allclose(float(det.log_tail_lower), math.log(tau), rtol=0, atol=1e-12)
    np.testing.assert_allclose(float(det.log_l2_lower), math.log(l2), rtol=0, atol=1e-12)
    r = math.exp(spread)
    np.testing.assert_allclose(math.exp(float(det.log_tail_lower)), (n - k) / (n - k + k * r), rtol=1e-13)
    # The upper bounds are strict here (they are attained only at r = 1).
    assert float(det.log_l2_upper) > math.log(l2) + 1e-3


@pytest.mark.parametrize("n", [1, 2, 9, 64])
def test_full_window_has_zero_error(n):
    spread = np.array([0.0, 1.5, 40.0])
    det = eb.deterministic_error_bounds(spread, n, n)
    for b in det:
        assert b.shape == spread.shape and np.all(np.isneginf(np.asarray(b)))
    assert np.all(np.isneginf(np.asarray(eb.log_l2_error_lower_bound(np.zeros((2, 3)), n, n))))
    assert eb.log_l2_error_lower_bound(np.zeros((2, 3)), n, n).shape == (2, 3)
    values = np.random.default_rng(n).normal(size=(n, 3))
    assert np.isneginf(float(eb.log_output_error_upper_bound(det.log_tail_upper[0], det.log_l2_upper[0], values)))
    rb = eb.row_error_bounds(np.array([0.3, 2.0]), n, n, DELTA)
    assert all(np.all(np.isneginf(np.asarray(b))) for b in rb)


def test_closed_forms_and_monotonicity_in_the_spread():
    n, k = 100, 10
    spread = np.linspace(0.0, 20.0, 201)
    lo, hi = (np.asarray(b) for b in eb.log_tail_mass_bounds(spread, n, k))
    r = np.exp(spread)
    np.testing.assert_allclose(np.exp(lo), (n - k) / (n - k + k * r), rtol=1e-13)
    np.testing.assert_allclose(np.exp(hi), np.minimum(1 - k / n, (n - k) * r / (k + (n - k) * r)), rtol=1e-13)
    np.testing.assert_allclose(np.exp(np.asarray(eb.log_l2_error_upper_bound(spread, n, k))),
                               r * math.sqrt((n - k) / (n * k)), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(eb.log_l2_error_lower_bound(lo, n, k)),
                               lo + 0.5 * math.log(n / (k * (n - k))), rtol=1e-13)
    # Substituting an upper bound on the spread is valid because of these.
    assert np.all(np.diff(lo) < 0) and np.all(np.diff(hi) >= 0)
    assert np.all(np.diff(np.asarray(eb.log_l2_error_upper_bound(spread, n, k))) > 0)


# --------------------------------------------------------------- value norms


@pytest.mark.parametrize("shape", [(7, 3), (1, 2), (4, 16, 5), (2, 3, 9, 1)])
def test_value_norms_match_numpy(shape):
    v = np.random.default_rng(len(shape) * 100 + shape[-2]).normal(2.0, 3.0, size=shape)
    centred = v - v.mean(axis=-2, keepdims=True)
    flat = centred.reshape((-1,) + shape[-2:])
    radius = np.max(np.linalg.norm(centred, axis=-1), axis=-1)
    spectral = np.array([np.linalg.norm(m, 2) for m in flat]).reshape(shape[:-2])
    got_r, got_s = np.asarray(eb.value_radius(v)), np.asarray(eb.value_spectral_norm(v))
    assert got_r.shape == shape[:-2] and got_s.shape == shape[:-2]
    np.testing.assert_allclose(got_r, radius, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_s, spectral, rtol=1e-12, atol=1e-12)
    # Centred: a common shift of every row changes neither.
    shifted = v + np.linspace(-5, 5, shape[-1])
    np.testing.assert_allclose(np.asarray(eb.value_radius(shifted)), radius, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(np.asarray(eb.value_spectral_norm(shifted)), spectral, rtol=1e-10, atol=1e-10)
    # Spectral norm between the largest row norm and the Frobenius norm.
    assert np.all(got_r <= got_s * (1 + 1e-12))
    assert np.all(got_s <= np.linalg.norm(flat, axis=(-2, -1)).reshape(shape[:-2]) * (1 + 1e-12))


def test_output_bound_broadcasts_over_a_batch_of_value_matrices():
    rng = np.random.default_rng(5)
    v = rng.normal(size=(3, 10, 4))
    log_tail, log_l2 = np.log([0.1, 0.5, 0.9]), np.log([0.05, 0.2, 0.01])
    got = np.asarray(eb.log_output_error_upper_bound(log_tail, log_l2, v))
    assert got.shape == (3,)
    for b in range(3):
        c = v[b] - v[b].mean(axis=0)
        expected = min(2 * math.exp(log_tail[b]) * np.linalg.norm(c, axis=1).max(),
                       math.exp(log_l2[b]) * np.linalg.norm(c, 2))
        np.testing.assert_allclose(math.exp(got[b]), expected, rtol=1e-12)


def test_value_norms_reject_vectors():
    for f in (eb.value_radius, eb.value_spectral_norm):
        with pytest.raises(ValueError, match="values must have at least 2"):
            f(np.ones(5))


# ------------------------------------------------------- spread bound (L4.2 P2)


@pytest.mark.parametrize("n", [2, 17, 256, 10**6])
@pytest.mark.parametrize("delta", [1e-6, 0.05, 0.5])
def test_row_spread_bound_closed_forms(n, delta):
    sigma = np.array([0.0, 0.3, 1.0, 4.5])
    cross = np.asarray(eb.row_spread_bound(sigma, n, delta))
    np.testing.assert_allclose(cross, 2 * np.asarray(bounds.score_deviation_bound(sigma, n, delta)), rtol=1e-14)
    np.testing.assert_allclose(cross, 2 * sigma * math.sqrt(2 * math.log(2 * n / delta)), rtol=1e-14)
    t = sigma * math.sqrt(2 * math.log(2 * (n - 1) / delta))  # n - 1 independent keys
    for offset in (0.0, 0.5, -0.5, 7.0, -7.0, np.array([0.0, -3.0, 2.0, 30.0])):
        got = np.asarray(eb.row_spread_bound(sigma, n, delta, "self", diagonal_offset=offset))
        np.testing.assert_allclose(got, t + np.maximum(t, np.abs(offset)), rtol=1e-14, atol=1e-300)
        # the diagonal can only widen the row: never below the off-diagonal spread 2t
        assert np.all(got >= 2 * t * (1 - 1e-14))


def test_self_mode_spread_bound_is_the_worst_case_of_the_event():
    """On the event |u_ij - mu| <= t (j != i) the full row's spread is at most
    t + max(t, |offset|), and that is attained: scores at mu +- t with the diagonal at
    mu + offset."""
    n, delta, sigma = 50, 0.1, 0.8
    t = float(bounds.score_deviation_bound(sigma, n - 1, delta))
    for offset in np.linspace(-3 * t, 3 * t, 13):
        off_diag = np.r_[t, -t, np.zeros(n - 3)]
        row = np.r_[off_diag, offset]
        rho = float(eb.row_spread_bound(sigma, n, delta, "self", diagonal_offset=offset))
        np.testing.assert_allclose(row.max() - row.min(), rho, rtol=1e-12)


def test_spread_and_row_bounds_reject_bad_arguments():
    with pytest.raises(ValueError, match="self mode needs diagonal_offset"):
        eb.row_spread_bound(1.0, 10, 0.05, "self")
    with pytest.raises(ValueError, match="diagonal_offset is for self mode only"):
        eb.row_spread_bound(1.0, 10, 0.05, "cross", diagonal_offset=0.0)
    for bad in (0.0, 1.0, -0.2, 1.5, float("nan")):
        with pytest.raises(ValueError, match="delta must lie in"):
            eb.row_spread_bound(1.0, 10, bad)
        with pytest.raises(ValueError, match="delta must lie in"):
            eb.row_spread_bound(1.0, 10, bad, "self", diagonal_offset=0.0)
        with pytest.raises(ValueError, match="delta must lie in"):
            eb.row_error_bounds(1.0, 10, 3, bad)
        with pytest.raises(ValueError, match="delta must lie in"):
            eb.frobenius_error_bounds(np.ones(4), 10, 3, bad)
    for k in (0, -1, 11):
        with pytest.raises(ValueError, match=r"k must be in \[1, n\]"):
            eb.row_error_bounds(1.0, 10, k, 0.05)
        with pytest.raises(ValueError, match=r"k must be in \[1, n\]"):
            eb.deterministic_error_bounds(1.0, 10, k)
        with pytest.raises(ValueError, match=r"k must be in \[1, n\]"):
            eb.frobenius_error_bounds(np.ones(4), 10, k, 0.05)
    with pytest.raises(ValueError, match="k must be an integer"):
        eb.log_tail_mass_bounds(1.0, 10, 2.5)
    with pytest.raises(ValueError, match="n must be >= 1"):
        eb.log_l2_error_upper_bound(1.0, 0, 1)
    for n in (0, 1):
        with pytest.raises(ValueError, match="self mode needs n >= 2"):
            eb.row_spread_bound(1.0, n, 0.05, "self", diagonal_offset=0.0)
        with pytest.raises(ValueError, match="self mode needs n >= 2"):
            eb.row_error_bounds(1.0, n, 1, 0.05, "self", diagonal_offset=0.0)
    for bad in (float("nan"), float("inf"), -float("inf"), np.array([0.0, np.nan])):
        with pytest.raises(ValueError, match="diagonal_offset must be finite"):
            eb.row_spread_bound(np.ones(2), 10, 0.05, "self", diagonal_offset=bad)
    with pytest.raises(ValueError, match="mode must be 'self' or 'cross'"):
        eb.row_spread_bound(1.0, 10, 0.05, "both")
    with pytest.raises(ValueError, match="sigma must have at least 1"):
        eb.frobenius_error_bounds(1.0, 10, 3, 0.05)


# -------------------------------------- Theorems 6.1 / 6.2 at their probability

WINDOWS = (1, 8, 16, 128)
# (model, mode, score scale): scales chosen so that the median sigma_i is about
# 0.5-0.7, where the bounds are not vacuous (rho ~ 5).
PROB_CONFIGS = [
    ("gaussian", "cross", 0.25),
    ("gaussian", "self", 0.25),
    ("uniform", "cross", 0.7),
    ("uniform", "self", 0.7),
]


def _sample(name, n, mode, scale, seed_base, d=8):
    """Row 0 per seed (verify.sampling) at score scale ``scale``. Scores, sigma_i,
    mu_i and the diagonal are all linear in the scale, so the rows are drawn at
    scale 1 and rescaled: one compiled sampler per (model, n, d, mode)."""
    rows = sample_row_scores(STANDARD_MODELS[name], n, d, mode, SEEDS, seed_base=seed_base)
    return RowScores(*(None if a is None else scale * a for a in rows))


def _full_rows(rows):
    """Row 0 over all n keys (self mode: the diagonal score put back) and the
    diagonal offset u_00 - mu_0 the self-mode bound needs (None in cross mode)."""
    if rows.diagonal is None:
        return rows.scores, None
    return np.concatenate([rows.diagonal[:, None], rows.scores], axis=1), rows.diagonal - rows.mean


def _check(failed, label, verdict="HOLDS"):
    check = binomial_check(int(np.sum(failed)), int(np.size(failed)), DELTA)
    assert check.verdict == verdict, (label, check)
    return check


@pytest.mark.parametrize("index", range(len(PROB_CONFIGS)))
def test_row_error_bounds_hold_with_probability_one_minus_delta(index):
    name, mode, scale = PROB_CONFIGS[index]
    n, d, dv = 256, 8, 4
    rows = _sample(name, n, mode, scale, seed_base=600 + index, d=d)
    full, offset = _full_rows(rows)
    assert full.shape == (SEEDS, n)
    values = np.random.default_rng(index).normal(size=(SEEDS, n, dv))
    errs = st.sparse_attention_errors(full[:, None, :], WINDOWS, values)
    log_tau = np.asarray(errs.log_tail_mass)[:, 0, :]
    log_l2 = np.asarray(errs.log_l2)[:, 0, :]
    log_out = np.asarray(errs.log_output)[:, 0, :]
    # The theorems' event (spread <= rho) covers every window at once, so a row
    # fails when any of its bounds fails for any window.
    lower_failed = np.zeros(SEEDS, bool)
    upper_failed = np.zeros(SEEDS, bool)
    gaps = []
    for i, k in enumerate(WINDOWS):
        b = eb.row_error_bounds(rows.sigma, n, k, DELTA, mode, offset)
        assert all(np.shape(x) == (SEEDS,) for x in b)
        lower_failed |= (log_tau[:, i] < np.asarray(b.log_tail_lower)) | (log_l2[:, i] < np.asarray(b.log_l2_lower))
        out_hi = np.asarray(eb.log_output_error_upper_bound(b.log_tail_upper, b.log_l2_upper, values))
        upper_failed |= ((log_tau[:, i] > np.asarray(b.log_tail_upper)) | (log_l2[:, i] > np.asarray(b.log_l2_upper))
                         | (log_out[:, i] > out_hi))
        rho = np.asarray(eb.row_spread_bound(rows.sigma, n, DELTA, mode, offset))
        gaps.append(np.median(np.asarray(b.log_l2_upper) - rho - log_l2[:, i]))
    _check(lower_failed, "Theorem 6.2 (lower)")
    _check(upper_failed, "Theorem 6.1 (upper)")
    _check(lower_failed | upper_failed, "both together")
    # Informative: the upper bound's looseness is the factor e^rho it pays for the
    # spread, and little more (the rows are close to the constant row's error).
    assert all(0 < g < 1 for g in gaps), gaps


def test_wrong_upper_bound_is_caught():
    """Planted: the upper bound with the spread set to 0 (r = 1), i.e. claiming the
    constant row is the worst case. Measured: Gaussian cross, n = 1024, median
    sigma ~0.6, k = 4, it fails on ~22% of rows; the true bound never does. There
    tau ~ 0.98, so ||s - s^||_2^2 ~ tau^2 sum_T (s_j / (1 - tau))^2, which exceeds
    the constant row's (n-k)/(nk) ~ 1/k as soon as the k kept entries are unequal
    enough (failing rows: s_(1)/s_(2) ~ 1.5, others ~ 1.1). At n = 256 it fails
    on at most ~6% of rows, too few to refute delta = 0.05 with 1000 seeds."""
    n, k = 1024, 4
    rows = _sample("gaussian", n, "cross", 0.3, seed_base=61)
    log_l2 = np.asarray(st.sparse_attention_errors(rows.scores, (k,)).log_l2)[:, 0]
    wrong = np.asarray(eb.row_error_bounds(0.0 * rows.sigma, n, k, DELTA).log_l2_upper)
    right = np.asarray(eb.row_error_bounds(rows.sigma, n, k, DELTA).log_l2_upper)
    _check(log_l2 > right, "true upper bound")
    check = _check(log_l2 > wrong, "upper bound with r = 1", verdict="VIOLATED")
    assert check.empirical_rate > 0.1, check


@pytest.mark.parametrize("mode", ["cross", "self"])
def test_wrong_lower_bound_is_caught(mode):
    """Planted: the l2 lower bound with tau replaced by 1 (sqrt(n / (k (n-k)))) at
    large sigma (median ~2), where the tail mass is small; the true bound holds."""
    n, k = 256, WINDOWS[1]
    rows = _sample("gaussian", n, mode, 1.0, seed_base=62)
    full, offset = _full_rows(rows)
    log_l2 = np.asarray(st.sparse_attention_errors(full, WINDOWS).log_l2)[:, 1]
    right = np.asarray(eb.row_error_bounds(rows.sigma, n, k, DELTA, mode, offset).log_l2_lower)
    wrong = float(eb.log_l2_error_lower_bound(0.0, n, k))
    _check(log_l2 < right, "true lower bound")
    check = _check(log_l2 < wrong, "lower bound with tau = 1", verdict="VIOLATED")
    assert check.empirical_rate > 0.9, check


# ---------------------------------------------------------------- Frobenius


def _full_attention(seed, model, n, d, mode, scale):
    """Scores of all n query rows, sigma_i and mu_i for every row."""
    key = jax.random.PRNGKey(seed)
    weights = st.gaussian_weights(jax.random.fold_in(key, 0), d)
    inp = st.sample_inputs(jax.random.fold_in(key, 1), n, d, model, mode)
    w = jax.vmap(lambda x: bounds.row_weight_vector(x, weights, scale))(inp.x)
    sigma = jax.vmap(lambda x: bounds.row_score_scale(x, weights, model, scale))(inp.x)
    mean = jax.vmap(lambda x: bounds.row_score_mean(x, weights, model, scale))(inp.x)
    return np.asarray(w @ inp.y.T), np.asarray(sigma), np.asarray(mean)


@pytest.mark.parametrize("mode", ["cross", "self"])
@pytest.mark.parametrize("model_name", ["gaussian-shifted", "uniform"])
def test_frobenius_bounds_bracket_the_matrix_error(mode, model_name):
    n, d, scale = 128, 8, 0.3
    model = STANDARD_MODELS[model_name]
    windows = (1, 4, 11, 64, 127, 128)
    for seed in range(3):
        u, sigma, mean = _full_attention(seed, model, n, d, mode, scale)
        offset = np.diag(u) - mean if mode == "self" else None
        log_l2 = st.sparse_attention_errors(u, windows).log_l2  # (n, W)
        log_total, log_rms = (np.asarray(a) for a in st.frobenius_aggregate(log_l2))
        np.testing.assert_allclose(log_rms, log_total - 0.5 * math.log(n), rtol=1e-12)
        for i, k in enumerate(windows):
            lo, hi = (float(b) for b in eb.frobenius_error_bounds(sigma, n, k, DELTA, mode, offset))
            if k == n:
                assert lo == hi == log_total[i] == -math.inf
                continue
            assert lo <= log_total[i] <= hi, (seed, k, lo, log_total[i], hi)
            # Each row at delta / m (union bound over the m = n rows).
            rb = eb.row_error_bounds(sigma, n, k, DELTA / n, mode, offset)
            np.testing.assert_allclose(lo, 0.5 * np.logaddexp.reduce(2 * np.asarray(rb.log_l2_lower)), rtol=1e-12)
            np.testing.assert_allclose(hi, 0.5 * np.logaddexp.reduce(2 * np.asarray(rb.log_l2_upper)), rtol=1e-12)


def test_frobenius_bounds_batch_over_matrices():
    rng = np.random.default_rng(3)
    sigma = rng.uniform(0.1, 1.0, size=(2, 3, 16))
    lo, hi = eb.frobenius_error_bounds(sigma, 16, 4, DELTA)
    assert lo.shape == hi.shape == (2, 3)
    one_lo, one_hi = eb.frobenius_error_bounds(sigma[1, 2], 16, 4, DELTA)
    np.testing.assert_allclose([lo[1, 2], hi[1, 2]], [one_lo, one_hi], rtol=1e-14)
    assert np.all(np.asarray(lo) < np.asarray(hi))


# ------------------------------------------------- scaling of Theorems 6.1 / 6.2

NS = [2**j for j in range(10, 21)]


def _sqrt_window(n: int) -> int:
    return max(1, round(math.sqrt(n)))


@pytest.mark.parametrize("sigma", [0.05, 0.25, 0.5])
def test_upper_bound_with_sqrt_n_window_decreases_in_n(sigma):
    """Theorem 6.1 with k = n^{1/2}: log upper = rho(n) + (1/2) log((n-k)/(nk)),
    rho = 2 sigma sqrt(2 ln(2n/delta)). Its derivative in L = ln n is about
    sigma sqrt(2) / sqrt(L + ln(2/delta)) - 1/4 < 0 once L + ln(2/delta) > 32 sigma^2,
    which holds for all n >= 2^10 when sigma <= 0.57."""
    ups = np.array([float(eb.row_error_bounds(sigma, n, _sqrt_window(n), DELTA).log_l2_upper) for n in NS])
    assert np.all(np.diff(ups) < 0), ups
    # and it is the closed form
    for n, up in zip(NS, ups):
        k = _sqrt_window(n)
        rho = 2 * sigma * math.sqrt(2 * math.log(2 * n / DELTA))
        np.testing.assert_allclose(up, rho + 0.5 * math.log((n - k) / (n * k)), rtol=1e-12)


def test_upper_bound_turns_down_where_derived_for_sigma_one():
    """sigma = 1: 32 sigma^2 - ln(2/delta) = 28.3 = ln n at n ~ 2^40.8. The bound
    grows with n up to there and then falls to 0 (Theorem 6.1 is asymptotic)."""
    sigma = 1.0

    def up(j):
        n = 2**j
        return float(eb.row_error_bounds(sigma, n, 2 ** (j // 2), DELTA).log_l2_upper)

    early = [up(j) for j in range(10, 38, 2)]
    late = [up(j) for j in range(44, 301, 8)]
    assert np.all(np.diff(early) > 0), early
    assert np.all(np.diff(late) < 0), late
    # log bound ~ 2 sqrt(2 (L + ln(2/delta))) - L/4 = -9.6 at L = ln 2^300 = 208: on its way to 0
    assert late[-1] < -9.0, late


@pytest.mark.parametrize("sigma", [0.1, 0.25, 0.5])
def test_lower_bound_with_constant_window_tends_to_one_over_sqrt_k(sigma):
    """Theorem 6.2 with k = 8: l2 lower = sqrt(n/(k(n-k))) (n-k)/(n-k + k e^rho).
    e^rho / n decreases in n (d rho / d ln n = sigma sqrt(2 / (L + ln(2/delta))) < 1),
    so for n >= n0 = 2^10 the bound is at least its value at n0,
    c = (1/sqrt(k)) / (1 + k e^{rho(n0)} / (n0 - k)) (dropping sqrt(n/(n-k)) >= 1),
    never above 1/sqrt(k), and it tends to 1/sqrt(k)."""
    k, n0 = 8, NS[0]
    rho0 = 2 * sigma * math.sqrt(2 * math.log(2 * n0 / DELTA))
    c = (1 / math.sqrt(k)) / (1 + k * math.exp(rho0) / (n0 - k))
    if sigma <= 0.25:
        assert c > 0.9 / math.sqrt(k)
    ns = NS + [2**30, 2**45, 2**60]
    b = [eb.row_error_bounds(sigma, n, k, DELTA) for n in ns]
    low = np.exp([float(x.log_l2_lower) for x in b])
    tail = np.exp([float(x.log_tail_lower) for x in b])
    assert np.all(np.diff(low) > 0) and np.all(np.diff(tail) > 0)
    assert np.all(low >= c * (1 - 1e-12)), (low, c)
    assert np.all(low <= (1 / math.sqrt(k)) * (1 + 1e-12))
    assert abs(low[-1] * math.sqrt(k) - 1) < 1e-9 and abs(tail[-1] - 1) < 1e-9
    assert low[NS.index(2**20)] * math.sqrt(k) > 0.99  # k e^rho / n <= 3e-3 at 2^20


def test_lower_bound_with_log_window_still_does_not_vanish():
    """Theorem 6.2 also for k = ceil(ln n): sqrt(k) x the lower bound tends to 1, so
    the error stays of order 1/sqrt(ln n) and does not go to 0 polynomially."""
    sigma = 0.25
    ns = [2**j for j in range(10, 61, 5)]
    scaled = [math.sqrt(math.ceil(math.log(n))) * math.exp(float(
        eb.row_error_bounds(sigma, n, math.ceil(math.log(n)), DELTA).log_l2_lower)) for n in ns]
    assert scaled[0] > 0.5 and scaled[-1] > 1 - 1e-9
    assert np.all(np.diff(scaled) > 0), scaled


def test_negative_or_non_finite_spread_and_sigma_are_rejected():
    with pytest.raises(ValueError, match="spread"):
        eb.log_tail_mass_bounds(-0.5, 16, 4)
    with pytest.raises(ValueError, match="spread"):
        eb.log_l2_error_upper_bound(np.array([1.0, np.nan]), 16, 4)
    with pytest.raises(ValueError, match="sigma"):
        eb.row_spread_bound(-1.0, 16, 0.05)
    with pytest.raises(ValueError, match="sigma"):
        eb.row_error_bounds(np.inf, 16, 4, 0.05)


# ------------------------------------------- JAX transformations, dtypes, validation

from jax.experimental import checkify  # noqa: E402


def test_error_bounds_jit_vmap_grad_match_eager():
    n, k = 256, 16
    sigma = np.array([0.2, 0.9, 1.7])
    deltas = np.array([1e-4, 0.05, 0.3])
    eager = eb.row_error_bounds(sigma, n, k, 0.05)
    jitted = jax.jit(lambda s, d: eb.row_error_bounds(s, n, k, d))(sigma, 0.05)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(j), np.asarray(e), rtol=1e-14)
    mapped = jax.vmap(lambda s, d: eb.row_error_bounds(s, n, k, d))(sigma, deltas)
    for field, m in zip(eb.ErrorBounds._fields, mapped):
        expected = [float(getattr(eb.row_error_bounds(s, n, k, d), field)) for s, d in zip(sigma, deltas)]
        np.testing.assert_allclose(np.asarray(m), expected, rtol=1e-14)
    # grad of the log l2 upper bound in sigma: d/dsigma (rho + const) = 2 sqrt(2 ln(2n/delta)).
    g = jax.grad(lambda s: eb.row_error_bounds(s, n, k, 0.05).log_l2_upper)(0.7)
    np.testing.assert_allclose(float(g), 2 * math.sqrt(2 * math.log(2 * n / 0.05)), rtol=1e-13)
    lo, hi = eb.frobenius_error_bounds(sigma, n, k, 0.05)
    jl, jh = jax.jit(lambda s: eb.frobenius_error_bounds(s, n, k, 0.05))(sigma)
    np.testing.assert_allclose([float(jl), float(jh)], [float(lo), float(hi)], rtol=1e-14)
    v = np.random.default_rng(0).normal(size=(4, 10, 3))
    out = eb.log_output_error_upper_bound(np.log([0.1, 0.2, 0.3, 0.4]), np.log([0.1] * 4), v)
    np.testing.assert_allclose(np.asarray(jax.jit(eb.log_output_error_upper_bound)(
        np.log([0.1, 0.2, 0.3, 0.4]), np.log([0.1] * 4), v)), np.asarray(out), rtol=1e-13)
    np.testing.assert_allclose(np.asarray(jax.vmap(eb.value_radius)(v)), np.asarray(eb.value_radius(v)), rtol=1e-14)
    gs = jax.grad(lambda s: jnp.sum(eb.log_tail_mass_bounds(s, n, k)[1]))(np.array([0.5, 2.0]))
    assert np.all(np.isfinite(np.asarray(gs))) and np.all(np.asarray(gs) >= 0)  # upper bound increasing in spread


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_error_bounds_keep_the_dtype(dtype):
    n, k = 64, 8
    sigma, spread = np.array([0.3, 1.1], dtype=dtype), np.array([0.0, 3.0], dtype=dtype)
    for arr in (*eb.row_error_bounds(sigma, n, k, 0.05), *eb.deterministic_error_bounds(spread, n, k),
                *eb.frobenius_error_bounds(sigma, n, k, 0.05), eb.row_spread_bound(sigma, n, 0.05),
                eb.row_spread_bound(sigma, n, 0.05, "self", diagonal_offset=dtype(0.5))):
        assert np.asarray(arr).dtype == dtype
    v = np.random.default_rng(1).normal(size=(10, 3)).astype(dtype)
    assert np.asarray(eb.value_radius(v)).dtype == dtype
    assert np.asarray(eb.value_spectral_norm(v)).dtype == dtype
    assert np.asarray(eb.log_output_error_upper_bound(dtype(-1.0), dtype(-2.0), v)).dtype == dtype
    f64 = eb.row_error_bounds(sigma.astype(np.float64), n, k, 0.05)
    for a, b in zip(eb.row_error_bounds(sigma, n, k, 0.05), f64):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b), rtol=1e-5 if dtype == np.float32 else 0)


def test_value_helpers_reject_bad_values_naming_the_argument():
    good = np.ones((4, 3))
    for f in (eb.value_radius, eb.value_spectral_norm,
              lambda v: eb.log_output_error_upper_bound(-1.0, -1.0, v)):
        with pytest.raises(ValueError, match="values must be finite"):
            f(np.where(np.eye(4, 3) > 0, np.nan, good))
        with pytest.raises(ValueError, match="values must be finite"):
            f(np.full((4, 3), np.inf))
        for empty in (np.ones((0, 3)), np.ones((4, 0)), np.ones((2, 0, 3))):
            with pytest.raises(ValueError, match="values must not be empty"):
                f(empty)
    for bad in (-1.0, np.nan, np.inf):
        with pytest.raises(ValueError, match="radius"):
            eb.log_output_error_bound_from_norms(-1.0, -1.0, bad, 1.0)
        with pytest.raises(ValueError, match="spectral"):
            eb.log_output_error_bound_from_norms(-1.0, -1.0, 1.0, bad)
    for bad in (np.nan, np.inf):
        with pytest.raises(ValueError, match="log_tail_upper"):
            eb.log_output_error_bound_from_norms(bad, -1.0, 1.0, 1.0)
        with pytest.raises(ValueError, match="log_l2_upper"):
            eb.log_output_error_upper_bound(-1.0, bad, good)
        with pytest.raises(ValueError, match="log_tail_mass"):
            eb.log_l2_error_lower_bound(bad, 10, 3)
    # -inf is an exact zero (k = n), allowed.
    assert np.isneginf(float(eb.log_output_error_bound_from_norms(-np.inf, -np.inf, 1.0, 1.0)))
    with pytest.raises(ValueError, match="sigma must not be empty"):
        eb.frobenius_error_bounds(np.ones(0), 10, 3, 0.05)


def test_error_bound_values_checked_under_jit_with_checkify():
    f = checkify.checkify(jax.jit(lambda v: eb.value_radius(v, checked=True)), errors=checkify.user_checks)
    err, out = f(jnp.ones((4, 3)))
    assert err.get() is None and float(out) == 0.0
    err, _ = f(jnp.full((4, 3), jnp.nan))
    with pytest.raises(checkify.JaxRuntimeError, match="values"):
        err.throw()
    g = checkify.checkify(jax.jit(lambda s, d: eb.row_error_bounds(s, 64, 8, d, checked=True)),
                          errors=checkify.user_checks)
    err, _ = g(jnp.array([1.0, -1.0]), 0.05)
    with pytest.raises(checkify.JaxRuntimeError, match="sigma"):
        err.throw()
    err, _ = g(jnp.array([1.0]), 2.0)
    with pytest.raises(checkify.JaxRuntimeError, match="delta"):
        err.throw()
    # Without checked=True, jit skips the value checks (no error, a NaN out).
    assert np.isnan(float(jax.jit(eb.value_radius)(jnp.full((4, 3), jnp.nan))))


@pytest.mark.parametrize("mode, offset", [("cross", None), ("self", 0.3)])
def test_vmap_and_jit_over_n_and_k(mode, offset):
    """n and k may be integer arrays: vmap over (n, k) and jit with traced n, k
    give the eager values of Python-int calls, k = n included (l2 lower -inf)."""
    ns = jnp.array([64, 256, 1024, 1024])
    ks = jnp.array([1, 16, 512, 1024])

    def bounds(n, k):
        return eb.row_error_bounds(0.7, n, k, 0.05, mode, offset)
    mapped = jax.vmap(bounds)(ns, ks)
    jitted = jax.jit(bounds)(ns, ks)
    for i in range(len(ns)):
        eager = bounds(int(ns[i]), int(ks[i]))
        for got_v, got_j, want in zip(mapped, jitted, eager):
            np.testing.assert_allclose(got_v[i], want, rtol=1e-12)
            np.testing.assert_allclose(got_j[i], want, rtol=1e-12)
    assert mapped.log_l2_lower[-1] == -np.inf  # k = n drops nothing
    with pytest.raises(ValueError, match="k must be in"):
        eb.log_tail_mass_bounds(0.5, jnp.array([10]), jnp.array([11]))
