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

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

from verify.rules import SHARED, rule
from verify.statistics import binomial_check, detectable_rate, looseness_from_logs, sprt

ALPHA = rule(SHARED, "alpha", 1e-6, "level of every binomial test (pooled, and alpha / cells per cell): "
             "a false alarm per claim at most 1e-6, so a run of about 60 claims stays below 1e-4 and CI never flakes")
TOLERANCE = rule(SHARED, "exact_tolerance", 1e-9, "an exact inequality is violated when quantity / bound "
                 "exceeds 1 + 1e-9: room for float64 rounding (1e-16 per operation), far below any real violation")
SPRT_FACTOR = rule(SHARED, "sprt_factor", 2.0, "Wald's SPRT alongside the binomial test: H1 is a failure "
                   "rate of twice delta, the smallest violation worth stopping a sweep for")
BITING_MARGIN = rule(SHARED, "biting_margin", 1e-9, "a bound bites when bound / trivial maximum of its "
                     "quantity is below 1 - 1e-9 (rounding: min(1 - k/n, ...) equals 1 - k/n up to 1e-16); a bound "
                     "that bites in no checked case is HOLDS BUT VACUOUS")
DETECTION_POWER = rule(SHARED, "detection_power", 0.9, "the power at which a run's detectable failure "
                       "rate is reported (what HOLDS means for that run), pooled and for its weakest cell")
SPRT_BETA = rule(SHARED, "sprt_beta", 1e-3, "the SPRT's miss rate at H1 (reported, decides no verdict)")


def claim_result(failed, log_ratio, delta: float, alpha: float = ALPHA,
                 extra: Optional[dict] = None, log_bound_over_trivial=None,
                 score_step_over_exact=None, bites_from: Optional[Callable[[np.ndarray], np.ndarray]] = None
                 ) -> dict[str, Any]:
    """Per-cell record of one claim: failures / trials, the binomial check (None
    without trials) and the looseness of ``exp(log_ratio)`` (median, p99, worst).

    ``log_bound_over_trivial`` (upper bounds): per checked case, the log of the
    bound over the trivial maximum of its quantity (a tail mass of the top-k
    window is at most 1 - k/n, an l2 distance of two probability vectors at most
    sqrt 2, an entry at most 1, ...). The record then says in how many cases the
    bound bites (is below that maximum) and how close it came: a bound that
    never bites holds for free (issue 17: HOLDS BUT VACUOUS).

    ``score_step_over_exact``: the bound's score step (a threshold on the
    centred scores, sigma = 1) over the exact ``1 - delta`` quantile of the score
    statistic it bounds when the scores are Gaussian
    (:mod:`sparsity_theory.gaussian_quantiles`); one value or one per window
    or k of the cell, recorded as its range. It does not depend on the data: it
    is what a loosened constant changes while the failure rate barely moves
    (issue 14 item 7).

    ``bites_from``: the bound's log over the trivial maximum as a function of n
    for the cell's typical row; the record keeps :func:`first_biting_length`."""
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
    if log_bound_over_trivial is not None:
        x = np.asarray(log_bound_over_trivial, dtype=np.float64).ravel()
        x = x[~np.isnan(x)]
        result["vacuity"] = {"cases": int(x.size), "biting": int(np.sum(x < -BITING_MARGIN)),
                             "min_log_bound_over_trivial": float(np.min(x)) if x.size else None}
    if bites_from is not None:
        result["bites_from"] = {"n": first_biting_length(bites_from), "searched_log2": SEARCHED_LOG2}
    if score_step_over_exact is not None:
        x = np.asarray(score_step_over_exact, dtype=np.float64).ravel()
        x = x[np.isfinite(x)]
        result["score_step_over_exact"] = [float(x.min()), float(x.max())] if x.size else None
    if extra:
        result.update(extra)
    return result


SEARCHED_LOG2 = 62  # first_biting_length looks at n = 2, 4, ..., 2^62


