"""Run suites over their cells, resumably, and write results.json and report.md.

Each finished cell is written at once to ``DIR/cells/<suite>/<cell id>.json``; a
run re-started with the same DIR (and the same preset and seeds) loads those and
computes only the missing cells, so a sweep survives a crash half-way.

Several processes (``sparsity-verify run --distributed``, ``verify.devices``):
every process runs this same function (SPMD, multi-controller), and the seeds of
each sampled chunk are spread over the devices of all of them, so every process
must compute the same cells in the same order. Only the primary (process 0)
reads saved cells, prints progress and writes files. It decides which cells are
reused from its own DIR and broadcasts that decision (one flag per planned
cell) before the loop, so the processes agree even when DIR is not on a shared
filesystem (or differs between hosts); the other processes never read DIR. Each
process then computes every cell that is not reused, in plan order, and gets the
same results (``map_seeds`` gathers every seed on every process); a suite's
computations outside the sampler run on each process's own devices, redundantly.
After the loop the other processes return None: they hold neither the reused
cells' results nor any files, so summaries, figures, results.json, report.md and
claims.md come from the primary alone, and its exit status is the run's.
"""

from __future__ import annotations

import json
import os
import sys
import time
from types import ModuleType
from typing import Optional

import numpy as np

from verify import adversarial, identities, lemma42, strategies, theorem43, theorem51, theorem61
from verify import real_attention, sharp_laws
from verify import devices, ledger
from verify.provenance import provenance
from verify.unavailable import SuiteUnavailable

SUITES: dict[str, ModuleType] = {
    m.NAME: m for m in (identities, lemma42, theorem43, theorem51, theorem61, strategies,
                        adversarial, sharp_laws, real_attention)
}

# Verdicts that fail a run: a claim broken by the data, or a planted wrong bound
# that the check did not catch (a check without power).
FAILING_VERDICTS = ("VIOLATED", "MISSED")


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # atomic: a crash never leaves half a file


def _progress(done: int, total: int, label: str, started: float) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.time() - started
    eta = elapsed / done * (total - done) if done else float("nan")
    sys.stderr.write(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
        f"{elapsed:6.1f}s eta {eta:6.1f}s {label[:40]:<40}"
    )
    sys.stderr.flush()


def _saved_results(plan, out_dir: str) -> list[Optional[dict]]:
    """Per planned cell, its result saved in ``out_dir`` by an earlier run of the
    same cell, or None."""
    saved = []
    for suite, cell in plan:
        path = os.path.join(out_dir, "cells", suite.NAME, suite.cell_id(cell) + ".json")
        result = None
        if os.path.exists(path):
            with open(path) as f:
                data = json.load(f)
            if data["cell"] == cell:
                result = data["result"]
        saved.append(result)
    return saved


def _plan(suite_names, preset: str, seeds: int | None, options: dict):
    """The (suite, cell) pairs to run and, per suite that cannot run here, why."""
    plan, not_run = [], {}
    for s in suite_names:
        suite = SUITES[s]
        if hasattr(suite, "configure"):
            suite.configure(**{k: v for k, v in options.items() if v is not None})
        try:
            plan += [(suite, c) for c in suite.cells(preset, seeds)]
        except SuiteUnavailable as e:
            not_run[s] = str(e)  # printed by the command, written to the report and ledger
    return plan, not_run


