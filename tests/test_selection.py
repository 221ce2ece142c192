"""sparsity_theory.selection.top_k: bitwise lax.top_k, float64 rows preselected in float32.

The preselection is exact only if the float32 candidates always hold the float64
top k; these tests draw rows built to break that (many distinct float64 values
rounding to one float32 at the boundary, exact ties, -0.0 against +0.0, -inf,
values beyond the float32 range, subnormals) and compare indices and value bits
with ``lax.top_k`` itself, eagerly, under jit and under one and two vmaps (the
single cond must see every row of every vmap level).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from jax import lax

from sparsity_theory import selection
from _shared import compilations

SHAPES = [(3, 17), (4, 64), (2, 97), (3, 300)]


def _reference(x, k):
    v, i = lax.top_k(selection.canonical_zero(jnp.asarray(x)), k)
    return np.asarray(v), np.asarray(i)


@hs.composite
def hard_rows(draw):
    rows, n = draw(hs.sampled_from(SHAPES))
    seed = draw(hs.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    # k from a few values per shape: each (shape, k) is compiled once, not once
    # per example; "collide_at_k" puts the k-th largest where it is hardest.
    k = draw(hs.sampled_from(sorted({1, 2, n // 2, n})))
    kind = draw(hs.sampled_from(["normal", "integers", "collide", "collide_at_k", "extremes"]))
    x = rng.normal(size=(rows, n))
    if kind == "integers":  # exact ties everywhere
        x = rng.integers(-2, 3, size=(rows, n)).astype(np.float64)
    elif kind in ("collide", "collide_at_k"):  # many distinct float64 values, one float32 value
        m = draw(hs.integers(2, n))
        where = rng.choice(n, size=m, replace=False)
        x[:, where] = 1.0 + 1e-12 * rng.integers(-5, 6, size=(rows, m))
        if kind == "collide_at_k":  # `above` entries above the group, so the k-th is in it
            others = np.setdiff1d(np.arange(n), where)
            above = draw(hs.integers(max(0, k - m), min(k - 1, n - m)))
            x[:, others] = -rng.random((rows, others.size))
            x[:, others[:above]] = 2.0 + rng.random((rows, above))
    elif kind == "extremes":
        x = x * 10.0 ** rng.integers(-320, 300, size=(rows, n))
        x[rng.random((rows, n)) < 0.2] = -0.0
        x[rng.random((rows, n)) < 0.2] = 0.0
        x[rng.random((rows, n)) < 0.1] = -np.inf
        x[0] = 1e39 * rng.normal(size=n)
    return x, k


def _assert_bitwise(got, expected):
    (v, i), (rv, ri) = got, expected
    np.testing.assert_array_equal(np.asarray(i).reshape(ri.shape), ri)
    np.testing.assert_array_equal(np.asarray(v).reshape(rv.shape).view(np.int64), rv.view(np.int64))


@settings(max_examples=60)
@given(hard_rows())
def test_top_k_is_lax_top_k_bitwise(xk):
    x, k = xk
    expected = _reference(x, k)
    _assert_bitwise(selection.top_k(x, k), expected)
    _assert_bitwise(_jitted(k)(jnp.asarray(x)), expected)
    _assert_bitwise(_vmapped(k)(jnp.asarray(x)), expected)
    _assert_bitwise(_vmapped_twice(k)(jnp.asarray(x)[None]), expected)


def test_float64_finish_ranks_minus_zero_as_zero():
    """The float64 preselection's exact finish: the k-th largest entry is a zero,
    and a -0.0 and a +0.0 straddle the boundary with the -0.0 first. Their
    float32 roundings are tied but the next candidates lie strictly below, so
    the finish (not the fallback) decides, and it must take the lower index, as
    lax.top_k of the canonical row does (a +0.0 would win if -0.0 stayed below it)."""
    k, n = 4, 64
    x = np.full((2, n), -1.0)
    x[:, :k - 1] = 1.0
    x[0, [10, 20]] = [-0.0, 0.0]
    x[1, [10, 20]] = [0.0, -0.0]
    assert k + selection.PRESELECT_SLACK < n  # the preselection runs
    expected = _reference(x, k)
    np.testing.assert_array_equal(expected[1][:, -1], [10, 10])
    _assert_bitwise(selection.top_k(x, k), expected)
    _assert_bitwise(_jitted(k)(jnp.asarray(x)), expected)


@pytest.fixture(scope="module", autouse=True)
def _float64():
    assert jnp.zeros(()).dtype == jnp.float64  # conftest turns 64-bit mode on


# One compiled function per k (a new jax.jit wrapper per call would compile again).
@functools.lru_cache(maxsize=None)
def _jitted(k):
    return jax.jit(lambda x: selection.top_k(x, k))


@functools.lru_cache(maxsize=None)
def _vmapped(k):
    return jax.jit(jax.vmap(lambda r: selection.top_k(r, k)))


@functools.lru_cache(maxsize=None)
def _vmapped_twice(k):
    return jax.jit(jax.vmap(jax.vmap(lambda r: selection.top_k(r, k))))


@pytest.mark.parametrize("collisions", [0, 40])
def test_both_branches_are_exact(collisions):
    """No collisions: the float32 candidates decide (the cond's first branch);
    40 distinct float64 values on one float32 at the top with k = 5 (more than
    k + PRESELECT_SLACK): every row falls back to the float64 top-k."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 400))
    x[:, :collisions] = 3.0 + 1e-13 * np.arange(collisions)  # the largest last
    f = np.asarray(x, np.float32)
    kth_f, last_f = -np.sort(-f, axis=1)[:, [4, 4 + selection.PRESELECT_SLACK]].T
    assert np.all(last_f < kth_f) == (collisions == 0)
    _assert_bitwise(selection.top_k(x, 5), _reference(x, 5))
    if collisions:  # the float64 order among the colliding values is what decides
        np.testing.assert_array_equal(selection.top_k_indices(x, 5)[0], np.arange(35, 40)[::-1])


def test_float32_rows_and_short_rows_use_lax_top_k_directly():
    rng = np.random.default_rng(3)
    x32 = rng.normal(size=(3, 100)).astype(np.float32)
    v, i = selection.top_k(x32, 10)
    rv, ri = _reference(x32, 10)
    np.testing.assert_array_equal(np.asarray(i), ri)
    np.testing.assert_array_equal(np.asarray(v).view(np.int32), rv.view(np.int32))
    short = rng.normal(size=(2, 20))  # k + slack >= n
    _assert_bitwise(selection.top_k(short, 10), _reference(short, 10))


@pytest.mark.parametrize("k", [0, 11])
def test_bad_k_is_one_line_error(k):
    with pytest.raises(ValueError, match="k must be in"):
        selection.top_k(np.zeros((2, 10)), k)


def test_indices_carry_no_gradient_but_values_do():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(50,)))
    g = jax.grad(lambda x: jnp.sum(x[selection.top_k_indices(x, 3)] ** 2))(x)
    top = np.argsort(-np.asarray(x))[:3]
    expected = np.zeros(50)
    expected[top] = 2 * np.asarray(x)[top]
    np.testing.assert_allclose(g, expected)


