"""The sparsity-verify command, the runner and the identities suite."""

import json
import math
import os

import numpy as np
import pytest

import sparsity_theory as st
from verify import cli, runner
from verify.suites import identities, lemma42, theorem43, theorem51, theorem61
from verify.claims import claim_result

TINY = {"lengths": (16, 48), "seeds": 2, "d": 4, "dense_max_n": 48}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(identities.PRESETS, "quick", TINY)
    monkeypatch.setattr(identities, "MODELS", {"gaussian": st.Gaussian(1.0),
                                               "rademacher": st.Rademacher(1.0)})


def _cell(n=48, mode="cross", model="gaussian"):
    return {"suite": "identities", "model": model, "mode": mode, "n": n, "d": 4, "seeds": 2,
            "seed_base": 7, "dense": True}


def test_identities_hold_on_a_small_cell(tiny):
    result = identities.run_cell(_cell())
    assert set(result) == set(identities.CLAIMS) - {"stream-agreement"}
    for claim, r in result.items():
        assert r["checked"] > 0, claim
        assert r["violations"] == 0, (claim, r)
        if r["worst_ratio"] is not None:
            assert 0 < r["worst_ratio"] <= 1 + 1e-9, claim


def _inflate(monkeypatch, field, factor, engine="evaluate_rows"):
    real = getattr(st, engine)

    def wrong(*args, **kwargs):
        stats = real(*args, **kwargs)
        return stats._replace(**{field: getattr(stats, field) + math.log(factor)})

    monkeypatch.setattr(st, engine, wrong)


def _sampled_cell(n=300, diameter=True, monkeypatch=None):
    """A cell of the large preset's kind: 8 sampled rows, key-streamed."""
    monkeypatch.setitem(identities.PRESETS, "large", dict(
        identities.PRESETS["large"], max_window=16, diameter_max_n=n if diameter else n - 1))
    return dict(_cell(n=n), rows=8, dense=False)


def test_sampled_rows_are_streamed_and_hold(monkeypatch):
    result = identities.run_cell(_sampled_cell(monkeypatch=monkeypatch))
    assert set(result) == set(identities.CLAIMS) - {"dense-agreement", "block-agreement"}
    for claim, r in result.items():
        assert r["checked"] > 0, claim
        assert r["violations"] == 0, (claim, r)
    # 8 rows x 2 seeds x windows 1..16 (five powers of two)
    assert result["D4"]["checked"] == 8 * 2 * 5
    assert "D3" not in identities.run_cell(_sampled_cell(diameter=False, monkeypatch=monkeypatch))


def test_a_wrong_streamed_tail_mass_is_caught(monkeypatch):
    """The streamed engine is checked against the dense one and against D5."""
    cell = _sampled_cell(monkeypatch=monkeypatch)
    _inflate(monkeypatch, "log_tail_mass", 1.5, engine="stream_rows")
    result = identities.run_cell(cell)
    assert result["stream-agreement"]["violations"] == 1
    assert result["D5-upper"]["violations"] > 0


def test_a_wrong_tail_mass_is_caught(tiny, monkeypatch):
    """Tail masses 1.5x too large break D5's upper bound (which is nearly tight)."""
    _inflate(monkeypatch, "log_tail_mass", 1.5)
    result = identities.run_cell(_cell())
    assert result["D5-upper"]["violations"] > 0
    assert result["D5-upper"]["worst_ratio"] > 1


def test_a_wrong_output_error_is_caught(tiny, monkeypatch):
    """Output errors 1.01x too large disagree with the independent dense computation."""
    _inflate(monkeypatch, "log_output_error", 1.01)
    result = identities.run_cell(_cell())
    assert result["dense-agreement"]["violations"] == 1
    assert result["dense-agreement"]["worst_relative_difference"] > 5e-3


