"""Agreement with a plain NumPy reference implementation, and jit / vmap agreement.

The reference materialises the softmax with a max-shift, orders each row with a
stable argsort of ``-u`` (ties go to the lower index), keeps the top k and
renormalises. Error references are computed densely in ``np.longdouble`` (64-bit
mantissa on x86), so that ``s - s^`` is accurate enough for a relative tolerance
of 1e-9 wherever tau > 1e-8; tail masses are also checked in log space (SciPy's
logsumexp), which stays exact for any tau.

Regression tests at the end of the file pin corners that were once wrong:
negative zeros in top-k tie-breaking, subnormal inputs to the eager selection
functions, subnormal eps and eps below the float32 range, and output errors of
tiny values, and a traced subnormal eps under jit / vmap. The property tests
cover those corners too.

Speed: n is drawn from a few buckets, static windows are a fixed tuple per n,
and functions with a static ``k`` are only called for a few k per n.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy.special import logsumexp

import sparsity_theory as st
from _shared import EPS64, N_BUCKETS, SETTINGS, all_windows, few_windows, tiny_value

EPS32 = float(np.finfo(np.float32).eps)
LD = np.longdouble
D_V = 2
BATCH = 4

# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

def row_of(n: int, width: int = 64):
    """Strategy for one row of n logits (as a list of floats)."""
    wide = hs.floats(-1e4, 1e4, width=width)
    narrow = hs.floats(-5.0, 5.0, width=width)

    @hs.composite
    def build(draw):
        kind = draw(hs.sampled_from(["wide", "narrow", "ties", "mixed", "spike", "ladder"]))
        if kind == "wide":
            return draw(hs.lists(wide, min_size=n, max_size=n))
        if kind == "narrow":
            return draw(hs.lists(narrow, min_size=n, max_size=n))
        if kind == "ties":
            pool = draw(hs.lists(hs.one_of(wide, narrow), min_size=1, max_size=3))
            return draw(hs.lists(hs.sampled_from(pool), min_size=n, max_size=n))
        if kind == "mixed":
            pool = draw(hs.lists(narrow, min_size=1, max_size=2))
            return draw(hs.lists(hs.one_of(wide, hs.sampled_from(pool)), min_size=n, max_size=n))
        if kind == "spike":
            u = draw(hs.lists(narrow, min_size=n, max_size=n))
            u[draw(hs.integers(0, n - 1))] = max(u) + draw(hs.floats(80.0, 1e4, width=width))
            return u
        gap = draw(hs.floats(20.0, 300.0, width=width))
        return [-gap * p for p in draw(hs.permutations(list(range(n))))]

    return build()


def as_row(u, dtype=np.float64) -> np.ndarray:
    return np.asarray(u, dtype=dtype)


@hs.composite
def logit_rows(draw, ns=N_BUCKETS, dtype=np.float64):
    n = draw(hs.sampled_from(ns))
    width = 32 if dtype == np.float32 else 64
    return as_row(draw(row_of(n, width)), dtype)


@hs.composite
def logit_batches(draw, ns=N_BUCKETS, batch=BATCH):
    n = draw(hs.sampled_from(ns))
    rows = [draw(row_of(n)) for _ in range(batch)]
    return as_row(rows)


@hs.composite
def rows_and_values(draw):
    u = draw(logit_rows())
    n = u.shape[0]
    # No subnormal values: XLA on CPU flushes them to zero (not a concern here).
    elem = hs.floats(-100.0, 100.0, allow_subnormal=False)
    elem = hs.one_of(elem, elem.map(tiny_value))  # tiny values: norms must not underflow
    if draw(hs.booleans()):
        v = draw(hs.lists(elem, min_size=n * D_V, max_size=n * D_V))
    else:
        pool = draw(hs.lists(elem, min_size=1, max_size=2))
        v = draw(hs.lists(hs.sampled_from(pool), min_size=n * D_V, max_size=n * D_V))
    return u, np.asarray(v, np.float64).reshape(n, D_V)


def eps_values(count: int, lowest_exponent: float = 320.0):
    """Tuples of thresholds in (0, 1], log-uniform down to 10**-lowest_exponent
    (float64 subnormals below 2.2e-308 included)."""
    one = hs.one_of(
        hs.floats(0.0, lowest_exponent).map(lambda x: float(10.0 ** -x)),
        hs.sampled_from([1.0, 0.5, 1e-3]),
    ).filter(lambda e: e > 0)
    return hs.lists(one, min_size=count, max_size=count).map(tuple)


# --------------------------------------------------------------------------
# The NumPy reference
# --------------------------------------------------------------------------


def ref_order(u: np.ndarray) -> np.ndarray:
    return np.argsort(-u, kind="stable")


def ref_mask(u: np.ndarray, k: int) -> np.ndarray:
    mask = np.zeros(u.shape, bool)
    mask[ref_order(u)[:k]] = True
    return mask


def ref_softmax(u: np.ndarray, dtype=np.float64) -> np.ndarray:
    x = np.asarray(u).astype(dtype)
    e = np.exp(x - x.max())
    return e / e.sum()


def ref_sparse(u: np.ndarray, k: int, dtype=np.float64) -> np.ndarray:
    idx = ref_order(u)[:k]
    x = np.asarray(u).astype(dtype)
    out = np.zeros(u.shape, dtype)
    e = np.exp(x[idx] - x[idx].max())
    out[idx] = e / e.sum()
    return out


def ref_log_tails(u: np.ndarray) -> np.ndarray:
    """log tau(k), k = 1..n, in log space (exact for any tau)."""
    x = np.asarray(u, np.float64)
    log_s = np.sort(x - logsumexp(x))[::-1]
    out = np.full(x.shape[0], -np.inf)
    for k in range(1, x.shape[0]):
        out[k - 1] = logsumexp(log_s[k:])
    return out


def ref_tails_dense(u: np.ndarray) -> np.ndarray:
    s = ref_softmax(u)
    return np.array([s[~ref_mask(u, k)].sum() for k in range(1, u.shape[0] + 1)])


def assert_log_close(got, want, atol, rtol=0.0, what=""):
    got = np.asarray(got, np.float64)
    want = np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert np.array_equal(np.isneginf(got), np.isneginf(want)), f"{what}: {got} vs {want}"
    ok = ~np.isneginf(want)
    assert np.all(np.isfinite(got[ok])), f"{what}: {got}"
    diff = np.abs(got[ok] - want[ok])
    assert np.all(diff <= atol + rtol * np.abs(want[ok])), f"{what}: {got} vs {want} ({diff})"


def log_atol(*scales: float, eps: float = EPS64) -> float:
    return 64 * eps * (1.0 + sum(abs(float(s)) for s in scales))


def gap_atol(n: int, logit_scale: float, vmax: float) -> float:
    """Absolute slack for the mean gap ||mu_tail - mu_head||: the library merges
    means with weights exp(logit - logsumexp), whose rounding is ~eps |u| per merge,
    so the gap carries ~n eps |u| max|V| of error (e.g. ~6e-14 for equal value rows
    and logits 127, where the exact gap is 0)."""
    return 4 * n * EPS64 * (1.0 + abs(logit_scale)) * vmax


# --------------------------------------------------------------------------
# Top-k selection and sparse attention
# --------------------------------------------------------------------------


@settings(max_examples=120, **SETTINGS)
@given(logit_rows())
def test_top_k_indices_and_mask(u):
    n = u.shape[0]
    for k in few_windows(n):
        idx = np.asarray(st.top_k_indices(u[None, :], k))[0]
        np.testing.assert_array_equal(idx, ref_order(u)[:k])
        mask = np.asarray(st.top_k_mask(u[None, :], k))[0]
        np.testing.assert_array_equal(mask, ref_mask(u, k))


@settings(max_examples=120, **SETTINGS)
@given(logit_rows())
def test_sparse_attention_matrix(u):
    for k in few_windows(u.shape[0]):
        got = np.asarray(st.sparse_attention_matrix(u[None, :], k))[0]
        np.testing.assert_allclose(got, ref_sparse(u, k), rtol=1e-9, atol=1e-300)
        assert np.all(got[~ref_mask(u, k)] == 0.0)


@hs.composite
def integer_qkv(draw):
    """Q, K with small integer entries: the scores are exact whatever the order of
    summation, so the top-k sets (ties included) are comparable exactly."""
    n = draw(hs.sampled_from(N_BUCKETS))
    m, d = 3, 4
    ints = hs.integers(-4, 4)
    q = np.asarray(draw(hs.lists(ints, min_size=m * d, max_size=m * d)), float).reshape(m, d)
    k = np.asarray(draw(hs.lists(ints, min_size=n * d, max_size=n * d)), float).reshape(n, d)
    v = np.asarray(
        draw(hs.lists(hs.floats(-100, 100), min_size=n * D_V, max_size=n * D_V)), float
    ).reshape(n, D_V)
    scale = draw(hs.sampled_from([1.0, 0.5, 0.125, 3.0, 100.0]))
    return q, k, v, scale


@settings(max_examples=100, **SETTINGS)
@given(integer_qkv())
def test_sparse_and_exact_attention_qkv(qkv):
    q, kk, v, scale = qkv
    n = kk.shape[0]
    scores = scale * (q @ kk.T)
    np.testing.assert_array_equal(np.asarray(st.attention_logits(q, kk, scale)), scores)
    atol = 1e-12 * (1 + np.abs(v).max())
    exact_ref = np.stack([ref_softmax(row) for row in scores]) @ v
    np.testing.assert_allclose(
        np.asarray(st.exact_attention(q, kk, v, scale)), exact_ref, rtol=1e-9, atol=atol
    )
    for k in few_windows(n):
        want = np.stack([ref_sparse(row, k) for row in scores]) @ v
        got = np.asarray(st.sparse_attention(q, kk, v, k, scale))
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol)


@settings(max_examples=60, **SETTINGS)
@given(n=hs.sampled_from(N_BUCKETS), data=hs.data())
def test_exact_attention_float_inputs(n, data):
    m, d = 3, 4
    f = hs.floats(-3.0, 3.0)

    def arr(shape, elem=f):
        size = int(np.prod(shape))
        return np.asarray(data.draw(hs.lists(elem, min_size=size, max_size=size))).reshape(shape)

    q, kk, v = arr((m, d)), arr((n, d)), arr((n, D_V), hs.floats(-100, 100))
    scale = 1 / math.sqrt(d)
    want = np.stack([ref_softmax(row) for row in scale * (q @ kk.T)]) @ v
    np.testing.assert_allclose(
        np.asarray(st.exact_attention(q, kk, v, scale)), want, rtol=1e-9,
        atol=1e-12 * (1 + np.abs(v).max()),
    )


# --------------------------------------------------------------------------
# Tail masses and errors
# --------------------------------------------------------------------------


@settings(max_examples=150, **SETTINGS)
@given(logit_rows())
def test_tail_masses(u):
    n = u.shape[0]
    windows = all_windows(n)
    log_tau = np.asarray(st.log_tail_mass(u[None, :], windows))[0]
    assert_log_close(log_tau, ref_log_tails(u), log_atol(np.abs(u).max()), 1e-12, "log tau")
    dense = ref_tails_dense(u)
    ok = dense > 1e-290  # below, the materialised softmax has lost precision
    np.testing.assert_allclose(np.exp(log_tau[ok]), dense[ok], rtol=1e-9, atol=0)
    tau = np.asarray(st.tail_mass(u, windows))
    np.testing.assert_allclose(tau[ok], dense[ok], rtol=1e-9, atol=0)
    assert tau[-1] == 0.0


@settings(max_examples=150, **SETTINGS)
@given(rows_and_values())
def test_errors_against_dense_longdouble_reference(uv):
    u, v = uv
    n = u.shape[0]
    e = st.sparse_attention_errors(u[None, :], all_windows(n), v)
    e = {name: np.asarray(arr, np.float64)[0] for name, arr in zip(e._fields, e)}
    s = ref_softmax(u, LD)
    v_ld = v.astype(LD)
    vmax = float(np.abs(v).max())
    tau_dense = ref_tails_dense(u)
    for k in range(1, n + 1):
        if k == n:
            for name in ("log_tail_mass", "log_l1", "log_l2", "log_linf", "log_output"):
                assert np.isneginf(e[name][k - 1]), name
            continue
        tau = tau_dense[k - 1]
        if not tau > 1e-8:
            continue
        diff = s - ref_sparse(u, k, LD)
        # ~1e-9 with x86's 64-bit-mantissa long double; looser where it is double.
        rtol = 1e-9 + 16 * n * float(np.finfo(LD).eps) / tau
        want = {
            "log_tail_mass": tau,
            "log_l1": np.abs(diff).sum(),
            "log_l2": np.sqrt((diff * diff).sum()),
            "log_linf": np.abs(diff).max(),
        }
        for name, ref in want.items():
            assert math.exp(e[name][k - 1]) == pytest.approx(float(ref), rel=rtol, abs=0), (
                name, k,
            )
        out_ref = float(np.sqrt(((diff @ v_ld) ** 2).sum()))
        got = math.exp(e["log_output"][k - 1])
        # Absolute slack: the library's means are rounded at the scale of the
        # values, and the reference's (s - s^) V (e.g. exactly 0 for equal value
        # rows) has an absolute error ~ n eps_ld max|V|.
        ref_atol = 16 * n * float(np.finfo(LD).eps) * vmax
        assert got == pytest.approx(
            out_ref, rel=rtol, abs=tau * gap_atol(n, np.abs(u).max(), vmax) + ref_atol
        ), k


# --------------------------------------------------------------------------
# Small-entry counts and certified windows
# --------------------------------------------------------------------------


def ref_num_small(u: np.ndarray, eps: tuple[float, ...], slack: float):
    """Counts of log s_j <= log eps -+ slack (log domain: exact for eps down to the
    subnormals); the library must lie between the two."""
    x = np.asarray(u, np.float64)
    log_s = (x - logsumexp(x))[:, None]
    log_eps = np.log(np.asarray(eps, np.float64))[None, :]
    return (log_s <= log_eps - slack).sum(0), (log_s <= log_eps + slack).sum(0)


@settings(max_examples=120, **SETTINGS)
@given(logit_rows(), eps_values(3), hs.data())
def test_num_small_and_effective_entries_float64(u, eps, data):
    n = u.shape[0]
    # Thresholds just below and above one entry s_j (relative 1e-7): that entry
    # must be counted as small only in the second.
    log_sj = float(data.draw(hs.sampled_from(list(u - logsumexp(u)))))
    if log_sj > -700:
        eps = eps[:1] + (math.exp(log_sj) * (1 - 1e-7), min(1.0, math.exp(log_sj) * (1 + 1e-7)))
    slack = math.log1p(1e-9) + log_atol(np.abs(u).max())
    lo, hi = ref_num_small(u, eps, slack)
    got = np.asarray(st.num_small_entries(u[None, :], eps))[0]
    assert got.shape == (3,)
    assert np.all(lo <= got) and np.all(got <= hi), (got, lo, hi)
    eff = np.asarray(st.num_effective_entries(u[None, :], eps))[0]
    assert np.all(n - hi <= eff) and np.all(eff <= n - lo), (eff, lo, hi)
    # Materialised softmax (max-shift), where it is far from the threshold.
    s = ref_softmax(u)
    far = np.abs(s[:, None] - np.asarray(eps)[None, :]) > 1e-6 * np.asarray(eps)[None, :]
    if np.all(far):
        np.testing.assert_array_equal(got, (s[:, None] <= np.asarray(eps)[None, :]).sum(0))
    # Scalar eps: a scalar count per row.
    got0 = np.asarray(st.num_small_entries(u, eps[0]))
    assert got0.shape == () and lo[0] <= got0 <= hi[0]
    eff0 = np.asarray(st.num_effective_entries(u, eps[0]))
    assert eff0.shape == () and n - hi[0] <= eff0 <= n - lo[0]


def float32_slack(u: np.ndarray, eps) -> float:
    """float32 log-softmax and log eps: absolute error ~ eps32 (|u| + |log eps|)."""
    return 1e-6 + log_atol(np.abs(u).max(), max(abs(math.log(e)) for e in eps), eps=EPS32)


@settings(max_examples=80, **SETTINGS)
@given(logit_rows(dtype=np.float32), eps_values(3))
def test_num_small_entries_float32(u, eps):
    # eps reaches 1e-320, far below the float32 range: its log is still fine.
    lo, hi = ref_num_small(u, eps, float32_slack(u, eps))
    got = np.asarray(st.num_small_entries(u[None, :], eps))[0]
    assert np.all(lo <= got) and np.all(got <= hi), (got, lo, hi)


def check_certified(log_tails: np.ndarray, log_eps: float, k_star: int, slack: float):
    n = log_tails.shape[0]
    assert 1 <= k_star <= n
    assert log_tails[k_star - 1] <= log_eps + slack, (k_star, log_tails, log_eps)
    assert k_star == 1 or log_tails[k_star - 2] > log_eps - slack, (k_star, log_tails, log_eps)


@settings(max_examples=150, **SETTINGS)
@given(logit_rows(), eps_values(3), hs.data())
def test_certified_window_float64(u, eps, data):
    ref = ref_log_tails(u)
    # Also aim exactly at the boundary: eps equal to one of the tail masses.
    finite = [math.exp(t) for t in ref if np.isfinite(t) and math.exp(t) > 0]
    boundary = data.draw(hs.sampled_from(finite)) if finite else 1.0
    eps = eps + (boundary,)
    got = np.asarray(st.certified_window(u[None, :], eps))[0]
    assert got.shape == (len(eps),)
    slack = math.log1p(1e-9) + log_atol(np.abs(u).max())
    for e, k_star in zip(eps, got):
        check_certified(ref, math.log(e), int(k_star), slack)
    # Scalar eps.
    k0 = int(st.certified_window(u, eps[0]))
    assert k0 == int(got[0])


@settings(max_examples=80, **SETTINGS)
@given(logit_rows(dtype=np.float32), eps_values(3))
def test_certified_window_float32(u, eps):
    ref = ref_log_tails(u.astype(np.float64))
    got = np.asarray(st.certified_window(u[None, :], eps))[0]
    slack = 1e-5 + float32_slack(u, eps)
    for e, k_star in zip(eps, got):
        check_certified(ref, math.log(e), int(k_star), slack)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_certified_window_of_long_rows_searched_in_chunks(dtype):
    """Long rows are searched a few at a time (lax.map over 2 chunks of 20 rows
    here): the windows are those of the side-by-side search, in every batch and
    eps shape, in evaluate_rows too (2 chunks of 18 rows), and agree with the
    sorted reference (checked on 6 of the rows: it is quadratic in n)."""
    from sparsity_theory import sparsity

    n = 4096
    assert sparsity.rows_per_chunk(40, n) == 20 and sparsity.rows_per_chunk(36, n) == 18
    rng = np.random.default_rng(5)
    u = (rng.normal(size=(8, 5, n)) * np.array([0.5, 2.0, 8.0, 1.0, 1.0])[:, None]).astype(dtype)
    u[1, 2, : n // 2] = u[1, 2, n // 2:]  # every value twice: ties at the threshold
    eps = np.array([[1e-1, 1e-3], [1e-5, 0.5]])
    got = np.asarray(st.certified_window(u, eps))
    assert got.shape == (8, 5, 2, 2)
    side_by_side = jax.vmap(jax.vmap(jax.vmap(sparsity._certified_window_row, in_axes=(None, 0)),
                                     in_axes=(None, 0)), in_axes=(0, None))
    log_eps = jnp.log(jnp.asarray(eps, dtype))
    want = np.asarray(side_by_side(jnp.asarray(u).reshape(-1, n), log_eps)).reshape(got.shape)
    np.testing.assert_array_equal(got, want)
    slack = 1e-9 if dtype == np.float64 else 1e-4
    for index in np.ndindex(2, 3):
        ref = ref_log_tails(u[index].astype(np.float64))
        for e, k_star in zip(eps.ravel(), got[index].ravel()):
            check_certified(ref, math.log(e), int(k_star), slack)
    q = jnp.asarray(rng.normal(size=(36, 4)), dtype)  # one block of 36 rows
    k = jnp.asarray(rng.normal(size=(n, 4)), dtype)
    stats = st.evaluate_rows(q, k, windows=(1, 8), eps=(1e-2, 1e-4), block_size=64)
    np.testing.assert_array_equal(stats.certified_window,
                                  st.certified_window(q @ k.T, np.array([1e-2, 1e-4])))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kth_smallest_entry_of_long_rows_with_broadcast_ranks(dtype):
    """Long rows (searched in chunks of 4) with ranks broadcast against them:
    the k-th smallest softmax entry is the sorted row's, in the shape of the
    broadcast."""
    from sparsity_theory import sparsity

    n = sparsity.ROW_CHUNK_ENTRIES // 4
    assert sparsity.rows_per_chunk(12, n) == 4  # 12 rows: 3 chunks of 4
    rng = np.random.default_rng(6)
    u = rng.normal(size=(3, 1, n)).astype(dtype)
    u[2, 0, :n // 2] = u[2, 0, n // 2:]  # ties
    k = np.array([[1, 7, n // 2, n]])  # (1, 4): broadcast to (3, 4)
    got = np.asarray(st.log_kth_smallest_entry(u, k))
    assert got.shape == (3, 4)
    srt = np.sort(u, axis=-1)
    lse = np.asarray(jax.nn.logsumexp(jnp.asarray(u), axis=-1))  # (3, 1)
    want = np.take_along_axis(srt[:, 0, :], np.broadcast_to(k - 1, (3, 4)), axis=-1) - lse
    np.testing.assert_array_equal(got, want.astype(dtype))


# --------------------------------------------------------------------------
# Order statistics
# --------------------------------------------------------------------------


@settings(max_examples=120, **SETTINGS)
@given(logit_rows())
def test_log_kth_smallest_entry(u):
    n = u.shape[0]
    want = np.sort(u) - logsumexp(u)
    ks = np.arange(1, n + 1)
    got = np.asarray(st.log_kth_smallest_entry(u[None, :], ks))
    assert got.shape == (n,)
    atol = log_atol(np.abs(u).max())
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    got1 = np.asarray(st.log_kth_smallest_entry(u[None, :], 1))
    np.testing.assert_allclose(got1, want[:1], rtol=0, atol=atol)


def order_stat_arrays(dtype):
    width = 32 if dtype == np.float32 else 64
    big = float(np.finfo(dtype).max)
    sub = float(np.finfo(dtype).smallest_subnormal)
    anyf = hs.floats(-big, big, width=width)  # subnormals included
    special = hs.sampled_from([0.0, -0.0, 1.0, -1.0, 0.5, -2.0, big, -big, sub, -sub])

    @hs.composite
    def build(draw):
        n = draw(hs.sampled_from(N_BUCKETS))
        kind = draw(hs.sampled_from(["any", "ties", "zeros"]))
        if kind == "any":
            x = draw(hs.lists(anyf, min_size=n, max_size=n))
        elif kind == "ties":
            pool = draw(hs.lists(hs.one_of(anyf, special), min_size=1, max_size=3))
            x = draw(hs.lists(hs.sampled_from(pool), min_size=n, max_size=n))
        else:
            x = draw(hs.lists(hs.sampled_from([0.0, -0.0, 1.0, -1.0, sub, -sub]),
                              min_size=n, max_size=n))
        return np.asarray(x, dtype)

    return build()


JIT_KTH_SMALLEST = jax.jit(st.kth_smallest)
JIT_KTH_LARGEST = jax.jit(st.kth_largest)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=100, **SETTINGS)
@given(data=hs.data())
def test_kth_smallest_and_largest_jit(dtype, data):
    x = data.draw(order_stat_arrays(dtype))
    n = x.shape[0]
    srt = np.sort(x)
    for k in range(1, n + 1):
        a = JIT_KTH_SMALLEST(jnp.asarray(x), jnp.asarray(k))
        b = JIT_KTH_LARGEST(jnp.asarray(x), jnp.asarray(k))
        assert a.dtype == dtype and b.dtype == dtype
        assert a == srt[k - 1], (x, k, a, srt[k - 1])  # -0.0 == 0.0 counts as equal
        assert b == srt[n - k], (x, k, b, srt[n - k])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@settings(max_examples=15, **SETTINGS)  # the eager path recompiles its loop per call
@given(data=hs.data())
def test_kth_smallest_and_largest_eager(dtype, data):
    x = data.draw(order_stat_arrays(dtype))
    n = x.shape[0]
    k = data.draw(hs.integers(1, n))
    srt = np.sort(x)
    assert st.kth_smallest(jnp.asarray(x), k) == srt[k - 1]
    assert st.kth_largest(jnp.asarray(x), k) == srt[n - k]


# --------------------------------------------------------------------------
# Frobenius aggregate
# --------------------------------------------------------------------------


@settings(max_examples=100, **SETTINGS)
@given(
    m=hs.sampled_from([1, 4]),
    data=hs.data(),
    axis=hs.sampled_from([-2, -1, 0]),
)
def test_frobenius_aggregate(m, data, axis):
    w = 3
    elem = hs.one_of(
        hs.floats(-2000.0, 50.0), hs.just(-math.inf), hs.sampled_from([-745.0, -800.0, 0.0])
    )
    x = np.asarray(data.draw(hs.lists(elem, min_size=m * w, max_size=m * w))).reshape(m, w)
    log_total, log_rms = st.frobenius_aggregate(jnp.asarray(x), axis=axis)
    with np.errstate(divide="ignore"):
        want = 0.5 * logsumexp(2 * x, axis=axis)
    count = x.shape[axis]
    finite = x[np.isfinite(x)]
    atol = 1e-13 * (1 + (np.abs(finite).max() if finite.size else 0))
    assert_log_close(log_total, want, atol, 1e-13, "total")
    assert_log_close(log_rms, want - 0.5 * math.log(count), atol, 1e-13, "rms")
    # Cross-check the linear domain where nothing underflows.
    if finite.size == x.size and np.all(x > -300) and np.all(x < 300):
        lin = np.sqrt((np.exp(x) ** 2).sum(axis=axis))
        np.testing.assert_allclose(np.exp(np.asarray(log_total)), lin, rtol=1e-12)


def test_frobenius_aggregate_is_the_frobenius_norm_of_s_minus_s_hat():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(5, 8)) * 2
    k = 3
    log_l2 = st.sparse_attention_errors(logits, (k,)).log_l2  # (5, 1)
    log_total, log_rms = st.frobenius_aggregate(log_l2)
    s = np.stack([ref_softmax(row, LD) for row in logits])
    s_hat = np.stack([ref_sparse(row, k, LD) for row in logits])
    fro = float(np.sqrt(((s - s_hat) ** 2).sum()))
    assert math.exp(float(log_total[0])) == pytest.approx(fro, rel=1e-10, abs=0)
    assert math.exp(float(log_rms[0])) == pytest.approx(fro / math.sqrt(5), rel=1e-10, abs=0)


# --------------------------------------------------------------------------
# jit vs eager, vmap vs loop
# --------------------------------------------------------------------------

JIT_ERRORS = jax.jit(lambda u: st.sparse_attention_errors(u, (1, 3)))
JIT_ERRORS_V = jax.jit(lambda u, v: st.sparse_attention_errors(u, (1, 3), v))
JIT_TAIL = jax.jit(lambda u: st.log_tail_mass(u, (1, 3)))
JIT_WINDOW = jax.jit(lambda u: st.certified_window(u, (1e-3, 1e-30)))
JIT_SMALL = jax.jit(lambda u: st.num_small_entries(u, (1e-3, 1e-30)))


@settings(max_examples=80, **SETTINGS)
@given(logit_batches(ns=(3, 8, 33), batch=2), hs.data())
def test_jit_matches_eager(u, data):
    n = u.shape[-1]
    v = np.asarray(data.draw(hs.lists(hs.floats(-10, 10), min_size=n * D_V, max_size=n * D_V)))
    v = v.reshape(n, D_V)
    atol = log_atol(np.abs(u).max())
    for jitted, direct in (
        (JIT_ERRORS(u), st.sparse_attention_errors(u, (1, 3))),
        (JIT_ERRORS_V(u, v), st.sparse_attention_errors(u, (1, 3), v)),
    ):
        for name, a, b in zip(direct._fields, jitted, direct):
            if b is None:
                assert a is None
                continue
            if name == "log_output":  # compare the mean gaps, not their logs
                with np.errstate(invalid="ignore"):
                    ga = np.exp(np.asarray(a) - np.asarray(jitted.log_tail_mass))
                    gb = np.exp(np.asarray(b) - np.asarray(direct.log_tail_mass))
                np.testing.assert_allclose(
                    ga, gb, rtol=1e-12, atol=gap_atol(n, np.abs(u).max(), np.abs(v).max())
                )
            else:
                assert_log_close(a, b, atol, 1e-12, name)
    assert_log_close(JIT_TAIL(u), st.log_tail_mass(u, (1, 3)), atol, 1e-12, "tail")
    np.testing.assert_array_equal(JIT_WINDOW(u), st.certified_window(u, (1e-3, 1e-30)))
    np.testing.assert_array_equal(JIT_SMALL(u), st.num_small_entries(u, (1e-3, 1e-30)))


@settings(max_examples=80, **SETTINGS)
@given(logit_batches(), eps_values(2), eps_values(BATCH, lowest_exponent=307.0))
def test_vmap_matches_loop(u, eps, eps_per_row):
    # eps_per_row stays a normal float: a traced subnormal eps is a known defect
    # (test_traced_subnormal_eps below).
    n = u.shape[-1]
    windows = all_windows(n)
    atol = log_atol(np.abs(u).max())
    batched = jax.vmap(lambda row: st.log_tail_mass(row, windows))(jnp.asarray(u))
    looped = np.stack([np.asarray(st.log_tail_mass(row, windows)) for row in u])
    assert_log_close(batched, looped, atol, 1e-12, "vmap tail")
    # And against the reference, row by row.
    for row, got in zip(u, np.asarray(batched)):
        assert_log_close(got, ref_log_tails(row), atol, 1e-12, "vmap tail vs ref")
    cw = jax.vmap(lambda row: st.certified_window(row, eps))(jnp.asarray(u))
    np.testing.assert_array_equal(cw, np.stack([st.certified_window(row, eps) for row in u]))
    # Batched eps too (traced eps: value validation is skipped inside vmap).
    cw2 = jax.vmap(st.certified_window)(jnp.asarray(u), jnp.asarray(eps_per_row))
    loop2 = np.array([int(st.certified_window(row, e)) for row, e in zip(u, eps_per_row)])
    np.testing.assert_array_equal(cw2, loop2)


# --------------------------------------------------------------------------
# Regression tests: corners that were once wrong (float arithmetic on XLA's CPU
# backend flushes subnormals to zero; lax.top_k orders -0.0 below +0.0).
# --------------------------------------------------------------------------


def test_negative_zero_tie_goes_to_lower_index():
    u = np.array([[-0.0, 0.0, 0.0]])
    assert np.asarray(st.top_k_indices(u, 2)).tolist() == [[0, 1]]
    assert np.asarray(st.top_k_mask(u, 1)).tolist() == [[True, False, False]]
    np.testing.assert_array_equal(st.sparse_attention_matrix(u, 1), [[1.0, 0.0, 0.0]])
    q = np.array([[1.0]])
    keys = np.array([[-0.0], [0.0]])  # scores -0.0 and +0.0: a tie
    v = np.array([[1.0], [2.0]])
    np.testing.assert_array_equal(st.sparse_attention(q, keys, v, 1), [[1.0]])


def test_kth_smallest_subnormals_eager_and_jit():
    x = jnp.asarray([5e-324, 0.0, -1e-310, 1e-310, -0.0])
    want = np.sort(np.asarray(x))
    for k in range(1, 6):
        assert float(st.kth_smallest(x, k)) == want[k - 1]
        assert float(JIT_KTH_SMALLEST(x, jnp.asarray(k))) == want[k - 1]
        assert float(st.kth_largest(x, k)) == want[5 - k]
    x32 = jnp.asarray([1e-45, 0.0, -1e-45, 1e-40], jnp.float32)
    want32 = np.sort(np.asarray(x32))
    assert [float(st.kth_smallest(x32, k)) for k in range(1, 5)] == want32.tolist()


def test_subnormal_float64_eps():
    u = np.array([0.0, -720.0])  # s_2 = tau(1) = e^-720 ~ 2e-313 <= 1e-310
    assert int(st.num_small_entries(u, 1e-310)) == 1
    assert int(st.certified_window(u, 1e-310)) == 1
    assert int(st.certified_window(u, 1e-314)) == 2


def test_float32_logits_with_eps_below_float32_range():
    u = np.array([0.0, -1000.0], np.float32)  # s_2 = tau(1) = e^-1000 < 1e-300
    assert int(st.num_small_entries(u, 1e-300)) == 1
    assert int(st.certified_window(u, 1e-300)) == 1
    assert int(st.num_small_entries(u[None], (1e-300, 1e-320)).sum()) == 2


def test_output_error_with_tiny_values():
    u = np.zeros((1, 2))
    v = np.array([[0.0], [1e-160]])  # tau(1) = 1/2, mu_head = 0, mu_tail = 1e-160
    got = float(st.sparse_attention_errors(u, (1,), v).log_output[0, 0])
    assert got == pytest.approx(math.log(0.5e-160), abs=1e-9)


def test_traced_subnormal_eps():
    # Once wrong: a traced eps had its log taken on the device in the logits'
    # dtype, so a subnormal eps or one below the float32 range became -inf.
    u = np.array([0.0, 710.0])  # tau(1) = s_1 = e^-710 ~ 4.5e-309 <= 1e-308
    assert int(st.certified_window(u, 1e-308)) == 1  # concrete eps
    assert int(jax.jit(st.certified_window)(u, 1e-308)) == 1
    assert int(jax.jit(st.num_small_entries)(u, 1e-308)) == 1
    u32 = np.array([0.0, -1000.0], np.float32)
    assert int(jax.jit(st.certified_window)(u32, 1e-50)) == 1
