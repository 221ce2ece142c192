"""sparsity_theory/llm/row_statistics.py: causal row statistics and sparse errors.

Every causal row i sees keys 0..i. The references apply the library's own
NON-causal functions (certified_window, num_effective_entries, log_tail_mass,
log_kth_smallest_entry, masked_attention_errors) to each row's visible prefix
of scores, computed in NumPy float64, and NumPy for the moments and the
sink/local masses.

Speed: JAX compiles each reference function once per prefix length, and the
causal function once per (rows in a key-length group, key length). So every
test draws its rows from ROWS (prefix lengths 1, 2, 3, 4, 5, 8, 9, 16, 17: the
rows on both sides of the powers of two that split the groups) and the
reference batch is padded to a fixed size.
"""

from __future__ import annotations

import math
from fractions import Fraction

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

import sparsity_theory as st
from _shared import SETTINGS
from sparsity_theory.llm.row_statistics import (
    CausalRowStatistics,
    causal_row_statistics,
    causal_sparse_errors,
)

HEADS, KV_HEADS, DIM, DV = 4, 2, 8, 3
N = 17
ROWS = (0, 1, 2, 3, 4, 7, 8, 15, 16)  # n_i = 1, 2, 3, 4, 5, 8, 9, 16, 17
EPS = (0.1, 0.01)
WINDOWS = (1, 3, 8, 16)  # 3, 8 and 16 exceed the visible counts of the short rows
FRACTIONS = (0.5, 0.9)
SINKS, LOCAL = 2, 3
BATCH = 8  # every reference call sees (BATCH, n_i): one compile per n_i


def sample(seed, n=N, heads=HEADS, kv_heads=KV_HEADS, dim=DIM, key_scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(heads, n, dim))
    k = rng.normal(size=(kv_heads, n, dim)) * key_scale
    v = rng.normal(size=(kv_heads, n, DV))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def scores(q, k, row):
    """Visible scores of query ``row`` for every head, NumPy float64: (heads, row + 1)."""
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    k = np.repeat(k, q.shape[0] // k.shape[0], axis=0)  # query head h reads kv head h // group
    return np.einsum("hd,hnd->hn", q[:, row], k[:, :row + 1]) / math.sqrt(q.shape[-1])


def np_lse(u, axis=-1):
    u = np.asarray(u, np.float64)
    if u.shape[axis] == 0:
        return np.full(np.delete(u.shape, axis if axis >= 0 else u.ndim + axis), -np.inf)
    m = np.max(u, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(u - m), axis=axis))


def lib(fn, u, *args):
    """``fn`` on rows u (b, n), padded to (BATCH, n) so every call of a given n
    shares one compilation; returns the first b results as NumPy."""
    b = u.shape[0]
    padded = np.concatenate([u, np.repeat(u[:1], BATCH - b, axis=0)])
    return np.asarray(fn(jnp.asarray(padded, jnp.float64), *args))[:b]


def exact_ceil(q, n):
    """ceil(q n) for the decimal fraction q, without float rounding, in [1, n]."""
    return min(n, max(1, math.ceil(Fraction(str(q)) * n)))


def reference(q, k, rows, eps=EPS, windows=WINDOWS, fractions=FRACTIONS, sinks=SINKS, local=LOCAL):
    """The fields of CausalRowStatistics, (heads, len(rows), ...), row by row."""
    fields = {name: [] for name in CausalRowStatistics._fields}
    for row in rows:
        u = scores(q, k, row)
        n = row + 1
        mean = u.mean(axis=-1)
        lse = np_lse(u)
        fields["mean"].append(mean)
        fields["sigma"].append(u.std(axis=-1))  # population std
        fields["max_deviation"].append(np.max(np.abs(u - mean[:, None]), axis=-1))
        fields["spread"].append(u.max(axis=-1) - u.min(axis=-1))
        fields["log_normaliser"].append(lse)
        fields["certified_window"].append(
            np.stack([lib(st.certified_window, u, e) for e in eps], axis=-1))
        fields["effective_entries"].append(
            np.stack([lib(st.num_effective_entries, u, e) for e in eps], axis=-1))
        tails = lib(st.log_tail_mass, u, tuple(range(1, n + 1)))  # (heads, n)
        fields["log_tail_mass"].append(np.stack(
            [tails[:, w - 1] if w <= n else np.full(u.shape[0], -np.inf) for w in windows], axis=-1))
        fields["log_kth_smallest"].append(np.stack(
            [lib(st.log_kth_smallest_entry, u, exact_ceil(f, n)) for f in fractions], axis=-1))
        fields["log_sink_mass"].append(np_lse(u[:, :min(sinks, n)]) - lse)
        fields["log_local_mass"].append(np_lse(u[:, max(0, n - local):]) - lse)
    return CausalRowStatistics(**{name: np.stack(v, axis=1) for name, v in fields.items()})


