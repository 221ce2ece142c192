"""jax.grad through the exact error forms: gradients reach the kept logits.

The top-k of ``window_profile`` selects on a bitcast copy of the logits (so
that -0.0 and +0.0 tie); the kept logits are gathered from the logits
themselves, so reverse-mode derivatives are the true ones (the adversarial
suite differentiates these functions).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsity_theory as st


def _objective(windows, values):
    def f(u):
        e = st.sparse_attention_errors(u, windows, values)
        return (jnp.sum(e.log_tail_mass) + jnp.sum(e.log_l2) + jnp.sum(e.log_output)
                + jnp.sum(st.log_tail_mass(u, windows)))
    return f


@pytest.mark.parametrize("n, windows", [(16, (1, 4, 15)), (32, (2, 8, 16, 31))])
def test_gradient_of_exact_errors_matches_finite_differences(n, windows):
    key_u, key_v, key_d = jax.random.split(jax.random.PRNGKey(n), 3)
    u = jax.random.normal(key_u, (3, n), jnp.float64)
    values = jax.random.normal(key_v, (3, n, 4), jnp.float64)
    f = _objective(windows, values)
    grad = jax.grad(f)(u)
    assert np.all(np.isfinite(np.asarray(grad)))
    # Directional derivative along a random direction, central differences in float64
    # (the top-k sets do not change for a step this small: scores are distinct).
    direction = jax.random.normal(key_d, u.shape, jnp.float64)
    h = 1e-6
    numeric = (f(u + h * direction) - f(u - h * direction)) / (2 * h)
    analytic = jnp.sum(grad * direction)
    np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-6)


def test_kept_logits_get_a_gradient():
    u = jnp.array([3.0, 1.0, 0.5, -1.0, -2.0])
    # d log tau(1) / d u_0 = -s_0 (raising the kept logit shrinks the tail).
    g = jax.grad(lambda x: st.log_tail_mass(x, (1,))[0])(u)
    s = np.asarray(jax.nn.softmax(u))
    assert float(g[0]) == pytest.approx(-s[0], rel=1e-12)
