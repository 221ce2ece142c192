"""verify.workers: cells computed in worker processes (``--jobs``) give exactly the
results of one process, keep plan order, and a cell that fails in a worker costs
neither the cells already finished nor a traceback on the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from verify import cli, runner, workers
from verify.suites import lemma42, theorem43

SEEDS = 6


@pytest.fixture
def small_lemma42(monkeypatch):
    # The parent plans the cells; the workers get each cell's whole configuration
    # (they never see this patch), so a smaller preset is enough to compare.
    monkeypatch.setitem(lemma42.PRESETS, "quick", {"lengths": (64,), "seeds": SEEDS, "d": 4})


def _cells(out, suite="lemma42"):
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "cells" / suite).iterdir())}


def test_two_jobs_give_the_results_of_one(small_lemma42, tmp_path, monkeypatch):
    # Two suites: the workers split them (each keeps to one suite, then they share
    # the one with cells left), and every cell comes back once, equal.
    monkeypatch.setitem(theorem43.PRESETS, "quick", {"lengths": (64,), "seeds": SEEDS, "d": 4})
    suites = ["lemma42", "theorem43"]
    one = runner.run(suites, "quick", None, str(tmp_path / "one"), progress=False, jobs=1)
    two = runner.run(suites, "quick", None, str(tmp_path / "two"), progress=False, jobs=2)
    assert two["jobs"] == 2 and one["jobs"] == 1
    # Compared as JSON text: theorem43's results hold NaN (quantiles of a looseness
    # that is not finite at any of the 6 seeds), and NaN is never == itself.
    assert _text(two["cells"]) == _text(one["cells"])  # plan order and every number
    assert _text(two["verdicts"]) == _text(one["verdicts"])
    for suite in suites:
        a, b = _cells(tmp_path / "one", suite), _cells(tmp_path / "two", suite)
        assert a.keys() == b.keys() and len(a) == 8
        assert all(_text(a[k]["result"]) == _text(b[k]["result"]) for k in a)


def _text(data) -> str:
    return json.dumps(data, sort_keys=True)


def test_a_worker_keeps_to_one_suite_then_shares_the_longest():
    pending = {"A": [(0, "A", {}), (1, "A", {}), (2, "A", {})], "B": [(3, "B", {}), (4, "B", {})],
               "C": [(5, "C", {})]}
    take = workers.next_task
    assert take(pending, None, set())[0] == 0  # worker 0 starts the first suite
    assert take(pending, None, {"A"})[0] == 3  # worker 1 the first suite nobody is on
    assert take(pending, "A", {"B"})[0] == 1  # worker 0 stays on its suite
    assert take(pending, "B", {"A"})[0] == 4
    assert take(pending, "B", {"A"})[0] == 5  # B is done: C, which nobody is on
    assert take(pending, "C", {"A"})[0] == 2  # nothing new: share the suite with cells left
    assert take(pending, "A", {"C"}) is None and not any(pending.values())
    longest = {"A": [(0, "A", {})], "B": [(1, "B", {}), (2, "B", {})]}
    assert take(longest, None, {"A", "B"})[0] == 1  # the suite with the most cells left


def test_a_cell_failing_in_a_worker_keeps_the_finished_cells(small_lemma42, tmp_path, monkeypatch):
    planned = lemma42.SUITE.cells

    def with_a_bad_cell(preset, seeds=None):
        cells = planned(preset, seeds)
        return cells + [dict(cells[0], model="no-such-model", seed_base=cells[0]["seed_base"] + 1)]

    monkeypatch.setitem(runner.SUITES, "lemma42",
                        dataclasses.replace(runner.SUITES["lemma42"], cells=with_a_bad_cell))
    with pytest.raises(KeyError, match="no-such-model"):
        runner.run(["lemma42"], "quick", None, str(tmp_path), progress=False, jobs=2)
    assert len(_cells(tmp_path)) == 8  # every good cell was saved before the error came back


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_bad_jobs_is_one_line(value, tmp_path, capsys):
    code = cli.main(["run", "lemma42", "--jobs", value, "--out", str(tmp_path), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("error: --jobs must be")


def test_auto_is_one_job_per_usable_core_on_the_cpu():
    assert workers.parse_jobs("auto") == min(workers.usable_cores(), workers.MAX_AUTO_JOBS)
    assert workers.parse_jobs("3") == 3
    with pytest.raises(ValueError, match="jobs must be an integer"):
        runner.run(["lemma42"], "quick", None, "/nonexistent/never-written", progress=False, jobs=0)


def test_the_environment_sets_the_default(monkeypatch):
    assert workers.default_jobs() == "1"  # conftest: in-process patches must hold
    monkeypatch.delenv(workers.JOBS_ENVIRONMENT)
    assert workers.default_jobs() == "1"  # measured: 2 jobs were slower on 2 cores