def assert_log_close(actual, expected, rtol=1e-10, atol=1e-9, what=""):
    """Equal -inf positions, no NaN, finite entries close."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert not np.isnan(actual).any(), what
    np.testing.assert_array_equal(np.isneginf(actual), np.isneginf(expected), err_msg=what)
    finite = np.isfinite(expected)
    np.testing.assert_allclose(actual[finite], expected[finite], rtol=rtol, atol=atol, err_msg=what)


INTEGER_FIELDS = ("certified_window", "effective_entries")


def assert_statistics_match(got: CausalRowStatistics, want: CausalRowStatistics, rtol=1e-10, atol=1e-9):
    for name in CausalRowStatistics._fields:
        a, b = getattr(got, name), getattr(want, name)
        if name in INTEGER_FIELDS:
            assert np.asarray(a).shape == b.shape, name
            np.testing.assert_array_equal(np.asarray(a), b, err_msg=name)
        else:
            assert_log_close(a, b, rtol=rtol, atol=atol, what=name)


def run(q, k, rows, **kw):
    kw = {"eps": EPS, "windows": WINDOWS, "small_fractions": FRACTIONS, "sinks": SINKS,
          "local": LOCAL, **kw}
    return causal_row_statistics(jnp.asarray(q), jnp.asarray(k), rows, **kw)


# ---------------------------------------------------------------- row statistics


def test_all_rows_match_the_non_causal_functions_on_each_prefix():
    """rows=None: every row of a 5-token context (groups of key length 1, 2, 4, 5),
    windows 3 and 5 larger than the first rows' visible counts (tail -inf)."""
    q, k, _ = sample(0, n=5)
    windows = (1, 3, 5)
    got = causal_row_statistics(jnp.asarray(q), jnp.asarray(k), None, eps=EPS, windows=windows,
                                small_fractions=FRACTIONS, sinks=SINKS, local=LOCAL)
    assert got.mean.shape == (HEADS, 5)
    assert got.certified_window.shape == got.effective_entries.shape == (HEADS, 5, len(EPS))
    assert got.log_tail_mass.shape == (HEADS, 5, len(windows))
    assert got.log_kth_smallest.shape == (HEADS, 5, len(FRACTIONS))
    want = reference(q, k, range(5), windows=windows)
    assert_statistics_match(got, want)
    # Window w >= n_i drops nothing: rows 0..w-1 give -inf, later rows a finite tail.
    tails = np.asarray(got.log_tail_mass)
    for j, w in enumerate(windows):
        assert np.isneginf(tails[:, :w, j]).all()
        assert np.isfinite(tails[:, w:, j]).all()


def test_sampled_rows_in_arbitrary_order_come_back_in_that_order():
    """Rows on both sides of the powers of two (key lengths 1, 2, 4, 8, 16, 17),
    shuffled and with a duplicate: results follow the order given, and a row's
    statistics do not depend on which rows are sampled with it."""
    q, k, _ = sample(1)
    rows = [16, 3, 0, 8, 15, 7, 4, 2, 1, 8]
    got = run(q, k, np.asarray(rows))
    assert_statistics_match(got, reference(q, k, rows))
    # Other groupings change the matrix products' shapes, so agreement is to rounding.
    everything = run(q, k, None)
    assert_statistics_match(got, CausalRowStatistics(
        *(np.asarray(x)[:, rows] for x in everything)), rtol=1e-13, atol=1e-13)
    single = run(q, k, [15])
    assert_statistics_match(single, CausalRowStatistics(
        *(np.asarray(x)[:, [4]] for x in got)), rtol=1e-13, atol=1e-13)
    # A list and an int32 array of rows are both accepted.
    as_int32 = run(q, k, np.asarray([15], np.int32))
    np.testing.assert_array_equal(np.asarray(as_int32.mean), np.asarray(single.mean))