def run(suite_names, preset: str, seeds: int | None, out_dir: str,
        progress: bool = True, options: Optional[dict] = None) -> Optional[dict]:
    """Run the suites' cells and write results.json, report.md and claims.md;
    return the results (None on a non-primary process: see the module docstring).
    ``options`` go to the suites that take them (``model``, ``text``: suite
    ``real_attention``); a suite that cannot run here is reported NOT RUN."""
    unknown = [s for s in suite_names if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; known: {sorted(SUITES)}")
    primary = devices.is_primary()
    progress = progress and primary
    if primary:
        os.makedirs(out_dir, exist_ok=True)
    plan, not_run = _plan(suite_names, preset, seeds, options or {})
    started = time.time()
    per_suite: dict[str, list] = {s: [] for s in suite_names}
    # The primary's saved cells decide, for every process, which cells are reused.
    saved = _saved_results(plan, out_dir) if primary else [None] * len(plan)
    reuse = devices.broadcast_from_primary(np.array([r is not None for r in saved], np.int32))
    reused = 0
    for i, ((suite, cell), result, reuse_it) in enumerate(zip(plan, saved, reuse)):
        if reuse_it:
            per_suite[suite.NAME].append((cell, result))
            reused += 1
            continue
        cid = suite.cell_id(cell)
        if progress:
            _progress(i, len(plan), cid, started)
        t0 = time.time()
        result = suite.run_cell(cell)
        if primary:
            path = os.path.join(out_dir, "cells", suite.NAME, cid + ".json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_json(path, {"cell": cell, "result": result, "seconds": time.time() - t0})
        per_suite[suite.NAME].append((cell, result))
    if progress:
        _progress(len(plan), len(plan), "done", started)
        sys.stderr.write("\n")
    if not primary:
        return None
    verdicts = [row for s in suite_names for row in SUITES[s].summarise(per_suite[s])]
    figures = []
    for s in suite_names:
        if hasattr(SUITES[s], "figures") and per_suite[s]:
            figures += [dict(f, suite=s) for f in SUITES[s].figures(per_suite[s], out_dir)]
    analyses = {s: SUITES[s].analysis(per_suite[s]) for s in suite_names
                if hasattr(SUITES[s], "analysis") and per_suite[s]}
    results = {
        "preset": preset,
        "seeds_override": seeds,
        "suites": list(suite_names),
        "provenance": provenance(),
        "processes": devices.process_info(),
        "cells": {s: [{"cell": c, "result": r} for c, r in per_suite[s]] for s in suite_names},
        "verdicts": verdicts,
        "figures": figures,
        "analysis": analyses,
        "cells_reused": reused,
        "not_run": not_run,
        "seconds": time.time() - started,
    }
    _write_json(os.path.join(out_dir, "results.json"), results)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown_report(results))
    ledger.write(out_dir)
    return results


def _fmt(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return str(x)


def _rate(v: dict) -> str:
    if v.get("rate") is None:
        return "-"
    return f"{v['rate']:.4g} [{v['ci_low']:.3g}, {v['ci_high']:.3g}] vs {v['delta']:.3g}"


def _sprt(v: dict) -> str:
    if v.get("sprt_verdict") is None:
        return "-"
    return f"{v['sprt_verdict']} ({v['sprt_trials']})"


def verdict_table(verdicts: list[dict]) -> str:
    head = ("| suite | claim | verdict | failures / trials | failure rate [95% CI] vs delta "
            "| p-value | SPRT (trials) | median ratio | p99 ratio | worst ratio | worst rel. diff |")
    lines = [head, "|" + "---|" * 11]
    for v in verdicts:
        lines.append(
            f"| {v['suite']} | {v['claim']} | **{v['verdict']}** | "
            f"{v['violations']} / {v['checked']} | {_rate(v)} | {_fmt(v.get('p_value'))} | {_sprt(v)} | "
            f"{_fmt(v['median_of_cell_medians'])} | {_fmt(v.get('worst_p99'))} | "
            f"{_fmt(v['worst_ratio'])} | {_fmt(v.get('worst_relative_difference'))} |"
        )
    return "\n".join(lines)


def _processes(results: dict) -> str:
    """" over N processes" for a multi-process run (older results lack the field)."""
    count = results.get("processes", {}).get("process_count", 1)
    return f" over {count} processes" if count > 1 else ""


def suite_markdown(results: dict, suite: str) -> str:
    """One suite's analysis section with the run's provenance and its figures (for
    docs/: generated, never typed by hand)."""
    if suite not in results.get("analysis", {}):
        why = results.get("not_run", {}).get(suite, "it was not part of the run")
        raise ValueError(f"the run has no analysis of suite {suite!r} ({why})")
    prov = results["provenance"]
    figures = "\n\n".join(f"![{f['caption']}]({f['path']})\n\n*{f['caption']}*"
                            for f in results.get("figures", []) if f.get("suite") == suite)
    ledger_rows = ""
    if hasattr(SUITES[suite], "ledger_entries"):  # the suite's own rows of the claims ledger
        rows = SUITES[suite].ledger_entries(results)
        ledger_rows = ("\n### Claims ledger rows of this suite\n\n| claim | statement checked | regime | verdict "
                       "| evidence |\n|---|---|---|---|---|\n"
                       + "\n".join(f"| {e['claim']} | {e['statement']} | {e['regime']} | **{e['verdict']}** | "
                                    f"{e['evidence']} |" for e in rows) + "\n")
    return (f"<!-- generated by `sparsity-verify report DIR --suite {suite}`: do not edit -->\n\n"
            f"Run: `{prov['command']}`; preset `{results['preset']}`; git commit `{prov['git_commit']}`; "
            f"{prov['time_utc']}; device {prov['device']['backend']} ({prov['device']['kind']}, "
            f"{prov['device']['count']} device(s), host cpus {prov['device']['cpu_count']}); wall time "
            f"{results['seconds']:.0f} s; versions {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}."
            f"\n\n{SUITES[suite].report_sections(results['analysis'][suite])}{ledger_rows}\n{figures}\n")


def markdown_report(results: dict) -> str:
    prov = results["provenance"]
    claims = "\n".join(
        f"- `{c}`: {text}" for s in results["suites"] for c, text in SUITES[s].CLAIMS.items()
    )
    figures = "\n\n".join(f"![{f['caption']}]({f['path']})\n\n*{f['caption']}*"
                            for f in results.get("figures", [])) or "(none)"
    sections = "\n".join(f"## Suite `{s}`: analysis\n\n{SUITES[s].report_sections(a)}"
                         for s, a in results.get("analysis", {}).items())
    sections += "".join(f"\n## Suite `{s}`: NOT RUN\n\n{why}\n"
                        for s, why in results.get("not_run", {}).items())
    return f"""# sparsity-verify report

- preset: `{results['preset']}`; suites: {', '.join(results['suites'])}
- git commit: `{prov['git_commit']}`; time (UTC): {prov['time_utc']}
- device: {prov['device']['backend']} ({prov['device']['kind']}, {prov['device']['count']} device(s){_processes(results)}), host cpus {prov['device']['cpu_count']}
- versions: {', '.join(f'{k} {v}' for k, v in prov['versions'].items())}
- wall time: {results['seconds']:.1f} s ({results['cells_reused']} cells reused from an earlier run)

## Verdicts

Ratio = quantity / bound for upper bounds and bound / quantity for lower bounds:
at most 1 when the inequality holds; the median is the median over cells of each
cell's median; p99 ratio is the largest over cells of each cell's 99th
percentile. SPRT: Wald's sequential test of delta against 2 delta on the
trials in run order, and the trial at which it decided. Exact facts (suite
`identities`): a violation is a ratio above 1 + 1e-9. Probabilistic claims: failures are trials (seeds) where the bound
failed; the exact one-sided binomial test of "failure rate <= delta" gives the
p-value (pooled over cells; each cell is also tested at alpha / cells); the
verdict is VIOLATED at p < alpha = 1e-6. A failure count above zero is expected
at rate up to delta. Claims ending in `-wrong` are planted wrong bounds: CAUGHT
means the test has the power to reject them.

{verdict_table(results['verdicts'])}

## Figures

{figures}

{sections}

## Claims ledger

Each claim of the paper judged from this run (also written to `claims.md`;
rules in `verify/ledger.py`):

{ledger.markdown(results)}

## Claims checked by the suites

{claims}
"""
