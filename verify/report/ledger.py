"""The claims ledger: every claim of the paper's abstract and Sections 4-7, the
paper's own words it judges (quoted, or marked as a reading of ours:
``verify/report/paper.py``), the precise statement checked, the metric and
regime, a verdict and the evidence, built from a run's ``results.json``
(``sparsity-verify ledger DIR``).

Each suite writes its own rows (``Suite.ledger_entries``, next to the suite's
rules: e.g. ``verify/suites/strategy_analysis.py``); this module gathers them
in the registry's order and holds the rules every suite shares.

Verdicts: SUPPORTED, NOT SUPPORTED, SUPPORTED ONLY IN REGIME (the regimes
named), HOLDS BUT VACUOUS (every form holds, and none is ever below the trivial
maximum of its quantity; "SUPPORTED; VACUOUS FORMS ..." when only some are),
NOT CHECKED (with the reason), NOT JUDGED (the run's verdict rules are not
today's: ``verify/rules.py``) and NOT RUN (the suite that judges it was not
part of the run, or could not run here: the reason is given). The
real-attention entries (their rules: ``verify/suites/real_analysis.py``) add
PASSED (the forward-pass precondition), MEASURED (a table with no claim to
judge) and INCONCLUSIVE (the intervals decide neither way). The shared rule,
fixed before looking at the data: a bound is SUPPORTED when every claim of it
HOLDS at its stated probability (exact binomial test, ``verify.claims``) and
its planted wrong bound is CAUGHT (``bound_entry``).
"""

from __future__ import annotations

import os

from verify import rules
from verify.claims import SEARCHED_LOG2
from verify.report import paper
from verify.report.results_file import read_results
from verify.suite import suites


def _verdicts(results: dict, suite: str) -> dict:
    return {v["claim"]: v for v in results.get("verdicts", []) if v["suite"] == suite}


def _row_evidence(r: dict) -> str:
    """One verdict row as text: probabilistic rows carry a rate interval against
    delta; exact (deterministic) rows only violations and ratios."""
    rate = (f" (rate CI high {r['ci_high']:.3g} vs delta {r['delta']:.3g})"
            if r.get("ci_high") is not None else " (exact: any ratio above 1 + 1e-9 is a violation)")
    median = r.get("median_of_cell_medians")
    return (f"{r['claim']}: {r['violations']}/{r['checked']} failures{rate}, median ratio "
            f"{median:.3g}, worst {r['worst_ratio']:.3g}" if median is not None else
            f"{r['claim']}: {r['violations']}/{r['checked']} failures{rate}, worst {r['worst_ratio']:.3g}")


def not_run_entry(results: dict, suite: str, claim: str, statement: str = "-",
                  regime: str = "-", *, paper: str) -> dict:
    """The row of a claim whose suite did not run, with the reason; ``paper``:
    the paper's words it judges (``verify.report.paper``)."""
    why = results.get("not_run", {}).get(suite)
    return {"paper": paper, "claim": claim, "statement": statement, "regime": regime, "verdict": "NOT RUN",
            "evidence": f"suite `{suite}` did not run: {why}" if why
            else f"suite `{suite}` was not part of this run"}