def test_row_zero_sees_one_key():
    q, k, _ = sample(2)
    got = run(q, k, [0])
    u = scores(q, k, 0)[:, 0]
    np.testing.assert_allclose(np.asarray(got.mean)[:, 0], u, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(got.log_normaliser)[:, 0], u, rtol=1e-12)
    for name in ("sigma", "max_deviation", "spread", "log_sink_mass", "log_local_mass"):
        np.testing.assert_array_equal(np.asarray(getattr(got, name)), 0.0, err_msg=name)
    np.testing.assert_array_equal(np.asarray(got.log_kth_smallest), 0.0)  # the only entry is 1
    np.testing.assert_array_equal(np.asarray(got.certified_window), 1)
    np.testing.assert_array_equal(np.asarray(got.effective_entries), 1)  # s = 1 > eps
    assert np.isneginf(np.asarray(got.log_tail_mass)).all()


def test_grouped_query_heads_read_kv_head_h_over_group():
    """heads=4, kv_heads=2: head h reads kv head h // 2. Equal to giving every
    query head its own copy of its key head (kv_heads = heads, no grouping), and
    different from the interleaved mapping h % kv_heads."""
    q, k, _ = sample(3)
    rows = [16, 7]
    grouped = run(q, k, rows)
    expanded = run(q, np.repeat(k, 2, axis=0), rows)
    for name in CausalRowStatistics._fields:
        np.testing.assert_array_equal(np.asarray(getattr(grouped, name)),
                                      np.asarray(getattr(expanded, name)), err_msg=name)
    interleaved = run(q, np.tile(k, (2, 1, 1)), rows)  # head h gets kv head h % 2
    assert not np.allclose(np.asarray(interleaved.mean), np.asarray(grouped.mean))
    assert_statistics_match(grouped, reference(q, k, rows))


def test_huge_score_scale_keeps_tiny_tails_finite():
    """Keys x 200: score gaps of hundreds, tails far below the float64 range of
    exp (e^-745); in log space they must stay finite where the float64 reference
    (log_tail_mass on the prefix) is finite, and match it."""
    q, k, _ = sample(4, key_scale=200.0)
    rows = [16, 15, 8, 4, 1]
    windows = (1, 8, 14, 16)
    got = run(q, k, rows, windows=windows, eps=(0.1, 1e-300))
    want = reference(q, k, rows, windows=windows, eps=(0.1, 1e-300))
    tails = np.asarray(got.log_tail_mass)
    finite = np.isfinite(want.log_tail_mass)
    assert np.isfinite(tails[finite]).all()
    assert tails[finite].min() < -745  # exp would underflow to 0: log space is needed
    assert np.asarray(got.log_kth_smallest).min() < -300
    # Scores of size ~1e3 round at ~1e-13; logs of size ~1e3 are compared at 1e-9 relative.
    assert_statistics_match(got, want, rtol=1e-9, atol=1e-8)


def test_float32_agrees_with_float64():
    """float32 scores round at ~6e-8 relative to the score scale (|u| ~ 3): logs
    and moments agree within 1e-4 absolute; the integer counts may move by one
    only where a mass lies within rounding of eps."""
    q, k, _ = sample(5)
    rows = [16, 15, 8, 3, 0]
    got32 = run(q.astype(np.float32), k.astype(np.float32), rows)
    got64 = run(q, k, rows)
    assert got32.mean.dtype == jnp.float32 and got64.mean.dtype == jnp.float64
    for name in CausalRowStatistics._fields:
        a = np.asarray(getattr(got32, name), np.float64)
        b = np.asarray(getattr(got64, name), np.float64)
        if name in INTEGER_FIELDS:
            assert np.abs(a - b).max() <= 1, name
            assert np.mean(a == b) >= 0.95, name
        else:
            assert_log_close(a, b, rtol=1e-4, atol=1e-4, what=name)


