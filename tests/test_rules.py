"""verify.rules: verdict rules declared before the data, recorded with every run,
and a ledger that does not judge a run under rules chosen after it."""

from __future__ import annotations

import json

import pytest

from verify import cli, rules
from verify.report import ledger
from verify.suite import suites


@pytest.fixture(autouse=True)
def every_suite_loaded():
    suites()  # importing the suites declares their rules


def test_every_rule_has_a_one_line_reason_and_a_json_value():
    declared = rules.all_rules()
    assert len(declared) >= 20
    for r in declared:
        assert r.reason.strip() and "\n" not in r.reason, r
        json.dumps(r.value)
    names = {(r.scope, r.name) for r in declared}
    assert {("shared", "alpha"), ("strategies", "persist_slope"), ("strategies", "slope_grouping"),
            ("sharp_laws", "slope_band"), ("sharp_laws", "drift"), ("sharp_laws", "condensed"),
            ("real_attention", "forward_perplexity_limit"),
            ("theorem51", "figure1_fall")} <= names


def test_the_constants_in_use_are_the_declared_rules():
    from verify import claims
    from verify.suites import sharp_analysis, strategy_analysis

    by_name = {f"{r.scope}.{r.name}": r.value for r in rules.all_rules()}
    assert claims.ALPHA == by_name["shared.alpha"] == 1e-6
    # The documented values of the shared rules (docs/usage.md): a change is a decision.
    assert {k: v for k, v in by_name.items() if k.startswith("shared.")} == {
        "shared.alpha": 1e-6, "shared.exact_tolerance": 1e-9, "shared.sprt_factor": 2.0,
        "shared.sprt_beta": 1e-3, "shared.bootstrap_resamples": 400, "shared.detection_power": 0.9,
        "shared.biting_margin": 1e-9}
    from verify import statistics
    assert statistics.BOOTSTRAP == 400
    assert strategy_analysis.PERSIST_SLOPE == by_name["strategies.persist_slope"]
    assert sharp_analysis.SLOPE_BAND == by_name["sharp_laws.slope_band"]


def test_rule_refuses_a_missing_reason_and_a_second_value():
    with pytest.raises(ValueError, match="reason in one line"):
        rules.rule("test", "x", 1, "")
    with pytest.raises(ValueError, match="reason in one line"):
        rules.rule("test", "x", 1, "two\nlines")
    with pytest.raises(ValueError, match="declared twice"):
        rules.rule("shared", "alpha", 0.05, "a looser level")
    with pytest.raises(TypeError):
        rules.rule("test", "x", object(), "not JSON")


def test_the_digest_follows_values_not_reasons():
    now = rules.rules_for("lemma42")
    reworded = {k: {"value": r.value, "reason": "said otherwise"} for k, r in now.items()}
    assert rules.digest(reworded) == rules.digest(now)
    looser = dict(reworded, **{"shared.alpha": {"value": 0.05, "reason": "x"}})
    assert rules.digest(looser) != rules.digest(now)
    assert set(rules.rules_for("lemma42")) == {k for k in now}  # shared + its own only
    assert all(k.startswith(("shared.", "lemma42.")) for k in now)


def _lemma_run(recorded):
    verdicts = [{"suite": "lemma42", "claim": c, "verdict": v, "violations": 0, "checked": 100,
                 "delta": 0.05, "ci_high": 0.03, "median_of_cell_medians": 0.5, "worst_ratio": 0.9}
                for c, v in (("L4.2-P1", "HOLDS"), ("L4.2-P2", "HOLDS"), ("L4.2-P3", "HOLDS"),
                             ("L4.2-P1-wrong", "CAUGHT"), ("L4.2-P3-wrong", "CAUGHT"))]
    run = {"suites": ["lemma42"], "verdicts": verdicts, "cells": {}, "analysis": {}}
    if recorded is not None:
        run["rules"] = recorded
    return run


def _lemma_rows(run, accept=False):
    return [e for e in ledger.build(run, accept) if "lemma42" in e["claim"] or "Lemma 4.2:" in e["claim"]]


def test_a_run_under_todays_rules_is_judged():
    (row,) = _lemma_rows(_lemma_run(rules.record(["lemma42"])))
    assert row["verdict"] == "SUPPORTED" and "judged with rules newer" not in row["evidence"]


def test_a_rule_changed_after_the_run_means_no_verdict_unless_asked(monkeypatch):
    recorded = rules.record(["lemma42"])
    # Today someone loosens the test's level, after the run:
    looser = rules.Rule("shared", "alpha", 0.05, "looser")
    monkeypatch.setitem(rules._RULES, ("shared", "alpha"), looser)
    (row,) = _lemma_rows(_lemma_run(recorded))
    assert row["verdict"] == "NOT JUDGED" and "shared.alpha" in row["evidence"]
    assert "needs a new run" in row["evidence"]
    (row,) = _lemma_rows(_lemma_run(recorded), accept=True)
    assert row["verdict"] == "SUPPORTED"
    assert row["evidence"].startswith("[judged with rules newer than the run: shared.alpha]")


def test_a_run_from_before_rules_were_recorded_is_not_judged():
    (row,) = _lemma_rows(_lemma_run(None))
    assert row["verdict"] == "NOT JUDGED" and "no rules were recorded" in row["evidence"]
    # A suite that did not run is NOT RUN, whatever the rules.
    rows = ledger.build({"suites": [], "verdicts": []})
    assert all(e["verdict"] == "NOT RUN" for e in rows if "Lemma 4.2:" in e["claim"])


def test_a_run_records_its_rules_and_the_ledger_command_honours_them(tmp_path, capsys, monkeypatch):
    from verify.suites import lemma42

    monkeypatch.setitem(lemma42.PRESETS, "quick", {"lengths": (32,), "seeds": 40, "d": 4})
    out = tmp_path / "run"
    assert cli.main(["run", "lemma42", "--out", str(out), "--no-progress"]) in (0, 1)
    results = json.loads((out / "results.json").read_text())
    assert results["rules"]["lemma42"]["digest"] == rules.digest(rules.rules_for("lemma42"))
    assert results["rules"]["lemma42"]["rules"]["lemma42.wrong_factor"]["value"] == 0.3
    report = (out / "report.md").read_text()
    assert "## Verdict rules of this run" in report and "| shared.alpha | 1e-06 |" in report
    # The rules move after the run: the ledger refuses, then judges on request.
    monkeypatch.setitem(rules._RULES, ("lemma42", "wrong_factor"),
                        rules.Rule("lemma42", "wrong_factor", 0.5, "moved after the data"))
    capsys.readouterr()
    assert cli.main(["ledger", str(out), "--out", str(tmp_path / "a.md")]) == 0
    assert "**NOT JUDGED**" in (tmp_path / "a.md").read_text()
    assert cli.main(["ledger", str(out), "--out", str(tmp_path / "b.md"), "--accept-new-rules"]) == 0
    text = (tmp_path / "b.md").read_text()
    assert "**NOT JUDGED**" not in text and "[judged with rules newer than the run: lemma42.wrong_factor]" in text