def bound_entry(results: dict, suite: str, claims: list[str], wrong: list[str], title: str,
                statement: str, regime: str, *, paper: str) -> dict:
    """A bound judged from its suite's verdict rows: SUPPORTED when every claim in
    ``claims`` HOLDS and every planted wrong bound in ``wrong`` is CAUGHT;
    ``paper``: the paper's words it judges (``verify.report.paper``)."""
    if suite not in results.get("suites", []):
        return not_run_entry(results, suite, title, statement, regime, paper=paper)
    v = _verdicts(results, suite)
    rows = [v[c] for c in claims if c in v]
    planted = [v[c] for c in wrong if c in v]
    held = rows and all(r["verdict"] == "HOLDS" for r in rows)
    caught = all(p["verdict"] == "CAUGHT" for p in planted)
    evidence = "; ".join(_row_evidence(r) for r in rows)
    evidence += "; planted: " + ", ".join(f"{p['claim']} {p['verdict']}" for p in planted)
    verdict = ("NOT CHECKED" if not rows else "SUPPORTED" if held and caught else "NOT SUPPORTED")
    # Vacuity (issue 17): a form that is never below the trivial maximum of its
    # quantity holds for free; the verdict says so instead of SUPPORTED.
    known = [r for r in rows if r.get("biting_fraction") is not None]
    vacuous = [r["claim"] for r in known if r["biting_fraction"] == 0]
    if known:
        evidence += "; below the trivial maximum (bites) in: " + ", ".join(
            f"{r['claim']} {100 * r['biting_fraction']:.3g}% of cases (bound / maximum at least "
            f"{r['min_bound_over_trivial']:.3g}{_bites_from_text(r)})" for r in known)
    tight = [r for r in rows if r.get("score_step_over_exact_low") is not None]
    if tight:  # what the sub-Gaussian score step gives away against exact Gaussian scores
        evidence += "; score step / exact Gaussian 1 - delta quantile: " + ", ".join(
            f"{r['claim']} {r['score_step_over_exact_low']:.4g}" + (
                f"-{r['score_step_over_exact_high']:.4g}"
                if f"{r['score_step_over_exact_high']:.4g}" != f"{r['score_step_over_exact_low']:.4g}" else "")
            for r in tight)
    if verdict == "SUPPORTED" and vacuous:
        verdict = ("HOLDS BUT VACUOUS" if len(vacuous) == len(known) == len(rows)
                   else "SUPPORTED; VACUOUS FORMS " + ", ".join(vacuous))
    return {"paper": paper, "claim": title, "statement": statement, "regime": regime, "verdict": verdict,
            "evidence": evidence or "the run judged none of these claims"}


def _bites_from_text(r: dict) -> str:
    """Where a bound would start to bite at the run's typical rows (issue 17)."""
    if r.get("bites_never_cells") is None:
        return ""
    if r["bites_from_n"] is None:
        return f"; in no cell's typical row for any n up to 2^{SEARCHED_LOG2}"
    log2 = r["bites_from_n"].bit_length() - 1
    if not r["bites_never_cells"]:
        return f"; in every cell's typical row from n = 2^{log2}"
    return (f"; in {r['bites_never_cells']} cell(s)' typical rows for no n up to 2^{SEARCHED_LOG2}, "
            f"in the others' from n = 2^{log2}")


def regime_verdict(held: list[str], failed: list[str]) -> str:
    """SUPPORTED when no regime failed, NOT SUPPORTED when none held, else
    SUPPORTED ONLY IN REGIME and the regimes that held; NOT CHECKED when there
    was no regime to judge (never a SUPPORTED from no evidence)."""
    if not held and not failed:
        return "NOT CHECKED"
    return ("SUPPORTED" if not failed else "NOT SUPPORTED" if not held
            else "SUPPORTED ONLY IN REGIME " + ", ".join(held))


def slope_text(s: dict) -> str:
    """A fitted slope and its interval: ``+0.123 [+0.100, +0.150]``."""
    return f"{s['slope']:+.3f} [{s['low']:+.3f}, {s['high']:+.3f}]"


def _check_paper(entry: dict, suite: str) -> None:
    """Every row quotes the paper statement it judges, or says the reading is ours."""
    if not str(entry.get("paper", "")).strip():
        raise ValueError(f"ledger row {entry.get('claim')!r} of suite `{suite}` has no 'paper' field: the paper's "
                         "words it judges, or 'Ours (not in the paper): ...' (verify/report/paper.py)")


def _suite_paper(suite) -> str:
    """The paper statements of every claim a suite judges (its rows when it did not run)."""
    return paper.joined(*(e["paper"] for e in suite.ledger_entries({})))


def build(results: dict, accept_new_rules: bool = False) -> list[dict]:
    """Every suite's ledger rows, in the registry's order.

    A suite that ran under verdict rules other than today's (``verify.rules``;
    or before rules were recorded) is not judged: one NOT JUDGED row names the
    rules that changed, since a rule chosen after the data cannot decide a
    verdict. ``accept_new_rules`` judges it with today's rules anyway and says
    so in every row's evidence."""
    entries = []
    for suite in suites().values():
        if suite.ledger_entries is None:
            continue
        ran = suite.name in results.get("suites", []) and suite.name not in results.get("not_run", {})
        moved = rules.changed(results.get("rules", {}).get(suite.name), suite.name) if ran else []
        if moved and not accept_new_rules:
            entries.append({
                "paper": _suite_paper(suite),
                "claim": f"Every claim judged by suite `{suite.name}`", "statement": "-", "regime": "-",
                "verdict": "NOT JUDGED",
                "evidence": f"the verdict rules changed since this run ({', '.join(moved)}): a changed rule "
                            "needs a new run (`sparsity-verify ledger --accept-new-rules` judges it with "
                            "today's rules and says so)"})
            continue
        for entry in suite.ledger_entries(results):
            _check_paper(entry, suite.name)
            if moved:
                entry = dict(entry, evidence=f"[judged with rules newer than the run: {', '.join(moved)}] "
                                             + entry["evidence"])
            entries.append(entry)
    return entries


