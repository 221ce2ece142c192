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

import collections
import dataclasses
import fcntl
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

import numpy as np

from verify import devices, rules, workers
from verify.progress import listening
from verify.provenance import provenance
from verify.report import ledger
from verify.report.markdown import markdown_report
from verify.suite import Suite, SuiteUnavailable, suites

SUITES: dict[str, Suite] = suites()

# Verdicts that fail a run: a claim broken by the data, or a planted wrong bound
# that the check did not catch (a check without power).
FAILING_VERDICTS = ("VIOLATED", "MISSED")


# The most seeds a run may ask for: a cell keeps each seed's results in memory
# and in its cell file (tens of bytes of JSON per seed and claim: 10^7 seeds is
# gigabytes), and jax.random.split of more than 2^31 keys aborts inside XLA.
MAX_SEEDS = 10**7
LOCK_FILE = ".run.lock"


class OutputError(ValueError):
    """The output directory cannot be written, or another run holds it."""


def _write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)  # atomic: a crash never leaves half a file


def prepare_output(out_dir: str):
    """Create ``out_dir``, prove it writable and lock it for this run; return the
    open lock file (the lock lasts as long as it stays open: until the process
    ends). Raises :class:`OutputError` with one line saying why not."""
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-"):
            pass
        lock = open(os.path.join(out_dir, LOCK_FILE), "a+")
    except OSError as e:
        raise OutputError(f"cannot write to --out {out_dir}: {e.strerror or e}") from None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise OutputError(f"another run is writing {out_dir} (pid {holder}); wait for it to "
                          "finish or choose another --out") from None
    lock.seek(0)
    lock.truncate()
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


