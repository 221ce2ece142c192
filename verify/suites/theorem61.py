"""Suite ``theorem61``: Theorems 6.1 and 6.2 (E.1, E.2) at their stated probability.

Per-row cells: each seed is one trial (``verify.sampling``: query row 0 and its
keys; in self mode the row is the n - 1 other keys plus the diagonal, whose
offset ``u_00 - mu_0`` is fixed given x_0). For windows k from 1 to n/2 the
row's tail mass and l2 error ``||s - s^||_2`` are computed from the exact
factorised forms and held against ``sparsity_theory.error_bounds.row_error_bounds``:
an upper bound (Theorem 6.1) and a lower bound (Theorem 6.2) that hold for every
window at once with probability at least 1 - delta (they all rest on Lemma 4.2
Part 2's spread). A trial fails when any window breaks the bound.

Frobenius cells: each seed is a whole n x n attention matrix; the total error
``||S - S^||_F`` is held against ``frobenius_error_bounds`` (delta / n per row),
and every row's output error ``||(s_i - s^_i)^T V||_2`` against the output bound
with the same per-row spread bounds (all rows at once: one trial per matrix).

Planted wrong bounds (must be CAUGHT): ``T6.1-wrong`` claims the error is at most
half the error of a row with uniform scores, ``0.5 sqrt((n-k)/(nk))`` (at small k
the true error is close to that value); ``T6.2-wrong`` drops the tail-mass factor
from the lower bound, ``sqrt(n / (k (n-k)))``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds, error_bounds, gaussian_quantiles
from verify.claims import ALPHA, ClaimVerdict, claim_result, summarise_claims
from verify.sampling import STANDARD_MODELS, sample_row_scores, trial_keys
from verify.report import paper
from verify.report.ledger import bound_entry
from verify.rules import rule
from verify.suite import Suite, register, with_seeds

NAME = "theorem61"
DELTA = 0.05
# The planted upper bound: WRONG_FACTOR x the uniform-score error sqrt((n-k)/(nk)).
WRONG_FACTOR = rule(NAME, "wrong_factor", 0.5, "planted upper bound: half the uniform-score error "
                    "sqrt((n-k)/(nk)); the test must catch it")

CLAIMS = {
    "T6.1": "per row, every window k: ||s - s^||_2 <= e^rho sqrt((n-k)/(n k)), rho = Lemma 4.2 Part 2 spread bound",
    "T6.1-tail": "per row, every window k: tau <= min(1 - k/n, (n-k) e^rho / (k + (n-k) e^rho)) = 1 - k/n (holds surely: r >= 1)",
    "T6.2": "per row, every window k: ||s - s^||_2 >= (n-k)/(n-k + k e^rho) sqrt(n / (k (n-k)))",
    "T6.1-F": "||S - S^||_F <= sqrt(sum_i e^{2 rho_i}) sqrt((n-k)/(n k)), rho_i at delta/n (all windows)",
    "T6.2-F": "||S - S^||_F >= sqrt(sum_i lower_i^2), lower_i the per-row T6.2 bound at delta/n",
    "T6.1-output": "every row: ||(s_i - s^_i)^T V||_2 <= min(2 tau_up R_V, l2_up ||V_c||_2) at delta/n per row",
    "T6.1-wrong": "planted wrong bound: ||s - s^||_2 <= 0.5 sqrt((n-k)/(n k)) (must be caught)",
    "T6.2-wrong": "planted wrong bound: ||s - s^||_2 >= sqrt(n / (k (n-k))) (must be caught)",
}

PRESETS = {
    "quick": {"lengths": (64, 1024), "seeds": 400, "d": 8, "weight_scales": (0.5, 1.0),
              "frobenius_lengths": (64, 256), "frobenius_seeds": 100},
    "paper": {"lengths": (256, 1024, 4096), "seeds": 1000, "d": 64, "weight_scales": (0.5, 1.0),
              "frobenius_lengths": (256, 1024), "frobenius_seeds": 200},
    "large": {"lengths": (1024, 16384, 65536), "seeds": 1000, "d": 64, "weight_scales": (0.5, 1.0),
              "frobenius_lengths": (1024, 2048), "frobenius_seeds": 200},
}

MODELS = dict(STANDARD_MODELS)
FROBENIUS_MODELS = ("gaussian", "uniform")


def windows_for(n: int) -> tuple[int, ...]:
    """1, 4, sqrt(n), n/8 and n/2 (distinct, below n)."""
    return tuple(sorted({k for k in (1, 4, math.isqrt(n), n // 8, n // 2) if 1 <= k < n}))


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    out = []
    combos = [(m, mode, n, ws) for m in MODELS for mode in st.MODES for n in p["lengths"]
              for ws in p["weight_scales"]]
    for (m, mode, n, ws) in combos:
        out.append({"suite": NAME, "kind": "row", "model": m, "mode": mode, "n": n, "d": p["d"],
                    "weight_scale": ws, "seeds": seeds or p["seeds"], "delta": DELTA})
    combos = [(m, mode, n) for m in FROBENIUS_MODELS for mode in st.MODES
              for n in p["frobenius_lengths"]]
    for (m, mode, n) in combos:
        out.append({"suite": NAME, "kind": "frobenius", "model": m, "mode": mode, "n": n,
                    "d": p["d"], "weight_scale": 0.5,
                    "seeds": min(seeds, p["frobenius_seeds"]) if seeds else p["frobenius_seeds"], "delta": DELTA})
    return with_seeds(NAME, out)


def cell_id(cell: dict) -> str:
    return (f"{cell['kind']}-{cell['model']}-{cell['mode']}-n{cell['n']}-d{cell['d']}"
            f"-w{cell['weight_scale']}-s{cell['seeds']}")


def run_cell(cell: dict) -> dict[str, Any]:
    with np.errstate(invalid="ignore"):
        return _row_cell(cell) if cell["kind"] == "row" else _frobenius_cell(cell)


def _uniform_log_l2(n: int, k: int) -> float:
    return 0.5 * (math.log(n - k) - math.log(n) - math.log(k))


def spread_over_exact(n: int, delta: float, mode: str) -> float:
    """Theorem 6.1's rho (Lemma 4.2 Part 2's spread bound, sigma = 1, diagonal
    offset 0 in self mode) over the exact Gaussian ``1 - delta`` quantile of the
    spread of the independent scores. The bounds depend on rho through e^rho,
    so a doubled rho shows here as a doubled ratio."""
    offset = np.zeros(1) if mode == "self" else None
    rho = float(np.asarray(error_bounds.row_spread_bound(np.ones(1), n, delta, mode, offset))[0])
    return rho / float(gaussian_quantiles.spread_quantile(1.0, bounds.num_independent_keys(n, mode), delta))


def typical_row_bites(sigma: float, offset: float, delta_of_n, mode: str, tail: bool = False):
    """log(bound / trivial maximum) as a function of n for a typical row (median
    sigma and |diagonal offset| of the cell) at the largest window checked, n/2:
    the l2 bound against sqrt 2, or (``tail``) the tail bound against 1 - k/n.
    ``delta_of_n``: the per-row probability at n (delta, or delta / n for the
    Frobenius form, whose union bound over rows makes it the row bound at delta / n
    against sqrt 2 per row)."""
    off = np.array([offset]) if mode == "self" else None

    def at(n: np.ndarray) -> np.ndarray:
        n = jnp.asarray(n)
        k = n // 2
        b = error_bounds.row_error_bounds(np.array([sigma]), n, k, delta_of_n(n), mode, off)
        if tail:
            return np.asarray(b.log_tail_upper) - np.log1p(-np.asarray(k) / np.asarray(n))
        return np.asarray(b.log_l2_upper) - 0.5 * math.log(2)
    return at


def _row_cell(cell: dict) -> dict[str, Any]:
    n, mode, delta = cell["n"], cell["mode"], cell["delta"]
    windows = windows_for(n)

    def summary(rows):
        u = rows.scores if mode == "cross" else np.concatenate([rows.diagonal[:, None], rows.scores], 1)
        e = st.sparse_attention_errors(jnp.asarray(u), windows)
        offset = rows.diagonal - rows.mean if mode == "self" else np.zeros_like(rows.sigma)
        return {"sigma": rows.sigma, "offset": offset,
                "log_tail": np.asarray(e.log_tail_mass), "log_l2": np.asarray(e.log_l2)}

    s = sample_row_scores(MODELS[cell["model"]], n, cell["d"], mode, cell["seeds"], cell["seed_base"],
                          weight_scale=cell["weight_scale"], weights="gaussian", summary=summary)
    offset = s["offset"] if mode == "self" else None
    ratios = {name: [] for name in ("T6.1", "T6.1-tail", "T6.2", "T6.1-wrong", "T6.2-wrong")}
    # log(bound / trivial maximum): an l2 distance of two probability vectors is at
    # most sqrt 2; the tail mass outside the top k of n entries at most 1 - k/n.
    vacuity = {"T6.1": [], "T6.1-tail": []}
    for j, k in enumerate(windows):
        b = error_bounds.row_error_bounds(s["sigma"], n, k, delta, mode, offset)
        l2, tail = s["log_l2"][:, j], s["log_tail"][:, j]
        uniform = _uniform_log_l2(n, k)
        ratios["T6.1"].append(l2 - np.asarray(b.log_l2_upper))
        ratios["T6.1-tail"].append(tail - np.asarray(b.log_tail_upper))
        vacuity["T6.1"].append(np.asarray(b.log_l2_upper) - 0.5 * math.log(2))
        vacuity["T6.1-tail"].append(np.asarray(b.log_tail_upper) - math.log1p(-k / n))
        ratios["T6.2"].append(np.asarray(b.log_l2_lower) - l2)
        ratios["T6.1-wrong"].append(l2 - (math.log(WRONG_FACTOR) + uniform))
        ratios["T6.2-wrong"].append(-uniform + math.log(n) - math.log(n - k) - l2)
    step = spread_over_exact(n, delta, mode)
    typical = (float(np.median(s["sigma"])), float(np.median(np.abs(s["offset"]))))
    bites = {"T6.1": typical_row_bites(*typical, lambda _: delta, mode),
             "T6.1-tail": typical_row_bites(*typical, lambda _: delta, mode, tail=True)}
    result = {}
    for name, parts in ratios.items():
        r = np.stack(parts, axis=1)  # (seeds, windows)
        result[name] = claim_result(np.any(r > 0, axis=1), r, delta, extra={"windows": list(windows)},
                                    log_bound_over_trivial=np.stack(vacuity[name], 1) if name in vacuity
                                    else None, score_step_over_exact=None if "wrong" in name else step,
                                    bites_from=bites.get(name))
    return result


def _frobenius_cell(cell: dict) -> dict[str, Any]:
    n, d, mode, delta = cell["n"], cell["d"], cell["mode"], cell["delta"]
    model = MODELS[cell["model"]]
    windows = windows_for(n)
    base = jax.random.PRNGKey(cell["seed_base"])
    weights = st.gaussian_weights(jax.random.fold_in(base, 0), d, scale=cell["weight_scale"])
    keys = trial_keys(cell["seed_base"], cell["seeds"], stream=1)
    scale = 1.0  # the weights carry the scale, as in verify.sampling

    def one(key):
        inp = st.sample_inputs(key, n, d, model, mode)
        q, k, v = st.project(inp, weights)
        stats = st.evaluate_rows(q, k, v, windows=windows, eps=(0.5,), scale=scale, block_size=64)
        sigma = jax.vmap(lambda x: bounds.row_score_scale(x, weights, model, scale))(inp.x)
        mean = jax.vmap(lambda x: bounds.row_score_mean(x, weights, model, scale))(inp.x)
        diagonal = scale * jnp.sum(q * k, axis=-1)  # u_ii (meaningful in self mode)
        return stats.log_l2_error, stats.log_output_error, sigma, diagonal - mean, v

    log_l2, log_out, sigma, offset, values = (np.asarray(a) for a in jax.lax.map(one, keys))
    failed = {name: np.zeros(cell["seeds"], bool) for name in ("T6.1-F", "T6.2-F", "T6.1-output")}
    ratios = {name: [] for name in failed}
    # log(bound / trivial maximum): ||S - S^||_F <= sqrt(2n) (rows: sqrt 2 each); a
    # row's output error ||(s - s^)^T V||_2 <= ||s - s^||_1 max_j ||v_j|| <= 2 max_j ||v_j||.
    vacuity = {"T6.1-F": [], "T6.1-output": []}
    log_max_value = np.log(np.max(np.linalg.norm(values, axis=-1), axis=-1))  # (seeds,)
    off = offset if mode == "self" else None
    for j, k in enumerate(windows):
        log_total = 0.5 * np.logaddexp.reduce(2 * log_l2[:, :, j], axis=1)
        lower, upper = error_bounds.frobenius_error_bounds(sigma, n, k, delta, mode, off)
        rows = error_bounds.row_error_bounds(sigma, n, k, delta / n, mode, off)
        out_bound = np.asarray(error_bounds.log_output_error_upper_bound(
            rows.log_tail_upper, rows.log_l2_upper, values[:, None]))
        for name, r in (("T6.1-F", log_total - np.asarray(upper)),
                        ("T6.2-F", np.asarray(lower) - log_total),
                        ("T6.1-output", np.max(log_out[:, :, j] - out_bound, axis=1))):
            failed[name] |= r > 0
            ratios[name].append(r)
        vacuity["T6.1-F"].append(np.asarray(upper) - 0.5 * math.log(2 * n))
        vacuity["T6.1-output"].append(out_bound - (math.log(2) + log_max_value[:, None]))
    step = spread_over_exact(n, delta / n, mode)  # each row at delta / n (union bound)
    typical = (float(np.median(sigma)), float(np.median(np.abs(offset))))
    bites = {"T6.1-F": typical_row_bites(*typical, lambda m: delta / m, mode)}
    return {name: claim_result(failed[name], np.stack(ratios[name], 1), delta, extra={"windows": list(windows)},
                               log_bound_over_trivial=np.stack(vacuity[name], 1) if name in vacuity else None,
                               score_step_over_exact=step, bites_from=bites.get(name))
            for name in failed}


def summarise(cell_results: list[tuple[dict, dict]]) -> list[ClaimVerdict]:
    return summarise_claims(NAME, CLAIMS, cell_results, ALPHA)


def ledger_entries(results: dict) -> list[dict]:
    regime = "4 input models x self/cross x lengths; windows 1..n/2"
    return [bound_entry(results, NAME, ["T6.1", "T6.1-tail", "T6.1-F", "T6.1-output"], ["T6.1-wrong"],
                        "Theorem 6.1 / E.1: upper bound on the top-k error",
                        "per row and in Frobenius norm, V = I and with values, at probability 1 - delta",
                        regime, paper=paper.THEOREM61),
            bound_entry(results, NAME, ["T6.2", "T6.2-F"], ["T6.2-wrong"],
                        "Theorem 6.2 / E.2: lower bound on the top-k error",
                        "per row and in Frobenius norm at probability 1 - delta", regime, paper=paper.THEOREM62)]


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=6.1,
    ledger_entries=ledger_entries))
