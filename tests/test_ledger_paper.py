"""Every claims-ledger row quotes the paper's own words it judges, verbatim and
with where they are, or says that its reading is ours (issue 17, item 3;
verify/report/paper.py)."""

import dataclasses
import glob
import os
import re

import pytest

from test_sharp_laws import _synthetic_analysis
from verify.report import ledger, paper
from verify.suite import suites
from verify.suites import real_analysis, sharp_analysis, strategy_analysis

LOCATIONS = ("Abstract", "Title", "Section", "Theorem", "Lemma", "Proposition", "Claim", "Figure", "Table",
             "Definition")
SEEDS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "seeds")
NOT_RUN = {"suites": [], "analysis": {}, "verdicts": []}


def _normal(text: str) -> str:
    return " ".join(text.split())


def quotes(field: str) -> list[str]:
    """The double-quoted strings of a paper field."""
    return re.findall(r'"([^"]*)"', field)


def in_text(quoted: str, text: str) -> bool:
    """The quote occurs in the (whitespace-normalised) text, its pieces in order,
    each lost formula standing for at most a short stretch of text."""
    pieces = [re.escape(_normal(p)) for p in quoted.split(paper.GAP)]
    return re.search(r"\s*.{0,80}?\s*".join(pieces), text) is not None


def _strategies_ran() -> dict:
    slope = {"metric": "rms", "mode": "cross", "sigma": 1.0, "k0": 16, "slope": -0.1, "low": -0.2, "high": 0.1}
    table1 = [{"mode": "cross", "sigma": 1.0, "k0": 16, "kind": k, "strategy": f"s: {k}", "cost_ratio": 1.0,
               **{m: {"mean": 0.1} for m in ("rms", "frobenius", "output", "output-independent")}}
              for k in ("constant", "alpha n^0.5")]
    return {"slopes": [dict(slope, kind=k) for k in ("alpha n^0.5", "constant", "alpha ln n")],
            "table1": table1, "oracle": [dict(slope, kind="oracle")],
            "proposition72": [{"reading": "rms", "verdict": "adaptive lower", "mode": "cross", "sigma": 1.0,
                               "k0": 16, "metric": "rms"}]}


def _real_ran() -> dict:
    fc = {"passed": True, "limit": 100.0, "tokens": 64, "perplexity": 9.0, "perplexity_wrong_rope_pairing": 900.0,
          "unigram_perplexity": 300.0, "prompt": "the", "continuation": " model"}
    bound = {"delta": 0.05, "verdict": "holds", "layers_holding": [], "per_layer_rate": [0.0], "rate": 0.0,
             "low": 0.0, "high": 0.01, "trials": 10, "median_ratio": 0.5, "worst_ratio": 0.9}
    return {"model": "m", "model_file": None, "model_sha256": "0" * 64, "text": "t", "contexts": [256],
            "forward_check": fc, "profile_n": 256, "profile_chunks": 2,
            "exponents": [{"eps": 0.1, "heads": 2, "heads_below_1": 2, "median_C": 0.5, "min_C": 0.4, "max_C": 0.6,
                           "not_below": []}],
            "law": [{"eps": 0.1, "heads": 2, "heads_within": 2, "median": 1.0, "min": 0.9, "max": 1.1}],
            "by_type": [{"type": "local", "heads": 2, "median_law_ratio": 1.0, "within_law": 1.0}],
            "bounds": [dict(bound, claim=c) for c in ("L4.2-P1", "L4.2-P2", "T4.3")],
            "table2": [{"n": 256, "kind": "dense", "k0": None, "ppl": 10.0},
                       {"n": 256, "kind": "constant", "k0": 16, "ppl": 11.0}],
            "proposition72": [{"n": 256, "k0": 16, "verdict": "adaptive lower"}]}


def every_row() -> list[dict]:
    """Each registered suite's rows where it did not run, where it ran and judged
    nothing, and (for the suites that build rows from an analysis) where it ran."""
    ran = {"suites": list(suites()), "analysis": {}, "verdicts": []}
    return (ledger.build(NOT_RUN) + ledger.build(ran)
            + strategy_analysis.ledger_entries({"analysis": {"strategies": _strategies_ran()}})
            + sharp_analysis.sharp_law_entries(_synthetic_analysis())
            + real_analysis.ledger_entries({"analysis": {"real_attention": _real_ran()}}))


