"""verify.runner and the command on bad files and bad arguments: every case gets one
line and a clear exit status, never a traceback, and finished cells are never lost."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from verify import cli, progress, runner
from verify import suite as suite_module
from verify.claims import claim_result, summarise_claims
from verify.suite import Suite, register, with_seeds

CLAIMS = {"coin-edge": "P(a fair coin lands on its edge) <= 0.05"}
CELLS_RUN: list[str] = []


def _cells(preset, seeds=None):
    return with_seeds("coin", [{"suite": "coin", "n": n, "seeds": seeds or 30} for n in (1, 2, 3)])


def _run_cell(cell):
    CELLS_RUN.append(_cell_id(cell))
    rng = np.random.default_rng(cell["seed_base"])
    for done in range(10, cell["seeds"] + 1, 10):
        progress.chunk_done(done, cell["seeds"])
    return {"coin-edge": claim_result(np.zeros(cell["seeds"], bool), rng.normal(-2, 0.1, cell["seeds"]), 0.05)}


def _cell_id(cell):
    return f"n{cell['n']}-s{cell['seeds']}"


COIN = Suite(name="coin", summary="a test suite", claims=CLAIMS, presets={"quick": {}},
             cells=_cells, cell_id=_cell_id, run_cell=_run_cell,
             summarise=lambda cr: summarise_claims("coin", CLAIMS, cr))


@pytest.fixture
def coin(monkeypatch):
    """The registry and the runner with the suite ``coin`` (fast, pure NumPy) in them."""
    monkeypatch.setattr(suite_module, "_REGISTRY", dict(suite_module._REGISTRY))
    register(COIN)
    monkeypatch.setattr(runner, "SUITES", suite_module.suites())
    CELLS_RUN.clear()
    return COIN


def _run(out, *extra):
    return cli.main(["run", "coin", "--out", str(out), "--no-progress", *extra])


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error:"), err
    for w in words:
        assert w in last, (w, last)
    return last


@pytest.mark.parametrize("content", ["", '{"cell": {"suite": "coin"', "garbage\x00", "{}", "[1, 2]",
                                     '{"cell": [], "result": 3}'])
def test_a_corrupt_cell_file_is_named_recomputed_and_the_run_goes_on(coin, tmp_path, capsys, content):
    out = tmp_path / "run"
    assert _run(out) == 0
    bad = out / "cells" / "coin" / "n2-s30.json"
    good = json.loads(bad.read_text())
    bad.write_text(content)
    CELLS_RUN.clear()
    capsys.readouterr()
    assert _run(out) == 0
    err = capsys.readouterr().err
    assert "warning: cannot use the saved cell" in err and str(bad) in err and "computing it again" in err
    assert CELLS_RUN == ["n2-s30"]  # only the damaged cell
    assert json.loads(bad.read_text()) == {**good, "seconds": json.loads(bad.read_text())["seconds"]}


def test_out_that_is_a_file_under_a_file_or_unwritable_is_one_line(coin, tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for out in (a_file, a_file / "below"):
        assert _run(out) == 2
        _one_line_error(capsys, "cannot write to --out", str(out))
    if os.geteuid() != 0:  # root may write anywhere but /proc
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        assert _run(ro / "x") == 2
        _one_line_error(capsys, "cannot write to --out")
    assert _run("/proc/x") == 2
    _one_line_error(capsys, "cannot write to --out /proc/x")
    assert CELLS_RUN == []


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(coin, tmp_path, capsys):
    out = tmp_path / "run"
    lock = runner.prepare_output(str(out))  # a run in progress
    try:
        assert _run(out) == 2
        _one_line_error(capsys, "another run is writing", str(os.getpid()))
        assert CELLS_RUN == []
    finally:
        lock.close()
    assert _run(out) == 0  # released: the next run goes ahead


def test_seed_counts_beyond_the_limit_are_refused_before_any_work(coin, tmp_path, capsys):
    assert _run(tmp_path / "run", "--seeds", "1000000000000") == 2
    _one_line_error(capsys, "--seeds must be between 1 and 10,000,000", "1,000,000,000,000")
    assert _run(tmp_path / "run", "--seeds", "0") == 2
    _one_line_error(capsys, "--seeds")
    assert CELLS_RUN == []


def test_ctrl_c_exits_130_in_one_line_and_keeps_the_finished_cells(coin, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"

    def interrupted_on_the_second(cell):
        if cell["n"] == 2:
            raise KeyboardInterrupt
        return _run_cell(cell)

    monkeypatch.setattr(runner, "SUITES", {"coin": Suite(**{**COIN.__dict__, "run_cell": interrupted_on_the_second})})
    assert _run(out) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and "interrupted" in err and "resumes" in err
    assert os.listdir(out / "cells" / "coin") == ["n1-s30.json"]
    monkeypatch.setattr(runner, "SUITES", {"coin": COIN})
    CELLS_RUN.clear()
    assert _run(out) == 0
    assert CELLS_RUN == ["n2-s30", "n3-s30"]  # the first cell was kept


def test_progress_reports_chunks_and_its_eta_is_never_nan(capsys):
    bar = runner._Progress(total=3, enabled=True)
    bar.cell(0, "coin/n1")  # nothing computed yet: no rate to go by
    with progress.listening(bar.show):
        progress.chunk_done(5, 10)
    bar.finished_cell()
    bar.cell(1, "coin/n2")
    bar.close()
    err = capsys.readouterr().err
    assert "nan" not in err.lower()
    assert "eta      --" in err and " 50%" in err and "3/3" in err
    progress.chunk_done(1, 2)  # nobody listening: nothing happens


def test_the_terminal_gets_a_compact_table_and_report_md_the_full_one(coin, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0].split() == ["suite", "claim", "verdict", "failures/trials", "rate",
                                               "[95%", "CI]", "vs", "delta", "median", "ratio"]
    assert "coin-edge" in printed and "HOLDS" in printed and "0/90" in printed
    assert "| coin | coin-edge | **HOLDS**" in (out / "report.md").read_text()


@pytest.mark.parametrize("content, problem", [
    ("", "not a readable run"), ("{", "not a readable run"), ("[1, 2]", "a JSON list, not an object"),
    ("{}", "no field 'preset'"),
    ('{"preset": "quick", "suites": ["x"], "verdicts": [{"suite": "x"}], "provenance": {}, '
     '"cells": {}, "analysis": {}, "seconds": 1}', "a verdict row lacks"),
])
def test_report_and_ledger_refuse_a_malformed_results_file(tmp_path, capsys, content, problem):
    (tmp_path / "results.json").write_text(content)
    assert cli.main(["report", str(tmp_path)]) == 2
    _one_line_error(capsys, problem, str(tmp_path / "results.json"))
    assert cli.main(["ledger", str(tmp_path)]) == 2
    _one_line_error(capsys, problem)
    assert not (tmp_path / "claims.md").exists()  # never a ledger from garbage


def test_ledger_to_an_unwritable_path_is_one_line(coin, tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out) == 0
    capsys.readouterr()
    for target in ("/proc/x/claims.md", str(tmp_path / "no" / "such" / "dir" / "claims.md")):
        assert cli.main(["ledger", str(out), "--out", target]) == 2
        _one_line_error(capsys, "cannot write the ledger")
    assert cli.main(["ledger", str(tmp_path / "nowhere")]) == 2
    _one_line_error(capsys, "no results.json")


def test_a_plan_whose_cells_share_a_stream_is_refused(coin, tmp_path, capsys, monkeypatch):
    def shared(preset, seeds=None):
        return [dict(c, seed_base=7) for c in _cells(preset, seeds)]

    monkeypatch.setattr(runner, "SUITES", {"coin": Suite(**{**COIN.__dict__, "cells": shared})})
    assert _run(tmp_path / "run") == 2
    _one_line_error(capsys, "share seed_base 7", "not be independent")
    assert CELLS_RUN == []


def test_a_failing_figure_costs_the_figure_not_the_results(coin, tmp_path, capsys, monkeypatch):
    def broken(cell_results, out_dir):
        raise ZeroDivisionError("float division by zero")

    monkeypatch.setattr(runner, "SUITES", {"coin": Suite(**{**COIN.__dict__, "figures": broken})})
    out = tmp_path / "run"
    assert _run(out) == 0
    assert "warning: the figures of suite coin failed (ZeroDivisionError" in capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["verdicts"][0]["verdict"] == "HOLDS"
    assert results["figures_failed"] == {"coin": "ZeroDivisionError: float division by zero"}
    assert (out / "report.md").exists() and (out / "claims.md").exists()


def test_a_suites_figures_are_drawn_while_the_next_suite_computes(coin, tmp_path, monkeypatch):
    """The figures of ``coin`` start in the background thread once its last cell
    is saved: ``dice``'s cells see them started; both suites' figures are in
    results.json in suite order; a failing later cell still ends the run (the
    figure thread is shut down, no hang)."""
    import threading

    drawn, seen_by_dice = threading.Event(), []

    def coin_figures(cell_results, out_dir):
        assert threading.current_thread() is not threading.main_thread()
        assert len(cell_results) == 3  # every cell of the suite, in plan order
        drawn.set()
        return [{"path": "figures/coin.png", "caption": "coin"}]

    def dice_cell(cell):
        seen_by_dice.append(drawn.wait(timeout=10))
        if cell["n"] == 99:
            raise RuntimeError("a cell fails")
        return _run_cell(cell)

    def dice_cells(preset, seeds=None):
        return with_seeds("dice", [{"suite": "dice", "n": n, "seeds": 30} for n in DICE])

    suites = {"coin": Suite(**{**COIN.__dict__, "figures": coin_figures}),
              "dice": Suite(**{**COIN.__dict__, "name": "dice", "cells": dice_cells,
                               "run_cell": dice_cell, "order": 200,
                               "figures": lambda cr, out: [{"path": "figures/dice.png", "caption": "d"}]})}
    suite_module._REGISTRY.update(suites)  # the fixture's copy: the report reads the registry
    monkeypatch.setattr(runner, "SUITES", suite_module.suites())
    DICE = (1, 2)
    results = runner.run(["coin", "dice"], "quick", None, str(tmp_path / "run"), progress=False)
    assert seen_by_dice == [True, True]
    assert [f["suite"] for f in results["figures"]] == ["coin", "dice"]
    DICE = (99,)  # read by dice_cells
    drawn.clear()
    with pytest.raises(RuntimeError, match="a cell fails"):
        runner.run(["coin", "dice"], "quick", None, str(tmp_path / "again"), progress=False)


def test_chunk_starts_reports_each_chunk_after_its_body():
    seen, bodies = [], []
    with progress.listening(seen.append):
        for start in progress.chunk_starts(25, 10):
            bodies.append((start, list(seen)))
    assert bodies == [(0, []), (10, [0.4]), (20, [0.4, 0.8])]
    assert seen == [0.4, 0.8, 1.0]


def test_the_console_script_exits_130_at_once_after_ctrl_c(monkeypatch):
    """After Ctrl-C inside XLA the normal interpreter teardown can segfault: the
    console script flushes and leaves with os._exit(130); other statuses exit normally."""
    exits = []
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    monkeypatch.setattr(cli, "main", lambda: 130)
    with pytest.raises(SystemExit) as normal:  # the fake _exit returns; sys.exit then runs
        cli.entry()
    assert exits == [130] and normal.value.code == 130
    monkeypatch.setattr(cli, "main", lambda: 1)
    with pytest.raises(SystemExit) as failed:
        cli.entry()
    assert failed.value.code == 1 and exits == [130]


def test_a_saved_cell_of_another_configuration_is_computed_again(coin, tmp_path):
    """A cell file at the same path whose configuration differs (an older code's
    cell, another seed) is not reused: its result would belong to another experiment."""
    out = tmp_path / "run"
    assert _run(out) == 0
    path = out / "cells" / "coin" / "n2-s30.json"
    saved = json.loads(path.read_text())
    saved["cell"]["seed_base"] += 1
    saved["result"]["coin-edge"]["failures"] = 29  # what the other experiment found
    path.write_text(json.dumps(saved))
    CELLS_RUN.clear()
    assert _run(out) == 0
    assert CELLS_RUN == ["n2-s30"]
    results = json.loads((out / "results.json").read_text())
    assert results["verdicts"][0]["violations"] == 0 and results["cells_reused"] == 2
