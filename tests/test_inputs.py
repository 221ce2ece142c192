"""Input models and weights (sparsity_theory/inputs.py)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsity_theory as st

MODELS = [st.Uniform(2.0), st.Uniform(1.0, mean=-0.7), st.Rademacher(0.5),
          st.Rademacher(1.0, mean=1.5), st.Gaussian(1.3), st.Gaussian(0.5, mean=2.0)]


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_moments_and_bounds(model):
    x = np.asarray(model.sample(jax.random.PRNGKey(0), (400_000,)))
    se = math.sqrt(model.variance / x.size)
    assert abs(x.mean() - model.mean) < 6 * se
    assert abs(x.var() / model.variance - 1) < 0.02
    if model.almost_sure_bound is not None:
        assert np.all(np.abs(x) <= model.almost_sure_bound + 1e-12)


@pytest.mark.parametrize("model", MODELS, ids=repr)
def test_sampler_is_reproducible_and_keyed(model):
    a = model.sample(jax.random.PRNGKey(1), (5, 3))
    b = model.sample(jax.random.PRNGKey(1), (5, 3))
    c = model.sample(jax.random.PRNGKey(2), (5, 3))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert model.sample(jax.random.PRNGKey(1), (2,), jnp.float32).dtype == jnp.float32


@pytest.mark.parametrize("draw, extra", [(jax.random.normal, ()), (jax.random.rademacher, ()),
                                         (jax.random.uniform, (-2.0, 3.0))],
                         ids=["normal", "rademacher", "uniform"])
def test_flat_draw_is_the_shaped_draw_bit_for_bit(draw, extra):
    # The samplers draw flat for compile time only: the numbers must not move,
    # one key or vmapped over keys, in float32 and float64.
    keys, shape = jax.random.split(jax.random.PRNGKey(3), 4), (5, 3)
    for dtype in (jnp.float32, jnp.float64):
        shaped = jax.vmap(lambda k: draw(k, shape, dtype, *extra))(keys)
        flat = jax.vmap(lambda k: st.inputs.drawn_flat(draw, k, shape, dtype, *extra))(keys)
        assert flat.shape == shaped.shape and flat.dtype == shaped.dtype
        assert np.array_equal(np.asarray(flat), np.asarray(shaped))
    one = st.inputs.drawn_flat(draw, keys[0], (2, 4, 3), jnp.float64, *extra)
    assert np.array_equal(np.asarray(one), np.asarray(draw(keys[0], (2, 4, 3), jnp.float64, *extra)))


def _centred_mgf(model, t):
    if isinstance(model, st.Uniform):
        x = t * model.radius
        return np.sinh(x) / x
    if isinstance(model, st.Rademacher):
        return np.cosh(t * model.radius)
    return np.exp(t**2 * model.std**2 / 2)


@pytest.mark.parametrize("model", [st.Uniform(1.0), st.Uniform(3.0), st.Rademacher(2.0), st.Gaussian(1.5)],
                         ids=repr)
def test_variance_proxy_bounds_the_mgf_and_is_not_loose(model):
    """E exp(tZ) <= exp(nu^2 t^2 / 2) for every t, and 0.9 nu^2 is not a valid proxy
    (for these strictly sub-Gaussian laws the proxy equals the variance)."""
    t = np.concatenate([np.linspace(-8, 8, 2001), [1e-3, -1e-3]])
    t = t[t != 0]
    mgf = _centred_mgf(model, t)
    nu2 = model.variance_proxy
    assert np.all(np.log(mgf) <= nu2 * t**2 / 2 + 1e-14)  # absolute slack: log(1 + x) rounding
    assert np.any(np.log(mgf) > 0.9 * nu2 * t**2 / 2)


def test_self_and_cross_modes():
    key = jax.random.PRNGKey(3)
    s = st.sample_inputs(key, 16, 4, st.Gaussian(), "self")
    c = st.sample_inputs(key, 16, 4, st.Gaussian(), "cross")
    assert s.y is s.x
    assert s.x.shape == c.y.shape == (16, 4)
    assert not np.allclose(c.x, c.y)
    with pytest.raises(ValueError, match="mode"):
        st.sample_inputs(key, 16, 4, st.Gaussian(), "causal")


def test_vmap_over_seeds_equals_python_loop():
    keys = jax.random.split(jax.random.PRNGKey(4), 5)
    batched = jax.vmap(lambda k: st.sample_inputs(k, 8, 3, st.Uniform(1.0), "cross"))(keys)
    for i, k in enumerate(keys):
        one = st.sample_inputs(k, 8, 3, st.Uniform(1.0), "cross")
        assert np.array_equal(batched.x[i], one.x) and np.array_equal(batched.y[i], one.y)


def test_gaussian_weights_scale():
    d = 64
    w = st.gaussian_weights(jax.random.PRNGKey(5), d, scale=2.0)
    for m in w:
        assert abs(np.var(np.asarray(m)) * d / 4.0 - 1) < 0.1
    assert w.score_matrix.shape == (d, d)
    assert st.gaussian_weights(jax.random.PRNGKey(5), 4, value_dim=7).value.shape == (4, 7)


def test_orthogonal_weights_have_equal_singular_values():
    w = st.orthogonal_weights(jax.random.PRNGKey(6), 8, scale=0.5)
    for m in w:
        np.testing.assert_allclose(m.T @ m, 0.25 * np.eye(8), atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(w.score_matrix, 2), 0.25, rtol=1e-12)


def test_project_matches_definition():
    key = jax.random.PRNGKey(7)
    inp = st.sample_inputs(key, 10, 4, st.Gaussian(), "cross")
    w = st.gaussian_weights(key, 4, value_dim=3)
    q, k, v = st.project(inp, w)
    np.testing.assert_allclose(q, inp.x @ w.query)
    np.testing.assert_allclose(k, inp.y @ w.key)
    np.testing.assert_allclose(v, inp.y @ w.value)
    # Scores of Definition 3.1: u_ij = x_i^T W_Q W_K^T y_j.
    np.testing.assert_allclose(q @ k.T, inp.x @ w.score_matrix @ inp.y.T, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf"), "a"])
def test_bad_radius_or_std_is_rejected(bad):
    with pytest.raises(ValueError, match="radius"):
        st.Uniform(bad)
    with pytest.raises(ValueError, match="radius"):
        st.Rademacher(bad)
    with pytest.raises(ValueError, match="std"):
        st.Gaussian(bad)


def test_bad_weights_are_rejected():
    good = np.eye(3)
    bad = good.copy()
    bad[0, 1] = np.nan
    with pytest.raises(ValueError, match="W_Q"):
        st.attention_weights(bad, good, good)
    with pytest.raises(ValueError, match="W_V"):
        st.attention_weights(good, good, np.full((3, 3), np.inf))
    with pytest.raises(ValueError, match="mismatched"):
        st.attention_weights(good, np.eye(4), good)
    with pytest.raises(ValueError, match="mismatched"):
        st.project(st.AttentionInputs(np.ones((5, 4)), np.ones((5, 4))), st.attention_weights(good, good, good))
    with pytest.raises(ValueError, match="mean"):
        st.Gaussian(1.0, mean=float("nan"))


# --------------------------------------------------------------------------
# Row sampling: sample_inputs(..., rows=m)
# --------------------------------------------------------------------------

ROW_MODELS = [st.Gaussian(1.3, mean=0.4), st.Uniform(2.0, mean=-0.7), st.Rademacher(0.5, mean=1.5)]


def _bits(a):
    """The raw bytes of an array: bit-identity, not mere equality (-0.0, NaN)."""
    a = np.asarray(a)
    return a.dtype, a.shape, a.tobytes()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("mode", ["self", "cross"])
@pytest.mark.parametrize("model", ROW_MODELS, ids=repr)
def test_rows_are_the_first_rows_of_the_full_draw(model, mode, dtype):
    key = jax.random.PRNGKey(8)
    n, d = 7, 5
    full = st.sample_inputs(key, n, d, model, mode, dtype)
    assert full.x.shape == full.y.shape == (n, d) and full.x.dtype == dtype
    for m in (1, 3, n):
        part = st.sample_inputs(key, n, d, model, mode, dtype, rows=m)
        assert part.x.shape == (m, d) and part.x.dtype == dtype
        assert _bits(part.x) == _bits(full.x[:m])
        assert _bits(part.y) == _bits(full.y)
        if mode == "self":
            assert _bits(part.x) == _bits(part.y[:m])
    # Not vacuous: the rows are not all alike (Rademacher rows may repeat), and
    # x differs from y in cross mode.
    assert len({tuple(r) for r in np.asarray(full.x).tolist()}) > 1
    assert (mode == "self") == np.array_equal(full.x, full.y)


@pytest.mark.parametrize("mode", ["self", "cross"])
@pytest.mark.parametrize("model", ROW_MODELS, ids=repr)
def test_rows_under_vmap_over_keys(model, mode):
    keys = jax.random.split(jax.random.PRNGKey(9), 4)
    n, d, m = 6, 3, 2
    part = jax.vmap(lambda k: st.sample_inputs(k, n, d, model, mode, rows=m))(keys)
    full = jax.vmap(lambda k: st.sample_inputs(k, n, d, model, mode))(keys)
    assert part.x.shape == (4, m, d) and part.y.shape == (4, n, d)
    assert _bits(part.x) == _bits(full.x[:, :m])
    assert _bits(part.y) == _bits(full.y)
    for i, k in enumerate(keys):
        one = st.sample_inputs(k, n, d, model, mode, rows=m)
        assert _bits(part.x[i]) == _bits(one.x) and _bits(part.y[i]) == _bits(one.y)
    assert not np.array_equal(part.x[0], part.x[1])


def test_rows_accepts_numpy_integers():
    key = jax.random.PRNGKey(10)
    a = st.sample_inputs(key, 5, 2, st.Gaussian(), "cross", rows=np.int64(3))
    b = st.sample_inputs(key, 5, 2, st.Gaussian(), "cross", rows=3)
    assert _bits(a.x) == _bits(b.x)


@pytest.mark.parametrize("rows", [0, -1, 6, 100, 2.0, 2.5, "3", True, np.float64(3.0)])
def test_bad_rows_are_rejected(rows):
    with pytest.raises(ValueError, match="rows"):
        st.sample_inputs(jax.random.PRNGKey(0), 5, 2, st.Gaussian(), "self", rows=rows)