def test_every_suite_with_ledger_rows_has_rows_where_it_did_not_run():
    claims = " ".join(e["claim"] for e in ledger.build(NOT_RUN))
    named = {"lemma42": "Lemma 4.2", "theorem43": "Theorem 4.3", "theorem51": "Theorem 5.1",
             "theorem61": "Theorem 6.1", "adversarial": "adversarial", "strategies": "Proposition 7.2",
             "sharp_laws": "Sharp Gaussian laws", "real_attention": "Real pretrained LLM"}
    assert {s.name for s in suites().values() if s.ledger_entries is not None} == set(named)
    for name, text in named.items():
        assert text in claims, name


def test_every_row_says_where_the_paper_says_it_or_that_the_reading_is_ours():
    rows = every_row()
    assert len(rows) > 30
    for e in rows:
        assert list(e)[0] == "paper", e["claim"]  # the first column of the ledger
        said = e["paper"].strip()
        assert said.startswith(LOCATIONS + (paper.OURS,)), (e["claim"], said)
        assert said.startswith(paper.OURS) or quotes(said), (e["claim"], said)  # a location comes with a quote
        for q in quotes(said):
            assert q.strip(paper.GAP + " .,-") and len(q) < 300, (e["claim"], q)


@pytest.mark.parametrize("claim, ours", [
    ("Sharp law (THEORY_NOTES, beyond the paper)", True), ("Sharp laws: normaliser", True),
    ("Sharp law, REM scaling", True), ("Title in the REM regime", True), ("REM exponent", True),
    ("Theorem 5.1 Part 2 as THEORY_NOTES read it", True),
    ("Sharp Gaussian law (ours, beyond the paper) on real", True),
    ("Theorems 6.1/6.2, deterministic core", True), ("Lemma 4.2 / Theorems 4.3, 5.1, 6.1 at adversarial", True),
    ("The real-model forward pass", True), ("Lemma 4.2 Part 1 on real rows", True), ("Lemma 4.2 Part 2 on real rows", True), ("Theorem 4.3 on real rows", True),
    ("Lemma 4.2: score concentration", False), ("Theorem 5.1: attention collapse", False),
    ("Proposition 7.2 (rms)", False), ("Title / abstract", False), ("Claim 7.1", False),
])
def test_our_readings_are_marked_ours_and_the_papers_are_not(claim, ours):
    rows = [e for e in every_row() if e["claim"].startswith(claim)]
    assert rows, claim
    for e in rows:
        assert e["paper"].startswith(paper.OURS) == ours, (claim, e["paper"])


def test_every_quote_is_the_papers_text():
    files = sorted(glob.glob(os.path.join(SEEDS, "*.txt")))
    if not files:
        pytest.skip(f"no paper text at {SEEDS} (it lives outside the repository)")
    text = _normal(" ".join(open(f, encoding="utf-8").read() for f in files))
    fields = {e["paper"] for e in every_row()} | {v for v in vars(paper).values()
                                                  if isinstance(v, str) and v.startswith(LOCATIONS)}
    checked = [q for f in fields for q in quotes(f)]
    assert len(checked) > 15
    for q in checked:
        assert in_text(q, text), q


def test_the_quote_check_can_fail():
    text = _normal("Then with a probability at least , we have")
    assert in_text(f"Then with a probability at least {paper.GAP}, we have", text)
    assert not in_text(f"Then with a probability at most {paper.GAP}, we have", text)
    assert not in_text(f"we have {paper.GAP} Then with", text)  # pieces out of order


def test_a_row_without_the_papers_words_fails_the_ledger(monkeypatch):
    def without_paper(results):
        row = ledger.bound_entry(results, "lemma42", [], [], "t", "s", "r", paper="x")
        del row["paper"]
        return [row]

    suite = dataclasses.replace(suites()["lemma42"], ledger_entries=without_paper)
    monkeypatch.setattr(ledger, "suites", lambda: {"lemma42": suite})
    with pytest.raises(ValueError, match="no 'paper' field"):
        ledger.build(NOT_RUN)


def test_the_markdown_ledger_has_the_papers_column_first():
    text = ledger.markdown(NOT_RUN)
    header = next(line for line in text.splitlines() if line.startswith("| "))
    assert header.split("|")[1].strip() == "the paper says"
    rows = [line for line in text.splitlines() if line.startswith("| ") and "NOT RUN" in line]
    assert rows and all(r.split("|")[1].strip().startswith(LOCATIONS + (paper.OURS,)) for r in rows)
    assert paper.LEMMA42 in text and paper.OURS in text
