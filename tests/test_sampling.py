"""verify/sampling.py: one query row per seed, chunked over seeds."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sparsity_theory as st
from sparsity_theory import bounds
from verify import sampling

from _shared import compilations


@pytest.mark.parametrize("mode", ["self", "cross"])
def test_chunking_and_summaries_do_not_change_the_draws(mode, monkeypatch):
    args = (st.Gaussian(1.0, mean=0.3), 32, 4, mode, 10, 11)
    whole = sampling.sample_row_scores(*args)
    monkeypatch.setattr(sampling, "SEED_CHUNK_ELEMENTS", 3 * 32 * 4)  # chunks of 3 seeds
    chunked = sampling.sample_row_scores(*args)
    for a, b in zip(whole, chunked):
        if a is None:
            assert b is None and mode == "cross"
        else:
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)
    summary = sampling.sample_row_scores(
        *args, summary=lambda r: {"log_alpha": r.log_normaliser(), "max": r.scores.max(axis=1)})
    np.testing.assert_allclose(summary["log_alpha"], whole.log_normaliser(), rtol=1e-13)
    np.testing.assert_array_equal(summary["max"].shape, (10,))
    assert whole.scores.shape == (10, bounds.num_independent_keys(32, mode))


def test_scores_match_the_row_quantities():
    """u_0j = <w_0, y_j>; sigma and mu are the per-row sub-Gaussian scale and mean;
    in self mode the diagonal score enters the normaliser."""
    rows = sampling.sample_row_scores(st.Uniform(1.0, mean=0.5), 16, 3, "self", 4, 2,
                                      scale=0.7, weights="orthogonal", weight_scale=1.3)
    assert np.all(rows.sigma > 0) and rows.diagonal.shape == (4,)
    full = np.concatenate([rows.scores, rows.diagonal[:, None]], axis=1)
    np.testing.assert_allclose(rows.log_normaliser(), np.logaddexp.reduce(full, axis=1))
    with pytest.raises(ValueError, match="weights"):
        sampling.sample_row_scores(st.Gaussian(1.0), 8, 2, "cross", 2, 0, weights="sparse")


def test_seeds_that_share_a_prng_key_are_refused(monkeypatch):
    """One key repeated for every seed would make 40 'independent' trials one draw."""
    real_split = jax.random.split
    monkeypatch.setattr(jax.random, "split", lambda key, num=2: jnp.repeat(real_split(key, 1), num, axis=0))
    with pytest.raises(RuntimeError, match="40 seeds drew from only 1 distinct PRNG keys"):
        sampling.sample_row_scores(st.Gaussian(1.0), 16, 4, "cross", 40, 123)
    keys = np.asarray(real_split(jax.random.PRNGKey(0), 5))
    assert sampling.distinct_keys(keys) is keys


def test_trial_keys_are_the_cells_split_stream_checked_distinct():
    base = jax.random.PRNGKey(5)
    np.testing.assert_array_equal(sampling.trial_keys(5, 10), jax.random.split(jax.random.fold_in(base, 1), 10))
    np.testing.assert_array_equal(sampling.trial_keys(5, 10, stream=None), jax.random.split(base, 10))
    assert not np.array_equal(sampling.trial_keys(5, 10, stream=2), sampling.trial_keys(5, 10, stream=1))


@pytest.mark.parametrize("model", [st.Gaussian(1.0), st.Rademacher(1.0)])
def test_every_seed_is_a_fresh_draw(model):
    """A sampler that ignored its key would repeat one draw: every seed's row of
    scores (and its sigma_i, which depends on the seed's query) must differ."""
    rows = sampling.sample_row_scores(model, 32, 8, "cross", 60, 11)
    assert np.unique(np.asarray(rows.scores), axis=0).shape[0] == 60
    assert np.unique(np.asarray(rows.sigma)).size > 1


@pytest.mark.parametrize("mode", ["self", "cross"])
def test_the_score_scale_scales_the_scores_without_a_new_program(mode):
    """The scale is a traced argument: scale 2 doubles u, sigma and mu exactly (a
    power of two), and reuses the program compiled for scale 1 (so suites that
    differ only in their scale share their programs)."""
    args = (st.Gaussian(1.0, mean=0.3), 24, 3, mode, 5, 7)
    one = sampling.sample_row_scores(*args, scale=1.0)
    with compilations() as compiles:
        two = sampling.sample_row_scores(*args, scale=2.0)
    for a, b in zip(one, two):
        if a is None:
            assert b is None and mode == "cross"
        else:
            np.testing.assert_array_equal(b, 2.0 * a)
    assert compiles == [], f"scale 2 compiled {len(compiles)} new programs"