def first_biting_length(log_bound_over_trivial: Callable[[np.ndarray], np.ndarray]) -> Optional[int]:
    """The first power of two n >= 2 at which an upper bound, evaluated by the
    caller at context length n (its typical row: median sigma, the suite's
    largest window), is below the trivial maximum of its quantity by more than
    BITING_MARGIN; None when no n up to 2^SEARCHED_LOG2 is (issue 17: the n
    beyond which a vacuous bound would bite). The caller's function gets every
    length at once, as an int64 array (the bounds take array lengths)."""
    lengths = 2 ** np.arange(1, SEARCHED_LOG2 + 1, dtype=np.int64)
    bites = np.broadcast_to(np.asarray(log_bound_over_trivial(lengths)), lengths.shape) < -BITING_MARGIN
    return int(lengths[np.argmax(bites)]) if bites.any() else None


@dataclasses.dataclass(frozen=True)
class ClaimVerdict:
    """One claim judged over a suite's cells: a row of the verdict table.

    Every row has the first eight fields. Probabilistic claims (``P(failure) <=
    delta``, :func:`summarise_claims`) add the pooled binomial test, its
    Clopper-Pearson interval, the Bonferroni per-cell tests and the SPRT; exact
    facts (:func:`summarise_exact`) add the worst relative difference or the
    worst ratio before an adversarial search. ``checked`` counts trials (seeds)
    for probabilistic claims and checked pairs for exact ones.
    """

    suite: str
    claim: str
    statement: str
    verdict: str  # HOLDS, VIOLATED, UNTESTED; planted wrong bounds: CAUGHT, MISSED
    checked: int
    violations: int
    median_of_cell_medians: Optional[float] = None
    worst_ratio: Optional[float] = None
    delta: Optional[float] = None
    rate: Optional[float] = None
    p_value: Optional[float] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    cells_rejected: Optional[int] = None
    cells: Optional[int] = None
    sprt_verdict: Optional[str] = None
    sprt_trials: Optional[int] = None
    worst_p99: Optional[float] = None
    detectable_rate: Optional[float] = None
    detectable_rate_cell: Optional[float] = None
    biting_fraction: Optional[float] = None  # share of cases where the bound is below the trivial maximum
    min_bound_over_trivial: Optional[float] = None  # the bound's closest approach to biting
    # Range over cells of the score step / its exact Gaussian 1 - delta quantile (1 = exact).
    score_step_over_exact_low: Optional[float] = None
    score_step_over_exact_high: Optional[float] = None
    # From which n (a power of two) the bound bites in every cell's typical row, and in
    # how many cells it does not for any n up to 2^SEARCHED_LOG2.
    bites_from_n: Optional[int] = None
    bites_never_cells: Optional[int] = None
    worst_relative_difference: Optional[float] = None
    initial_worst_ratio: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        """The row as results.json stores it."""
        return dataclasses.asdict(self)