class _Progress:
    """One stderr line: cells done of the plan, the cell running, the fraction of
    it done (from its sampler's chunks) and an ETA from the cells computed so far
    ("eta --" until there is a rate to go by: never "nan")."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled = total, enabled
        self.started = time.time()
        self.computed = 0.0  # cells computed here (not reused), with fractions
        self.label, self.done = "", 0

    def cell(self, done: int, label: str) -> None:
        self.done, self.label = done, label
        self.show(0.0)

    def show(self, fraction: float) -> None:
        if not self.enabled:
            return
        elapsed = time.time() - self.started
        worked = self.computed + fraction
        left = self.total - self.done - fraction
        eta = f"{elapsed / worked * left:7.0f}s" if worked > 0.02 and elapsed > 0 else "     --"
        width = 30
        filled = int(width * (self.done + fraction) / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"{elapsed:7.1f}s eta {eta} {self.label[:40]:<40} {100 * fraction:3.0f}%")
        sys.stderr.flush()

    def finished_cell(self) -> None:
        self.computed += 1

    def close(self) -> None:
        if self.enabled:
            self.done, self.label = self.total, "done"
            self.show(0.0)
            sys.stderr.write("\n")


def _warn(message: str) -> None:
    sys.stderr.write(f"\nwarning: {message}\n")


@dataclasses.dataclass(frozen=True)
class CellRecord:
    """A finished cell as saved in ``DIR/cells/<suite>/<cell id>.json``: its
    configuration, its result and the seconds it took."""

    cell: dict
    result: dict
    seconds: float

    def to_json(self) -> dict:
        return {"cell": self.cell, "result": self.result, "seconds": self.seconds}

    @classmethod
    def from_json(cls, data) -> "CellRecord":
        """The record in ``data``; ValueError if it has not the shape of one."""
        if not (isinstance(data, dict) and isinstance(data.get("cell"), dict)
                and isinstance(data.get("result"), dict)):
            raise ValueError("not a cell result")
        return cls(data["cell"], data["result"], float(data.get("seconds", float("nan"))))


def _saved_result(path: str, cell: dict) -> Optional[dict]:
    """The result saved at ``path`` by an earlier run of the same cell, or None. A
    file that cannot be read or has not the shape of a cell result (truncated,
    empty, garbage) is named in a warning and the cell is computed again."""
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = CellRecord.from_json(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        _warn(f"cannot use the saved cell {path} ({e}); computing it again")
        return None
    return record.result if record.cell == cell else None


def _saved_results(plan, out_dir: str) -> list[Optional[dict]]:
    """Per planned cell, its result saved in ``out_dir`` by an earlier run, or None."""
    return [_saved_result(os.path.join(out_dir, "cells", suite.name, suite.cell_id(cell) + ".json"),
                          cell) for suite, cell in plan]


def _plan(suite_names, preset: str, seeds: int | None, options: dict):
    """The (suite, cell) pairs to run and, per suite that cannot run here, why."""
    plan, not_run = [], {}
    for s in suite_names:
        suite = SUITES[s]
        if suite.configure is not None:
            suite.configure(**{k: v for k, v in options.items() if v is not None})
        try:
            plan += [(suite, c) for c in suite.cells(preset, seeds)]
        except SuiteUnavailable as e:
            not_run[s] = str(e)  # printed by the command, written to the report and ledger
    _check_streams(plan)
    return plan, not_run


def _check_streams(plan) -> None:
    """Refuse a plan in which two cells would draw from the same random stream
    (their trials would not be independent of each other's)."""
    seen: dict[int, str] = {}
    for suite, cell in plan:
        base = cell.get("seed_base")
        if base is None:
            continue
        name = f"{suite.name}/{suite.cell_id(cell)}"
        if base in seen:
            raise ValueError(f"cells {seen[base]} and {name} share seed_base {base}: their trials "
                             "would not be independent (derive seeds with verify.suite.with_seeds)")
        seen[base] = name


def run(suite_names, preset: str, seeds: int | None, out_dir: str,
        progress: bool = True, options: Optional[dict] = None, jobs: int = 1) -> Optional[dict]:
    """Run the suites' cells and write results.json, report.md and claims.md;
    return the results (None on a non-primary process: see the module docstring).
    ``options`` go to the suites that take them (``model``, ``text``: suite
    ``real_attention``); a suite that cannot run here is reported NOT RUN.
    ``jobs`` > 1 computes that many cells at once in worker processes
    (:mod:`verify.workers`; the same results); a distributed run uses one."""
    unknown = [s for s in suite_names if s not in SUITES]
    if unknown:
        raise ValueError(f"unknown suite(s) {unknown}; known: {sorted(SUITES)}")
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise ValueError(f"--seeds must be between 1 and {MAX_SEEDS:,} (a cell keeps every seed's "
                         f"results in memory and in its file), got {seeds:,}")
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    primary = devices.is_primary()
    lock = prepare_output(out_dir) if primary else None
    figures = _Figures(out_dir, primary)
    try:
        return _run(suite_names, preset, seeds, out_dir, progress, options or {}, primary,
                    jobs if devices.process_info()["process_count"] == 1 else 1, figures)
    finally:
        figures.close()  # after an error: the figure being drawn ends, the others are dropped
        if lock is not None:
            lock.close()  # releases the lock


class _Figures:
    """Each suite's figures, drawn in one background thread as soon as the
    suite's last cell is in, while the next suites compute; on the primary
    process only. Why: drawing is Python-bound and XLA's compute leaves part of
    the cores idle, so the figures of the early suites (about 15 s of the quick
    preset on 2 cores) overlap with real_attention's cells instead of following
    them. One thread: matplotlib's global settings are used by one drawer at a time.
    A figure that fails costs the figure, never the results (cells are saved)."""

    def __init__(self, out_dir: str, enabled: bool):
        self.out_dir = out_dir
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="figures") if enabled else None
        self.pending: dict = {}

    def start(self, suite: Suite, cell_results: list) -> None:
        if self.pool is not None and cell_results and suite.name not in self.pending:
            self.pending[suite.name] = self.pool.submit(suite.figures, cell_results, self.out_dir)

    def result(self, suite: Suite, cell_results: list) -> list[dict]:
        """The suite's figures: the background ones (re-raising their error), or drawn now."""
        future = self.pending.pop(suite.name, None)
        return future.result() if future is not None else suite.figures(cell_results, self.out_dir)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