def test_run_writes_results_and_resumes(tiny, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert cli.main(["run", "identities", "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        first = json.load(f)
    cells = identities.cells("quick")
    assert len(first["cells"]["identities"]) == len(cells) == 8
    assert first["cells_reused"] == 0
    prov = first["provenance"]
    assert {"git_commit", "versions", "device", "time_utc", "command"} <= set(prov)
    assert prov["versions"]["jax"] and prov["device"]["backend"] == "cpu"
    assert all(v["verdict"] == "HOLDS" for v in first["verdicts"])
    assert "| identities | D5-upper | **HOLDS**" in open(os.path.join(out, "report.md")).read()
    # A second run with the same directory recomputes nothing.
    assert cli.main(["run", "identities", "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        second = json.load(f)
    assert second["cells_reused"] == len(cells)
    assert second["verdicts"] == first["verdicts"]
    # A different seed count is a different cell: not reused.
    assert cli.main(["run", "identities", "--out", out, "--no-progress", "--seeds", "1"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        assert json.load(f)["cells_reused"] == 0
    capsys.readouterr()
    assert cli.main(["report", out]) == 0
    assert "D6-lower" in capsys.readouterr().out


def test_cli_list_and_bad_arguments(tmp_path, capsys):
    assert cli.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(claim in listed for claim in identities.CLAIMS)
    assert cli.main(["run", "no-such-suite", "--out", str(tmp_path)]) == 2
    assert cli.main(["run", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert cli.main(["report", str(tmp_path / "missing")]) == 2


@pytest.fixture
def tiny_lemma(monkeypatch):
    monkeypatch.setitem(lemma42.PRESETS, "quick", {"lengths": (32,), "seeds": 300, "d": 4})
    monkeypatch.setattr(lemma42, "MODELS", {"gaussian": st.Gaussian(1.0)})


def test_lemma42_suite_verdicts_and_report_columns(tiny_lemma, tmp_path, capsys):
    out = str(tmp_path / "l42")
    assert cli.main(["run", "lemma42", "--out", out, "--no-progress"]) == 0
    table = capsys.readouterr().out
    with open(os.path.join(out, "results.json")) as f:
        verdicts = {v["claim"]: v for v in json.load(f)["verdicts"]}
    for claim in ("L4.2-P1", "L4.2-P2", "L4.2-P3"):
        v = verdicts[claim]
        assert v["verdict"] == "HOLDS" and v["checked"] == 600  # 2 modes x 300 seeds
        assert 0 <= v["ci_low"] <= v["rate"] <= v["ci_high"] <= 1 and v["p_value"] > 1e-6
        assert 0 < v["median_of_cell_medians"] < 1
    for claim in ("L4.2-P1-wrong", "L4.2-P3-wrong"):
        assert verdicts[claim]["verdict"] == "CAUGHT"
    printed = {line.split()[1]: line.split() for line in table.splitlines()[1:] if line.startswith("lemma42")}
    assert printed["L4.2-P1"][2:4] == ["HOLDS", f"{verdicts['L4.2-P1']['violations']}/600"]
    with open(os.path.join(out, "report.md")) as f:
        report = f.read()
    assert "| lemma42 | L4.2-P1 | **HOLDS** | " in report and " vs 0.05 |" in report


def test_lemma42_a_check_without_power_fails_the_run(tiny_lemma, monkeypatch, tmp_path):
    """If the planted wrong bound were not rejected (here: it is made valid), the
    verdict is MISSED and the command exits 1."""
    monkeypatch.setattr(lemma42, "WRONG_FACTOR", 1.0)
    out = str(tmp_path / "l42")
    assert cli.main(["run", "lemma42", "--out", out, "--no-progress"]) == 1
    with open(os.path.join(out, "results.json")) as f:
        verdicts = {v["claim"]: v["verdict"] for v in json.load(f)["verdicts"]}
    assert verdicts["L4.2-P1-wrong"] == "MISSED"


def test_lemma42_summary_flags_a_violated_claim():
    """Pooled failure counts far above delta are reported VIOLATED; no trials: UNTESTED."""
    failed = np.arange(300) < 40
    cell = claim_result(failed, np.where(failed, 0.4, -0.1), 0.05)
    empty = claim_result(np.zeros(0, bool), np.zeros(0), 0.05)
    rows = {r.claim: r for r in lemma42.summarise([({}, {"L4.2-P1": cell, "L4.2-P2": empty})])}
    assert rows["L4.2-P1"].verdict == "VIOLATED" and rows["L4.2-P1"].rate == 40 / 300
    # The sequential test sees the 40 failures first and stops early.
    assert rows["L4.2-P1"].sprt_verdict == "VIOLATED" and rows["L4.2-P1"].sprt_trials <= 40
    valid = claim_result(np.arange(300) % 100 == 0, np.full(300, -0.5), 0.05)
    row = lemma42.summarise([({}, {"L4.2-P1": valid})])[0]
    assert row.sprt_verdict == "HOLDS" and row.sprt_trials < 300
    assert rows["L4.2-P2"].verdict == "UNTESTED" and rows["L4.2-P2"].checked == 0
    assert row.to_dict()["claim"] == "L4.2-P1" and len(row.to_dict()) == 28  # results.json's row
    assert runner.FAILING_VERDICTS == ("VIOLATED", "MISSED")


@pytest.fixture
def tiny_theorems(monkeypatch):
    monkeypatch.setitem(theorem43.PRESETS, "quick", {"lengths": (64,), "seeds": 300, "d": 4})
    monkeypatch.setattr(theorem43, "MODELS", {"gaussian": st.Gaussian(1.0)})
    monkeypatch.setitem(theorem51.PRESETS, "quick", {"lengths": (64, 512), "seeds": 300, "d": 16})
    monkeypatch.setattr(theorem51, "MODELS", {"gaussian": st.Gaussian(1.0)})


def test_theorem_suites_verdicts_figures_and_report(tiny_theorems, tmp_path, capsys):
    out = str(tmp_path / "thm")
    assert cli.main(["run", "theorem43", "theorem51", "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    verdicts = {v["claim"]: v for v in results["verdicts"]}
    for claim in ("T4.3-binomial", "T4.3-hoeffding", "T4.3-converse-binomial",
                  "T4.3-converse-hoeffding", "T5.1", "T5.1-max"):
        v = verdicts[claim]
        assert v["verdict"] == "HOLDS" and v["checked"] > 0, claim
        assert 0 <= v["ci_low"] <= v["rate"] <= v["ci_high"] <= 1
        # A probabilistic bound may fail on up to a delta share of trials: the worst
        # ratio is above 1 exactly when some trial failed, the median is below 1.
        assert 0 < v["median_of_cell_medians"] <= 1 and v["median_of_cell_medians"] <= v["worst_ratio"], claim
        assert (v["worst_ratio"] > 1) == (v["violations"] > 0), claim
    assert verdicts["T4.3-binomial"]["checked"] == 600  # 2 modes x 300 seeds, one trial each
    assert verdicts["T4.3-wrong"]["verdict"] == "CAUGHT"
    assert verdicts["T5.1-wrong"]["verdict"] == "CAUGHT"
    # The figures are real PNG files and the report shows them.
    report = open(os.path.join(out, "report.md")).read()
    assert {f["suite"] for f in results["figures"]} == {"theorem43", "theorem51"}
    for fig in results["figures"]:
        with open(os.path.join(out, fig["path"]), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({fig['path']})" in report
    # Figure 1's data: past their peak (n ~ 1/eps), effective entries fall with n
    # (Theorem 5.1): eps = 0.1 and 0.03 from n = 64 to 512.
    profiles = sorted((c["n"], r["profile"]) for c, r in
                      ((x["cell"], x["result"]) for x in results["cells"]["theorem51"])
                      if c["mode"] == "cross")
    (_, small), (_, large) = profiles
    assert small["eps"][:2] == [0.1, 0.03]
    assert small["effective_mean"][1] > large["effective_mean"][1]
    # Collapsed: n = 512 is past n0 (88 and 317 at sigma = 0.5), where Theorem 5.1
    # allows an entry above eps in at most delta = 5% of rows: so in fewer than 10%.
    assert large["effective_q90"][0] == large["effective_q90"][1] == 0.0


def test_theorem43_wrong_bound_made_valid_is_missed(tiny_theorems, monkeypatch, tmp_path):
    monkeypatch.setattr(theorem43, "WRONG_FACTOR", 1.0)
    out = str(tmp_path / "t43")
    assert cli.main(["run", "theorem43", "--out", out, "--no-progress"]) == 1
    with open(os.path.join(out, "results.json")) as f:
        verdicts = {v["claim"]: v["verdict"] for v in json.load(f)["verdicts"]}
    assert verdicts["T4.3-wrong"] == "MISSED"


@pytest.fixture
def tiny_theorem61(monkeypatch):
    monkeypatch.setitem(theorem61.PRESETS, "quick", {
        "lengths": (64,), "seeds": 300, "d": 4, "weight_scales": (0.5,),
        "frobenius_lengths": (32,), "frobenius_seeds": 40})
    monkeypatch.setattr(theorem61, "MODELS", {"gaussian": st.Gaussian(1.0),
                                               "uniform": st.Uniform(1.0)})


def test_theorem61_suite_verdicts(tiny_theorem61, tmp_path, capsys):
    out = str(tmp_path / "t61")
    assert cli.main(["run", "theorem61", "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    verdicts = {v["claim"]: v for v in results["verdicts"]}
    for claim in ("T6.1", "T6.1-tail", "T6.2", "T6.1-F", "T6.2-F", "T6.1-output"):
        v = verdicts[claim]
        assert v["verdict"] == "HOLDS" and v["checked"] > 0, claim
        # A probabilistic bound may fail on up to a delta share of trials: the worst
        # ratio is above 1 exactly when some trial failed, the median is below 1.
        assert 0 < v["median_of_cell_medians"] <= 1 and v["median_of_cell_medians"] <= v["worst_ratio"], claim
        assert (v["worst_ratio"] > 1) == (v["violations"] > 0), claim
    assert verdicts["T6.1"]["checked"] == 2 * 2 * 300  # models x modes x seeds
    assert verdicts["T6.1-F"]["checked"] == 2 * 2 * 40  # matrices
    assert verdicts["T6.1-wrong"]["verdict"] == "CAUGHT"
    assert verdicts["T6.2-wrong"]["verdict"] == "CAUGHT"
    # The ledger of this run judges Theorems 6.1 and 6.2 and marks the rest NOT RUN.
    claims = open(os.path.join(out, "claims.md")).read()
    assert "Theorem 6.1 / E.1: upper bound on the top-k error" in claims
    assert claims.count("**SUPPORTED**") == 1 and "**NOT RUN**" in claims  # Theorem 6.2
    # T6.1-tail's bound min(1 - k/n, ...) is 1 - k/n, the most a top-k tail can be:
    # it never bites, by construction, and the ledger says so.
    assert "**SUPPORTED; VACUOUS FORMS " in claims and "T6.1-tail 0% of cases" in claims


def test_theorem61_wrong_bound_made_valid_is_missed(tiny_theorem61, monkeypatch, tmp_path):
    monkeypatch.setattr(theorem61, "WRONG_FACTOR", 1e6)  # a true (vacuous) bound
    out = str(tmp_path / "t61w")
    assert cli.main(["run", "theorem61", "--out", out, "--no-progress"]) == 1
    with open(os.path.join(out, "results.json")) as f:
        verdicts = {v["claim"]: v["verdict"] for v in json.load(f)["verdicts"]}
    assert verdicts["T6.1-wrong"] == "MISSED"
    assert verdicts["T6.2-wrong"] == "CAUGHT"


@pytest.mark.parametrize("last, verdict", [(0.049, "SUPPORTED"), (0.051, "NOT SUPPORTED")])
def test_figure1_rule_on_both_sides_of_its_threshold(last, verdict):
    """'Fallen to 0': the mean E(eps) at the largest n at most FIGURE1_FALL (5%) of its peak."""
    assert theorem51.FIGURE1_FALL == 0.05
    cells = [{"cell": {"model": "gaussian", "mode": "cross", "n": n},
              "result": {"profile": {"eps": [0.1], "effective_mean": [mean]}}}
             for n, mean in ((64, 0.4), (256, 1.0), (1024, last))]
    entry = theorem51._figure1_entry({"suites": ["theorem51"], "cells": {"theorem51": cells}})
    assert entry["verdict"] == verdict