def _median(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return float(np.median(values)) if values else None


def _largest(values) -> Optional[float]:
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _vacuity(records: list[dict]) -> dict[str, Optional[float]]:
    """Pooled vacuity of a claim's cells: the share of cases where the bound bites
    and its smallest bound / trivial maximum (nothing when no cell reported it)."""
    cases = sum(r["cases"] for r in records)
    if not cases:
        return {}
    closest = [r["min_log_bound_over_trivial"] for r in records if r["min_log_bound_over_trivial"] is not None]
    return {"biting_fraction": sum(r["biting"] for r in records) / cases,
            "min_bound_over_trivial": float(np.exp(min(closest)))}


def _bites_from(records: list) -> dict[str, Optional[int]]:
    """Pooled first biting length: the largest over the cells that reported one."""
    records = [r for r in records if r is not None]
    if not records:
        return {}
    finite = [r["n"] for r in records if r["n"] is not None]
    return {"bites_from_n": max(finite) if finite else None,
            "bites_never_cells": sum(r["n"] is None for r in records)}


def _tightness(ranges: list) -> dict[str, float]:
    """Pooled range of the cells' score step over its exact Gaussian quantile."""
    ranges = [r for r in ranges if r]
    if not ranges:
        return {}
    return {"score_step_over_exact_low": min(r[0] for r in ranges),
            "score_step_over_exact_high": max(r[1] for r in ranges)}


def _weakest_cell(tested: list[dict], delta: float, alpha: float) -> Optional[float]:
    """The detectable rate of the cell with the fewest trials, at its level alpha /
    cells (1.0 when that cell cannot reject at all)."""
    if not tested:
        return None
    rate = detectable_rate(min(p["trials"] for p in tested), delta, alpha / len(tested), DETECTION_POWER)
    return 1.0 if rate is None else rate


def summarise_claims(suite: str, claims: dict[str, str], cell_results: Sequence[tuple[dict, dict]],
                     alpha: float = ALPHA) -> list[ClaimVerdict]:
    """One verdict row per probabilistic claim, pooled over the cells that report it."""
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
        rows.append(ClaimVerdict(
            suite=suite, claim=claim, statement=statement, verdict=verdict,
            checked=trials, violations=failures,
            median_of_cell_medians=_median(x["median"] for x in loose),
            worst_ratio=_largest(x["worst"] for x in loose),
            delta=delta,
            rate=pooled.empirical_rate if pooled else None,
            p_value=pooled.p_value if pooled else None,
            ci_low=pooled.ci_low if pooled else None,
            ci_high=pooled.ci_high if pooled else None,
            cells_rejected=cells_rejected, cells=len(parts),
            sprt_verdict=seq.verdict if seq else None,
            sprt_trials=seq.trials_used if seq else None,
            worst_p99=_largest(x.get("p99") for x in loose),
            detectable_rate=detectable_rate(trials, delta, alpha, DETECTION_POWER) if trials else None,
            detectable_rate_cell=_weakest_cell(tested, delta, alpha),
            **_vacuity([p["vacuity"] for p in parts if "vacuity" in p]),
            **_tightness([p.get("score_step_over_exact") for p in parts]),
            **_bites_from([p.get("bites_from") for p in parts]),
        ))
    return rows


def summarise_exact(suite: str, claims: dict[str, str], parts_by_claim: dict[str, list[dict]]
                    ) -> list[ClaimVerdict]:
    """One verdict row per exact fact (a ratio above 1 + TOLERANCE in any checked
    pair is a violation): HOLDS when no cell broke it, else VIOLATED; a planted
    wrong fact (claim id ending in ``-wrong``) is CAUGHT when broken, else MISSED.
    ``parts_by_claim`` holds each claim's per-cell records (``checked``,
    ``violations``, ``median_ratio``, ``worst_ratio``, optionally
    ``worst_relative_difference`` and ``initial.worst_ratio``)."""
    rows = []
    for claim, statement in claims.items():
        parts = parts_by_claim.get(claim, [])
        if not parts:
            continue
        violations = sum(p["violations"] for p in parts)
        if claim.endswith("-wrong"):
            verdict = "CAUGHT" if violations > 0 else "MISSED"
        else:
            verdict = "HOLDS" if violations == 0 else "VIOLATED"
        initial = [p["initial"]["worst_ratio"] for p in parts if "initial" in p]
        rows.append(ClaimVerdict(
            suite=suite, claim=claim, statement=statement, verdict=verdict,
            checked=sum(p["checked"] for p in parts), violations=violations,
            median_of_cell_medians=_median(p.get("median_ratio") for p in parts),
            worst_ratio=_largest(p.get("worst_ratio") for p in parts),
            worst_relative_difference=_largest(p.get("worst_relative_difference") for p in parts),
            initial_worst_ratio=_largest(initial),
        ))
    return rows