def test_eps_one_sinks_zero_and_full_windows():
    """Edge parameters: eps = 1 (nothing is above it; window 1 already certifies),
    sinks = 0 (no sink mass: -inf), local >= n (the whole row: log 1 = 0),
    window = n (-inf everywhere), fraction 1 (k = n: the minimum entry)."""
    q, k, _ = sample(6)
    rows = [16, 8, 0]
    kw = dict(eps=(1.0, 0.5), windows=(N,), small_fractions=(1.0, 0.1), sinks=0, local=N)
    got = run(q, k, rows, **kw)
    want = reference(q, k, rows, eps=kw["eps"], windows=kw["windows"],
                     fractions=kw["small_fractions"], sinks=0, local=N)
    assert_statistics_match(got, want)
    np.testing.assert_array_equal(np.asarray(got.certified_window)[..., 0], 1)
    np.testing.assert_array_equal(np.asarray(got.effective_entries)[..., 0], 0)
    assert np.isneginf(np.asarray(got.log_sink_mass)).all()
    np.testing.assert_allclose(np.asarray(got.log_local_mass), 0.0, atol=1e-12)
    assert np.isneginf(np.asarray(got.log_tail_mass)).all()


def test_a_wrong_reference_is_caught():
    """The comparison has teeth: an off-by-one window, an off-by-one causal mask
    (keys 0..i-1) and a certified window one too small all disagree with the
    function, while the right reference agrees."""
    q, k, _ = sample(7)
    rows = [16, 8, 4]
    got = run(q, k, rows)
    want = reference(q, k, rows)
    assert_statistics_match(got, want)
    shifted = reference(q, k, rows, windows=tuple(w + 1 for w in WINDOWS))
    with pytest.raises(AssertionError):
        assert_statistics_match(got, want._replace(log_tail_mass=shifted.log_tail_mass))
    with pytest.raises(AssertionError):
        assert_statistics_match(got, want._replace(certified_window=want.certified_window - 1))
    short_mean = np.stack([scores(q, k, r)[:, :-1].mean(axis=-1) for r in rows], axis=1)
    with pytest.raises(AssertionError):
        assert_statistics_match(got, want._replace(mean=short_mean))


@pytest.mark.parametrize("case", [
    "queries 2-D", "keys 2-D", "n differs", "head_dim differs", "heads not a multiple",
    "row -1", "row n", "rows 2-D", "rows empty", "rows float", "eps 0", "eps > 1", "eps nan",
    "eps empty", "window 0", "window n + 1", "fraction 0", "fraction > 1",
])
def test_bad_input_raises_value_error(case):
    q, k, _ = sample(8, n=5)
    args = dict(queries=q, keys=k, rows=None, eps=EPS, windows=(1, 5), small_fractions=FRACTIONS)
    change = {
        "queries 2-D": dict(queries=q[0]),
        "keys 2-D": dict(keys=k[0]),
        "n differs": dict(keys=k[:, :4]),
        "head_dim differs": dict(keys=k[..., :4]),
        "heads not a multiple": dict(queries=q[:3]),
        "row -1": dict(rows=[2, -1]),
        "row n": dict(rows=[5]),
        "rows 2-D": dict(rows=[[0, 1]]),
        "rows empty": dict(rows=[]),
        "rows float": dict(rows=[1.0]),
        "eps 0": dict(eps=(0.0,)),
        "eps > 1": dict(eps=(0.1, 1.5)),
        "eps nan": dict(eps=(float("nan"),)),
        "eps empty": dict(eps=()),
        "window 0": dict(windows=(0, 2)),
        "window n + 1": dict(windows=(6,)),
        "fraction 0": dict(small_fractions=(0.0,)),
        "fraction > 1": dict(small_fractions=(1.5,)),
    }[case]
    args.update(change)
    with pytest.raises(ValueError):
        causal_row_statistics(**args)


def test_empty_windows_is_rejected_or_empty():
    q, k, _ = sample(8, n=5)
    try:
        got = causal_row_statistics(q, k, None, eps=EPS, windows=(), small_fractions=FRACTIONS)
    except ValueError:
        return
    assert np.asarray(got.log_tail_mass).shape == (HEADS, 5, 0)


