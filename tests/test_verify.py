"""The sparsity-verify command, the runner and the identities suite."""

import json
import math
import os

import pytest

import sparsity_theory as st
from verify import cli, identities

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
    assert set(result) == set(identities.CLAIMS)
    for claim, r in result.items():
        assert r["checked"] > 0, claim
        assert r["violations"] == 0, (claim, r)
        if r["worst_ratio"] is not None:
            assert 0 < r["worst_ratio"] <= 1 + 1e-9, claim


def _inflate(monkeypatch, field, factor):
    real = st.evaluate_rows

    def wrong(*args, **kwargs):
        stats = real(*args, **kwargs)
        return stats._replace(**{field: getattr(stats, field) + math.log(factor)})

    monkeypatch.setattr(st, "evaluate_rows", wrong)


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
    assert cli.main(["run", "--out", out, "--no-progress"]) == 0
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
    assert cli.main(["run", "--out", out, "--no-progress"]) == 0
    with open(os.path.join(out, "results.json")) as f:
        second = json.load(f)
    assert second["cells_reused"] == len(cells)
    assert second["verdicts"] == first["verdicts"]
    # A different seed count is a different cell: not reused.
    assert cli.main(["run", "--out", out, "--no-progress", "--seeds", "1"]) == 0
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
