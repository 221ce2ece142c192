"""Row-block evaluator (sparsity_theory/evaluate.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsity_theory as st
from sparsity_theory.evaluate import _evaluate

WINDOWS = (1, 2, 5, 17)
EPS = (1e-4, 1e-2, 0.2)


def _problem(seed, m=37, n=40, d=6, dv=3):
    key = jax.random.PRNGKey(seed)
    kq, kk, kv = jax.random.split(key, 3)
    return (2 * jax.random.normal(kq, (m, d)), jax.random.normal(kk, (n, d)),
            jax.random.normal(kv, (n, dv)))


def _assert_stats_equal(a, b, rtol=1e-13):
    for name, x, y in zip(a._fields, a, b):
        if x is None:
            assert y is None, name
            continue
        x, y = np.asarray(x), np.asarray(y)
        if np.issubdtype(x.dtype, np.integer):
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y), err_msg=name)
            fin = np.isfinite(x)
            np.testing.assert_allclose(x[fin], y[fin], rtol=rtol, atol=rtol, err_msg=name)


@pytest.mark.parametrize("block_size", [1, 7, 16, 37, 500])
def test_blocked_equals_unblocked(block_size):
    """Integers (counts, windows) exactly; sums to rounding (a few ulps): the
    scores are bit-identical, only the reduction order of a batch can differ."""
    q, k, v = _problem(0)
    one = st.evaluate_rows(q, k, v, windows=WINDOWS, eps=EPS, block_size=37)
    blocked = st.evaluate_rows(q, k, v, windows=WINDOWS, eps=EPS, block_size=block_size)
    _assert_stats_equal(blocked, one)


def test_matches_the_standalone_functions():
    q, k, v = _problem(1)
    scale = 0.7
    stats = st.evaluate_rows(q, k, v, windows=WINDOWS, eps=EPS, scale=scale, block_size=8)
    u = st.attention_logits(q, k, scale)
    errs = st.sparse_attention_errors(u, WINDOWS, v)
    np.testing.assert_allclose(stats.log_tail_mass, errs.log_tail_mass, rtol=1e-12)
    np.testing.assert_allclose(stats.log_l2_error, errs.log_l2, rtol=1e-12)
    np.testing.assert_allclose(stats.log_linf_error, errs.log_linf, rtol=1e-12)
    np.testing.assert_allclose(stats.log_output_error, errs.log_output, rtol=1e-11)
    np.testing.assert_array_equal(stats.num_small, st.num_small_entries(u, EPS))
    np.testing.assert_array_equal(stats.certified_window, st.certified_window(u, EPS))
    np.testing.assert_allclose(stats.log_normaliser, jax.nn.logsumexp(u, axis=1), rtol=1e-13)
    np.testing.assert_allclose(stats.max_logit, u.max(axis=1))
    np.testing.assert_allclose(stats.min_logit, u.min(axis=1))
    np.testing.assert_allclose(stats.mean_logit, u.mean(axis=1), rtol=1e-12)


def test_without_values_has_no_output_error():
    q, k, _ = _problem(2)
    stats = st.evaluate_rows(q, k, windows=(3,))
    assert stats.log_output_error is None
    assert stats.log_tail_mass.shape == (37, 1)


def test_vmap_over_seeds_equals_python_loop_and_jit():
    keys = jax.random.split(jax.random.PRNGKey(3), 4)

    def one_seed(key):
        inp = st.sample_inputs(key, 24, 4, st.Gaussian(), "self")
        q, kk, v = st.project(inp, st.gaussian_weights(jax.random.fold_in(key, 1), 4))
        return st.evaluate_rows(q, kk, v, windows=(1, 4), eps=(1e-2,), block_size=5)

    batched = jax.vmap(one_seed)(keys)
    jitted = jax.jit(jax.vmap(one_seed))(keys)
    for i, key in enumerate(keys):
        _assert_stats_equal(jax.tree_util.tree_map(lambda a: a[i], batched), one_seed(key))
    _assert_stats_equal(batched, jitted)


def test_memory_is_linear_in_block_not_quadratic():
    """The compiled evaluator's scratch memory for m = n = 4096 with blocks of 64
    rows is far below one m x n float64 matrix (128 MiB), while the unblocked
    evaluation needs several of them."""
    m = n = 4096
    q = jax.ShapeDtypeStruct((m, 16), jnp.float64)
    k = jax.ShapeDtypeStruct((n, 16), jnp.float64)
    args = (q, k, None, jnp.zeros(1), jnp.float64(1.0), (1, 16))
    full_matrix = m * n * 8
    blocked = _evaluate.lower(*args, 64).compile().memory_analysis()
    unblocked = _evaluate.lower(*args, m).compile().memory_analysis()
    if blocked is None or unblocked is None:
        pytest.skip("this backend reports no memory analysis")
    assert blocked.temp_size_in_bytes < 0.25 * full_matrix
    assert unblocked.temp_size_in_bytes > full_matrix
