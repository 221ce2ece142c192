"""Judging probabilistic claims ``P(failure) <= delta`` from independent seeds.

A suite's cell gives, per claim, a boolean failure per trial (one trial per
seed, so trials are independent) and the log of quantity/bound per checked
pair. ``claim_result`` turns that into a JSON-ready record; ``summarise_claims``
pools a claim's cells into one verdict row:

- the pooled failure count is tested against delta with the exact binomial test
  (valid: a sum of independent binomials with rates <= delta is stochastically
  below Binomial(total, delta));
- each cell is also tested on its own at alpha / number of cells (Bonferroni);
- a claim is VIOLATED if either rejects, UNTESTED if no cell had a trial;
- Wald's SPRT (``H0: p = delta`` against ``H1: p = 2 delta``, error rates
  alpha and 1e-3) is run on the trials in the order they were run (cells in
  order, seeds in order) and reports where it would have stopped: how many
  seeds a sequential sweep needs to decide the claim.

Claims whose id ends in ``-wrong`` plant a wrong bound: the same test must
reject them (CAUGHT), else MISSED, which shows a check without power.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from verify.statistics import binomial_check, looseness_from_logs, sprt

ALPHA = 1e-6
# Wald's SPRT alongside: H1 is a failure rate of SPRT_FACTOR x delta.
SPRT_FACTOR = 2.0
SPRT_BETA = 1e-3


def claim_result(failed, log_ratio, delta: float, alpha: float = ALPHA,
                 extra: Optional[dict] = None) -> dict[str, Any]:
    """Per-cell record of one claim: failures / trials, the binomial check (None
    without trials) and the looseness of ``exp(log_ratio)`` (median, p99, worst)."""
    failed = np.asarray(failed, dtype=bool).ravel()
    trials, failures = int(failed.size), int(np.sum(failed))
    check = binomial_check(failures, trials, delta, alpha).to_dict() if trials else None
    log_ratio = np.asarray(log_ratio, dtype=np.float64).ravel()
    log_ratio = log_ratio[~np.isnan(log_ratio)]
    result = {
        "failures": failures, "trials": trials, "delta": float(delta), "check": check,
        "failed_trials": np.flatnonzero(failed).tolist(),
        "looseness": looseness_from_logs(log_ratio).to_dict() if log_ratio.size else None,
    }
    if extra:
        result.update(extra)
    return result


def summarise_claims(suite: str, claims: dict[str, str], cell_results: list[tuple[dict, dict]],
                     alpha: float = ALPHA) -> list[dict]:
    """One verdict row per claim, pooled over the cells that report it."""
    rows = []
    for claim, statement in claims.items():
        parts = [r[claim] for _, r in cell_results if claim in r]
        if not parts:
            continue
        delta = parts[0]["delta"]
        failures = sum(p["failures"] for p in parts)
        trials = sum(p["trials"] for p in parts)
        tested = [p for p in parts if p["trials"]]
        pooled = binomial_check(failures, trials, delta, alpha) if trials else None
        cells_rejected = sum(p["check"]["p_value"] < alpha / len(tested) for p in tested)
        rejected = pooled is not None and (pooled.verdict == "VIOLATED" or cells_rejected > 0)
        if pooled is None:
            verdict = "UNTESTED"
        elif claim.endswith("-wrong"):
            verdict = "CAUGHT" if rejected else "MISSED"
        else:
            verdict = "VIOLATED" if rejected else "HOLDS"
        stream = np.concatenate([np.isin(np.arange(p["trials"]), p["failed_trials"])
                                 for p in parts]) if trials else np.zeros(0)
        seq = sprt(stream, delta, SPRT_FACTOR, alpha, SPRT_BETA) if trials else None
        loose = [p["looseness"] for p in parts if p["looseness"]]
        medians = [x["median"] for x in loose if x["median"] is not None]
        p99 = [x["p99"] for x in loose if x.get("p99") is not None]
        worst = [x["worst"] for x in loose if x["worst"] is not None]
        rows.append({
            "suite": suite, "claim": claim, "statement": statement,
            "checked": trials, "violations": failures, "verdict": verdict, "delta": delta,
            "rate": pooled.empirical_rate if pooled else None,
            "p_value": pooled.p_value if pooled else None,
            "ci_low": pooled.ci_low if pooled else None,
            "ci_high": pooled.ci_high if pooled else None,
            "cells_rejected": cells_rejected, "cells": len(parts),
            "sprt_verdict": seq.verdict if seq else None,
            "sprt_trials": seq.trials_used if seq else None,
            "median_of_cell_medians": float(np.median(medians)) if medians else None,
            "worst_p99": max(p99) if p99 else None,
            "worst_ratio": max(worst) if worst else None,
        })
    return rows