def _run(suite_names, preset: str, seeds: int | None, out_dir: str, progress: bool,
         options: dict, primary: bool, jobs: int, figures: _Figures) -> Optional[dict]:
    plan, not_run = _plan(suite_names, preset, seeds, options)
    rules_record = rules.record(suite_names)  # fixed before any cell is computed
    started = time.time()
    per_suite: dict[str, list] = {s: [] for s in suite_names}
    # The primary's saved cells decide, for every process, which cells are reused.
    saved = _saved_results(plan, out_dir) if primary else [None] * len(plan)
    reuse = devices.broadcast_from_primary(np.array([r is not None for r in saved], np.int32))
    reused = int(np.sum(reuse))
    bar = _Progress(len(plan), progress and primary)
    computed: dict[int, dict] = {}

    todo = [i for i, reuse_it in enumerate(reuse) if not reuse_it]
    left = collections.Counter(plan[i][0].name for i in todo)

    def suite_results(name: str) -> list:
        """A suite's (cell, result) pairs in plan order, whatever order they finished in."""
        return [(cell, saved[i] if reuse[i] else computed[i])
                for i, (suite, cell) in enumerate(plan) if suite.name == name]

    def save(i: int, result: dict, seconds: float) -> None:
        suite, cell = plan[i]
        computed[i] = result
        if primary:
            path = os.path.join(out_dir, "cells", suite.name, suite.cell_id(cell) + ".json")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _write_json(path, CellRecord(cell, result, seconds).to_json())
        left[suite.name] -= 1
        if left[suite.name] == 0:
            figures.start(suite, suite_results(suite.name))

    for s in suite_names:  # suites with every cell saved already draw at once
        if left[s] == 0:
            figures.start(SUITES[s], suite_results(s))
    if jobs > 1 and len(todo) > 1:
        bar.cell(reused, f"{len(todo)} cells in {jobs} worker processes")
        tasks = [(i, plan[i][0].name, plan[i][1]) for i in todo]
        for done, (i, result, seconds) in enumerate(workers.compute(tasks, jobs, options), 1):
            save(i, result, seconds)
            bar.finished_cell()
            bar.cell(reused + done, f"{plan[i][0].name}/{plan[i][0].cell_id(plan[i][1])}")
    else:
        for i in todo:
            suite, cell = plan[i]
            bar.cell(i, f"{suite.name}/{suite.cell_id(cell)}")
            t0 = time.time()
            with listening(bar.show):
                result = suite.run_cell(cell)
            bar.finished_cell()
            save(i, result, time.time() - t0)
    for s in suite_names:
        per_suite[s] = suite_results(s)
    bar.close()
    if not primary:
        return None
    verdicts = [row.to_dict() for s in suite_names for row in SUITES[s].summarise(per_suite[s])]
    analyses = {s: SUITES[s].analysis(per_suite[s]) for s in suite_names
                if SUITES[s].analysis is not None and per_suite[s]}
    results = {
        "preset": preset,
        "seeds_override": seeds,
        "suites": list(suite_names),
        "provenance": provenance(),
        "processes": devices.process_info(),
        "cells": {s: [{"cell": c, "result": r} for c, r in per_suite[s]] for s in suite_names},
        "verdicts": verdicts,
        "figures": [],
        "figures_failed": {},
        "analysis": analyses,
        "cells_reused": reused,
        "jobs": jobs,
        "not_run": not_run,
        "rules": rules_record,
        "seconds": time.time() - started,
    }
    # The numbers are saved before the figures are collected: a figure that fails
    # costs the figure (named in a warning and in results.json), never the results.
    _write_json(os.path.join(out_dir, "results.json"), results)
    for s in suite_names:
        if not per_suite[s]:
            continue
        try:
            results["figures"] += [dict(f, suite=s) for f in figures.result(SUITES[s], per_suite[s])]
        except Exception as e:  # noqa: BLE001 (plotting can fail in many ways; the run must not)
            results["figures_failed"][s] = f"{type(e).__name__}: {e}"
            _warn(f"the figures of suite {s} failed ({type(e).__name__}: {e}); the results are saved")
    _write_json(os.path.join(out_dir, "results.json"), results)
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(markdown_report(results))
    ledger.write(out_dir)
    return results
