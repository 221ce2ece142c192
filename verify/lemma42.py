"""Suite ``lemma42``: Lemma 4.2 Parts 1-3 at their stated probability.

Each seed draws fresh inputs (the weights are fixed per cell), takes query row 0 and its keys (cross mode: an independent Y; self mode:
the other n - 1 rows, the diagonal left out), and records whether each part's
bound failed and the ratio quantity/bound (for Part 3, bound/quantity on the
normaliser's scale). Seeds are independent trials, so the failure count of a
cell is Binomial(seeds, p) with p <= delta under the lemma.

Verdict per claim: the failure counts pooled over cells are tested against delta
with the exact binomial test (valid: a sum of independent binomials with rates
<= delta is stochastically below Binomial(total, delta)); each cell is also
tested on its own at alpha / number of cells (Bonferroni), and a claim is
VIOLATED if either rejects. ``*-wrong`` claims plant a bound that is wrong (0.3
times Part 1; Part 3 with +sigma^2 in place of -eta): the same test must report
them VIOLATED, which shows the check has power; they are reported as CAUGHT or
MISSED.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds
from verify.statistics import binomial_check, looseness_from_logs

NAME = "lemma42"
DELTA = 0.05
ALPHA = 1e-6
WRONG_FACTOR = 0.3

CLAIMS = {
    "L4.2-P1": "P(max_j |u_ij - mu_i| > sigma_i sqrt(2 ln(2n/delta))) <= delta",
    "L4.2-P2": "P(max_j u_ij - min_j u_ij > 2 sigma_i sqrt(2 ln(2n/delta))) <= delta",
    "L4.2-P3": "P(sum_j exp(u_ij) < n exp(mu_i - sigma_i sqrt(2 ln(1/delta)/n))) <= delta",
    "L4.2-P1-wrong": f"planted wrong bound: {WRONG_FACTOR} x Part 1 (must be caught)",
    "L4.2-P3-wrong": "planted wrong bound: sum_j exp(u_ij) >= n exp(mu_i + sigma_i^2) (must be caught)",
}

PRESETS = {
    "quick": {"lengths": (64, 1024), "seeds": 400, "d": 8},
    "paper": {"lengths": (256, 1024, 4096), "seeds": 1000, "d": 64},
    "large": {"lengths": (1024, 16384, 65536), "seeds": 1000, "d": 64},
}

MODELS = {
    "gaussian": st.Gaussian(1.0),
    "gaussian-shifted": st.Gaussian(1.0, mean=0.5),
    "uniform": st.Uniform(1.0),
    "rademacher": st.Rademacher(1.0),
}


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    combos = [(m, mode, n) for m in MODELS for mode in st.MODES for n in p["lengths"]]
    return [
        {"suite": NAME, "model": m, "mode": mode, "n": n, "d": p["d"],
         "seeds": seeds or p["seeds"], "seed_base": 5000 + 1000 * i, "delta": DELTA}
        for i, (m, mode, n) in enumerate(combos)
    ]


def cell_id(cell: dict) -> str:
    return f"{cell['model']}-{cell['mode']}-n{cell['n']}-d{cell['d']}-s{cell['seeds']}"


def sample_rows(model, n: int, d: int, mode: str, seeds: int, seed_base: int,
                scale: float = 1.0):
    """Per seed: (sigma_i, mu_i, scores of row 0 against its keys) as NumPy arrays.

    Self mode drops the diagonal key, leaving n - 1 keys. Weights are drawn once
    from ``seed_base`` (Gaussian, unit scale); inputs from independent keys.
    """
    base = jax.random.PRNGKey(seed_base)
    weights = st.gaussian_weights(jax.random.fold_in(base, 0), d)

    def one(key):
        inp = st.sample_inputs(key, n, d, model, mode)
        x = inp.x[0]
        keys = inp.y[1:] if mode == "self" else inp.y
        u = keys @ bounds.row_weight_vector(x, weights, scale)
        return (bounds.row_score_scale(x, weights, model, scale),
                bounds.row_score_mean(x, weights, model, scale), u)

    sig, mu, u = jax.vmap(one)(jax.random.split(jax.random.fold_in(base, 1), seeds))
    return np.asarray(sig), np.asarray(mu), np.asarray(u)


def _claim(failed: np.ndarray, log_ratio: np.ndarray, delta: float) -> dict:
    check = binomial_check(int(np.sum(failed)), int(failed.size), delta, ALPHA)
    return {"check": check.to_dict(), "looseness": looseness_from_logs(log_ratio).to_dict()}


def run_cell(cell: dict) -> dict[str, Any]:
    model = MODELS[cell["model"]]
    delta = cell["delta"]
    sig, mu, u = sample_rows(model, cell["n"], cell["d"], cell["mode"], cell["seeds"],
                             cell["seed_base"])
    num_keys = u.shape[1]
    deviation = np.max(np.abs(u - mu[:, None]), axis=1)
    t = np.asarray(bounds.score_deviation_bound(sig, num_keys, delta))
    spread = u.max(axis=1) - u.min(axis=1)
    log_alpha = np.logaddexp.reduce(u, axis=1)
    lower = np.asarray(bounds.log_normaliser_lower_bound(sig, num_keys, delta, mu))
    wrong_lower = math.log(num_keys) + mu + sig**2
    return {
        "L4.2-P1": _claim(deviation > t, np.log(deviation) - np.log(t), delta),
        "L4.2-P2": _claim(spread > 2 * t, np.log(spread) - np.log(2 * t), delta),
        "L4.2-P3": _claim(log_alpha < lower, lower - log_alpha, delta),
        "L4.2-P1-wrong": _claim(deviation > WRONG_FACTOR * t,
                                np.log(deviation) - np.log(WRONG_FACTOR * t), delta),
        "L4.2-P3-wrong": _claim(log_alpha < wrong_lower, wrong_lower - log_alpha, delta),
    }


def summarise(cell_results: list[tuple[dict, dict]]) -> list[dict]:
    rows = []
    num_cells = max(len(cell_results), 1)
    for claim, statement in CLAIMS.items():
        parts = [r[claim] for _, r in cell_results if claim in r]
        if not parts:
            continue
        checks = [p["check"] for p in parts]
        delta = checks[0]["delta"]
        pooled = binomial_check(sum(c["failures"] for c in checks),
                                sum(c["trials"] for c in checks), delta, ALPHA)
        cells_rejected = sum(c["p_value"] < ALPHA / num_cells for c in checks)
        rejected = pooled.verdict == "VIOLATED" or cells_rejected > 0
        if claim.endswith("-wrong"):
            verdict = "CAUGHT" if rejected else "MISSED"
        else:
            verdict = "VIOLATED" if rejected else "HOLDS"
        loose = [p["looseness"] for p in parts]
        medians = [x["median"] for x in loose if x["median"] is not None]
        worst = [x["worst"] for x in loose if x["worst"] is not None]
        rows.append({
            "suite": NAME, "claim": claim, "statement": statement,
            "checked": pooled.trials, "violations": pooled.failures, "verdict": verdict,
            "delta": delta, "rate": pooled.empirical_rate, "p_value": pooled.p_value,
            "ci_low": pooled.ci_low, "ci_high": pooled.ci_high,
            "cells_rejected": cells_rejected, "cells": len(parts),
            "median_of_cell_medians": float(np.median(medians)) if medians else None,
            "worst_ratio": max(worst) if worst else None,
        })
    return rows