def test_uniform_rows_away_from_the_eps_boundary():
    """Zero queries: every visible score is 0, s_j = 1/n, tau(k) = (n - k)/n. For
    eps strictly between two tail values, the window is exact."""
    _, k, _ = sample(9)
    q = np.zeros((HEADS, N, DIM))
    got = run(q, k, [16, 7], eps=(0.3, 0.01))
    # n = 17: tau(k) <= 0.3 iff k >= 11.9; n = 8: iff k >= 5.6.  eps = 0.01: k = n.
    np.testing.assert_array_equal(np.asarray(got.certified_window)[0], [[12, 17], [6, 8]])
    np.testing.assert_array_equal(np.asarray(got.effective_entries)[0], [[0, 17], [0, 8]])
    np.testing.assert_allclose(np.asarray(got.sigma), 0.0, atol=1e-15)


def test_certified_window_at_an_exact_boundary():
    """tau(4) = 4/8 = 1/2 exactly on a uniform row of 8 keys: the smallest k with
    tau(k) <= 1/2 is 4 (as the non-causal certified_window says)."""
    _, k, _ = sample(9)
    q = np.zeros((HEADS, N, DIM))
    got = run(q, k, [7], eps=(0.5, 0.25))
    assert lib(st.certified_window, np.zeros((HEADS, 8)), 0.5).tolist() == [4] * HEADS
    np.testing.assert_array_equal(np.asarray(got.certified_window)[:, 0], [[4, 6]] * HEADS)


CONFIGS = [(4, 2, 5), (4, 2, 9), (2, 1, 9)]  # (heads, kv_heads, n); MHA: the GQA test


@settings(max_examples=10, **SETTINGS)
@given(data=hs.data(), config=hs.sampled_from(CONFIGS), seed=hs.integers(0, 2**31 - 1),
       scale=hs.sampled_from([0.05, 1.0, 8.0, 40.0]))
def test_property_random_shapes_and_seeds(data, config, seed, scale):
    """Random seeds, score scales, head groupings and row subsets (in random
    order) of a 5- or 9-token context agree with the prefix references."""
    heads, kv_heads, n = config
    q, k, _ = sample(seed, n=n, heads=heads, kv_heads=kv_heads, key_scale=scale)
    candidates = [r for r in ROWS if r < n]
    if n == 5 and data.draw(hs.booleans(), label="all rows"):
        rows, expected_rows = None, list(range(n))
    else:
        rows = expected_rows = data.draw(
            hs.lists(hs.sampled_from(candidates), min_size=1, max_size=4, unique=True), label="rows")
    windows = (1, 2, min(n, 8))
    got = run(q, k, None if rows is None else np.asarray(rows), windows=windows)
    want = reference(q, k, expected_rows, windows=windows)
    assert_statistics_match(got, want, rtol=1e-9, atol=1e-9)
    # Structural facts that hold for every row.
    n_i = np.asarray(expected_rows) + 1
    cw = np.asarray(got.certified_window)
    assert (cw >= 1).all() and (cw <= n_i[None, :, None]).all()
    assert (np.asarray(got.effective_entries) <= n_i[None, :, None]).all()
    assert (np.asarray(got.log_tail_mass) <= 1e-12).all()
    assert (np.asarray(got.sigma) <= np.asarray(got.max_deviation) + 1e-12).all()
    assert (np.asarray(got.max_deviation) <= np.asarray(got.spread) + 1e-12).all()


# ---------------------------------------------------------------- sparse errors


def kept_mask(u, k, selection, sinks):
    """Reference kept set of one row's visible scores u (heads, n) with window k."""
    n = u.shape[-1]
    if selection == "top-k":
        order = np.argsort(-u, axis=-1, kind="stable")[:, :k]
        mask = np.zeros(u.shape, bool)
        np.put_along_axis(mask, order, True, axis=-1)
        return mask
    return np.broadcast_to(st.windows.sink_recent_mask(n, k, sinks), u.shape)