def merge(runs: list[dict]) -> dict:
    """One results dict from several runs (e.g. the paper preset of the slow
    suites and the quick preset of the rest); a suite found in more than one run
    is taken from the first that has it. ``runs_used`` records which run gave
    each suite."""
    merged = {"suites": [], "verdicts": [], "cells": {}, "analysis": {}, "runs_used": [], "not_run": {}}
    for results in runs:
        taken = [s for s in results.get("suites", []) if s not in merged["suites"]]
        if not taken:
            continue
        merged["suites"] += taken
        merged["verdicts"] += [v for v in results.get("verdicts", []) if v["suite"] in taken]
        merged["cells"].update({s: c for s, c in results.get("cells", {}).items() if s in taken})
        merged["analysis"].update({s: a for s, a in results.get("analysis", {}).items() if s in taken})
        merged["not_run"].update({s: w for s, w in results.get("not_run", {}).items() if s in taken})
        merged.setdefault("rules", {}).update({s: r for s, r in results.get("rules", {}).items() if s in taken})
        prov = results.get("provenance", {})
        merged["runs_used"].append({"suites": taken, "preset": results.get("preset"),
                                    "seeds_override": results.get("seeds_override"),
                                    "git_commit": prov.get("git_commit"), "time_utc": prov.get("time_utc"),
                                    "device": prov.get("device", {}).get("backend")})
    return merged


def markdown(results: dict, accept_new_rules: bool = False) -> str:
    runs = results.get("runs_used") or [{
        "suites": results.get("suites", []), "preset": results.get("preset"),
        "seeds_override": results.get("seeds_override"),
        "git_commit": results.get("provenance", {}).get("git_commit"),
        "time_utc": results.get("provenance", {}).get("time_utc"),
        "device": results.get("provenance", {}).get("device", {}).get("backend")}]
    lines = ["Generated by `sparsity-verify ledger` from:", ""]
    for r in runs:
        seeds = "" if r.get("seeds_override") is None else f", --seeds {r['seeds_override']}"
        lines.append(f"- suites {', '.join(r['suites'])}: `{r['preset']}` preset{seeds} "
                     f"(git commit `{r['git_commit']}`, {r['time_utc']}, device {r['device']})")
    lines += ["", "Verdict rules: `verify/report/ledger.py` and each suite's module in `verify/suites/`; "
              "every threshold, tolerance, level and grouping is declared with its reason in `verify/rules.py`'s "
              "registry and recorded with each run (a suite run under other rules than today's is NOT JUDGED"
              + (", here judged with today's rules on request" if accept_new_rules else "") + ").", "",
              "The first column quotes the paper's own words that each row judges, with where they are (a "
              f"formula the paper's text extraction lost is marked {paper.GAP}); a reading that is ours, not "
              f"the paper's, says \"{paper.OURS}\".", "",
              table(build(results, accept_new_rules))]
    return "\n".join(lines) + "\n"


def table(entries: list[dict]) -> str:
    """Ledger rows as a Markdown table: first the paper's words, then our check."""
    head = ["| the paper says | claim | statement checked | regime | verdict | evidence |",
            "|---|---|---|---|---|---|"]
    return "\n".join(head + [f"| {e['paper']} | {e['claim']} | {e['statement']} | {e['regime']} | "
                             f"**{e['verdict']}** | {e['evidence']} |" for e in entries])


def write(run_dirs, out: str | None = None, accept_new_rules: bool = False) -> str:
    """Write the ledger of one run directory, or of several merged (first wins).
    Every results.json is checked first (``read_results``) and the ledger is
    written whole or not at all (temporary file, then rename)."""
    dirs = [run_dirs] if isinstance(run_dirs, str) else list(run_dirs)
    runs = [read_results(d) for d in dirs]
    results = runs[0] if len(runs) == 1 else merge(runs)
    text = "# Claims ledger\n\n" + markdown(results, accept_new_rules)
    path = out or os.path.join(dirs[0], "claims.md")
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


__all__ = ["bound_entry", "build", "markdown", "merge", "not_run_entry", "regime_verdict",
           "slope_text", "table", "write"]
