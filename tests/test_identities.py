"""Property tests of the exact facts D1-D6 (THEORY_NOTES.md, "Exact facts").

Every fact is checked through the public API on arbitrary finite float64 logit
rows, including extreme logits (|u| up to 1e4), exact ties, n = 1, k = 1, k = n
and tail masses far below the float epsilon (and below 1e-30).

The checks compare the library's factorised, log-domain errors with quantities
computed here independently: a dense NumPy computation of ``s - s^`` where the
tail mass is large enough for it to be meaningful (tau > 1e-6), and log-domain
NumPy/SciPy evaluations of the exact forms (which stay exact for any tau).

Speed: JAX compiles once per shape and per static window tuple, so n is drawn
from a few buckets and the windows are always the full tuple 1..n (one compile
per bucket); functions with a static ``k`` are only called for a few k per n.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy.special import logsumexp

import sparsity_theory as st
from _shared import EPS64, N_BUCKETS, SETTINGS, all_windows, few_windows, tiny_value

D_V = 3

# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

WIDE = hs.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
NARROW = hs.floats(-5.0, 5.0, allow_nan=False, allow_infinity=False)


@hs.composite
def logit_rows(draw, ns=N_BUCKETS):
    """One float64 row of logits, shape (n,)."""
    n = draw(hs.sampled_from(ns))
    kind = draw(hs.sampled_from(["wide", "narrow", "ties", "mixed", "spike", "ladder"]))
    if kind == "wide":
        u = draw(hs.lists(WIDE, min_size=n, max_size=n))
    elif kind == "narrow":
        u = draw(hs.lists(NARROW, min_size=n, max_size=n))
    elif kind == "ties":
        pool = draw(hs.lists(hs.one_of(WIDE, NARROW), min_size=1, max_size=3))
        u = draw(hs.lists(hs.sampled_from(pool), min_size=n, max_size=n))
    elif kind == "mixed":
        pool = draw(hs.lists(NARROW, min_size=1, max_size=2))
        u = draw(hs.lists(hs.one_of(WIDE, hs.sampled_from(pool)), min_size=n, max_size=n))
    elif kind == "spike":
        # One logit far above the rest: tails below e^-80 ~ 1e-35.
        u = draw(hs.lists(NARROW, min_size=n, max_size=n))
        i = draw(hs.integers(0, n - 1))
        u[i] = max(u) + draw(hs.floats(80.0, 1e4))
    else:  # "ladder": every tail tiny, each a different order of magnitude
        gap = draw(hs.floats(20.0, 300.0))
        perm = draw(hs.permutations(list(range(n))))
        u = [-gap * p for p in perm]
    return np.asarray(u, dtype=np.float64)


@hs.composite
def rows_and_values(draw):
    u = draw(logit_rows())
    n = u.shape[0]
    kind = draw(hs.sampled_from(["floats", "pool", "equal"]))
    # No subnormal values: XLA on CPU flushes them to zero (not a concern here);
    # tiny normal values (down to ~1e-300) are included.
    elem = hs.floats(-100.0, 100.0, allow_subnormal=False)
    elem = hs.one_of(elem, elem.map(tiny_value))
    if kind == "floats":
        v = draw(hs.lists(elem, min_size=n * D_V, max_size=n * D_V))
    elif kind == "pool":
        pool = draw(hs.lists(elem, min_size=1, max_size=2))
        v = draw(hs.lists(hs.sampled_from(pool), min_size=n * D_V, max_size=n * D_V))
    else:
        row = draw(hs.lists(elem, min_size=D_V, max_size=D_V))
        v = row * n
    return u, np.asarray(v, dtype=np.float64).reshape(n, D_V)


# --------------------------------------------------------------------------
# Independent NumPy helpers
# --------------------------------------------------------------------------


def errors(u: np.ndarray, values=None):
    """Library errors for one row, each as a 1-D float64 array over k = 1..n."""
    e = st.sparse_attention_errors(u[None, :], all_windows(u.shape[0]), values)
    return {
        name: (None if arr is None else np.asarray(arr, np.float64)[0])
        for name, arr in zip(e._fields, e)
    }


def dense_softmax(u: np.ndarray) -> np.ndarray:
    e = np.exp(u - u.max())
    return e / e.sum()


def dense_sparse(u: np.ndarray, mask: np.ndarray) -> np.ndarray:
    kept = np.where(mask, u, -np.inf)
    e = np.exp(kept - kept.max())
    return e / e.sum()


def library_mask(u: np.ndarray, k: int) -> np.ndarray:
    return np.asarray(st.top_k_mask(u[None, :], k))[0]


def log_sum(x: np.ndarray) -> float:
    return -math.inf if x.size == 0 else float(logsumexp(x))


def ref_log_quantities(u: np.ndarray, mask: np.ndarray):
    """log tau, log(1 - tau), log sum_T s^2, log sum_notT s^2 (log domain)."""
    log_s = u - logsumexp(u)
    return (
        log_sum(log_s[~mask]),
        log_sum(log_s[mask]),
        log_sum(2 * log_s[mask]),
        log_sum(2 * log_s[~mask]),
    )


def scaled_norm(x: np.ndarray) -> float:
    """Euclidean norm that does not underflow for entries below 1e-154
    (np.linalg.norm squares unscaled)."""
    big = float(np.max(np.abs(x))) if x.size else 0.0
    return 0.0 if big == 0.0 else big * float(np.sqrt(np.sum((x / big) ** 2)))


def weighted_mean(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    w = np.exp(u - u.max())
    return (w @ v) / w.sum()


def assert_log_close(got, want, atol, rtol=0.0, what=""):
    """Equal -inf positions; elsewhere |got - want| <= atol + rtol |want|."""
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, what
    ninf_g, ninf_w = np.isneginf(got), np.isneginf(want)
    assert np.array_equal(ninf_g, ninf_w), f"{what}: -inf mismatch {got} vs {want}"
    assert np.all(np.isfinite(got[~ninf_g])), f"{what}: non-finite {got}"
    ok = ~ninf_w
    diff = np.abs(got[ok] - want[ok])
    tol = atol + rtol * np.abs(want[ok])
    assert np.all(diff <= tol), f"{what}: got {got}, want {want}, diff {diff}, tol {tol}"


def log_atol(*scales: float) -> float:
    """Absolute rounding slack for log-domain quantities of logits of this size."""
    return 64 * EPS64 * (1.0 + sum(abs(s) for s in scales))


def gap_atol(n: int, logit_scale: float, vmax: float) -> float:
    """Absolute slack for the mean gap ||mu_tail - mu_head||: the library merges
    means with weights exp(logit - logsumexp), whose rounding is ~eps |u| per merge,
    so the gap carries ~n eps |u| max|V| of error (e.g. ~6e-14 for equal value rows
    and logits 127, where the exact gap is 0)."""
    return 4 * n * EPS64 * (1.0 + abs(logit_scale)) * vmax


def dense_rtol(n: int, tau: float) -> float:
    """Relative error of a dense float64 sum of |s - s^| (absolute ~ n eps)."""
    return 1e-9 + 16 * n * EPS64 / tau


# --------------------------------------------------------------------------
# D1: shift invariance
# --------------------------------------------------------------------------


@settings(max_examples=120, **SETTINGS)
@given(logit_rows(), WIDE)
def test_d1_shift_invariance_softmax_tails_and_errors(u, c):
    shifted = u + c
    atol = log_atol(np.max(np.abs(u)), c)
    assert_log_close(
        st.log_attention_matrix(shifted), st.log_attention_matrix(u), atol, what="log softmax"
    )
    a, b = errors(u), errors(shifted)
    for name in ("log_tail_mass", "log_l1", "log_l2", "log_linf"):
        # log errors carry the rounding of u + c and of the normaliser (absolute in
        # log space), plus a few ulps of relative slack.
        assert_log_close(b[name], a[name], atol, rtol=1e-12, what=name)
    assert_log_close(
        st.log_tail_mass(shifted, all_windows(u.shape[0])), a["log_tail_mass"], atol,
        rtol=1e-12, what="log_tail_mass 1-D",
    )


@settings(max_examples=80, **SETTINGS)
@given(
    n=hs.sampled_from(N_BUCKETS),
    data=hs.data(),
    c=hs.integers(-10_000, 10_000),
)
def test_d1_shift_invariance_output_error_exact_shift(n, data, c):
    # Logits on a dyadic grid and an integer shift: u + c is exact, so the kept
    # sets (ties included) are identical and the output error must agree.
    grid = data.draw(hs.lists(hs.integers(-2**20, 2**20), min_size=n, max_size=n))
    u = np.asarray(grid, np.float64) / 2**7
    v = np.asarray(
        data.draw(hs.lists(hs.floats(-100, 100), min_size=n * D_V, max_size=n * D_V)),
        np.float64,
    ).reshape(n, D_V)
    shifted = u + c
    assert np.array_equal(shifted - c, u)  # the shift really was exact
    a, b = errors(u, v), errors(shifted, v)
    atol = log_atol(np.max(np.abs(u)), c)
    assert_log_close(b["log_tail_mass"], a["log_tail_mass"], atol, 1e-12, "tail")
    # Compare the mean gaps ||mu_tail - mu_head|| (not their logs, which are
    # ill-conditioned when the gap cancels to near zero).
    with np.errstate(invalid="ignore"):
        gap_a = np.exp(a["log_output"] - a["log_tail_mass"])
        gap_b = np.exp(b["log_output"] - b["log_tail_mass"])
    finite = np.isfinite(a["log_tail_mass"])
    np.testing.assert_allclose(
        gap_b[finite], gap_a[finite], rtol=1e-9,
        atol=gap_atol(n, np.abs(u).max() + abs(c), np.abs(v).max()),
    )
    assert np.all(np.isneginf(b["log_output"][~finite]))


# --------------------------------------------------------------------------
# D2: l1 error = 2 tau
# --------------------------------------------------------------------------


@settings(max_examples=120, **SETTINGS)
@given(logit_rows())
def test_d2_l1_equals_twice_tail_mass(u):
    n = u.shape[0]
    e = errors(u)
    assert_log_close(e["log_l1"], math.log(2.0) + e["log_tail_mass"], 1e-15, 1e-15, "l1")
    s = dense_softmax(u)
    for k in few_windows(n):
        mask = library_mask(u, k)
        assert mask.sum() == k
        tau_dense = s[~mask].sum()  # a sum of positive terms: accurate for any tau
        tau = math.exp(e["log_tail_mass"][k - 1])
        if tau_dense > 1e-290:
            assert tau == pytest.approx(tau_dense, rel=1e-9, abs=0)
        if k == n:
            assert tau == 0.0
        if tau > 1e-6:
            l1_dense = np.abs(s - dense_sparse(u, mask)).sum()
            assert math.exp(e["log_l1"][k - 1]) == pytest.approx(
                l1_dense, rel=dense_rtol(n, tau), abs=0
            )
            assert l1_dense == pytest.approx(2 * tau, rel=dense_rtol(n, tau), abs=0)


# --------------------------------------------------------------------------
# D3: output error = tau ||mu_tail - mu_head|| <= tau diam(V)
# --------------------------------------------------------------------------


def diameter(v: np.ndarray) -> float:
    return max(scaled_norm(a - b) for a in v for b in v)


@settings(max_examples=120, **SETTINGS)
@given(rows_and_values())
def test_d3_output_error_factorisation_and_diameter_bound(uv):
    u, v = uv
    n = u.shape[0]
    e = errors(u, v)
    log_tau, log_out = e["log_tail_mass"], e["log_output"]
    vmax = float(np.abs(v).max()) + 1e-300
    diam = diameter(v)
    s = dense_softmax(u)
    # Bound: ||(s - s^)^T V|| <= tau diam (slack: rounding of the means).
    g_atol = gap_atol(n, np.abs(u).max(), vmax)
    bound = log_tau + math.log(diam + g_atol)
    assert np.all(log_out <= bound + 1e-12), (log_out, bound)
    assert np.isneginf(log_out[n - 1]) and np.isneginf(log_tau[n - 1])
    for k in few_windows(n):
        mask = library_mask(u, k)
        if k == n:
            continue
        # Independent means (log-shifted weights: exact for any tau).
        gap_ref = scaled_norm(weighted_mean(u[~mask], v[~mask]) - weighted_mean(u[mask], v[mask]))
        gap = math.exp(log_out[k - 1] - log_tau[k - 1]) if np.isfinite(log_out[k - 1]) else 0.0
        assert gap == pytest.approx(gap_ref, rel=1e-9, abs=g_atol)
        tau = math.exp(log_tau[k - 1])
        if tau > 1e-6:
            out_dense = scaled_norm((s - dense_sparse(u, mask)) @ v)
            assert math.exp(log_out[k - 1]) == pytest.approx(
                out_dense, rel=1e-9, abs=16 * n * EPS64 * vmax + tau * g_atol
            )


# --------------------------------------------------------------------------
# D4: monotonicity, tau <= 1 - k/n, tau(n) = 0, Att_n = Att
# --------------------------------------------------------------------------


@settings(max_examples=120, **SETTINGS)
@given(logit_rows())
def test_d4_tail_monotone_and_capped(u):
    n = u.shape[0]
    e = errors(u)
    log_tau = e["log_tail_mass"]
    ks = np.arange(1, n + 1)
    # Non-increasing in k (a few ulps of slack for the cumulative log-sum-exp).
    assert np.all(np.diff(log_tau) <= 1e-12), log_tau
    with np.errstate(divide="ignore"):
        cap = np.log1p(-ks / n)
    assert np.all(log_tau <= cap + 1e-12), (log_tau, cap)
    assert np.isneginf(log_tau[-1])
    for name in ("log_l1", "log_l2", "log_linf"):
        assert np.isneginf(e[name][-1]), name
    # k < n: something is dropped and every softmax entry is > 0 in exact
    # arithmetic; the log stays finite even when tau underflows as a float.
    assert np.all(np.isfinite(log_tau[:-1]))
    dense = np.exp(np.asarray(st.log_attention_matrix(u[None, :])))
    sparse = np.asarray(st.sparse_attention_matrix(u[None, :], n))
    # atol: XLA on CPU flushes subnormal results to zero; NumPy does not.
    np.testing.assert_allclose(sparse, dense, rtol=1e-14, atol=np.finfo(np.float64).tiny)
    np.testing.assert_allclose(sparse[0], dense_softmax(u), rtol=1e-10, atol=1e-300)


@settings(max_examples=60, **SETTINGS)
@given(
    n=hs.sampled_from(N_BUCKETS),
    data=hs.data(),
    scale=hs.sampled_from([1.0, 0.5, 10.0]),
)
def test_d4_sparse_attention_at_full_window_is_exact(n, data, scale):
    m, d = 2, 3
    floats = hs.floats(-10, 10, allow_nan=False, allow_infinity=False)

    def arr(shape):
        size = int(np.prod(shape))
        return np.asarray(data.draw(hs.lists(floats, min_size=size, max_size=size))).reshape(shape)

    q, kk, v = arr((m, d)), arr((n, d)), arr((n, D_V))
    exact = np.asarray(st.exact_attention(q, kk, v, scale))
    sparse = np.asarray(st.sparse_attention(q, kk, v, n, scale))
    np.testing.assert_allclose(sparse, exact, rtol=1e-12, atol=1e-12 * (1 + np.abs(v).max()))


# --------------------------------------------------------------------------
# D5: bounds on tau from the logit spread r = exp(max u - min u)
# --------------------------------------------------------------------------


@settings(max_examples=150, **SETTINGS)
@given(logit_rows())
def test_d5_tail_bounds_from_spread(u):
    n = u.shape[0]
    log_tau = errors(u)["log_tail_mass"]
    log_r = float(u.max() - u.min())  # r itself may overflow: stay in logs
    slack = 1e-9 + log_atol(np.max(np.abs(u)))
    with np.errstate(divide="ignore"):
        for k in range(1, n + 1):
            log_nk = math.log(n - k) if k < n else -math.inf
            lower = log_nk - np.logaddexp(log_nk, math.log(k) + log_r)
            upper_spread = log_nk + log_r - np.logaddexp(math.log(k), log_nk + log_r)
            upper = min(np.log1p(-k / n), upper_spread)
            t = log_tau[k - 1]
            assert lower - slack <= t <= upper + slack, (k, lower, t, upper)


def test_d5_lower_bound_attained():
    # Top k at the maximum, the rest at the minimum: the lower bound is equality.
    n, k, gap = 8, 3, 7.0
    u = np.array([gap] * k + [0.0] * (n - k))
    r = math.exp(gap)
    tau = math.exp(errors(u)["log_tail_mass"][k - 1])
    assert tau == pytest.approx((n - k) / (n - k + k * r), rel=1e-13, abs=0)


# --------------------------------------------------------------------------
# D6: exact l2 form and its two-sided bound
# --------------------------------------------------------------------------


@settings(max_examples=150, **SETTINGS)
@given(logit_rows())
def test_d6_l2_exact_form_and_bounds(u):
    n = u.shape[0]
    log_l2 = errors(u)["log_l2"]
    log_tau = errors(u)["log_tail_mass"]
    log_r = float(u.max() - u.min())
    atol = 1e-9 + log_atol(np.max(np.abs(u)))
    order = np.argsort(-u, kind="stable")
    s = dense_softmax(u)
    for k in range(1, n + 1):
        mask = np.zeros(n, bool)
        mask[order[:k]] = True
        lt, lh, lhs, lts = ref_log_quantities(u, mask)
        # ||s - s^||_2^2 = (tau / (1 - tau))^2 sum_T s^2 + sum_notT s^2, in logs.
        want = 0.5 * np.logaddexp(2 * (lt - lh) + lhs, lts)
        assert_log_close(log_l2[k - 1], want, atol, what=f"l2 k={k}")
        assert_log_close(log_tau[k - 1], lt, atol, what=f"tau k={k}")
        if k == n:
            continue
        lower = 2 * lt + math.log(n) - math.log(k) - math.log(n - k)
        upper = (
            2 * (log_r - math.log(n))
            + math.log(n - k)
            + np.logaddexp(0.0, math.log(n - k) + 2 * log_r - math.log(k))
        )
        assert lower - atol <= 2 * log_l2[k - 1] <= upper + atol, (k, lower, upper)
        if math.exp(lt) > 1e-6 and k in few_windows(n):
            l2_dense = np.linalg.norm(s - dense_sparse(u, library_mask(u, k)))
            assert math.exp(log_l2[k - 1]) == pytest.approx(
                l2_dense, rel=dense_rtol(n, math.exp(lt)), abs=0
            )


# --------------------------------------------------------------------------
# Why the library uses factorised forms: the dense difference is wrong for
# tails below machine epsilon.
# --------------------------------------------------------------------------


def test_dense_difference_is_wrong_below_machine_epsilon():
    u = np.array([0.0, -50.0, -60.0])
    # True values in closed form: s = (1, e^-50, e^-60) / Z.
    log_z = math.log1p(math.exp(-50.0) + math.exp(-60.0))
    log_tau = {
        1: -50.0 + math.log1p(math.exp(-10.0)) - log_z,
        2: -60.0 - log_z,
    }
    v = np.array([[1000.0], [0.0], [0.0]])
    e = errors(u, v)
    s = dense_softmax(u)
    for k, lt in log_tau.items():
        tau = math.exp(lt)
        assert tau < 1e-20
        mask = library_mask(u, k)
        diff = s - dense_sparse(u, mask)
        # Factorised forms are right to full relative precision ...
        assert e["log_tail_mass"][k - 1] == pytest.approx(lt, abs=1e-13)
        assert math.exp(e["log_l1"][k - 1]) == pytest.approx(2 * tau, rel=1e-12, abs=0)
        # ... the dense l1 loses the kept entries' inflation s_j tau / (1 - tau)
        # (it rounds to 0 next to s_1 ~ 1) and comes out near tau, not 2 tau.
        l1_dense = np.abs(diff).sum()
        assert abs(l1_dense - 2 * tau) > 0.4 * (2 * tau), (l1_dense, 2 * tau)
        # Output error: V puts all weight on the kept top entry, so the true
        # error is tau |mu_tail - mu_head| = 1000 tau; densely it rounds to 0 or
        # to pure noise.
        out_true = 1000.0 * tau
        assert math.exp(e["log_output"][k - 1]) == pytest.approx(out_true, rel=1e-12, abs=0)
        out_dense = float(np.abs(diff @ v).max())
        assert abs(out_dense - out_true) > 0.4 * out_true, (out_dense, out_true)
        # l2: the exact form keeps the kept-entry term the dense route drops.
        l2_true = math.sqrt((tau / (1 - tau)) ** 2 * (s[mask] ** 2).sum() + (s[~mask] ** 2).sum())
        assert math.exp(e["log_l2"][k - 1]) == pytest.approx(l2_true, rel=1e-12, abs=0)
    # k = 1: the dense l2 misses the kept entry's share: off by 1/sqrt(2).
    l2_dense = np.linalg.norm(s - dense_sparse(u, library_mask(u, 1)))
    l2_true = math.exp(e["log_l2"][0])
    assert l2_dense / l2_true == pytest.approx(1 / math.sqrt(2), rel=1e-3, abs=0)


def test_tiny_tail_below_float_range_is_finite_in_logs():
    # tau ~ e^-2000 underflows float64; its log stays exact.
    u = np.array([0.0, -2000.0, -2001.0])
    lt = errors(u)["log_tail_mass"]
    want = -2000.0 + math.log1p(math.exp(-1.0))
    assert lt[0] == pytest.approx(want, abs=1e-12)
    assert lt[1] == pytest.approx(-2001.0, abs=1e-12)
    assert np.isneginf(lt[2])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("n", [2, 4, 8, 64])
def test_an_entry_equal_to_eps_counts_as_small(n, dtype):
    """Definition 3.2 counts s_ij <= eps: at uniform scores every entry is exactly
    1/n (a power of two here, so exact in floating point), and at eps = 1/n all n
    are small, none effective; just below 1/n none is small."""
    logits = jnp.zeros((3, n), dtype)
    assert np.all(np.asarray(st.num_small_entries(logits, 1.0 / n)) == n)
    assert np.all(np.asarray(st.num_effective_entries(logits, 1.0 / n)) == 0)
    assert np.all(np.asarray(st.num_small_entries(logits, 0.99 / n)) == 0)
