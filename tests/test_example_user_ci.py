"""Example: check the paper's bounds on *your own* attention in your CI.

This file is the worked example of docs/testing.md, run by the project's own
CI so that it stays correct. Copy it and replace the three marked parts: your
token sampler, your weights, and the law of your keys. Everything else is the
library: sigma_i from sparsity_theory.score_scales, the bounds from
sparsity_theory.bounds, the assertions and the seed count from
sparsity_theory.testing.

The setting the theorems need: cross attention, one query independent of n
i.i.d. keys. Each seed is one independent trial (a fresh query and fresh
keys); rows of one draw share their keys, so they are not independent trials.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds, score_scales
from sparsity_theory.testing import assert_holds_with_probability, assert_rejects, seeds_for_power

D_MODEL, D_HEAD, N_KEYS = 24, 8, 256
SCALE = D_HEAD**-0.5  # u_ij = SCALE <q_i, k_j>
DELTA = 0.05  # each bound is claimed with probability 1 - DELTA

# --- 1. your weights (here: fixed random ones standing in for trained W_Q, W_K) ---------
_rng = np.random.default_rng(2024)
W_Q = _rng.normal(size=(D_MODEL, D_HEAD)) / np.sqrt(D_MODEL)
W_K = _rng.normal(size=(D_MODEL, D_HEAD)) / np.sqrt(D_MODEL)

# --- 2. your token distribution: correlated Gaussian tokens with a mean ------------------
TOKEN_MEAN = _rng.normal(size=D_MODEL)
TOKEN_MIX = _rng.normal(size=(D_MODEL, D_MODEL)) / np.sqrt(D_MODEL)  # tokens = mean + MIX z


def sample_tokens(key, count):
    # JAX's default float: float64 here (the project's tests turn 64-bit mode
    # on), float32 in a process that does not; the checks work in both.
    z = jax.random.normal(key, (count, D_MODEL))
    return TOKEN_MEAN + z @ TOKEN_MIX.T


# --- 3. the law of your keys k = W_K^T y: known here, since the sampler is ours ----------
KEY_MEAN = W_K.T @ TOKEN_MEAN
KEY_COVARIANCE = W_K.T @ (TOKEN_MIX @ TOKEN_MIX.T) @ W_K


def one_trial(key):
    """One independent trial: a fresh query and N_KEYS fresh keys; returns the
    quantities the bounds control and the bounds, for one query row."""
    kq, kk = jax.random.split(key)
    q = sample_tokens(kq, 1)[0] @ W_Q  # (D_HEAD,)
    keys = sample_tokens(kk, N_KEYS) @ W_K  # (N_KEYS, D_HEAD)
    u = SCALE * keys @ q  # the row of scores
    # Lemma 4.2's sigma_i and mu_i from the query and the key law (keys are
    # Gaussian here, so the standard deviation is the sub-Gaussian proxy).
    sigma = score_scales.score_scale_from_covariance(q, KEY_COVARIANCE, SCALE)
    mu = score_scales.score_mean_from_key_mean(q, KEY_MEAN, SCALE)
    k = N_KEYS // 2
    return {
        "max_deviation": jnp.max(jnp.abs(u - mu)),
        # Lemma 4.2 Part 1 at DELTA.
        "deviation_bound": bounds.score_deviation_bound(sigma, N_KEYS, DELTA),
        # Theorem 4.3 at k = n/2: log of the k-th smallest softmax entry, and
        # log eps_k with DELTA split between the count and the normaliser.
        "log_kth_smallest": st.log_kth_smallest_entry(u, k),
        "log_eps_k": bounds.small_entry_log_bound(sigma, N_KEYS, k, delta_count=DELTA / 2,
                                                  delta_normaliser=DELTA / 2),
        "sigma": sigma,
    }


# Enough seeds to catch a bound whose true failure rate is 2 x DELTA with
# probability 0.9, at a false-alarm rate of 1e-6 per assertion: 932.
SEEDS = seeds_for_power(DELTA, factor=2.0, power=0.9)


@functools.lru_cache(maxsize=None)
def trials():
    """All seeds at once (vmap), computed once for the tests below."""
    keys = jax.random.split(jax.random.PRNGKey(0), SEEDS)
    return {name: np.asarray(value) for name, value in jax.jit(jax.vmap(one_trial))(keys).items()}


def test_lemma42_part1_holds_on_my_attention():
    t = trials()
    assert_holds_with_probability(t["max_deviation"] > t["deviation_bound"], DELTA,
                                  name="Lemma 4.2 Part 1")


def test_theorem43_holds_on_my_attention():
    t = trials()
    assert_holds_with_probability(t["log_kth_smallest"] > t["log_eps_k"], DELTA,
                                  name="Theorem 4.3 (k = n/2)")


def test_planted_wrong_bound_is_caught():
    """The power side: 0.3 x Lemma 4.2 Part 1's bound is wrong, and these seeds
    must show it; otherwise a passing check above would say little."""
    t = trials()
    assert_rejects(t["max_deviation"] > 0.3 * t["deviation_bound"], DELTA,
                   name="0.3 x Lemma 4.2 Part 1")


def test_seed_count():
    assert SEEDS == 932 and len(trials()["sigma"]) == SEEDS


def test_estimated_key_law_agrees_with_the_known_one():
    """Without a known law, estimate it from an independent calibration sample
    of keys (not the keys of the checked rows): close to the exact sigma_i."""
    keys = sample_tokens(jax.random.PRNGKey(99), 20_000) @ W_K
    q = sample_tokens(jax.random.PRNGKey(98), 16) @ W_Q
    estimated = score_scales.score_scale_from_keys(q, keys, SCALE)
    exact = score_scales.score_scale_from_covariance(q, KEY_COVARIANCE, SCALE)
    np.testing.assert_allclose(estimated, exact, rtol=0.05)
    np.testing.assert_allclose(score_scales.score_mean_from_keys(q, keys, SCALE),
                               score_scales.score_mean_from_key_mean(q, KEY_MEAN, SCALE),
                               atol=0.05 * float(jnp.max(exact)))