def sparse_reference(q, k, v, rows, windows, selection, sinks):
    v = np.repeat(np.asarray(v, np.float64), q.shape[0] // k.shape[0], axis=0)
    out = {"log_l2": [], "log_output_error": [], "log_output_norm": []}
    for row in rows:
        u = scores(q, k, row)
        n = row + 1
        kk = min(int(windows[n]), n)
        kept = kept_mask(u, kk, selection, sinks)
        assert kept.sum(axis=-1).tolist() == [kk] * u.shape[0]
        vals = v[:, :n]

        def errs(u_, kept_, vals_):
            return st.masked_attention_errors(u_[:, None, :], kept_[:, None, :], vals_)

        b = u.shape[0]
        pad = BATCH - b
        e = errs(jnp.asarray(np.concatenate([u, np.repeat(u[:1], pad, 0)])),
                 jnp.asarray(np.concatenate([kept, np.repeat(kept[:1], pad, 0)])),
                 jnp.asarray(np.concatenate([vals, np.repeat(vals[:1], pad, 0)])))
        out["log_l2"].append(np.asarray(e.log_l2)[:b, 0])
        out["log_output_error"].append(np.asarray(e.log_output)[:b, 0])
        s = np.exp(u - np_lse(u)[:, None])
        out["log_output_norm"].append(np.log(np.linalg.norm(np.einsum("hn,hnd->hd", s, vals), axis=-1)))
    return {name: np.stack(x, axis=1) for name, x in out.items()}


def window_table(n, rule):
    """windows[m] for m = 0..n (KeptSet's layout; windows[0] unused)."""
    m = np.arange(n + 1)
    return np.asarray([max(1, rule(int(x))) for x in m], np.int64)


@pytest.mark.parametrize("selection", ["top-k", "sink-recent"])
@pytest.mark.parametrize("key_scale", [1.0, 200.0])
def test_sparse_errors_match_masked_attention_errors(selection, key_scale):
    """Per-row l2 and output errors of top-k / sink+recent against
    masked_attention_errors on the prefix with the reference kept set; windows
    above n are clipped to n (errors -inf: nothing dropped)."""
    q, k, v = sample(10, key_scale=key_scale)
    rows = [16, 3, 0, 8, 4, 7]
    windows = window_table(N, lambda m: 3 + m // 4)  # >= n for n <= 4
    got = causal_sparse_errors(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), np.asarray(rows),
                               windows, selection=selection, sinks=2)
    want = sparse_reference(q, k, v, rows, windows, selection, 2)
    for name in want:
        a = np.asarray(getattr(got, name))
        assert a.shape == (HEADS, len(rows)), name
        assert_log_close(a, want[name], rtol=1e-9, atol=1e-8, what=name)
    n_i = np.asarray(rows) + 1
    full = windows[n_i] >= n_i  # rows 0..3 keep every key
    assert full.any() and not full.all()
    assert np.isneginf(np.asarray(got.log_l2)[:, full]).all()
    assert np.isfinite(np.asarray(got.log_l2)[:, ~full]).all()
    if key_scale > 1:
        # Errors far below the float64 epsilon (e^-36) stay finite and exact in log space.
        assert np.asarray(got.log_l2)[:, ~full].min() < -300


def test_sparse_errors_catch_a_wrong_kept_set():
    """Keeping one key fewer (off-by-one window) gives different errors."""
    q, k, v = sample(11)
    rows = [16, 8]
    windows = window_table(N, lambda m: 4)
    got = causal_sparse_errors(q, k, v, rows, windows)
    right = sparse_reference(q, k, v, rows, windows, "top-k", 4)
    wrong = sparse_reference(q, k, v, rows, window_table(N, lambda m: 3), "top-k", 4)
    assert_log_close(got.log_l2, right["log_l2"], rtol=1e-9, atol=1e-9)
    assert not np.allclose(np.asarray(got.log_l2), wrong["log_l2"])


def test_sparse_errors_reject_negative_rows():
    q, k, v = sample(12, n=5)
    with pytest.raises(ValueError):
        causal_sparse_errors(q, k, v, [-1, 3], window_table(5, lambda m: 2))


def test_sparse_errors_reject_row_n():
    q, k, v = sample(12, n=5)
    with pytest.raises(ValueError):
        causal_sparse_errors(q, k, v, [5], window_table(5, lambda m: 2))
