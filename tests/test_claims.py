"""verify.claims: how per-cell failures become a verdict. Each test pins one
piece of the judging layer on inputs chosen on both sides of its boundary, so a
wrong change (pooling by the maximum instead of the sum, Bonferroni dropped or
applied twice, a looser level, failed trials left out of the looseness, planted
verdicts swapped) fails a test."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from verify import claims
from verify.claims import ALPHA, claim_result, summarise_claims, summarise_exact

CLAIM = {"c": "P(failure) <= 0.05"}
DELTA = 0.05


def _cell(failures: int, trials: int, log_ratio: float = -1.0):
    failed = np.arange(trials) < failures
    return ({}, {"c": claim_result(failed, np.where(failed, 0.3, log_ratio), DELTA)})


def _verdict(*cells, claim="c"):
    (row,) = summarise_claims("s", {claim: "x"}, list(cells))
    return row


def _count_with_p_between(trials: int, low: float, high: float) -> int:
    """A failure count whose exact binomial p-value P(Bin(trials, delta) >= k) lies in (low, high)."""
    for k in range(trials + 1):
        p = stats.binom.sf(k - 1, trials, DELTA)
        if low < p < high:
            return k
    raise AssertionError("no count in the window")


def test_alpha_is_the_documented_level():
    assert ALPHA == 1e-6 and claims.SPRT_FACTOR == 2.0 and claims.TOLERANCE == 1e-9


def test_pooled_counts_are_sums_over_cells():
    row = _verdict(_cell(3, 100), _cell(4, 200), _cell(0, 50))
    assert (row.violations, row.checked, row.cells) == (7, 350, 3)
    assert row.rate == pytest.approx(7 / 350)
    assert row.p_value == pytest.approx(stats.binom.sf(6, 350, DELTA), rel=1e-9)


def test_the_pooled_test_catches_what_no_single_cell_can():
    """Ten cells at 12% failures: each alone is not significant at alpha / 10, the
    pool of 120 / 1000 is. Pooling by the maximum (12 / 1000) would call it HOLDS."""
    cells = [_cell(12, 100) for _ in range(10)]
    assert all(stats.binom.sf(11, 100, DELTA) > ALPHA / 10 for _ in cells)
    row = _verdict(*cells)
    assert row.verdict == "VIOLATED" and row.cells_rejected == 0 and row.violations == 120


def test_each_cell_is_tested_at_alpha_over_the_number_of_cells():
    """Four cells: three clean ones dilute the pool, so only the per-cell test can
    reject. A cell with p in (alpha/16, alpha/4) is rejected (Bonferroni once), one
    with p in (alpha/4, alpha) is not (Bonferroni not dropped)."""
    clean = [_cell(0, 2000) for _ in range(3)]
    k_reject = _count_with_p_between(200, ALPHA / 16, ALPHA / 4)
    k_keep = _count_with_p_between(200, ALPHA / 4, ALPHA)
    rejected = _verdict(_cell(k_reject, 200), *clean)
    assert rejected.cells_rejected == 1 and rejected.verdict == "VIOLATED"
    assert rejected.p_value > ALPHA  # the pool alone would not have rejected
    kept = _verdict(_cell(k_keep, 200), *clean)
    assert kept.cells_rejected == 0 and kept.verdict == "HOLDS"


def test_a_level_of_0_05_would_change_a_verdict():
    """A count whose p-value lies between 1e-6 and 0.05: HOLDS at the documented
    level, VIOLATED at 0.05 (so a looser ALPHA cannot pass unseen)."""
    k = _count_with_p_between(400, 1e-4, 1e-2)
    assert _verdict(_cell(k, 400)).verdict == "HOLDS"
    (loose,) = summarise_claims("s", CLAIM, [_cell(k, 400)], alpha=0.05)
    assert loose.verdict == "VIOLATED"


def test_looseness_counts_the_failed_trials():
    """The worst ratio is that of a failed trial, above 1; the median over all."""
    failed = np.array([True, False, False, False, False])
    log_ratio = np.array([0.5, -1.0, -1.0, -2.0, -3.0])
    result = claim_result(failed, log_ratio, DELTA)
    assert result["looseness"]["worst"] == pytest.approx(math.exp(0.5))
    assert result["looseness"]["median"] == pytest.approx(math.exp(-1.0))
    assert result["failed_trials"] == [0] and (result["failures"], result["trials"]) == (1, 5)
    row = _verdict(({}, {"c": result}))
    assert row.worst_ratio == pytest.approx(math.exp(0.5))


def test_planted_claims_are_caught_or_missed_never_held():
    (caught,) = summarise_claims("s", {"c-wrong": "x"}, [({}, {"c-wrong": _cell(60, 100)[1]["c"]})])
    (missed,) = summarise_claims("s", {"c-wrong": "x"}, [({}, {"c-wrong": _cell(2, 100)[1]["c"]})])
    assert (caught.verdict, missed.verdict) == ("CAUGHT", "MISSED")
    (untested,) = summarise_claims("s", CLAIM, [({}, {"c": claim_result(np.zeros(0, bool), [], DELTA)})])
    assert untested.verdict == "UNTESTED" and untested.checked == 0


def test_exact_facts_hold_only_without_a_violation():
    ok = {"checked": 10, "violations": 0, "median_ratio": 0.5, "worst_ratio": 0.9}
    bad = {"checked": 10, "violations": 1, "median_ratio": 0.5, "worst_ratio": 1.5}
    rows = summarise_exact("s", {"f": "x", "f-wrong": "y", "absent": "z"},
                           {"f": [ok, bad], "f-wrong": [ok]})
    assert [(r.claim, r.verdict, r.violations, r.checked) for r in rows] == [
        ("f", "VIOLATED", 1, 20), ("f-wrong", "MISSED", 0, 10)]
    assert rows[0].worst_ratio == 1.5 and rows[0].median_of_cell_medians == 0.5
    (held,) = summarise_exact("s", {"f": "x"}, {"f": [ok, ok]})
    assert held.verdict == "HOLDS"


def test_the_report_states_the_runs_false_alarm_budget():
    from verify.report.markdown import false_alarm_budget

    rows = [{"claim": "a", "p_value": 0.5}, {"claim": "b", "p_value": 0.9}, {"claim": "a-wrong", "p_value": 0.0},
            {"claim": "exact", "p_value": None}]
    assert false_alarm_budget(rows).startswith("False-alarm budget of this run: 2 probabilistic claims x 2 tests")
    assert "= 4e-06" in false_alarm_budget(rows)
    assert false_alarm_budget([{"claim": "exact", "p_value": None}]) == ""


def test_each_verdict_reports_the_rate_it_could_have_detected():
    row = _verdict(*[_cell(0, 100) for _ in range(8)])
    assert row.detectable_rate == pytest.approx(stats.beta.ppf(0.9, *_beta_args(800, ALPHA)))
    assert row.detectable_rate_cell == pytest.approx(0.2499, abs=1e-3)  # 100 trials at alpha / 8: ~5 delta
    assert row.detectable_rate < row.detectable_rate_cell


def _beta_args(trials, alpha):
    from verify.statistics import critical_count

    c = critical_count(trials, DELTA, alpha)
    return c, trials - c + 1


def test_a_bound_that_never_bites_is_reported_vacuous():
    """Per case, log(bound / trivial maximum): the record counts where the bound is
    below the maximum; exactly at it (up to rounding) does not count."""
    failed = np.zeros(4, bool)
    never = claim_result(failed, np.full(4, -1.0), DELTA, log_bound_over_trivial=[0.5, 2.0, -4e-16, 0.1])
    assert never["vacuity"] == {"cases": 4, "biting": 0, "min_log_bound_over_trivial": -4e-16}
    some = claim_result(failed, np.full(4, -1.0), DELTA, log_bound_over_trivial=[-0.5, 2.0, 1.0, 0.1])
    row = _verdict(({}, {"c": never}), ({}, {"c": some}))
    assert row.biting_fraction == pytest.approx(1 / 8) and row.min_bound_over_trivial == pytest.approx(math.exp(-0.5))
    assert _verdict(({}, {"c": never})).biting_fraction == 0.0
    assert _verdict(_cell(0, 10)).biting_fraction is None  # a claim without a trivial maximum


def test_the_ledger_says_holds_but_vacuous_for_a_bound_that_never_bites():
    from verify import rules
    from verify.report import ledger
    from verify.suite import suites
    suites()  # every suite's rules registered before the run records them (order-independent)

    def run(biting):
        rows = [{"suite": "lemma42", "claim": c, "verdict": v, "violations": 0, "checked": 100, "delta": 0.05,
                 "ci_high": 0.03, "median_of_cell_medians": 1e-10, "worst_ratio": 1e-9,
                 "biting_fraction": biting.get(c), "min_bound_over_trivial": 1e4}
                for c, v in (("L4.2-P1", "HOLDS"), ("L4.2-P2", "HOLDS"), ("L4.2-P3", "HOLDS"),
                             ("L4.2-P1-wrong", "CAUGHT"), ("L4.2-P3-wrong", "CAUGHT"))]
        results = {"suites": ["lemma42"], "verdicts": rows, "rules": rules.record(["lemma42"])}
        return next(e for e in ledger.build(results) if e["claim"].startswith("Lemma 4.2:"))

    every = {"L4.2-P1": 0.0, "L4.2-P2": 0.0, "L4.2-P3": 0.0}
    assert run(every)["verdict"] == "HOLDS BUT VACUOUS"
    assert "L4.2-P1 0% of cases" in run(every)["evidence"]
    assert run(dict(every, **{"L4.2-P2": 0.3}))["verdict"] == "SUPPORTED; VACUOUS FORMS L4.2-P1, L4.2-P3"
    assert run({})["verdict"] == "SUPPORTED"  # no trivial maximum known: nothing to say


# --- where a vacuous bound would start to bite (issue 17 item 2) -----------------------------

def test_first_biting_length_is_the_first_power_of_two_below_the_maximum():
    from verify.claims import SEARCHED_LOG2, first_biting_length
    assert first_biting_length(lambda n: np.log(1000 / n)) == 1024  # 1000/n < 1 from n = 1024
    assert first_biting_length(lambda n: 0.0) is None  # equal to the maximum never bites
    assert first_biting_length(lambda n: -1e-12) is None  # within the biting margin
    assert first_biting_length(lambda n: np.where(n < 2**SEARCHED_LOG2, 1.0, -1.0)) == 2**SEARCHED_LOG2


def test_theorem61_typical_row_bites_where_the_closed_form_says():
    """Cross mode, k = n/2: the l2 bound e^rho sqrt((n-k)/(nk)) = e^rho / sqrt(n), rho =
    2 sigma sqrt(2 ln(2n/delta)), is below sqrt 2 from n = 2^14 at sigma = 0.5."""
    from verify.claims import first_biting_length
    from verify.suites import theorem61
    f = theorem61.typical_row_bites(0.5, 0.0, lambda _: 0.05, "cross")
    for n in (2**13, 2**14):
        rho = 2 * 0.5 * math.sqrt(2 * math.log(2 * n / 0.05))
        assert f(n) == pytest.approx(rho - 0.5 * math.log(n) - 0.5 * math.log(2), rel=1e-12)
    assert f(2**13) > 0 > f(2**14) and first_biting_length(f) == 2**14
    # The tail bound min(1 - k/n, ...) is 1 - k/n at k = n/2: it never bites.
    assert first_biting_length(theorem61.typical_row_bites(0.5, 0.0, lambda _: 0.05, "cross", tail=True)) is None


def test_pooled_biting_length_and_its_ledger_text():
    from verify.report import ledger
    parts = [claim_result(np.zeros(5, bool), np.zeros(5), 0.05, bites_from=f, log_bound_over_trivial=np.ones(5))
             for f in (lambda n: np.log(64 / n), lambda n: np.log(4096 / n))]
    (v,) = summarise_claims("s", {"X": "x"}, [({}, {"X": p}) for p in parts])
    assert (v.bites_from_n, v.bites_never_cells) == (8192, 0)
    assert ledger._bites_from_text(v.to_dict()) == "; in every cell's typical row from n = 2^13"
    never = claim_result(np.zeros(5, bool), np.zeros(5), 0.05, bites_from=lambda n: 1.0)
    (w,) = summarise_claims("s", {"X": "x"}, [({}, {"X": parts[0]}), ({}, {"X": never})])
    assert (w.bites_from_n, w.bites_never_cells) == (128, 1)
    assert "in 1 cell(s)' typical rows for no n up to 2^62, in the others' from n = 2^7" in ledger._bites_from_text(
        w.to_dict())
    (u,) = summarise_claims("s", {"X": "x"}, [({}, {"X": never})])
    assert ledger._bites_from_text(u.to_dict()) == "; in no cell's typical row for any n up to 2^62"
    assert ledger._bites_from_text({"bites_never_cells": None}) == ""
