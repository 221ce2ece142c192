"""The output error under a large common offset of the values (issue 14 item 6):
(s - s^)^T V does not change when a constant row is added to V, and the engines
compute it exactly to rounding, not as a difference of two nearly equal means."""

import numpy as np
import pytest

import sparsity_theory as st

WINDOWS = (1, 4, 32, 200)


def _rows_and_values(n=256, dv=4, rows=3, seed=0):
    rng = np.random.default_rng(seed)
    u = rng.standard_normal((rows, n)) * 2.0
    # Multiples of 2^-10 below 8 in size: v + offset is exact in float64 for |offset| < 2^40.
    v = np.round(rng.standard_normal((n, dv)) * 2**10) / 2**10
    return u, v


@pytest.mark.parametrize("offset", [1e6, -3e9, 2.0**39])
def test_sparse_and_masked_errors_are_unchanged_by_a_value_offset(offset):
    u, v = _rows_and_values()
    shifted = v + offset
    assert np.array_equal(shifted - offset, v)  # the shifted values are exact
    plain = st.sparse_attention_errors(u, WINDOWS, values=v).log_output
    moved = st.sparse_attention_errors(u, WINDOWS, values=shifted).log_output
    # A relative 1e-12 on the error itself: before centring, 1e6 gave about 3e-9.
    np.testing.assert_allclose(moved, plain, rtol=0, atol=1e-12)
    kept = np.zeros_like(u, dtype=bool)
    kept[:, :17] = True
    np.testing.assert_allclose(st.masked_attention_errors(u, kept, values=shifted).log_output,
                               st.masked_attention_errors(u, kept, values=v).log_output, rtol=0, atol=1e-12)


@pytest.mark.parametrize("offset", [1e6, 2.0**39])
def test_row_engines_are_unchanged_by_a_value_offset(offset):
    rng = np.random.default_rng(1)
    n, d = 512, 8
    q, k = rng.standard_normal((4, d)), rng.standard_normal((n, d))
    _, v = _rows_and_values(n=n)
    kwargs = dict(windows=(1, 8, 64), eps=(0.01,), scale=d**-0.5)
    for engine in (st.evaluate_rows, st.stream_rows):
        plain = engine(q, k, v, **kwargs).log_output_error
        moved = engine(q, k, v + offset, **kwargs).log_output_error
        np.testing.assert_allclose(moved, plain, rtol=0, atol=1e-12, err_msg=engine.__name__)


def test_centring_is_what_makes_it_exact():
    """Without centring the same computation loses digits: the test above can fail."""
    from sparsity_theory import errors
    u, v = _rows_and_values()
    shifted = v + 1e6
    raw = errors._errors_with_values(np.asarray(u), np.asarray(shifted), WINDOWS).log_output
    exact = st.sparse_attention_errors(u, WINDOWS, values=v).log_output
    assert np.max(np.abs(np.asarray(raw) - np.asarray(exact))) > 1e-11
