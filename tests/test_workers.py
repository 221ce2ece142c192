"""verify.workers: cells computed in worker processes (``--jobs``) give exactly the
results of one process, keep plan order, and a cell that fails in a worker costs
neither the cells already finished nor a traceback on the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from verify import cli, runner, workers
from verify.suites import lemma42

SEEDS = 6


@pytest.fixture
def small_lemma42(monkeypatch):
    # The parent plans the cells; the workers get each cell's whole configuration
    # (they never see this patch), so a smaller preset is enough to compare.
    monkeypatch.setitem(lemma42.PRESETS, "quick", {"lengths": (64,), "seeds": SEEDS, "d": 4})


def _cells(out):
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "cells" / "lemma42").iterdir())}


def test_two_jobs_give_the_results_of_one(small_lemma42, tmp_path):
    one = runner.run(["lemma42"], "quick", None, str(tmp_path / "one"), progress=False, jobs=1)
    two = runner.run(["lemma42"], "quick", None, str(tmp_path / "two"), progress=False, jobs=2)
    assert two["jobs"] == 2 and one["jobs"] == 1
    assert two["cells"] == one["cells"]  # plan order and every number
    assert two["verdicts"] == one["verdicts"]
    a, b = _cells(tmp_path / "one"), _cells(tmp_path / "two")
    assert a.keys() == b.keys() and len(a) == 8
    assert all(a[k]["result"] == b[k]["result"] for k in a)


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
