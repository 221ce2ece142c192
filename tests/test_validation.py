"""Bad input gets a ValueError naming the argument at the public API."""

import jax
import numpy as np
import pytest

import sparsity_theory as st

U = np.random.default_rng(0).normal(size=(3, 6))
Q = np.random.default_rng(1).normal(size=(4, 2))
K = np.random.default_rng(2).normal(size=(6, 2))
V = np.random.default_rng(3).normal(size=(6, 5))


@pytest.mark.parametrize("k", [0, 7, -1, 2.5, "3", True])
@pytest.mark.parametrize("fn", [
    lambda k: st.top_k_indices(U, k),
    lambda k: st.top_k_mask(U, k),
    lambda k: st.sparse_attention_matrix(U, k),
    lambda k: st.sparse_attention(Q, K, V, k),
    lambda k: st.log_tail_mass(U, (1, k)),
    lambda k: st.sparse_attention_errors(U, (k,)),
    lambda k: st.log_kth_smallest_entry(U, k),
    lambda k: st.evaluate_rows(Q, K, V, windows=(k,)),
])
def test_window_outside_range(fn, k):
    with pytest.raises(ValueError, match=r"\bk\b|windows"):
        fn(k)


@pytest.mark.parametrize("eps", [0.0, -0.1, 1.5, float("nan"), (0.1, 0.0)])
@pytest.mark.parametrize("fn", [
    lambda e: st.num_small_entries(U, e),
    lambda e: st.num_effective_entries(U, e),
    lambda e: st.certified_window(U, e),
    lambda e: st.evaluate_rows(Q, K, eps=e),
])
def test_eps_outside_unit_interval(fn, eps):
    with pytest.raises(ValueError, match="eps"):
        fn(eps)


def test_eps_equal_to_one_is_allowed():
    assert np.all(np.asarray(st.certified_window(U, 1.0)) == 1)
    assert np.all(np.asarray(st.num_small_entries(U, 1.0)) == 6)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data(bad):
    u = U.copy()
    u[1, 2] = bad
    with pytest.raises(ValueError, match="logits"):
        st.log_tail_mass(u, (1,))
    with pytest.raises(ValueError, match="logits"):
        st.certified_window(u, 0.1)
    q = Q.copy()
    q[0, 0] = bad
    with pytest.raises(ValueError, match="queries"):
        st.exact_attention(q, K, V)
    with pytest.raises(ValueError, match="queries"):
        st.evaluate_rows(q, K, V)
    v = V.copy()
    v[2, 1] = bad
    with pytest.raises(ValueError, match="values"):
        st.sparse_attention_errors(U, (1,), v)
    with pytest.raises(ValueError, match="scale"):
        st.attention_logits(Q, K, scale=bad)


def test_mismatched_shapes():
    with pytest.raises(ValueError, match="mismatched.*d"):
        st.exact_attention(Q, np.ones((6, 3)), V)
    with pytest.raises(ValueError, match="mismatched.*n"):
        st.exact_attention(Q, K, np.ones((5, 5)))
    with pytest.raises(ValueError, match="mismatched.*n"):
        st.sparse_attention_errors(U, (1,), np.ones((5, 2)))
    with pytest.raises(ValueError, match="queries"):
        st.evaluate_rows(np.ones(3), K)
    with pytest.raises(ValueError, match="block_size"):
        st.evaluate_rows(Q, K, block_size=0)
    with pytest.raises(ValueError, match="logits"):
        st.log_tail_mass(np.ones((2, 0)), (1,))


def test_checks_are_skipped_inside_jit_but_results_agree():
    # Inside jit the values are tracers; shapes are still checked, values are not.
    f = jax.jit(lambda u: st.log_tail_mass(u, (1, 3)))
    np.testing.assert_array_equal(f(U), st.log_tail_mass(U, (1, 3)))
    with pytest.raises(ValueError, match="windows"):
        jax.jit(lambda u: st.log_tail_mass(u, (7,)))(U)
