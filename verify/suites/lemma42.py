"""Suite ``lemma42``: Lemma 4.2 Parts 1-3 at their stated probability.

Each seed is one trial (``verify.sampling``: query row 0 against its keys;
self mode leaves the diagonal out, n - 1 keys) and records whether each part's
bound failed and the ratio quantity/bound (for Part 3, bound/quantity on the
normaliser's scale). Seeds are independent trials, so the failure count of a
cell is Binomial(seeds, p) with p <= delta under the lemma.

Verdicts pool the cells as ``verify.claims`` describes. ``*-wrong`` claims plant a bound that is wrong (0.3
times Part 1; Part 3 with +sigma^2 in place of -eta): the same test must report
them VIOLATED, which shows the check has power; they are reported as CAUGHT or
MISSED.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds, gaussian_quantiles
from verify.claims import ALPHA, ClaimVerdict, claim_result, summarise_claims
from verify.sampling import STANDARD_MODELS, sample_row_scores
from verify.report import paper
from verify.report.ledger import bound_entry
from verify.rules import rule
from verify.suite import Suite, register, with_seeds

NAME = "lemma42"
DELTA = 0.05
WRONG_FACTOR = rule(NAME, "wrong_factor", 0.3, "planted Part 1 bound at 0.3 x the real one: the test "
                    "must catch it (CAUGHT), else it has no power")

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

MODELS = dict(STANDARD_MODELS)


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    combos = [(m, mode, n) for m in MODELS for mode in st.MODES for n in p["lengths"]]
    return with_seeds(NAME, [
        {"suite": NAME, "model": m, "mode": mode, "n": n, "d": p["d"],
         "seeds": seeds or p["seeds"], "delta": DELTA}
        for (m, mode, n) in combos
    ])


def cell_id(cell: dict) -> str:
    return f"{cell['model']}-{cell['mode']}-n{cell['n']}-d{cell['d']}-s{cell['seeds']}"


def run_cell(cell: dict) -> dict[str, Any]:
    model = MODELS[cell["model"]]
    delta = cell["delta"]

    def summary(rows):
        u = rows.scores
        return {"sigma": rows.sigma, "mean": rows.mean, "spread": u.max(axis=1) - u.min(axis=1),
                "deviation": np.max(np.abs(u - rows.mean[:, None]), axis=1),
                "log_alpha": np.logaddexp.reduce(u, axis=1)}  # over the n - 1 keys in self mode

    s = sample_row_scores(model, cell["n"], cell["d"], cell["mode"], cell["seeds"],
                          cell["seed_base"], summary=summary)
    sig, mu, deviation, spread, log_alpha = (s[k] for k in ("sigma", "mean", "deviation",
                                                            "spread", "log_alpha"))
    num_keys = bounds.num_independent_keys(cell["n"], cell["mode"])
    t = np.asarray(bounds.score_deviation_bound(sig, num_keys, delta))
    lower = np.asarray(bounds.log_normaliser_lower_bound(sig, num_keys, delta, mu))
    wrong_lower = math.log(num_keys) + mu + sig**2
    # Tightness against Gaussian scores (sigma = 1; both sides scale with sigma).
    unit = float(bounds.score_deviation_bound(1.0, num_keys, delta))
    exact_p1 = unit / float(gaussian_quantiles.abs_deviation_quantile(1.0, num_keys, delta))
    exact_p2 = 2 * unit / float(gaussian_quantiles.spread_quantile(1.0, num_keys, delta))
    return {
        "L4.2-P1": claim_result(deviation > t, np.log(deviation) - np.log(t), delta,
                                score_step_over_exact=exact_p1),
        "L4.2-P2": claim_result(spread > 2 * t, np.log(spread) - np.log(2 * t), delta,
                                score_step_over_exact=exact_p2),
        "L4.2-P3": claim_result(log_alpha < lower, lower - log_alpha, delta),
        "L4.2-P1-wrong": claim_result(deviation > WRONG_FACTOR * t,
                                      np.log(deviation) - np.log(WRONG_FACTOR * t), delta,
                                      score_step_over_exact=WRONG_FACTOR * exact_p1),
        "L4.2-P3-wrong": claim_result(log_alpha < wrong_lower, wrong_lower - log_alpha, delta),
    }


def summarise(cell_results: list[tuple[dict, dict]]) -> list[ClaimVerdict]:
    return summarise_claims(NAME, CLAIMS, cell_results, ALPHA)


def ledger_entries(results: dict) -> list[dict]:
    return [bound_entry(results, NAME, ["L4.2-P1", "L4.2-P2", "L4.2-P3"],
                        ["L4.2-P1-wrong", "L4.2-P3-wrong"], "Lemma 4.2: score concentration (Parts 1-3)",
                        "max deviation, spread and normaliser bounds at probability 1 - delta",
                        "4 input models x self/cross x lengths of the preset", paper=paper.LEMMA42)]


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=4.2,
    ledger_entries=ledger_entries))
