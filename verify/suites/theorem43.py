"""Suite ``theorem43``: Theorem 4.3 (attention is naturally sparse), both directions.

Forward: at least k softmax entries of a row are at most ``eps_k = exp(t + eta)/n``
(``bounds.small_entry_log_bound``); the checked quantity is the k-th smallest
entry (self mode: the k-th smallest off-diagonal entry, normalised over the full
row). Converse: for a given eps at least ``k_eps`` entries are at most eps
(``bounds.guaranteed_small_entries``); the checked quantity is
``#{j : s_ij <= eps}``. Each in the ``binomial`` (exact quantile) and
``hoeffding`` forms, at delta = delta_count + delta_normaliser = 0.05.

Trials: one query row per seed (``verify.sampling``). Every seed is evaluated
at every k of a grid (and every eps of a grid) for the looseness and the
figure, but the verdict counts one trial per seed, at the grid point assigned to
it by its index (``seed mod grid size``): chosen before the data, so each trial
fails with probability at most delta and the pooled count is a valid binomial
test. Per-grid-point failure counts (each over all seeds, so also valid on its
own) are kept in the cell results. Looseness: quantity/bound for the forward
bound, bound/quantity (k_eps / count) for the converse, over every (seed, grid
point) where the bound is not vacuous; the fraction of vacuous bounds (Hoeffding
certifies nothing when n - k < sqrt(n ln(1/delta)/2)) is reported apart.

``T4.3-wrong`` plants eps = exp(0.3 t + eta)/n (the binomial threshold scaled by
0.3), which the data break at large k; the test must report it CAUGHT.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds, gaussian_quantiles
from verify.claims import ALPHA, ClaimVerdict, claim_result, summarise_claims
from verify.report.figures import pyplot, save_figure, styled
from verify.sampling import STANDARD_MODELS, sample_row_scores
from verify.report import paper
from verify.report.ledger import bound_entry
from verify.rules import rule
from verify.suite import Suite, register, with_seeds

NAME = "theorem43"
DELTA_COUNT = 0.025
DELTA_NORMALISER = 0.025
DELTA = DELTA_COUNT + DELTA_NORMALISER
WRONG_FACTOR = rule(NAME, "wrong_factor", 0.3, "planted bound at 0.3 x the real one: the test must "
                    "catch it (CAUGHT), else it has no power")
K_FRACTIONS = (1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8, 15 / 16, 1.0)
EPS_MULTIPLES = (2.0, 4.0, 8.0, 16.0, 64.0)  # eps = c / num_keys

CLAIMS = {
    "T4.3-binomial": "P(k-th smallest s_ij > exp(t + eta)/n) <= delta, t from the exact binomial quantile",
    "T4.3-hoeffding": "the same with t from Hoeffding's count n p(t) + sqrt(n ln(1/delta_1)/2)",
    "T4.3-converse-binomial": "P(#{j : s_ij <= eps} < k_eps) <= delta, k_eps from the binomial quantile",
    "T4.3-converse-hoeffding": "the same with k_eps from Hoeffding's count",
    "T4.3-wrong": f"planted wrong bound: eps = exp({WRONG_FACTOR} t + eta)/n (must be caught)",
}

PRESETS = {
    "quick": {"lengths": (64, 1024), "seeds": 400, "d": 8},
    "paper": {"lengths": (256, 1024, 4096), "seeds": 1000, "d": 64},
    "large": {"lengths": (1024, 16384, 65536), "seeds": 1000, "d": 64},
}

MODELS = dict(STANDARD_MODELS)


def k_grid(num_keys: int) -> np.ndarray:
    return np.unique([max(1, min(num_keys, round(f * num_keys))) for f in K_FRACTIONS])


def eps_grid(num_keys: int) -> np.ndarray:
    return np.minimum(1.0, np.asarray(EPS_MULTIPLES) / num_keys)


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    combos = [(m, mode, n) for m in MODELS for mode in st.MODES for n in p["lengths"]]
    return with_seeds(NAME, [
        {"suite": NAME, "model": m, "mode": mode, "n": n, "d": p["d"],
         "seeds": seeds or p["seeds"],
         "score_scale": 1.0 / math.sqrt(p["d"]),
         "delta_count": DELTA_COUNT, "delta_normaliser": DELTA_NORMALISER}
        for (m, mode, n) in combos
    ])


def cell_id(cell: dict) -> str:
    return f"{cell['model']}-{cell['mode']}-n{cell['n']}-d{cell['d']}-s{cell['seeds']}"


def _assigned(values: np.ndarray) -> np.ndarray:
    """Row s's value at its assigned grid point s mod grid size."""
    seeds, size = values.shape
    return values[np.arange(seeds), np.arange(seeds) % size]


