"""One query row per seed: the trials of the probabilistic suites.

Each seed draws fresh inputs (weights fixed per cell), takes query row 0 and
its keys (cross mode: an independent Y; self mode: the other n - 1 rows, with
the diagonal score kept apart), so seeds are independent trials.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds
from verify import devices, progress

# The input models the suites sweep by default: centred and shifted Gaussian,
# bounded Uniform and Rademacher (docs/definitions.md gives their proxies).
STANDARD_MODELS = {
    "gaussian": st.Gaussian(1.0),
    "gaussian-shifted": st.Gaussian(1.0, mean=0.5),
    "uniform": st.Uniform(1.0),
    "rademacher": st.Rademacher(1.0),
}

# Seeds are processed in chunks so that memory stays O(chunk * n) at large n.
SEED_CHUNK_ELEMENTS = 2**24


class RowScores(NamedTuple):
    """Per seed: ``sigma`` (sigma_i), ``mean`` (mu_i), ``scores`` (row 0 against
    its keys, shape (seeds, num_keys); self mode without the diagonal) and
    ``diagonal`` (self mode: u_00, the score of the query against itself; None in
    cross mode). NumPy arrays."""

    sigma: np.ndarray
    mean: np.ndarray
    scores: np.ndarray
    diagonal: Optional[np.ndarray]

    def log_normaliser(self) -> np.ndarray:
        """``log sum_j exp(u_0j)`` over the full row (self mode: diagonal included)."""
        log_alpha = np.logaddexp.reduce(self.scores, axis=1)
        if self.diagonal is not None:
            log_alpha = np.logaddexp(log_alpha, self.diagonal)
        return log_alpha


WEIGHTS = {"gaussian": st.gaussian_weights, "orthogonal": st.orthogonal_weights}


def _row(key, weights, scale, *, model, n: int, d: int, mode: str):
    """(sigma, mu, scores, diagonal score) of row 0 for one key. The static
    configuration is bound with functools.partial, so that ``devices.map_seeds``
    compiles once per configuration. The weights and the score scale are traced:
    a new seed_base or scale does not recompile (theorem43's cells, at scale
    1/sqrt(d), reuse lemma42's programs: theorem43 compiled for 20.1 s in a first
    quick run on 2 cores, now 2.6 s, with every cell the same)."""
    # Only row 0 is a query: draw just it (bit-identical to the full draw's row 0).
    inp = st.sample_inputs(key, n, d, model, mode, rows=1)
    x = inp.x[0]
    w = bounds.row_weight_vector(x, weights, scale)
    others = inp.y[1:] if mode == "self" else inp.y
    return (bounds.row_score_scale(x, weights, model, scale),
            bounds.row_score_mean(x, weights, model, scale), others @ w, inp.y[0] @ w)


def chunk_size(n: int, d: int) -> int:
    """Seeds per chunk: about SEED_CHUNK_ELEMENTS input entries, rounded up to a
    multiple of the global device count so that every device gets a share."""
    return devices.padded_count(max(1, SEED_CHUNK_ELEMENTS // (n * max(d, 1))), jax.device_count())


def distinct_keys(keys: np.ndarray) -> np.ndarray:
    """``keys`` (one raw PRNG key per row), after checking that no two seeds share
    a key: trials drawn from one key are one draw repeated, not independent."""
    rows = np.ascontiguousarray(keys).reshape(keys.shape[0], -1)
    if np.unique(rows, axis=0).shape[0] != rows.shape[0]:
        raise RuntimeError(f"{rows.shape[0]} seeds drew from only {np.unique(rows, axis=0).shape[0]} "
                           "distinct PRNG keys: the trials would not be independent")
    return keys


def trial_keys(seed_base: int, seeds: int, stream: Optional[int] = 1) -> jax.Array:
    """One PRNG key per trial: ``split`` of the cell's key ``PRNGKey(seed_base)``
    (folded with ``stream`` unless None), checked distinct (:func:`distinct_keys`)."""
    base = jax.random.PRNGKey(seed_base)
    if stream is not None:
        base = jax.random.fold_in(base, stream)
    keys = jax.random.split(base, seeds)
    distinct_keys(np.asarray(keys))
    return keys


def sample_row_scores(model, n: int, d: int, mode: str, seeds: int, seed_base: int,
                      scale: float = 1.0, weight_scale: float = 1.0,
                      weights: str = "gaussian",
                      summary: Optional[Callable[[RowScores], dict]] = None):
    """Row 0's scores for ``seeds`` independent draws of the inputs.

    Without ``summary``, returns the :class:`RowScores` of all seeds (memory
    O(seeds x n)). With it, applies ``summary`` to the RowScores of each chunk of
    seeds and returns its per-seed arrays concatenated over chunks (a dict), so
    memory stays O(chunk x n) however many seeds: what large-n sweeps need.

    Weights are drawn once from ``seed_base``: ``gaussian`` (entries
    N(0, weight_scale^2 / d)) or ``orthogonal`` (weight_scale times Haar
    orthogonal, so that sigma_i = nu scale weight_scale^2 ||x_i||_2); the inputs
    of seed s from the s-th key of ``jax.random.split``. ``scale`` is the score
    scale lambda. Each chunk of seeds is spread over all devices (and processes,
    see ``verify.devices``); every process gets every seed's result.
    """
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {sorted(WEIGHTS)}, got {weights!r}.")
    base = jax.random.PRNGKey(seed_base)
    weights = WEIGHTS[weights](jax.random.fold_in(base, 0), d, scale=weight_scale)

    row = functools.partial(_row, model=model, n=n, d=d, mode=mode)
    scale = np.asarray(float(scale), weights.query.dtype)
    all_keys = np.asarray(trial_keys(seed_base, seeds, stream=1))
    size = min(chunk_size(n, d), seeds)

    def rows_of(keys) -> RowScores:
        # A short last chunk is padded to the chunk size (repeating its last key)
        # and trimmed again: every chunk has one compiled shape.
        count = keys.shape[0]
        keys = np.concatenate([keys, np.repeat(keys[-1:], size - count, axis=0)])
        sig, mu, u, diag = (None if a is None else a[:count]
                            for a in devices.map_seeds(row, keys, weights, scale))
        return RowScores(sig, mu, u, diag if mode == "self" else None)

    def chunk(i: int):
        part = rows_of(all_keys[i:i + size])
        part = part if summary is None else summary(part)
        progress.chunk_done(i + size, seeds)
        return part

    parts = [chunk(i) for i in range(0, seeds, size)]
    if summary is None:
        return RowScores(*(None if parts[0][j] is None else np.concatenate([p[j] for p in parts])
                           for j in range(4)))
    return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}


def sample_rows(model, n: int, d: int, mode: str, seeds: int, seed_base: int,
                scale: float = 1.0):
    """``(sigma_i, mu_i, scores)`` per seed, as in :func:`sample_row_scores` (self
    mode drops the diagonal key, leaving n - 1 keys)."""
    rows = sample_row_scores(model, n, d, mode, seeds, seed_base, scale)
    return rows.sigma, rows.mean, rows.scores
