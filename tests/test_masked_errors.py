"""sparsity_theory.errors.masked_attention_errors: errors of attention restricted
to an arbitrary kept set, against a dense high-precision reference.

The reference materialises the softmax ``s``, the renormalised ``s^ = s * kept /
sum(s * kept)`` and the difference ``s - s^`` densely, in ``decimal`` arithmetic
at 60 significant digits (platform independent, unlike ``np.longdouble``), so
that the subtraction of two nearly equal numbers costs nothing at float64
precision: the library's factorised forms are compared with it at a relative
tolerance of 1e-9 for every tail mass the data produce (down to about e^-60),
not only where tau > 1e-8.

Speed: n is drawn from a few buckets spanning 2..64 and the row count and value
width are fixed, so that JAX compiles each shape once.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy.special import logsumexp

import sparsity_theory as st
from _shared import SETTINGS

# Buckets spanning n = 2..64 (one compilation each).
N_BUCKETS = (2, 3, 5, 8, 17, 33, 64)
ROWS = 2
D_V = 2
RTOL = 1e-9
FIELDS = ("log_tail_mass", "log_l1", "log_l2", "log_linf", "log_output")


# --------------------------------------------------------------------------
# Dense reference
# --------------------------------------------------------------------------

def dense_reference(u, kept, values) -> dict[str, float]:
    """tau, ||s - s^||_1, _2, _inf and ||(s - s^)^T V||_2 of one row, formed
    densely (s - s^ entry by entry) in 60-digit decimal arithmetic."""
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        e = [Decimal(float(x)).exp() for x in u]
        z = sum(e)
        s = [x / z for x in e]
        head = sum(sj for sj, k in zip(s, kept) if k)
        s_hat = [sj / head if k else Decimal(0) for sj, k in zip(s, kept)]
        diff = [a - b for a, b in zip(s, s_hat)]
        out = [sum(dj * Decimal(float(values[j][c])) for j, dj in enumerate(diff))
               for c in range(len(values[0]))]
        return {
            "log_tail_mass": float(sum(sj for sj, k in zip(s, kept) if not k)),
            "log_l1": float(sum(abs(dj) for dj in diff)),
            "log_l2": float(sum(dj * dj for dj in diff).sqrt()),
            "log_linf": float(max(abs(dj) for dj in diff)),
            "log_output": float(sum(o * o for o in out).sqrt()),
        }


def assert_matches_reference(errors, index, u, kept, values) -> None:
    """Compare one row of ``errors`` (natural logs) with the dense reference."""
    ref = dense_reference(u, kept, values)
    tau = ref["log_tail_mass"]
    vmax = float(np.max(np.abs(values)))
    for field in FIELDS:
        got = float(np.asarray(getattr(errors, field))[index])
        assert not math.isnan(got), (field, index)
        if not any(not k for k in kept):  # nothing dropped: an exact zero
            assert got == -math.inf, (field, index, got)
            continue
        want = ref[field]
        # The output error tau ||mu_tail - mu_head|| loses absolute precision
        # n eps max|V| in the difference of the two means (cancellation when
        # they are nearly equal); every other field keeps full relative precision.
        atol = 1e-13 * tau * vmax if field == "log_output" else 0.0
        if want == 0.0 and atol == 0.0:
            assert got == -math.inf, (field, index, got)
            continue
        assert abs(math.exp(got) - want) <= RTOL * want + atol, (field, index, math.exp(got), want, tau)


# --------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------

@hs.composite
def masked_rows(draw):
    """(logits (ROWS, n), kept (ROWS, n) with a True in each row, values (n, D_V))."""
    n = draw(hs.sampled_from(N_BUCKETS))
    logit = hs.floats(-30.0, 30.0, allow_nan=False)
    u = [draw(hs.lists(logit, min_size=n, max_size=n)) for _ in range(ROWS)]
    kept = []
    for _ in range(ROWS):
        row = draw(hs.lists(hs.booleans(), min_size=n, max_size=n))
        if not any(row):
            row[draw(hs.integers(0, n - 1))] = True
        kept.append(row)
    values = [draw(hs.lists(hs.floats(-10.0, 10.0, allow_nan=False), min_size=D_V, max_size=D_V))
              for _ in range(n)]
    return np.asarray(u, np.float64), np.asarray(kept, bool), np.asarray(values, np.float64)


# --------------------------------------------------------------------------
# Agreement with the dense reference
# --------------------------------------------------------------------------

@settings(max_examples=150, **SETTINGS)
@given(masked_rows())
def test_matches_dense_reference(case):
    u, kept, values = case
    errors = st.masked_attention_errors(u, kept, values)
    assert errors.log_tail_mass.shape == (ROWS,)
    for i in range(ROWS):
        assert_matches_reference(errors, i, u[i], kept[i], values)
    # Without values: the same four errors, and no output error.
    plain = st.masked_attention_errors(u, kept)
    assert plain.log_output is None
    for field in FIELDS[:4]:
        np.testing.assert_array_equal(getattr(plain, field), getattr(errors, field))


def test_reference_catches_a_wrong_error():
    """The comparison has teeth: a 1e-6 relative change of an error fails it."""
    rng = np.random.default_rng(3)
    u, values = rng.normal(size=(1, 8)) * 3, rng.normal(size=(8, D_V))
    kept = np.array([[True, False, True, True, False, False, True, False]])
    errors = st.masked_attention_errors(u, kept, values)
    assert_matches_reference(errors, 0, u[0], kept[0], values)
    wrong = errors._replace(log_l2=errors.log_l2 + 1e-6)
    with pytest.raises(AssertionError):
        assert_matches_reference(wrong, 0, u[0], kept[0], values)


# --------------------------------------------------------------------------
# Top-k masks give sparse_attention_errors
# --------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_top_k_mask_equals_sparse_attention_errors(seed):
    m, n = 4, 40
    key_u, key_v = jax.random.split(jax.random.PRNGKey(seed))
    u = 3.0 * jax.random.normal(key_u, (m, n), jnp.float64)  # continuous: no ties
    v = jax.random.normal(key_v, (n, 3), jnp.float64)
    windows = (1, 2, 5, 13, 39, 40)
    sparse = st.sparse_attention_errors(u, windows, v)
    for j, k in enumerate(windows):
        threshold = jax.vmap(st.kth_largest)(u, jnp.full((m,), k))
        kept = u >= threshold[:, None]
        np.testing.assert_array_equal(np.sum(kept, axis=-1), k)
        masked = st.masked_attention_errors(u, kept, v)
        for field in FIELDS:
            np.testing.assert_allclose(getattr(masked, field), getattr(sparse, field)[:, j],
                                       rtol=0, atol=1e-10, err_msg=f"{field}, k={k}")
    # A different window per row (the certified-window oracle's use).
    ks = jnp.array([1, 5, 13, 40])
    threshold = jax.vmap(st.kth_largest)(u, ks)
    masked = st.masked_attention_errors(u, u >= threshold[:, None], v)
    for i, k in enumerate([1, 5, 13, 40]):
        j = windows.index(k)
        for field in FIELDS:
            np.testing.assert_allclose(getattr(masked, field)[i], getattr(sparse, field)[i, j],
                                       rtol=0, atol=1e-10, err_msg=f"{field}, row {i}")


# --------------------------------------------------------------------------
# Corners
# --------------------------------------------------------------------------

def test_all_kept_rows_are_exact_zeros():
    u = np.array([[0.3, -1.0, 2.0, 0.0, 5.0]] * 3)
    kept = np.array([[True] * 5, [True, False, True, True, False], [True] * 5])
    values = np.arange(10.0).reshape(5, 2)
    errors = st.masked_attention_errors(u, kept, values)
    for field in FIELDS:
        got = np.asarray(getattr(errors, field))
        assert got[0] == got[2] == -np.inf, field
        assert np.isfinite(got[1]), field
    plain = st.masked_attention_errors(u[0], np.ones(5, bool))  # one row, no values
    assert all(float(getattr(plain, f)) == -np.inf for f in FIELDS[:4])


def test_tiny_tail_closed_form():
    """Spread of 800: tau = e^-800 exactly in float64 arithmetic, far below the
    smallest double; every error stays finite and equals its closed form."""
    u = np.array([[0.0, 0.0, -800.0, -800.0]])
    kept = np.array([True, True, False, False])
    values = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    e = st.masked_attention_errors(u, kept, values)
    # s = (1/2, 1/2, t/2, t/2) with t = e^-800 (to 1 + e^-800): tau = t,
    # ||s - s^||_2^2 = t^2 / 2 + t^2 / 2, linf = t / 2, mu_tail - mu_head = (-1, 1).
    expected = {"log_tail_mass": -800.0, "log_l1": math.log(2) - 800, "log_l2": -800.0,
                "log_linf": -800 - math.log(2), "log_output": -800 + 0.5 * math.log(2)}
    for field, want in expected.items():
        assert float(getattr(e, field)[0]) == pytest.approx(want, rel=1e-14, abs=1e-12), field


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tiny_tail_random_rows(seed):
    rng = np.random.default_rng(seed)
    n_head, n_tail = 7, 9
    n = n_head + n_tail
    u = np.concatenate([rng.normal(size=(3, n_head)), rng.normal(size=(3, n_tail)) - 800.0], axis=1)
    kept = np.arange(n) < n_head
    values = rng.normal(size=(n, D_V))
    e = st.masked_attention_errors(u, kept, values)
    for i in range(3):
        log_tau = logsumexp(u[i, ~kept]) - logsumexp(u[i])
        assert -810 < log_tau < -790
        assert float(e.log_tail_mass[i]) == pytest.approx(log_tau, rel=1e-13)
        assert float(e.log_l1[i]) == pytest.approx(log_tau + math.log(2), rel=1e-13)
        for field in FIELDS:
            assert np.isfinite(float(getattr(e, field)[i])), field
        # l1 / sqrt(n) <= l2 <= l1 and l2 / sqrt(n) <= linf <= l2.
        l1, l2, linf = float(e.log_l1[i]), float(e.log_l2[i]), float(e.log_linf[i])
        assert l1 - 0.5 * math.log(n) - 1e-9 <= l2 <= l1 + 1e-9
        assert l2 - 0.5 * math.log(n) - 1e-9 <= linf <= l2 + 1e-9
        # The largest dropped entry is about e^-800 / (sum of kept), the inflation of
        # the largest kept entry about tau * s_max: linf is the larger one.
        log_s = u[i] - logsumexp(u[i])
        want_linf = max(np.max(log_s[kept]) + log_tau, np.max(log_s[~kept]))
        assert float(e.log_linf[i]) == pytest.approx(want_linf, rel=1e-12)
        # Output: tau ||mu_tail - mu_head||, the means taken over each set alone.
        w_head = np.exp(u[i, kept] - logsumexp(u[i, kept]))
        w_tail = np.exp(u[i, ~kept] - logsumexp(u[i, ~kept]))
        gap = w_tail @ values[~kept] - w_head @ values[kept]
        assert float(e.log_output[i]) == pytest.approx(log_tau + math.log(np.linalg.norm(gap)),
                                                       rel=1e-12)


# --------------------------------------------------------------------------
# Batched shapes and broadcasting
# --------------------------------------------------------------------------

def test_batched_shapes_with_a_shared_mask():
    rng = np.random.default_rng(7)
    n = 6
    u = 2.0 * rng.normal(size=(2, 3, 4, n))
    values = rng.normal(size=(2, 3, n, D_V))
    kept = np.array([True, False, False, True, True, False])  # (n,): every row
    e = st.masked_attention_errors(u, kept, values)
    for field in FIELDS:
        assert getattr(e, field).shape == (2, 3, 4), field
    for a in range(2):
        for b in range(3):
            for i in range(4):
                assert_matches_reference(e, (a, b, i), u[a, b, i], kept, values[a, b])
    # A mask broadcast along the batch axes: (3, 1, n) against (2, 3, 4, n).
    per_head = rng.random((3, 1, n)) < 0.5
    per_head[..., 0] = True
    e = st.masked_attention_errors(u, per_head, values)
    for a in range(2):
        for b in range(3):
            for i in range(4):
                assert_matches_reference(e, (a, b, i), u[a, b, i], per_head[b, 0], values[a, b])
    # Without values, any leading shape, including a single row.
    plain = st.masked_attention_errors(u, kept)
    assert plain.log_l2.shape == (2, 3, 4) and plain.log_output is None
    one = st.masked_attention_errors(u[1, 2, 3], kept)
    assert one.log_l2.shape == ()
    assert float(one.log_l2) == pytest.approx(float(plain.log_l2[1, 2, 3]), rel=1e-14)


# --------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------

def test_bad_input():
    u = np.zeros((2, 5))
    ok = np.array([True, False, True, False, False])
    values = np.ones((5, D_V))
    with pytest.raises(ValueError, match="boolean"):
        st.masked_attention_errors(u, ok.astype(int))
    with pytest.raises(ValueError, match="boolean"):
        st.masked_attention_errors(u, ok.astype(float), values)
    with pytest.raises(ValueError, match="broadcast"):
        st.masked_attention_errors(u, np.ones(3, bool))
    with pytest.raises(ValueError, match="broadcast"):
        st.masked_attention_errors(u, np.ones((3, 5), bool), values)
    with pytest.raises(ValueError, match="at least one entry"):
        st.masked_attention_errors(u, np.array([ok, np.zeros(5, bool)]))
    with pytest.raises(ValueError, match="at least one entry"):
        st.masked_attention_errors(u, np.zeros(5, bool), values)
    with pytest.raises(ValueError, match=r"values rows vs logits columns \(n\)"):
        st.masked_attention_errors(u, ok, np.ones((6, D_V)))
    with pytest.raises(ValueError, match="values"):
        st.masked_attention_errors(u, ok, np.ones(5))
    with pytest.raises(ValueError, match="row axis"):
        st.masked_attention_errors(u[0], ok, values)
    with pytest.raises(ValueError, match="finite"):
        st.masked_attention_errors(np.array([[0.0, np.nan, 1.0, 0.0, 0.0]]), ok)
    with pytest.raises(ValueError, match="finite"):
        st.masked_attention_errors(u, ok, np.full((5, D_V), np.inf))


def test_integer_logits_keep_float_values():
    # Regression: integer logits used to truncate float values to integers.
    u = np.array([[1, 2, 3, 0]])
    kept = np.array([True, True, False, False])
    values = np.array([[0.5, 0.25], [0.3, 0.1], [0.7, 0.2], [0.1, 0.9]])
    got = st.masked_attention_errors(u, kept, values)
    want = st.masked_attention_errors(u.astype(np.float64), kept, values)
    for field in FIELDS:
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-12)
