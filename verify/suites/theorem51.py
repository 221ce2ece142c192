"""Suite ``theorem51``: Theorem 5.1 (attention collapse) and the paper's Figure 1.

Gaussian input (also shifted by a mean, which the softmax ignores), orthogonal
weights and score scale ``SIGMA_TARGET / sqrt(d)``, so every row has sigma_i
close to SIGMA_TARGET (``sigma_i = lambda ||x_i||_2``); n over a grid, several
eps. One query row per seed (``verify.sampling``); self mode checks the
off-diagonal entries with n - 1 keys, normalised over the full row.

- ``T5.1``: rows meeting the collapse condition
  ``ln(n eps) >= sigma_i sqrt(2 ln(n/delta_1)) + eta`` have no (off-diagonal)
  entry above eps, failing with probability at most delta_1 + delta_2. Trials
  are the seeds whose row meets the condition at the eps assigned to the seed
  (``seed mod number of eps``, fixed before the data, so trials are independent
  and each fails with probability <= delta). Looseness: largest entry / eps.
- ``T5.1-max``: the bound behind it, ``max_j s_ij <= exp(t_1 + eta)/n``, on every
  seed. Looseness: largest entry / bound.
- ``T5.1-wrong``: the condition with its right-hand side scaled by 0.3, which
  declares collapse too early; the test must report it CAUGHT.

Figure 1: effective entries ``E(eps) = #{j : s_ij > eps}`` over the full row
(diagonal included in self mode) against n, mean and 10-90% band over seeds,
one line per eps, with ``n0(eps, sigma, delta)`` (``bounds.collapse_length`` at
the median sigma of the run) marked.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import jax.numpy as jnp
import numpy as np

import sparsity_theory as st
from sparsity_theory import bounds, gaussian_quantiles
from verify.claims import ALPHA, ClaimVerdict, claim_result, summarise_claims
from verify.report.figures import pyplot, save_figure, styled
from verify.sampling import sample_row_scores
from verify.report import paper
from verify.report.ledger import bound_entry, not_run_entry, regime_verdict
from verify.rules import rule
from verify.suite import Suite, register, with_seeds

NAME = "theorem51"
DELTA_SCORES = 0.025
DELTA_NORMALISER = 0.025
DELTA = DELTA_SCORES + DELTA_NORMALISER
SIGMA_TARGET = 0.5
FIGURE1_FALL = rule(NAME, "figure1_fall", 0.05, "Figure 1 reads 'fallen to 0' when the mean E(eps) at the "
                    "largest n is at most 5% of its peak over n (a choice between no fall and a full one)")
WRONG_FACTOR = rule(NAME, "wrong_factor", 0.3, "planted bound at 0.3 x the real one: the test must "
                    "catch it (CAUGHT), else it has no power")
EPS = (0.1, 0.03, 0.01, 0.003)

CLAIMS = {
    "T5.1": "rows meeting ln(n eps) >= sigma_i sqrt(2 ln(n/delta_1)) + eta: P(some s_ij > eps) <= delta",
    "T5.1-max": "P(max_j s_ij > exp(sigma_i sqrt(2 ln(n/delta_1)) + eta) / n) <= delta",
    "T5.1-wrong": f"planted wrong condition: ln(n eps) >= {WRONG_FACTOR} x right-hand side (must be caught)",
}

PRESETS = {
    "quick": {"lengths": (16, 64, 256, 1024, 4096), "seeds": 200, "d": 32},
    "paper": {"lengths": (16, 64, 256, 1024, 4096, 16384, 65536), "seeds": 1000, "d": 32},
    "large": {"lengths": tuple(4**i for i in range(2, 11)), "seeds": 1000, "d": 32},
}

MODELS = {
    "gaussian": st.Gaussian(1.0),
    "gaussian-shifted": st.Gaussian(1.0, mean=0.5),
}


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    combos = [(m, mode, n) for m in MODELS for mode in st.MODES for n in p["lengths"]]
    return with_seeds(NAME, [
        {"suite": NAME, "model": m, "mode": mode, "n": n, "d": p["d"],
         "seeds": seeds or p["seeds"],
         "score_scale": SIGMA_TARGET / math.sqrt(p["d"]), "weights": "orthogonal",
         "eps": list(EPS), "delta_scores": DELTA_SCORES, "delta_normaliser": DELTA_NORMALISER}
        for (m, mode, n) in combos
    ])


def cell_id(cell: dict) -> str:
    return f"{cell['model']}-{cell['mode']}-n{cell['n']}-d{cell['d']}-s{cell['seeds']}"


def run_cell(cell: dict) -> dict[str, Any]:
    d1, d2 = cell["delta_scores"], cell["delta_normaliser"]
    delta = d1 + d2
    eps = np.asarray(cell["eps"])
    log_eps = np.log(eps)

    def summary(rows):
        log_alpha = rows.log_normaliser()
        log_s = rows.scores - log_alpha[:, None]
        out = {"sigma": rows.sigma, "log_max": log_s.max(axis=1),  # largest off-diagonal entry
               "effective_off": np.stack([np.sum(log_s > le, axis=1) for le in log_eps], axis=1)}
        out["effective"] = out["effective_off"]
        if rows.diagonal is not None:
            out["effective"] = out["effective_off"] + (
                (rows.diagonal - log_alpha)[:, None] > log_eps[None, :])
        return out

    s = sample_row_scores(MODELS[cell["model"]], cell["n"], cell["d"], cell["mode"],
                          cell["seeds"], cell["seed_base"], scale=cell["score_scale"],
                          weights=cell["weights"], summary=summary)
    seeds, num_keys = s["sigma"].size, bounds.num_independent_keys(cell["n"], cell["mode"])
    log_max, effective_off, effective = s["log_max"], s["effective_off"], s["effective"]
    log_bound = np.asarray(bounds.largest_entry_log_bound(s["sigma"], num_keys, d1, d2))
    assigned = np.arange(seeds) % eps.size
    met = log_bound <= log_eps[assigned]  # collapse_condition at the assigned eps
    rhs = log_bound + math.log(num_keys)  # sigma_i sqrt(2 ln(n/delta_1)) + eta
    met_wrong = math.log(num_keys) + log_eps[assigned] >= WRONG_FACTOR * rhs
    broke = effective_off[np.arange(seeds), assigned] > 0
    gap = log_max - log_eps[assigned]
    sigma_median = float(np.median(s["sigma"]))
    # The score step t_1 = sigma sqrt(2 ln(n / delta_1)) over the exact Gaussian
    # 1 - delta_1 quantile of the largest of n scores (sigma = 1).
    step = math.sqrt(2 * math.log(num_keys / d1)) / float(
        gaussian_quantiles.max_score_quantile(1.0, num_keys, d1))
    return {
        "T5.1": claim_result(broke[met], gap[met], delta, ALPHA, score_step_over_exact=step),
        # An entry is at most 1: the bound bites where it is below 1.
        "T5.1-max": claim_result(log_max > log_bound, log_max - log_bound, delta, ALPHA,
                                 log_bound_over_trivial=log_bound, score_step_over_exact=step,
                                 bites_from=lambda m: np.asarray(bounds.largest_entry_log_bound(
                                     sigma_median, jnp.asarray(m), d1, d2))),
        "T5.1-wrong": claim_result(broke[met_wrong], gap[met_wrong], delta, ALPHA,
                                   score_step_over_exact=WRONG_FACTOR * step),
        "profile": {
            "n": cell["n"], "num_keys": num_keys, "eps": eps.tolist(),
            "effective_mean": effective.mean(axis=0).tolist(),
            "effective_q10": np.quantile(effective, 0.1, axis=0).tolist(),
            "effective_q90": np.quantile(effective, 0.9, axis=0).tolist(),
            "effective_off_diagonal_mean": effective_off.mean(axis=0).tolist(),
            "condition_met_fraction": [float(np.mean(log_bound <= le)) for le in log_eps],
            "sigma_median": sigma_median,
            "sigma_q10": float(np.quantile(s["sigma"], 0.1)),
            "sigma_q90": float(np.quantile(s["sigma"], 0.9)),
        },
    }


def collapse_lengths(sigma: float, eps=EPS) -> list:
    """n0(eps, sigma, delta_1, delta_2) for each eps (None beyond 2^62)."""
    return [bounds.collapse_length(e, sigma, DELTA_SCORES, DELTA_NORMALISER) for e in eps]


def summarise(cell_results: list[tuple[dict, dict]]) -> list[ClaimVerdict]:
    return summarise_claims(NAME, CLAIMS, cell_results, ALPHA)


def figures(cell_results: list[tuple[dict, dict]], out_dir: str) -> list[dict]:
    return [figure1(cell_results, out_dir)]


@styled
def figure1(cell_results, out_dir: str, model: str = "gaussian") -> dict:
    """Paper Figure 1: effective entries E(eps) against n, one line per eps, mean
    and 10-90% band over seeds, n0(eps, sigma) dashed at the median sigma."""
    plt = pyplot()
    modes = sorted({c["mode"] for c, _ in cell_results if c["model"] == model})
    fig, axes = plt.subplots(1, max(len(modes), 1), figsize=(5 * max(len(modes), 1), 4.6),
                             squeeze=False, sharey=True)
    collapse = {}  # eps -> [(mode, n0)], for the shared legend
    colours = {}
    for ax, mode in zip(axes[0], modes):
        pairs = sorted(((c, r["profile"]) for c, r in cell_results
                        if c["model"] == model and c["mode"] == mode), key=lambda p: p[0]["n"])
        ns = np.array([c["n"] for c, _ in pairs])
        eps = pairs[0][1]["eps"]
        sigma = float(np.median([p["sigma_median"] for _, p in pairs]))
        n0s = collapse_lengths(sigma, eps)
        for j, (e, n0) in enumerate(zip(eps, n0s)):
            mean = np.array([p["effective_mean"][j] for _, p in pairs])
            lo = np.array([p["effective_q10"][j] for _, p in pairs])
            hi = np.array([p["effective_q90"][j] for _, p in pairs])
            line, = ax.plot(ns, mean, "o-")
            colours.setdefault(e, line.get_color())
            collapse.setdefault(e, []).append((mode, n0))
            ax.fill_between(ns, lo, hi, color=line.get_color(), alpha=0.15)
            if n0 is not None:
                ax.axvline(n0, color=line.get_color(), ls="--", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("context length n (log scale)")
        seeds = pairs[0][0]["seeds"]
        ax.set_title(f"{mode} attention, {model} input\nmedian sigma = {sigma:.2f}, {seeds} seeds")
    axes[0][0].set_ylabel("effective entries E(eps) = #{j : s_ij > eps}\n"
                          "(log scale above 1, linear below)")
    line2d = plt.Line2D
    handles = [line2d([], [], color=colours[e], marker="o",
                      label=f"eps = {e:g}: n0 = " + ", ".join(
                          f"{n0 if n0 else '> 2^62'} ({mode})" for mode, n0 in collapse[e]))
               for e in colours]
    handles += [plt.Rectangle((0, 0), 1, 1, color="0.5", alpha=0.3, label="10-90% over seeds"),
                line2d([], [], color="0.3", ls="--", lw=1, label="collapse length n0 (dashed)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    return save_figure(fig, out_dir, "figure1_effective_entries.png",
                 "Figure 1 (Theorem 5.1): effective entries against n, mean and 10-90% band "
                 "over seeds; dashed: the collapse length n0(eps, sigma, delta_1 = delta_2 = "
                 "0.025) at the run's median sigma, from which the theorem guarantees E = 0 "
                 "(self mode: off-diagonal entries) with probability >= 0.95.")


def _figure1_entry(results: dict) -> dict:
    title = "Figure 1 / Theorem 5.1: effective entries E(eps) fall to 0 as n grows"
    statement = "mean E(eps) = #{j: s_ij > eps} at the largest n of the grid <= 5% of its peak over n, each eps"
    cells = results.get("cells", {}).get("theorem51")
    if not cells:
        return not_run_entry(results, NAME, title, statement, paper=paper.FIGURE1)
    groups = defaultdict(list)
    for c in cells:
        groups[(c["cell"]["model"], c["cell"]["mode"])].append(c)
    fallen, standing, parts = [], [], []
    for key, group in sorted(groups.items()):
        group.sort(key=lambda c: c["cell"]["n"])
        eps = group[0]["result"]["profile"]["eps"]
        for j, e in enumerate(eps):
            means = [c["result"]["profile"]["effective_mean"][j] for c in group]
            last, peak = means[-1], max(means)
            (fallen if last <= FIGURE1_FALL * peak else standing).append(f"{key[0]} {key[1]} eps={e:g}")
            parts.append(f"{key[0]}/{key[1]} eps={e:g}: peak {peak:.3g}, at n={group[-1]['cell']['n']} {last:.3g}")
    verdict = regime_verdict(fallen, standing)
    return {"paper": paper.FIGURE1, "claim": title, "statement": statement,
            "regime": "Gaussian input, sigma about 0.5, lengths of the preset", "verdict": verdict,
            "evidence": "; ".join(parts) + " (figure figure1_effective_entries.png)"}


def ledger_entries(results: dict) -> list[dict]:
    return [bound_entry(results, NAME, ["T5.1", "T5.1-max"], ["T5.1-wrong"],
                        "Theorem 5.1: attention collapse",
                        "rows meeting ln(n eps) >= sigma sqrt(2 ln(n/delta1)) + eta have no entry above eps",
                        "Gaussian input, sigma about 0.5, self/cross", paper=paper.THEOREM51),
            _figure1_entry(results)]


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=5.1,
    figures=figures, ledger_entries=ledger_entries))