def _quantiles(x: np.ndarray) -> dict[str, list]:
    """10%, 50% and 90% quantiles over seeds (axis 0), NaN left out."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column gives NaN
        q10, q50, q90 = np.nanquantile(x, [0.1, 0.5, 0.9], axis=0)
    return {"q10": q10.tolist(), "median": q50.tolist(), "q90": q90.tolist()}


def _forward(log_entry: np.ndarray, log_eps: np.ndarray, delta: float,
             log_trivial: np.ndarray | None = None, score_step_over_exact=None) -> dict[str, Any]:
    """``log_trivial``: per k, the log of the largest value the k-th smallest entry
    can take at all (for the bound's vacuity); ``score_step_over_exact``: per k,
    the threshold t over the exact Gaussian quantile of the k-th smallest score."""
    finite = np.isfinite(log_eps)
    failed = log_entry > log_eps
    return claim_result(_assigned(failed), (log_entry - log_eps)[finite], delta, ALPHA, extra={
        "failures_per_grid_point": failed.sum(axis=0).tolist(),
        "vacuous_fraction": float(1.0 - finite.mean())},
        log_bound_over_trivial=None if log_trivial is None else (log_eps - log_trivial[None, :])[finite],
        score_step_over_exact=score_step_over_exact)


def threshold_over_exact(num_keys: int, ks: np.ndarray, delta_count: float, method: str) -> np.ndarray:
    """Per k: Theorem 4.3's score threshold (sigma = 1) over the exact Gaussian
    ``1 - delta_count`` quantile of the k-th smallest of n scores (inf where the
    method certifies nothing). Only k with a positive exact quantile are kept:
    below the median the ratio of two thresholds near 0 says nothing."""
    out = []
    for k in ks:
        exact = float(gaussian_quantiles.kth_smallest_score_quantile(1.0, num_keys, int(k), delta_count))
        bound = float(np.asarray(bounds.small_entry_score_threshold(1.0, num_keys, int(k), delta_count, method)))
        out.append(bound / exact if exact > 0 else np.nan)
    return np.asarray(out)


def _converse(count: np.ndarray, guaranteed: np.ndarray, delta: float) -> dict[str, Any]:
    failed = count < guaranteed
    useful = guaranteed > 0
    with np.errstate(divide="ignore"):
        log_ratio = np.log(guaranteed[useful]) - np.log(count[useful])
    return claim_result(_assigned(failed), log_ratio, delta, ALPHA, extra={
        "failures_per_grid_point": failed.sum(axis=0).tolist(),
        "vacuous_fraction": float(1.0 - useful.mean()),
        "guaranteed_median": np.median(guaranteed, axis=0).tolist()})


def run_cell(cell: dict) -> dict[str, Any]:
    d1, d2 = cell["delta_count"], cell["delta_normaliser"]
    delta = d1 + d2
    num_keys = bounds.num_independent_keys(cell["n"], cell["mode"])
    ks, epss = k_grid(num_keys), eps_grid(num_keys)

    def summary(rows):
        log_entries = np.sort(rows.scores, axis=1) - rows.log_normaliser()[:, None]
        return {"sigma": rows.sigma, "log_entry_k": log_entries[:, ks - 1],
                "count": np.stack([np.sum(log_entries <= math.log(e), axis=1) for e in epss],
                                  axis=1)}

    s = sample_row_scores(MODELS[cell["model"]], cell["n"], cell["d"], cell["mode"],
                          cell["seeds"], cell["seed_base"], scale=cell["score_scale"],
                          summary=summary)
    sigma, log_entry_k, count = s["sigma"], s["log_entry_k"], s["count"]

    def forward_bounds(method):
        return np.stack([bounds.small_entry_log_bound(sigma, num_keys, int(k), d1, d2, method)
                         for k in ks], axis=1)

    log_eps = {m: forward_bounds(m) for m in bounds.COUNT_METHODS}
    guaranteed = {m: np.stack([bounds.guaranteed_small_entries(sigma, num_keys, e, d1, d2, m)
                               for e in epss], axis=1) for m in bounds.COUNT_METHODS}
    log_n = math.log(num_keys)
    eta = np.asarray(bounds.normaliser_deficit(sigma, num_keys, d2))[:, None]
    t = np.stack([bounds.small_entry_score_threshold(sigma, num_keys, int(k), d1) for k in ks],
                 axis=1)
    log_eps_wrong = WRONG_FACTOR * t + eta - log_n
    # The k-th smallest of n entries summing to 1 is at most 1 / (n - k + 1): the
    # n - k + 1 entries from it upward sum to at most 1.
    log_trivial = -np.log(num_keys - ks + 1.0)
    tight = {m: threshold_over_exact(num_keys, ks, d1, m) for m in bounds.COUNT_METHODS}
    result = {
        "T4.3-binomial": _forward(log_entry_k, log_eps["binomial"], delta, log_trivial, tight["binomial"]),
        "T4.3-hoeffding": _forward(log_entry_k, log_eps["hoeffding"], delta, log_trivial, tight["hoeffding"]),
        "T4.3-converse-binomial": _converse(count, guaranteed["binomial"], delta),
        "T4.3-converse-hoeffding": _converse(count, guaranteed["hoeffding"], delta),
        "T4.3-wrong": _forward(log_entry_k, log_eps_wrong, delta,
                               score_step_over_exact=WRONG_FACTOR * tight["binomial"]),
    }
    # For the figure: n * (k-th smallest entry) and n * eps_k over k / n.
    result["profile"] = {
        "num_keys": num_keys, "k": ks.tolist(), "eps": epss.tolist(),
        "log_n_entry": _quantiles(log_entry_k + log_n),
        "log_n_eps": {m: _quantiles(np.where(np.isfinite(v), v + log_n, np.nan))
                      for m, v in log_eps.items()},
        "sigma": _quantiles(sigma[:, None]),
    }
    return result


def summarise(cell_results: list[tuple[dict, dict]]) -> list[ClaimVerdict]:
    return summarise_claims(NAME, CLAIMS, cell_results, ALPHA)


def figures(cell_results: list[tuple[dict, dict]], out_dir: str) -> list[dict]:
    return [theorem43_figure(cell_results, out_dir)]


@styled
def theorem43_figure(cell_results, out_dir: str, model: str = "gaussian") -> dict:
    """n * (k-th smallest softmax entry) against k/n, with n * eps_k of Theorem 4.3
    in its binomial and Hoeffding forms, at the largest n of the run."""
    plt = pyplot()
    chosen = [(c, r["profile"]) for c, r in cell_results if c["model"] == model]
    n_max = max(c["n"] for c, _ in chosen)
    modes = sorted({c["mode"] for c, _ in chosen})
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4.4), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        cell, prof = next((c, p) for c, p in chosen if c["n"] == n_max and c["mode"] == mode)
        x = np.array(prof["k"]) / prof["num_keys"]
        ent = {q: np.exp(prof["log_n_entry"][q]) for q in ("q10", "median", "q90")}
        line, = ax.plot(x, ent["median"], "o-", label="n x k-th smallest entry (median over seeds)")
        ax.fill_between(x, ent["q10"], ent["q90"], color=line.get_color(), alpha=0.2,
                        label="n x k-th smallest entry, 10-90% over seeds")
        for method, style in (("binomial", "s--"), ("hoeffding", "^:")):
            ax.plot(x, np.exp(prof["log_n_eps"][method]["median"]), style,
                    label=f"n x eps_k, {method} form (median over seeds)")
        ax.set_yscale("log")
        ax.set_xlabel("k / n (k = number of small entries)")
        ax.set_ylabel("n x softmax entry (log scale)")
        ax.set_title(f"{mode} attention, {model} input, n = {n_max}, {cell['seeds']} seeds")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2)
    return save_figure(fig, out_dir, "theorem43_eps_k.png",
                 "Theorem 4.3: the k-th smallest softmax entry against eps_k (both scaled by n), "
                 "delta_count = delta_normaliser = 0.025; Hoeffding's eps_k is missing where it "
                 "certifies nothing.")


def ledger_entries(results: dict) -> list[dict]:
    return [bound_entry(results, NAME, ["T4.3-binomial", "T4.3-hoeffding", "T4.3-converse-binomial",
                                        "T4.3-converse-hoeffding"], ["T4.3-wrong"],
                        "Theorem 4.3: attention is naturally sparse",
                        "at least k entries of the row are <= eps_k = exp(t + eta)/n (and the converse)",
                        "4 input models x self/cross x lengths, k and eps grids", paper=paper.THEOREM43)]


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=4.3,
    figures=figures, ledger_entries=ledger_entries))