# --------------------------------------------------------------------------
# block_top_k: the two-stage selection (group maxima, then the chosen groups)
# --------------------------------------------------------------------------

BLOCK_SHAPES = [(3, 17), (2, 64), (3, 100), (2, 257)]
GROUPS = [2, 3, 8, 16]


def _assert_same_bits(got, expected):
    """Indices equal, values equal bit for bit (float32 or float64)."""
    (v, i), (rv, ri) = got, expected
    v, rv = np.asarray(v), np.asarray(rv)
    np.testing.assert_array_equal(np.asarray(i).reshape(ri.shape), ri)
    bits = np.dtype(f"i{rv.dtype.itemsize}")
    np.testing.assert_array_equal(v.reshape(rv.shape).view(bits), rv.view(bits))


@hs.composite
def block_rows(draw):
    """Rows built against the two-stage selection: exact ties inside and across
    groups, every group with the same maximum, -0.0 against +0.0 (a group's
    maximum could be either), -inf (whole groups of it, and k beyond the finite
    entries), n not a multiple of the group, k near the number of groups."""
    rows, n = draw(hs.sampled_from(BLOCK_SHAPES))
    group = draw(hs.sampled_from(GROUPS))
    rng = np.random.default_rng(draw(hs.integers(0, 2**31 - 1)))
    kind = draw(hs.sampled_from(["normal", "integers", "equal_maxima", "zeros", "infinite"]))
    x = rng.normal(size=(rows, n))
    if kind == "integers":
        x = rng.integers(-2, 3, size=(rows, n)).astype(np.float64)
    elif kind == "equal_maxima":  # each group's maximum 1, at a random place in it
        x = rng.integers(-3, 1, size=(rows, n)).astype(np.float64)
        starts = np.arange(0, n, group)
        offsets = rng.integers(0, group, size=(rows, len(starts)))
        places = np.minimum(starts + offsets, n - 1)
        np.put_along_axis(x, places, 1.0, axis=1)
    elif kind == "zeros":
        x = rng.choice([-0.0, 0.0, -1.0, -np.inf], size=(rows, n), p=[0.4, 0.2, 0.3, 0.1])
    elif kind == "infinite":
        x[rng.random((rows, n)) < 0.7] = -np.inf
    dtype = draw(hs.sampled_from([np.float32, np.float64]))
    groups = -(-n // group)
    # k near the number of groups (where the first stage is tight), else from a few
    # values per shape: each (shape, k, group) is compiled once, not per example.
    k = draw(hs.one_of(hs.sampled_from(sorted({1, 2, n // 2, n})),
                       hs.integers(max(1, groups - 2), min(n, groups + 2))))
    return x.astype(dtype), k, group


@settings(max_examples=40)
@given(block_rows())
def test_block_top_k_is_lax_top_k_bitwise(xkg):
    x, k, group = xkg
    expected = _reference(x, k)
    _assert_same_bits(selection.block_top_k(x, k, group), expected)
    _assert_same_bits(_block_jitted(k, group)(x), expected)
    _assert_same_bits(_block_vmapped(k, group)(x), expected)


@functools.lru_cache(maxsize=None)
def _block_jitted(k, group):
    return jax.jit(lambda x: selection.block_top_k(x, k, group))


@functools.lru_cache(maxsize=None)
def _block_vmapped(k, group):
    return jax.jit(jax.vmap(lambda r: selection.block_top_k(r, k, group)))


def _unsorted_groups_top_k(x, k, group):
    """block_top_k without sorting the chosen groups ascending (wrong): the
    gathered entries follow the groups' ranking, so the final top-k breaks ties
    by that order instead of the index."""
    x = selection.canonical_zero(jnp.asarray(x))
    n = x.shape[-1]
    maxima = jnp.max(x.reshape(x.shape[:-1] + (n // group, group)), axis=-1)
    chosen = lax.top_k(maxima, k)[1]
    positions = (chosen[..., :, None] * group + jnp.arange(group)).reshape(x.shape[:-1] + (-1,))
    values, pick = lax.top_k(jnp.take_along_axis(x, positions, axis=-1), k)
    return values, jnp.take_along_axis(positions, pick, axis=-1)


def test_the_comparison_catches_unsorted_groups():
    """Groups of 2: [3, 1 | 1, 5 | 0, 0], k = 3. The chosen groups rank 1, 0, 2;
    gathered in that order, the tie between the two 1s goes to index 2, but
    lax.top_k takes index 1. block_top_k passes the same comparison, on this row
    and on rows of integer ties (0..11: the groups' maxima differ, so their
    ranking is not their order, and the k-th value is tied in many rows)."""
    x = np.array([[3.0, 1.0, 1.0, 5.0, 0.0, 0.0]])
    expected = _reference(x, 3)
    np.testing.assert_array_equal(expected[1], [[3, 0, 1]])
    with pytest.raises(AssertionError):
        _assert_same_bits(_unsorted_groups_top_k(x, 3, 2), expected)
    _assert_same_bits(selection.block_top_k(x, 3, 2), expected)
    ties = np.random.default_rng(5).integers(0, 12, size=(20, 64)).astype(np.float32)
    expected = _reference(ties, 8)
    wrong = np.asarray(_unsorted_groups_top_k(ties, 8, 4)[1]) != expected[1]
    assert wrong.any(axis=1).sum() >= 5  # rows where the wrong variant is caught
    _assert_same_bits(selection.block_top_k(ties, 8, 4), expected)


@pytest.mark.parametrize("k", [1, 2, 16])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_top_k_on_long_rows_takes_two_stages_bitwise(k, dtype):
    """Rows of 5000 (not a multiple of the group): long enough that top_k's
    float32 top-k (of float32 rows, or the float64 rows' preselection of k +
    PRESELECT_SLACK) is the two-stage selection (except float64 with k = 16);
    still lax.top_k bitwise, eagerly, under jit and under one and two vmaps."""
    n = 5000
    count = k if dtype == np.float32 else k + selection.PRESELECT_SLACK
    assert selection.two_stage_pays(n, count) == (count <= 19)
    rng = np.random.default_rng(k)
    x = rng.normal(size=(5, n))
    x[1] = rng.integers(-2, 3, size=n)  # ties within and across groups
    x[2] = rng.choice([-0.0, 0.0, -1.0, -np.inf], size=n)
    x[3, rng.choice(n, 200, replace=False)] = 4.0 + 1e-12 * rng.integers(-5, 6, 200)  # one float32
    x[4] = -np.inf
    x[4, [7, 4000, 4999]] = [0.0, -0.0, 2.0]
    x = x.astype(dtype)
    expected = _reference(x, k)
    _assert_same_bits(selection.top_k(x, k), expected)
    _assert_same_bits(_jitted(k)(jnp.asarray(x)), expected)
    _assert_same_bits(_vmapped(k)(jnp.asarray(x)), expected)
    _assert_same_bits(_vmapped_twice(k)(jnp.asarray(x)[None]), expected)


def test_group_candidates_and_block_top_k_arguments():
    with pytest.raises(ValueError, match="not a multiple"):
        selection.group_candidates(jnp.zeros((2, 10)), 2, 4)
    with pytest.raises(ValueError, match="k must be in"):
        selection.block_top_k(np.zeros((2, 10)), 11)
    with pytest.raises(ValueError, match="group must be"):
        selection.block_top_k(np.zeros((2, 10)), 2, 0)
    # Candidates: the chosen groups' entries, in increasing position.
    x = jnp.asarray([[0.0, 9.0, 1.0, 1.0, 8.0, 0.0, 2.0, 2.0]])
    np.testing.assert_array_equal(selection.group_candidates(x, 2, 2), [[0, 1, 4, 5]])


def test_eager_calls_compile_once():
    """Called again on the same shapes, the eager selection functions compile
    nothing: a bare custom_vmap (top_k_indices) and a loop body defined per call
    (kth_smallest) used to compile their programs on every call."""
    rows = np.random.default_rng(3).normal(size=(2, 40))
    calls = (lambda: selection.top_k_indices(rows, 5),
             lambda: selection.top_k_indices(rows.astype(np.float32), 5),
             lambda: selection.kth_largest(jnp.asarray(rows[0]), 3),
             lambda: selection.kth_smallest(jnp.asarray(rows[0]), 3))
    for call in calls:
        jax.block_until_ready(call())
    with compilations() as compiles:
        for call in calls:
            jax.block_until_ready(call())
    assert compiles == [], f"compiled again: {compiles}"


# ---- smallest_key_with_sum: the snapped bisection behind kth_smallest and
# certified windows. Integer-valued weights make every partial sum exact, so the
# NumPy answer (sorted distinct keys, cumulative sums) is exact too.

@functools.lru_cache(maxsize=None)
def _first_key_with_sum_above():
    return jax.jit(jax.vmap(
        lambda keys, w, t: selection.smallest_key_with_sum(keys, w, lambda s: s > t)))


@functools.lru_cache(maxsize=None)
def _first_key_with_count_at_least():
    return jax.jit(jax.vmap(
        lambda keys, k: selection.smallest_key_with_sum(keys, None, lambda c: c >= k)))


def _first_key_reference(keys, weights, t):
    distinct = np.unique(keys)
    below = np.array([weights[keys <= c].sum() for c in distinct])
    hit = np.nonzero(below > t)[0]
    # reached True at S = 0 (t < 0): every key qualifies, the smallest is the
    # answer; never reached: the largest key, as plain halving gives.
    return distinct[0] if t < 0 else distinct[hit[0]] if hit.size else distinct[-1]


@settings(max_examples=60)
@given(hard_rows(), hs.integers(0, 2**31 - 1), hs.sampled_from([np.float32, np.float64]))
def test_smallest_key_with_sum_is_the_exact_first_key(xk, seed, dtype):
    x, _ = xk
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # the "extremes" rows' 1e39 are inf in float32: keys still
        keys = np.asarray(selection.ordered_key(jnp.asarray(x.astype(dtype))))
    weights = rng.integers(0, 4, size=x.shape).astype(dtype)  # zeros: keys that add nothing
    total = weights.sum(axis=1)
    t = np.where(rng.random(len(x)) < 0.8, np.floor(rng.random(len(x)) * total),
                 rng.choice([-1.0, 0.0], size=len(x)) + np.where(rng.random(len(x)) < 0.5, 0, total))
    got = np.asarray(_first_key_with_sum_above()(jnp.asarray(keys), jnp.asarray(weights),
                                                 jnp.asarray(t.astype(dtype))))
    expected = [_first_key_reference(keys[i], weights[i], t[i]) for i in range(len(x))]
    np.testing.assert_array_equal(got, expected)

    k = rng.integers(1, x.shape[1] + 1, size=len(x))
    got = np.asarray(_first_key_with_count_at_least()(jnp.asarray(keys), jnp.asarray(k)))
    np.testing.assert_array_equal(got, np.sort(keys, axis=1)[np.arange(len(x)), k - 1])


def test_smallest_key_with_sum_on_keys_straddling_zero():
    """Keys of -big and +big differ by more than the integer range: the loop's
    test must not compute hi - lo (it overflowed in a first version, ending the
    search at once)."""
    for dtype in (np.float32, np.float64):
        x = np.array([[-3e38, -1.0, -0.0, 0.0, 2.0, 3e38, 5.0, -7.0]], dtype)
        keys = jnp.asarray(selection.ordered_key(jnp.asarray(x)))
        for k in range(1, 9):
            got = _first_key_with_count_at_least()(keys, jnp.asarray([k]))
            assert selection.key_to_value(got, dtype)[0] == np.sort(x[0])[k - 1]


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_count_true_is_jnp_sum_of_the_mask(axis):
    """Same counts and the same (default integer) dtype as jnp.sum, only
    accumulated in int32."""
    mask = jnp.asarray(np.random.default_rng(axis + 1).random((5, 7, 300)) < 0.3)
    got, expected = selection.count_true(mask, axis), jnp.sum(mask, axis=axis)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)
    # beyond int16: the accumulator must be wide enough for long rows
    assert int(selection.count_true(jnp.ones((2, 70000), bool))[0]) == 70000
