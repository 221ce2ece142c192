"""Suite ``sharp_laws``: the sharp large-n laws of Gaussian scores measured, the
attention phase diagram of the Random Energy Model, and how much the paper's
Theorem 4.3 and Theorem 5.1 bounds leave on the table.

Scores: one row of n scores ``sigma Z_j``, Z_j i.i.d. N(0, 1) per seed. This is
exactly the law of a cross-attention row with Gaussian keys given a query with
``sigma_i = sigma`` (rotation invariance of N(0, I_d): ``<w_i, y_j>`` is
``N(0, ||w_i||^2)``), drawn directly because it is d times cheaper; a test
checks the equivalence against ``verify.sampling``'s full pipeline.

Two kinds of cell:

* ``fixed`` (sigma fixed, n over a grid): the certified window ``k_eps`` (the
  smallest window with tail mass <= eps) against ``n Phibar(sigma + Phi^{-1}(eps))``;
  the normaliser against ``ln n + sigma^2/2``; the effective entries ``E(eps)``
  against their mean law; the tail mass of the top n/10 entries against
  ``Phi(Phibar^{-1}(0.1) - sigma)``; and, for Theorems 4.3 and 5.1, the median
  entry and the largest entry per seed (their measured 95% quantiles are held
  against the bounds and against the sharp Gaussian forms);
* ``rem`` (``sigma = c sqrt(ln n)``, c and n over grids): ``k_eps`` per seed,
  whose log-log slope in n is the fitted exponent C of the phase diagram.

``summarise`` has no verdict rows: these are laws, not bounds at a stated
probability. They are judged in ``verify.suites.sharp_analysis`` by fixed rules (with
planted wrong laws that the same rules must reject) and in the claims ledger.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sparsity_theory as st
from sparsity_theory import gaussian_laws as laws
from verify import progress
from verify.claims import ClaimVerdict
from verify.sampling import trial_keys
from verify.suite import Suite, register, with_seeds
from verify.suites import sharp_analysis

NAME = "sharp_laws"

# eps of the certified window k_eps, and of the effective entries E(eps).
WINDOW_EPS = (0.1, 0.01)
EFFECTIVE_EPS = (1e-3, 1e-4)
TAIL_FRACTION = 0.1  # tau(k) at k = n / 10 against its law
DELTA = 0.05  # probability of the bounds compared (Theorem 4.3, Theorem 5.1)
# Elements per chunk of seeds: memory O(2^22) whatever n and the seed count.
CHUNK_ELEMENTS = 2**22


CLAIMS: dict[str, str] = {}  # judged in the analysis and the ledger, not per trial

PRESETS = {
    "quick": {"sigmas": (0.5, 1.0, 2.0), "lengths": (2**8, 2**10, 2**12, 2**14, 2**16),
              "seeds": 100, "c_grid": (0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
              "rem_lengths": (2**8, 2**10, 2**12, 2**14, 2**16), "rem_seeds": 64},
    "paper": {"sigmas": (0.5, 1.0, 2.0, 3.0), "lengths": tuple(2**i for i in range(8, 21, 2)),
              "seeds": 200, "c_grid": (0.25, 0.5, 0.75, 1.0, 1.25, laws.REM_COLLAPSE_C, 1.75, 2.0),
              "rem_lengths": tuple(2**i for i in range(8, 21, 2)), "rem_seeds": 200},
    "large": {"sigmas": (0.5, 1.0, 2.0, 3.0), "lengths": tuple(2**i for i in range(8, 25, 2)),
              "seeds": 200, "c_grid": (0.25, 0.5, 0.75, 1.0, 1.25, laws.REM_COLLAPSE_C, 1.75, 2.0),
              "rem_lengths": tuple(2**i for i in range(8, 25, 2)), "rem_seeds": 200},
}


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    out = [{"suite": NAME, "kind": "fixed", "sigma": s, "n": n, "seeds": seeds or p["seeds"],
            "window_eps": list(WINDOW_EPS),
            "effective_eps": list(EFFECTIVE_EPS), "tail_fraction": TAIL_FRACTION, "delta": DELTA}
           for s in p["sigmas"] for n in p["lengths"]]
    out += [{"suite": NAME, "kind": "rem", "c": c, "n": n, "sigma": float(laws.rem_score_scale(c, n)),
             "seeds": seeds or p["rem_seeds"],
             "window_eps": list(WINDOW_EPS)}
            for c in p["c_grid"] for n in p["rem_lengths"]]
    return with_seeds(NAME, out)


def cell_id(cell: dict) -> str:
    scale = f"c{cell['c']:.4g}" if cell["kind"] == "rem" else f"sigma{cell['sigma']:g}"
    return f"{cell['kind']}-{scale}-n{cell['n']}-s{cell['seeds']}"


@functools.partial(jax.jit, static_argnames=("n", "median_rank", "tail_window", "fixed"))
def _chunk_statistics(keys, sigma, log_window_eps, effective_eps, n: int, median_rank: int,
                      tail_window: int, fixed: bool):
    """Per seed of the chunk: certified windows; for fixed cells also the
    normaliser offset, effective entries, tail mass at n/10, the log median and
    log largest entries."""
    u = sigma * jax.vmap(lambda k: jax.random.normal(k, (n,), jnp.float64))(keys)
    out = {"k_eps": st.certified_window(u, jnp.exp(log_window_eps))}
    if fixed:
        lse = jax.nn.logsumexp(u, axis=-1)
        out.update(
            log_normaliser_offset=lse - math.log(n),
            effective=st.num_effective_entries(u, effective_eps),
            log_tail=st.log_tail_mass(u, (tail_window,))[:, 0],
            log_median_entry=st.log_kth_smallest_entry(u, median_rank),
            log_max_entry=jnp.max(u, axis=-1) - lse,
        )
    return out


def sample_statistics(cell: dict) -> dict[str, np.ndarray]:
    """The per-seed statistics of a cell (NumPy arrays, seeds first), computed
    in chunks of seeds of a fixed shape (one compilation per n)."""
    n, seeds = cell["n"], cell["seeds"]
    keys = trial_keys(cell["seed_base"], seeds, stream=None)
    size = max(1, min(seeds, CHUNK_ELEMENTS // n))
    pad = (-seeds) % size
    keys = jnp.concatenate([keys, keys[:pad]]) if pad else keys
    fixed = cell["kind"] == "fixed"
    args = dict(sigma=jnp.float64(cell["sigma"]),
                log_window_eps=jnp.log(jnp.asarray(cell["window_eps"], jnp.float64)),
                effective_eps=jnp.asarray(cell.get("effective_eps", [0.5]), jnp.float64),
                n=n, median_rank=n // 2, tail_window=max(1, round(cell.get("tail_fraction", 0.1) * n)),
                fixed=fixed)
    # Fetched chunk by chunk (np.asarray waits for it): progress is reported per chunk.
    parts = [jax.tree.map(np.asarray, _chunk_statistics(keys[i:i + size], **args))
             for i in progress.chunk_starts(keys.shape[0], size)]
    return {name: np.concatenate([np.asarray(p[name]) for p in parts])[:seeds] for name in parts[0]}


def _mean_se(x) -> tuple[float, float]:
    x = np.asarray(x, dtype=float)
    return float(np.mean(x)), float(np.std(x, ddof=1) / math.sqrt(x.size))


def _fixed_result(cell: dict, s: dict) -> dict[str, Any]:
    n, sigma, delta = cell["n"], cell["sigma"], cell["delta"]
    window = []
    for j, eps in enumerate(cell["window_eps"]):
        mean, se = _mean_se(s["k_eps"][:, j] / n)
        window.append({"eps": eps, "mean_fraction": mean, "se": se,
                       "law": float(laws.window_fraction_law(sigma, eps))})
    effective = []
    for j, eps in enumerate(cell["effective_eps"]):
        mean, se = _mean_se(s["effective"][:, j])
        effective.append({"eps": eps, "mean": mean, "se": se,
                          "fraction_positive": float(np.mean(s["effective"][:, j] > 0)),
                          "law": float(laws.effective_entries_law(n, sigma, eps))})
    norm_mean, norm_se = _mean_se(s["log_normaliser_offset"])
    tail_mean, tail_se = _mean_se(np.exp(s["log_tail"]))
    q = cell["tail_fraction"]
    # Theorem 4.3 at k = n/2 small entries (the median entry), Theorem 5.1 on the
    # largest entry: each at total probability delta (split evenly between the
    # scores and the normaliser, as in the theorems' proofs).
    k = n // 2
    # "at least k entries <= eps_k" is "the k-th smallest entry <= eps_k".
    p = st.bounds.count_exceedance_probability(n, k, delta)  # the Gaussian form spends all of delta on the scores
    bound43 = float(st.bounds.small_entry_log_bound(sigma, n, k, delta / 2, delta / 2))
    theorem43 = {
        "k": k, "measured_quantile": float(np.quantile(s["log_median_entry"], 1 - delta)),
        "measured_mean": float(np.mean(s["log_median_entry"])),
        "bound": bound43, "gaussian": float(laws.small_entry_log_bound_gaussian(sigma, n, p)),
        "law": float(laws.log_kth_smallest_entry_law(n, k, sigma)),
        "failures": int(np.sum(s["log_median_entry"] > bound43)),
    }
    theorem51 = {
        "measured_quantile": float(np.quantile(s["log_max_entry"], 1 - delta)),
        "measured_mean": float(np.mean(s["log_max_entry"])),
        "bound": float(st.bounds.largest_entry_log_bound(sigma, n, delta / 2, delta / 2)),
        "gaussian": float(laws.largest_entry_log_quantile_gaussian(sigma, n, delta)),
    }
    theorem51["failures"] = int(np.sum(s["log_max_entry"] > theorem51["bound"]))
    return {
        "kind": "fixed", "n": n, "sigma": sigma, "seeds": cell["seeds"], "delta": delta,
        "window": window,
        "normaliser": {"mean_offset": norm_mean, "se": norm_se, "law": 0.5 * sigma**2},
        "effective": effective,
        "tail": {"fraction": q, "mean": tail_mean, "se": tail_se,
                 "law": float(np.exp(laws.log_tail_mass_law(q, sigma)))},
        "theorem43": theorem43, "theorem51": theorem51,
    }


def run_cell(cell: dict) -> dict[str, Any]:
    s = sample_statistics(cell)
    if cell["kind"] == "fixed":
        return _fixed_result(cell, s)
    return {"kind": "rem", "n": cell["n"], "c": cell["c"], "sigma": cell["sigma"],
            "window_eps": cell["window_eps"],
            # Per seed, for the bootstrap of the fitted exponent.
            "k_eps": s["k_eps"].astype(int).T.tolist(),
            "law": [float(laws.window_size_law(cell["n"], cell["sigma"], e)) for e in cell["window_eps"]]}


def summarise(cell_results) -> list[ClaimVerdict]:
    return []  # laws, not bounds at a probability: judged in the analysis and the ledger


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=8,
    analysis=sharp_analysis.analyse, report_sections=sharp_analysis.report,
    figures=sharp_analysis.figures, ledger_entries=sharp_analysis.ledger_entries))
