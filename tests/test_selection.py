"""sparsity_theory.selection.top_k: bitwise lax.top_k, float64 rows preselected in float32.

The preselection is exact only if the float32 candidates always hold the float64
top k; these tests draw rows built to break that (many distinct float64 values
rounding to one float32 at the boundary, exact ties, -0.0 against +0.0, -inf,
values beyond the float32 range, subnormals) and compare indices and value bits
with ``lax.top_k`` itself, eagerly, under jit and under one and two vmaps (the
single cond must see every row of every vmap level).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from jax import lax

from sparsity_theory import selection

SHAPES = [(3, 17), (4, 64), (2, 97), (3, 300)]


def _reference(x, k):
    v, i = lax.top_k(selection.canonical_zero(jnp.asarray(x)), k)
    return np.asarray(v), np.asarray(i)


@hs.composite
def hard_rows(draw):
    rows, n = draw(hs.sampled_from(SHAPES))
    seed = draw(hs.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(hs.sampled_from(["normal", "integers", "collide", "extremes"]))
    x = rng.normal(size=(rows, n))
    if kind == "integers":  # exact ties everywhere
        x = rng.integers(-2, 3, size=(rows, n)).astype(np.float64)
    elif kind == "collide":  # many distinct float64 values, one float32 value
        m = draw(hs.integers(2, n))
        where = rng.choice(n, size=m, replace=False)
        x[:, where] = 1.0 + 1e-12 * rng.integers(-5, 6, size=(rows, m))
    elif kind == "extremes":
        x = x * 10.0 ** rng.integers(-320, 300, size=(rows, n))
        x[rng.random((rows, n)) < 0.2] = -0.0
        x[rng.random((rows, n)) < 0.2] = 0.0
        x[rng.random((rows, n)) < 0.1] = -np.inf
        x[0] = 1e39 * rng.normal(size=n)
    k = draw(hs.integers(1, n))
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


@pytest.fixture(scope="module", autouse=True)
def _float64():
    assert jnp.zeros(()).dtype == jnp.float64  # conftest turns 64-bit mode on


def _jitted(k):
    return jax.jit(lambda x: selection.top_k(x, k))


def _vmapped(k):
    return jax.jit(jax.vmap(lambda r: selection.top_k(r, k)))


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
