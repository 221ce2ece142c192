"""float32 against float64: where they agree and where float32 departs."""

import jax
import jax.numpy as jnp
import numpy as np

import sparsity_theory as st

EPS32 = float(jnp.finfo(jnp.float32).eps)


def test_float32_tracks_float64_on_moderate_logits():
    """Given the same logits, a float32 log tail mass is off by at most a few
    float32 ulps times the logit magnitude: log tau is a difference of two
    log-sum-exps of values |u|, each rounded to ~|u| * 2^-24."""
    rng = np.random.default_rng(0)
    u64 = rng.normal(size=(64, 300)) * 4
    u32 = u64.astype(np.float32)
    windows = (1, 3, 30, 299)
    got = np.asarray(st.log_tail_mass(u32, windows), np.float64)
    ref = np.asarray(st.log_tail_mass(u32.astype(np.float64), windows))
    scale = np.abs(u64).max() + np.log(300)
    assert got.dtype == np.float64 and st.log_tail_mass(u32, windows).dtype == jnp.float32
    assert np.max(np.abs(got - ref)) <= 16 * EPS32 * scale
    e32 = st.sparse_attention_errors(u32, windows, rng.normal(size=(300, 4)).astype(np.float32))
    e64 = st.sparse_attention_errors(u32.astype(np.float64), windows, rng.normal(size=(300, 4)))
    assert e32.log_l2.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(e32.log_l2, float) - np.asarray(e64.log_l2))) <= 16 * EPS32 * scale


def test_float32_departs_on_large_logits_while_float64_holds():
    """With |u| ~ 1e4 the float32 spacing is ~1e-3, so two scores 1e-4 apart
    become equal: float32 then ranks them as a tie and its tail mass is off by
    a relative ~1e-4, while float64 resolves them. This is the documented limit."""
    u64 = np.array([[1e4, 1e4 - 1e-4, 1e4 - 3.0, 0.0]])
    u32 = u64.astype(np.float32)
    assert u32[0, 0] == u32[0, 1]  # the two largest scores collide in float32
    t64 = np.asarray(st.log_tail_mass(u64, (1,)))[0, 0]
    t32 = float(np.asarray(st.log_tail_mass(u32, (1,)))[0, 0])
    exact = np.log((np.exp(-1e-4) + np.exp(-3.0)) / (1 + np.exp(-1e-4) + np.exp(-3.0)))
    assert abs(t64 - exact) < 1e-12
    assert abs(t32 - exact) > 1e-5


def test_float32_evaluator_end_to_end():
    key = jax.random.PRNGKey(0)
    inp = st.sample_inputs(key, 128, 8, st.Gaussian(), "cross", dtype=jnp.float32)
    q, k, v = st.project(inp, st.gaussian_weights(key, 8, dtype=jnp.float32))
    s32 = st.evaluate_rows(q, k, v, windows=(1, 8, 64), eps=(1e-3,), scale=8**-0.5)
    s64 = st.evaluate_rows(q.astype(jnp.float64), k.astype(jnp.float64), v.astype(jnp.float64),
                           windows=(1, 8, 64), eps=(1e-3,), scale=8**-0.5)
    assert s32.log_tail_mass.dtype == jnp.float32
    umax = float(jnp.max(jnp.abs(s64.max_logit)))
    tol = 64 * EPS32 * (umax + np.log(128))
    np.testing.assert_allclose(s32.log_tail_mass, s64.log_tail_mass, atol=tol, rtol=0)
    np.testing.assert_allclose(s32.log_output_error, s64.log_output_error, atol=10 * tol, rtol=0)
    # Counts may differ only for entries within rounding of the threshold.
    assert np.max(np.abs(np.asarray(s32.num_small) - np.asarray(s64.num_small))) <= 1
