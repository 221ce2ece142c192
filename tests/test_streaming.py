"""Key-streamed per-row statistics (sparsity_theory/streaming.py) against the
dense row-block evaluator (sparsity_theory/evaluate.py).

``stream_rows`` must give what ``evaluate_rows`` gives: the top-k sets exactly
whenever the scores are bitwise the same in both engines (integer-valued
queries and keys: every dot product is exact whatever the matmul blocking, and
ties are frequent), and every sum to rounding; ``certified_window`` censored at
``max(windows) + 1``.

Speed: each new shape, window tuple or block size compiles both engines (a few
seconds each on CPU). Almost every test therefore uses one canonical problem
shape (M x D queries, N x D keys, N x DV values) and window tuple; the scale and
eps are traced arguments, so peaked and flat rows share one compiled program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy.special import logsumexp

import sparsity_theory as st
from _shared import SETTINGS
from sparsity_theory.evaluate import _evaluate
from sparsity_theory import selection, streaming
from sparsity_theory.streaming import _stream

M, N, D, DV = 13, 50, 4, 3
# Unsorted and with a duplicate, as evaluate_rows accepts: the columns follow
# this order. K = 20 > the key block 7 of the default configuration.
WINDOWS = (7, 1, 3, 3, 20)
K = max(WINDOWS)
# No eps equals j / n (a row of equal logits has tau(k) = (n - k) / n and
# s_j = 1 / n exactly) and none is 1 (the largest entry of a peaked row rounds
# to 1): away from those, no tail mass or entry is within rounding of an eps.
EPS = (1e-3, 0.0137, 0.31)
# (query_block, key_block): blocks that do not divide m = 13 / n = 50; one key
# per block; one key block holding every key (64 >= n) with one query per
# block; key blocks of 40 (the second one padded). Key blocks longer than
# K + PRESELECT_SLACK = 36 (the last two) preselect float64 blocks on their
# float32 rounding.
CONFIGS = [(5, 7), (13, 1), (1, 64), (5, 40)]
LOG_FIELDS = ("log_normaliser", "log_tail_mass", "log_l1_error", "log_l2_error",
              "log_linf_error", "log_output_error")


def _integer_problem(seed, m=M, n=N, d=D, dv=DV, dtype=np.float64):
    """Queries and keys with small integer entries (exact dot products, many
    ties, some -0.0 scores); Gaussian values."""
    rng = np.random.default_rng(seed)
    return (rng.integers(-3, 4, (m, d)).astype(dtype), rng.integers(-3, 4, (n, d)).astype(dtype),
            rng.normal(size=(n, dv)).astype(dtype))


def _gaussian_problem(seed, m=M, n=N, d=D, dv=DV):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(m, d)), rng.normal(size=(n, d)), rng.normal(size=(n, dv))


def _dense(q, k, v=None, *, windows=WINDOWS, eps=EPS, scale=1.0):
    return st.evaluate_rows(q, k, v, windows=windows, eps=eps, scale=scale,
                            block_size=max(1, np.shape(q)[0]))


def _stream_rows(q, k, v=None, config=CONFIGS[0], *, windows=WINDOWS, eps=EPS, scale=1.0):
    query_block, key_block = config
    return st.stream_rows(q, k, v, windows=windows, eps=eps, scale=scale,
                          query_block=query_block, key_block=key_block)


def _assert_close(x, y, rtol, name):
    """Same infinities (no NaN), finite entries within rtol * max(1, |y|)."""
    x, y = np.asarray(x), np.asarray(y)
    assert not np.isnan(x).any() and not np.isnan(y).any(), name
    np.testing.assert_array_equal(np.isposinf(x), np.isposinf(y), err_msg=name)
    np.testing.assert_array_equal(np.isneginf(x), np.isneginf(y), err_msg=name)
    fin = np.isfinite(y)
    err = np.abs(x[fin] - y[fin]) / np.maximum(1.0, np.abs(y[fin]))
    assert err.size == 0 or err.max() <= rtol, f"{name}: max relative error {err.max():.3g}"


def _assert_matches_dense(got, want, windows=WINDOWS, *, exact_scores, rtol=1e-12):
    """``got`` (stream_rows) against ``want`` (evaluate_rows): same fields,
    shapes and dtypes; counts exactly; the certified window censored at K + 1;
    max / min logits bitwise when the scores are exact; logs to ``rtol``."""
    assert type(got) is type(want)
    for name in want._fields:
        x, y = getattr(got, name), getattr(want, name)
        if y is None:
            assert x is None, name
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype, (name, x.shape, y.shape, x.dtype, y.dtype)
        if name == "certified_window":
            np.testing.assert_array_equal(x, np.minimum(y, max(windows) + 1), err_msg=name)
        elif name == "num_small":
            np.testing.assert_array_equal(x, y, err_msg=name)
        elif name in ("max_logit", "min_logit") and exact_scores:
            np.testing.assert_array_equal(x, y, err_msg=name)
        elif name == "mean_logit":
            # A mean of logits of both signs: error relative to the logits' size.
            spread = np.maximum(np.abs(np.asarray(want.max_logit)), np.abs(np.asarray(want.min_logit)))
            np.testing.assert_array_less(np.abs(x - y), rtol * np.maximum(1.0, spread) + 1e-300)
        else:
            _assert_close(x, y, rtol, name)


# --------------------------------------------------------------------------
# Exact scores: top-k sets, ties, counts
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("seed,scale", [(0, 1.0), (1, 0.5), (2, 4.0)])
def test_integer_scores_match_dense_exactly(config, seed, scale):
    """Integer queries and keys: the scores are exact in both engines, so the
    max / min logits and every count are equal, and the logs agree to 1e-12
    although ties are everywhere (the output error depends on which tied entry
    is kept)."""
    q, k, v = _integer_problem(seed)
    want = _dense(q, k, v, scale=scale)
    got = _stream_rows(q, k, v, config, scale=scale)
    _assert_matches_dense(got, want, exact_scores=True)


def _tie_problem():
    """Rows whose largest logits are tied across key-block boundaries.

    ``u_ij = q_i0 * k_j0 (+ more for the last rows)``: the keys' first column is
    2 at indices 5, 6, 7, 13, 14, 30, 49 (block boundaries of key_block 7 fall
    between 6 | 7 and 13 | 14; 49 is alone in the last, padded block) and small
    integers elsewhere, so windows 1 and 3 split the tie at the top and window
    20 splits the next tie. Values are random, so every choice of tied entries
    gives a different output error.
    """
    rng = np.random.default_rng(7)
    k = np.zeros((N, D))
    k[:, 0] = rng.integers(-3, 1, N)
    k[[5, 6, 7, 13, 14, 30, 49], 0] = 2.0
    k[:, 1:] = rng.integers(-1, 2, (N, D - 1))
    q = np.zeros((M, D))
    q[:, 0] = [1, 2, 3, 1, 2, 3, 1, 2, -1, -2, 1, 1, 2]
    q[10:, 1:] = rng.integers(-1, 2, (3, D - 1))
    v = rng.normal(size=(N, DV))
    return q, k, v


def _reference_output_error(u, v, windows, lower_index_wins=True):
    """``log ||(s - s^)^T V||_2`` in NumPy for every row and window, with ties at
    the window boundary going to the lower (or, to show the test can fail, the
    higher) index."""
    out = np.empty((u.shape[0], len(windows)))
    for i, row in enumerate(u):
        order = np.argsort(-row, kind="stable") if lower_index_wins else \
            (len(row) - 1 - np.argsort(-row[::-1], kind="stable"))
        s = np.exp(row - logsumexp(row))
        for w, kk in enumerate(windows):
            kept = np.zeros(len(row), bool)
            kept[order[:kk]] = True
            s_hat = np.where(kept, s, 0.0) / s[kept].sum()
            out[i, w] = np.log(np.linalg.norm((s - s_hat) @ v))
    return out


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_ties_across_key_blocks_go_to_the_lower_index(config):
    q, k, v = _tie_problem()
    u = q @ k.T
    ref = _reference_output_error(u, v, WINDOWS)
    wrong = _reference_output_error(u, v, WINDOWS, lower_index_wins=False)
    # The test can fail: in many rows and windows the other tie rule changes
    # the output error by more than 1%.
    assert np.sum(np.abs(wrong - ref) > 0.01) >= 20
    got = _stream_rows(q, k, v, config)
    np.testing.assert_allclose(got.log_output_error, ref, rtol=1e-10, atol=1e-10)
    _assert_matches_dense(got, _dense(q, k, v), exact_scores=True)


def test_float32_preselection_of_float64_scores():
    """Scores ``a + b 2^-30`` (a, b small integers; exact in float64): entries
    with the same a round to the same float32, so the float32 preselection of a
    key block sees ties where the float64 order is strict. The float64 top-k
    sets must still be exact: whether the preselection's candidates suffice
    (float32 values strictly decrease from the K-th to the C-th) or it falls
    back to the whole block (both occur below, row by row)."""
    rng = np.random.default_rng(15)
    tiny = 2.0**-30
    k = rng.integers(-3, 4, (N, D)).astype(float)
    k[:, 0] = rng.random(N) < 0.8
    q = np.zeros((M, D))
    q[:, 0] = rng.choice([1.0, 2.0], M)
    q[:, 1] = tiny * rng.integers(1, 4, M)
    # Odd rows: two float32 levels, the upper one ~40 keys wide (fallback);
    # even rows: more levels (the candidates suffice).
    q[::2, 2] = rng.integers(1, 3, 7)
    v = rng.normal(size=(N, DV))
    u = q @ k.T
    assert len(np.unique(u)) > len(np.unique(u.astype(np.float32)))  # float32 merges scores
    f = -np.sort(-u.astype(np.float32), axis=1)
    candidates = K + streaming.PRESELECT_SLACK
    enough = f[:, candidates - 1] < f[:, K - 1]  # per row (one block of 50 keys)
    assert enough.any() and not enough.all()
    ref = _reference_output_error(u, v, WINDOWS)
    wrong = _reference_output_error(u, v, WINDOWS, lower_index_wins=False)
    assert np.sum(np.abs(wrong - ref) > 0.01) >= 10
    want = _dense(q, k, v)
    for config in CONFIGS:
        got = _stream_rows(q, k, v, config)
        _assert_matches_dense(got, want, exact_scores=True)
        np.testing.assert_allclose(got.log_output_error, ref, rtol=1e-10, atol=1e-10)


def _two_stage_tie_problem(n, dtype):
    """Integer scores with a tie that the two-stage selection must break by
    index, not by the ranking of the groups.

    In the first 8 rows ``u_ij = q_i0 k_j0``, q_i0 in {1, 2, 3}: the keys' first
    column is 10 at index 80 and 7 at 81 (both in group 5 of 16 keys), 8 at 33
    and 7 at 40 (group 2), 7 again at 4954 (the second block of 4864), at most
    5 elsewhere. The top 3 are 80, 33 and the 7 at 40: group 5 ranks first (its
    maximum is 10), so gathering the chosen groups in their ranking instead of
    their order would keep 81. The last 5 rows are random integer rows (ties
    everywhere). Values are random: each choice of tied entry gives another
    output error.
    """
    rng = np.random.default_rng(21)
    k = rng.integers(-3, 4, (n, D)).astype(float)
    k[:, 0] = rng.integers(-3, 6, n)
    k[[80, 81, 33, 40, 4954], 0] = [10, 7, 8, 7, 7]
    q = rng.integers(-3, 4, (M, D)).astype(float)
    q[:8] = 0.0
    q[:8, 0] = rng.integers(1, 4, 8)
    return q.astype(dtype), k.astype(dtype), rng.normal(size=(n, DV)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_stage_selection_of_long_key_blocks(dtype):
    """Key blocks of 4864 with windows (1, 3): long enough for the two-stage
    selection (selection.block_top_k): float32 blocks merge only the entries of
    the K groups of GROUP keys with the largest maxima; float64 blocks
    preselect their K + PRESELECT_SLACK float32 candidates with it. Integer
    scores (exact in both dtypes, ties inside and across groups and blocks):
    the top-k sets must be the dense ones, ties to the lower index."""
    windows, n, key_block = (1, 3), 2 * 4864, 4864
    window = max(windows)
    count = window if dtype == np.float32 else window + streaming.PRESELECT_SLACK
    assert key_block % streaming.GROUP == 0 and selection.two_stage_pays(key_block, count)
    if dtype == np.float32:  # the merge sees K groups' entries, not the whole block
        positions, _ = streaming._block_candidates(jnp.zeros((2, key_block), dtype), window)
        assert positions.shape == (2, window * streaming.GROUP)
    q, k, v = _two_stage_tie_problem(n, dtype)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    u = q64 @ k64.T
    ref = _reference_output_error(u, v64, windows)
    wrong = _reference_output_error(u, v64, windows, lower_index_wins=False)
    assert np.sum(np.abs(wrong - ref) > 0.01) >= 10  # the tie rule matters here
    want = _dense(q64, k64, v64, windows=windows)
    got = _stream_rows(q, k, v, (5, key_block), windows=windows)
    if dtype == np.float64:
        _assert_matches_dense(got, want, windows, exact_scores=True)
        np.testing.assert_allclose(got.log_output_error, ref, rtol=1e-10, atol=1e-10)
    else:  # sums in float32; the sets and counts exactly
        np.testing.assert_array_equal(got.num_small, want.num_small)
        np.testing.assert_array_equal(got.certified_window,
                                      np.minimum(want.certified_window, window + 1))
        np.testing.assert_array_equal(got.max_logit, want.max_logit)
        _assert_close(got.log_tail_mass, want.log_tail_mass, 1e-5, "log_tail_mass")
        _assert_close(got.log_output_error, ref, 1e-4, "log_output_error")


# --------------------------------------------------------------------------
# Rounding: Gaussian rows, flat to extremely peaked
# --------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gaussian_rows_match_dense_to_rounding(config):
    """Scale 1 (flat rows) to 200 (tail masses down to e^-1600, far below the
    float range in linear space): the logs agree to 1e-12 relative, counts and
    certified windows exactly. The scores may differ in the last bit between
    the engines (different matmul blocking), hence no bitwise max / min."""
    q, k, v = _gaussian_problem(3)
    for scale in (1.0, 30.0, 200.0):
        want = _dense(q, k, v, scale=scale)
        got = _stream_rows(q, k, v, config, scale=scale)
        _assert_matches_dense(got, want, exact_scores=False)
    # The last scale did reach tails below the smallest positive float.
    assert np.min(np.asarray(want.log_tail_mass)) < np.log(np.finfo(np.float64).tiny) - 500


def _kth_log_softmax(q, k, scale, kth):
    u = scale * q @ k.T
    log_s = u - logsumexp(u, axis=1, keepdims=True)
    return -np.sort(-log_s, axis=1)[:, kth - 1]


def test_num_small_from_the_top_k_and_from_the_second_pass():
    """|S_eps| comes from the top K when the K-th largest entry is <= eps for
    every row of a query block and eps (peaked rows), else from a second pass
    over the keys (flat rows); both equal the dense count, including a scale at
    which the blocks of one call take different paths."""
    q, k, v = _gaussian_problem(4)
    log_eps = np.log(EPS)
    seen = set()
    for scale in (0.3, 1.0, 3.0, 8.0, 40.0):
        kth = _kth_log_softmax(q, k, scale, K)
        resolved = np.all(kth[:, None] <= log_eps[None, :], axis=1)
        blocks = [bool(np.all(resolved[i:i + 5])) for i in range(0, M, 5)]  # query_block 5
        seen.update(blocks)
        want = _dense(q, k, v, scale=scale)
        got = _stream_rows(q, k, v, (5, 7), scale=scale)
        np.testing.assert_array_equal(got.num_small, want.num_small)
        # Some counts strictly between 0 and n: not a trivial case.
        counts = np.asarray(want.num_small)
        assert np.any((0 < counts) & (counts < N))
    assert seen == {True, False}


def test_window_one_second_pass_and_single_query_row():
    """K = 1: the largest entry always exceeds eps = 1e-3 (n = 50), so every
    count needs the second pass; with m = 1, moderately peaked rows where
    several entries exceed eps. One compiled program serves every row."""
    q, k, v = _gaussian_problem(5)
    eps = (1e-3, 0.02 + 1e-3, 0.2 + 1e-3)
    counts = []
    for i, scale in enumerate((1.0, 3.0, 6.0, 12.0)):
        qi = q[i:i + 1]
        want = _dense(qi, k, v, windows=(1,), eps=eps, scale=scale)
        got = _stream_rows(qi, k, v, (1, 7), windows=(1,), eps=eps, scale=scale)
        _assert_matches_dense(got, want, (1,), exact_scores=False)
        counts.append(np.asarray(want.num_small)[0, 0])
    assert max(N - c for c in counts) > 2  # more than two entries above 1e-3 in some row


# --------------------------------------------------------------------------
# Shapes and options
# --------------------------------------------------------------------------


def test_max_window_equals_n_unsorted_windows_and_padding():
    """k = n keeps everything: tail and errors -inf; unsorted and duplicated
    windows; n = 9 not a multiple of key_block 4, m = 4 not of query_block 3."""
    q, k, v = _integer_problem(8, m=4, n=9)
    windows = (9, 2, 2, 5)
    want = _dense(q, k, v, windows=windows)
    got = _stream_rows(q, k, v, (3, 4), windows=windows)
    _assert_matches_dense(got, want, windows, exact_scores=True)
    assert np.all(np.asarray(got.log_tail_mass)[:, 0] == -np.inf)
    assert np.all(np.asarray(got.log_output_error)[:, 0] == -np.inf)
    assert np.all(np.isfinite(np.asarray(got.log_tail_mass)[:, 1:]))


def test_single_key():
    """n = 1, windows (1,): the only entry is 1 (small only for eps = 1); every
    error is -inf; the default key block (4096) is cut to n."""
    q, k, v = _integer_problem(9, m=3, n=1)
    eps = (1e-3, 1.0)
    want = _dense(q, k, v, windows=(1,), eps=eps)
    got = st.stream_rows(q, k, v, windows=(1,), eps=eps, query_block=2)
    _assert_matches_dense(got, want, (1,), exact_scores=True)
    np.testing.assert_array_equal(got.num_small, [[0, 1]] * 3)
    np.testing.assert_array_equal(got.certified_window, [[1, 1]] * 3)
    np.testing.assert_array_equal(got.log_normaliser, (q @ k.T)[:, 0])
    assert np.all(np.asarray(got.log_l2_error) == -np.inf)


def test_without_values():
    """No values: no output error, and every other field is the one computed
    with values."""
    q, k, v = _integer_problem(10)
    got = _stream_rows(q, k, None)
    assert got.log_output_error is None
    _assert_matches_dense(got, _dense(q, k, None), exact_scores=True)
    with_values = _stream_rows(q, k, v)
    for name in got._fields[:-1]:
        np.testing.assert_array_equal(getattr(got, name), getattr(with_values, name), err_msg=name)


def test_float32_inputs():
    """float32 in, float32 out (counts in the default integer type), agreeing
    with the float64 computation on the same inputs to float32 rounding."""
    q, k, v = _gaussian_problem(11)
    q32, k32, v32 = (x.astype(np.float32) for x in (q, k, v))
    for scale in (1.0, 20.0):
        got = _stream_rows(q32, k32, v32, scale=scale)
        want = _dense(*(x.astype(np.float64) for x in (q32, k32, v32)), scale=scale)
        for name in got._fields:
            x, y = np.asarray(getattr(got, name)), np.asarray(getattr(want, name))
            assert x.dtype == (y.dtype if y.dtype.kind == "i" else np.float32), name
        for name in LOG_FIELDS + ("max_logit", "min_logit", "mean_logit"):
            # Measured: up to ~4e-6 (float32 scores of size ~100 at scale 20).
            _assert_close(getattr(got, name), getattr(want, name), 1e-4, name)
        # Counts: equal except where an entry or a tail is within float32
        # rounding of an eps (none for this seed).
        assert np.mean(np.asarray(got.num_small) == np.asarray(want.num_small)) >= 0.95
        assert np.mean(np.asarray(got.certified_window)
                       == np.minimum(np.asarray(want.certified_window), K + 1)) >= 0.95


def test_integer_inputs_in_float32_are_exact():
    """Small integers are exact in float32 too: counts and max / min logits
    equal the float64 dense computation bitwise."""
    q, k, v = _integer_problem(12, dtype=np.float32)
    got = _stream_rows(q, k, v)
    want = _dense(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64))
    np.testing.assert_array_equal(got.num_small, want.num_small)
    np.testing.assert_array_equal(got.certified_window, np.minimum(want.certified_window, K + 1))
    np.testing.assert_array_equal(got.max_logit, want.max_logit)
    np.testing.assert_array_equal(got.min_logit, want.min_logit)
    _assert_close(got.log_tail_mass, want.log_tail_mass, 1e-5, "log_tail_mass")
    _assert_close(got.log_output_error, want.log_output_error, 1e-4, "log_output_error")


def test_vmap_over_seeds_equals_python_loop():
    """The pattern of verify/suites/identities.py: vmap the public function over a
    leading seeds axis (value checks are skipped for tracers; the lax.cond of
    the count becomes a select). Rademacher inputs: exact scores."""
    keys = jax.random.split(jax.random.PRNGKey(13), 3)

    def one_seed(key):
        inp = st.sample_inputs(key, N, D, st.Rademacher(1.0), "cross", rows=M)
        return inp.x, 2 * inp.y, inp.y[:, :DV]

    q, k, v = jax.vmap(one_seed)(keys)
    batched = jax.vmap(lambda q, k, v: _stream_rows(q, k, v))(q, k, v)
    for i in range(len(keys)):
        one = _stream_rows(q[i], k[i], v[i])
        _assert_matches_dense(jax.tree_util.tree_map(lambda a: a[i], batched), one, exact_scores=True)
        _assert_matches_dense(one, _dense(q[i], k[i], v[i]), exact_scores=True)


# --------------------------------------------------------------------------
# Property test
# --------------------------------------------------------------------------

# n -> (m, windows, block configurations); n = 50 reuses the compiled programs
# of the tests above.
BUCKETS = {N: (M, WINDOWS, CONFIGS), 5: (3, (4, 1, 2), [(2, 2), (3, 8)])}


@hs.composite
def problems(draw):
    n = draw(hs.sampled_from(sorted(BUCKETS)))
    m, windows, configs = BUCKETS[n]
    config = draw(hs.sampled_from(configs))
    seed = draw(hs.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if draw(hs.booleans()):
        q, k = rng.integers(-3, 4, (m, D)).astype(float), rng.integers(-3, 4, (n, D)).astype(float)
        exact = True
    else:
        q, k = rng.normal(size=(m, D)), rng.normal(size=(n, D))
        exact = False
    v = rng.normal(size=(n, DV))
    scale = draw(hs.sampled_from([0.25, 1.0, 3.0, 50.0]))
    return q, k, v, windows, config, scale, exact


@settings(max_examples=12, **SETTINGS)
@given(problems())
def test_property_stream_equals_dense(problem):
    q, k, v, windows, config, scale, exact = problem
    want = _dense(q, k, v, windows=windows, scale=scale)
    got = _stream_rows(q, k, v, config, windows=windows, scale=scale)
    _assert_matches_dense(got, want, windows, exact_scores=exact)


# --------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------


def test_memory_does_not_grow_like_m_times_n():
    """n = 2^16 keys, m = 256 queries, key blocks of 1024: the streamed
    program's scratch memory is far below one m x n float64 matrix (128 MiB),
    while the dense evaluator with one block of 256 rows needs more than that
    (so the bound can fail)."""
    m, n = 256, 2**16
    q = jax.ShapeDtypeStruct((m, 16), jnp.float64)
    k = jax.ShapeDtypeStruct((n, 16), jnp.float64)
    log_eps = jax.ShapeDtypeStruct((2,), jnp.float64)
    scale = jax.ShapeDtypeStruct((), jnp.float64)
    streamed = _stream.lower(q, k, None, log_eps, scale, (1, 16), 64, 1024).compile().memory_analysis()
    dense = _evaluate.lower(q, k, None, log_eps, scale, (1, 16), 256).compile().memory_analysis()
    if streamed is None or dense is None:
        pytest.skip("this backend reports no memory analysis")
    full_matrix = m * n * 8
    assert streamed.temp_size_in_bytes < full_matrix / 8
    assert dense.temp_size_in_bytes > full_matrix


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _good():
    q, k, v = _integer_problem(14, m=3, n=6)
    return q, k, v


@pytest.mark.parametrize("windows", [0, 7, (1, 7), (), (2.5,), (1, -1), (1, True), 2.5, None])
def test_bad_windows(windows):
    q, k, v = _good()
    with pytest.raises(ValueError, match="windows"):
        st.stream_rows(q, k, v, windows=windows)


def test_zero_dimensional_eps_array_is_a_scalar_eps():
    q, k, v = _good()
    want = st.stream_rows(q, k, v, eps=1e-3)
    got = st.stream_rows(q, k, v, eps=np.asarray(1e-3))
    np.testing.assert_array_equal(got.num_small, want.num_small)


@pytest.mark.parametrize("eps", [0.0, -1e-3, 1.5, float("nan"), float("inf"), (1e-3, 0.0), ()])
def test_bad_eps(eps):
    q, k, v = _good()
    with pytest.raises(ValueError, match="eps"):
        st.stream_rows(q, k, v, eps=eps)


@pytest.mark.parametrize("which", ["queries", "keys", "values"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs(which, bad):
    args = dict(zip(("queries", "keys", "values"), _good()))
    args[which] = args[which].copy()
    args[which][1, 0] = bad
    with pytest.raises(ValueError, match=which):
        st.stream_rows(args["queries"], args["keys"], args["values"])


def test_mismatched_shapes_and_dimensions():
    q, k, v = _good()
    with pytest.raises(ValueError, match="mismatched"):
        st.stream_rows(q[:, :3], k, v)  # d
    with pytest.raises(ValueError, match="mismatched"):
        st.stream_rows(q, k, v[:5])  # values rows != n
    with pytest.raises(ValueError, match="queries"):
        st.stream_rows(q[0], k, v)
    with pytest.raises(ValueError, match="keys"):
        st.stream_rows(q, k[None], v)
    with pytest.raises(ValueError, match="values"):
        st.stream_rows(q, k, v[:, 0])
    with pytest.raises(ValueError, match="scale"):
        st.stream_rows(q, k, v, scale=float("nan"))


@pytest.mark.parametrize("name", ["query_block", "key_block"])
@pytest.mark.parametrize("bad", [0, -3, 2.0, 1.5, "4", True, None])
def test_bad_block_sizes(name, bad):
    q, k, v = _good()
    with pytest.raises(ValueError, match=name):
        st.stream_rows(q, k, v, **{name: bad})


def test_eps_one_counts_every_entry():
    """Every softmax entry is at most 1, so |S_1| = n, even for peaked rows where
    rounding puts the largest u_j - lse a few ulps above 0 (a regression: the
    compiled engines once counted n - 1)."""
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(13, 4)), rng.normal(size=(50, 4))
    dense = st.evaluate_rows(q, k, eps=(1e-3, 1.0), scale=30.0).num_small
    streamed = st.stream_rows(q, k, windows=1, eps=(1e-3, 1.0), scale=30.0, query_block=13,
                              key_block=50).num_small
    np.testing.assert_array_equal(np.asarray(dense)[:, 1], 50)
    np.testing.assert_array_equal(np.asarray(streamed)[:, 1], 50)
