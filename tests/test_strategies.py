"""Suite ``strategies`` (verify/suites/strategies.py), its analysis
(verify/suites/strategy_analysis.py) and the claims ledger (verify/report/ledger.py).

The suite's cells are checked against an independent dense NumPy recomputation
of the same inputs; the analysis and the ledger on synthetic results whose
answer is known; the runner end to end on a tiny preset.

Speed: ``_chunk_metrics`` compiles once per n (several seconds each on two
cores) and ``_chunk_inputs`` once per (mode, n), so the tiny preset has two lengths, and the direct ``run_cell`` test
uses a cell of that preset: the end-to-end run then finds it compiled.
"""

from __future__ import annotations

import json
import math
import os

import jax
import numpy as np
import pytest

import sparsity_theory as st
from verify import rules, runner, statistics
from verify.report import ledger
from verify.suites import strategies, strategy_analysis

# At n = 16 the four strategies have four different kept sets (windows 8, 5, 3 and
# the sink-plus-recent 8), so a strategy paired with the wrong column shows.
TINY = {"lengths": (16, 128), "seeds": 6, "rows": 4, "d": 4, "k0": (8,), "exponents": (0.5,),
        "score_scales": (1.0,), "sinks": 1, "oracle_eps": 0.2}


@pytest.fixture
def tiny(monkeypatch):
    monkeypatch.setitem(strategies.PRESETS, "quick", TINY)


@pytest.fixture
def fast_bootstrap(monkeypatch):
    """Fewer bootstrap resamples where the slope intervals are not what is tested."""
    monkeypatch.setattr(statistics, "BOOTSTRAP", 50)


# --------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------

def test_strategy_plans_align_costs():
    preset = {"lengths": (128, 256, 512, 1024, 2048), "k0": (16, 64), "exponents": (0.25, 0.5),
              "sinks": 4}
    plans = strategies.strategy_plans(preset)
    assert len(plans) == 2 * 5 and len({p["name"] for p in plans}) == len(plans)
    lengths = np.asarray(preset["lengths"])
    for k0 in preset["k0"]:
        mine = {p["kind"]: p for p in plans if p["k0"] == k0}
        assert set(mine) == {"constant", "alpha ln n", "alpha n^0.25", "alpha n^0.5", "sink+recent"}
        const = mine["constant"]
        target = int(np.sum(lengths * k0))
        assert const["cost"] == const["target_cost"] == target
        assert const["windows"] == {int(n): k0 for n in lengths}
        for kind in ("alpha ln n", "alpha n^0.25", "alpha n^0.5"):
            p = mine[kind]
            assert p["target_cost"] == target
            assert p["cost"] == int(np.sum(lengths * np.array([p["windows"][int(n)] for n in lengths])))
            assert abs(p["cost"] / target - 1) < 0.03, (kind, p["cost"], target)
            w = [p["windows"][int(n)] for n in lengths]
            assert w == sorted(w) and w[0] < k0 < w[-1], (kind, w)  # growing windows
        assert mine["alpha ln n"]["alpha"] == pytest.approx(
            k0 * lengths.sum() / np.sum(lengths * np.log(lengths)), rel=1e-12)
        assert mine["alpha n^0.5"]["exponent"] == 0.5 and mine["alpha ln n"]["exponent"] is None
        sink = mine["sink+recent"]
        assert sink["windows"] == {int(n): k0 for n in lengths}
        assert sink["cost"] == const["cost"] and sink["sinks"] == 4
        assert all(p["sinks"] is None for kind, p in mine.items() if kind != "sink+recent")


def test_cells_share_seeds_and_windows(tiny):
    cells = strategies.cells("quick")
    assert len(cells) == len(st.MODES) * len(TINY["lengths"])
    assert len({c["seed_base"] for c in cells}) == len(cells)
    assert len({strategies.cell_id(c) for c in cells}) == len(cells)
    for c in cells:
        assert c["rows"] == 4 and c["seeds"] == 6 and c["oracle_eps"] == 0.2
        kinds = {s["kind"]: s for s in c["strategies"]}
        assert kinds["constant"]["window"] == kinds["sink+recent"]["window"] == 8
        assert kinds["sink+recent"]["sinks"] == 1
    assert strategies.cells("quick", seeds=2)[0]["seeds"] == 2


# --------------------------------------------------------------------------
# run_cell against an independent recomputation
# --------------------------------------------------------------------------

def _softmax(u):
    e = np.exp(u - u.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _recompute(cell):
    """Per seed: (u, V, V independent) rebuilt as run_cell draws them."""
    n, d, mode = cell["n"], cell["d"], cell["mode"]
    base = jax.random.PRNGKey(cell["seed_base"])
    weights = st.orthogonal_weights(jax.random.fold_in(base, 0), d)
    keys = jax.random.split(jax.random.fold_in(base, 1), cell["seeds"])
    scale = cell["score_scale"] / math.sqrt(d)
    rows = np.round(np.linspace(0, n - 1, cell["rows"])).astype(int)
    assert strategies.evenly_spaced_rows(n, cell["rows"]) == tuple(rows.tolist())
    for key in keys:
        inp = st.sample_inputs(key, n, d, st.Gaussian(1.0), mode)
        q, k, v = (np.asarray(a) for a in st.project(inp, weights))
        v_ind = np.asarray(jax.random.normal(jax.random.fold_in(key, 17), v.shape, v.dtype))
        yield scale * q[rows] @ k.T, v, v_ind


def _dense_metrics(u, kept, v, v_ind):
    """(rms, relative output error, relative output error with V independent), dense."""
    s = _softmax(u)
    s_hat = s * kept
    s_hat /= s_hat.sum(axis=-1, keepdims=True)
    diff = s - s_hat
    rms = math.sqrt(np.mean(np.sum(diff**2, axis=-1)))
    out = np.linalg.norm(diff @ v) / np.linalg.norm(s @ v)
    out_ind = np.linalg.norm(diff @ v_ind) / np.linalg.norm(s @ v_ind)
    return rms, out, out_ind


def _top_k_mask(u, k):
    kept = np.zeros(u.shape, bool)
    np.put_along_axis(kept, np.argsort(-u, axis=-1)[:, :k], True, axis=-1)
    return kept


def test_run_cell_matches_a_dense_recomputation(tiny):
    cell = next(c for c in strategies.cells("quick") if c["mode"] == "self" and c["n"] == 16)
    n, seeds, eps = cell["n"], cell["seeds"], cell["oracle_eps"]
    assert [s["window"] for s in cell["strategies"]] == [8, 5, 3, 8]
    result = strategies.run_cell(cell)
    names = [s["name"] for s in cell["strategies"]] + [strategies.ORACLE]
    assert list(result["strategies"]) == names
    for name in names:
        assert list(result["strategies"][name]) == list(strategies.METRICS)
        for metric, logs in result["strategies"][name].items():
            assert len(logs) == seeds and np.all(np.isfinite(logs)), (name, metric)
    assert len(result["oracle_mean_window"]) == seeds
    assert all(1 <= w <= n for w in result["oracle_mean_window"])

    inputs = list(_recompute(cell))
    for s in cell["strategies"]:
        stored = result["strategies"][s["name"]]
        for i, (u, v, v_ind) in enumerate(inputs):
            if s["kind"] == "sink+recent":
                kept = np.zeros(n, bool)
                kept[:s["sinks"]] = True
                kept[n - (s["window"] - s["sinks"]):] = True
                kept = np.broadcast_to(kept, u.shape)
            else:
                kept = _top_k_mask(u, s["window"])
            assert kept.sum(axis=-1).tolist() == [s["window"]] * u.shape[0]
            rms, out, out_ind = _dense_metrics(u, kept, v, v_ind)
            for metric, want in (("rms", rms), ("output", out), ("output-independent", out_ind)):
                got = math.exp(stored[metric][i])
                assert got == pytest.approx(want, rel=1e-6), (s["name"], metric, i)

    # The oracle: per row the smallest k with tail mass <= eps.
    oracle = result["strategies"][strategies.ORACLE]
    for i, (u, v, v_ind) in enumerate(inputs):
        s = np.sort(_softmax(u), axis=-1)[:, ::-1]
        tail = 1.0 - np.cumsum(s, axis=-1)  # tau(k) at index k - 1
        k_eps = 1 + np.argmax(tail <= eps, axis=-1)
        assert result["oracle_mean_window"][i] == pytest.approx(np.mean(k_eps), abs=1e-3)
        kept = np.concatenate([_top_k_mask(u[j:j + 1], k) for j, k in enumerate(k_eps)])
        rms, out, out_ind = _dense_metrics(u, kept, v, v_ind)
        assert math.exp(oracle["rms"][i]) == pytest.approx(rms, rel=1e-6)
        assert math.exp(oracle["output"][i]) == pytest.approx(out, rel=1e-6)
    # l2 <= l1 = 2 tau <= 2 eps in every row, so also in the mean square.
    assert np.all(np.exp(oracle["rms"]) <= 2 * eps + 1e-12)

    # frobenius = rms + 0.5 log n, each rounded to 6 decimals.
    for name in names:
        np.testing.assert_allclose(result["strategies"][name]["frobenius"],
                                   np.asarray(result["strategies"][name]["rms"]) + 0.5 * math.log(n),
                                   rtol=0, atol=1.1e-6)


    # Coverage: about 95% of intervals over normal samples cover the true mean.
    rng = np.random.default_rng(0)
    covered = [lo <= 1.0 <= hi for lo, hi in
               (strategy_analysis.mean_interval(rng.normal(1.0, 2.0, 200))[1:] for _ in range(2000))]
    assert 0.93 < np.mean(covered) < 0.97


# --------------------------------------------------------------------------
# Analysis on synthetic cells
# --------------------------------------------------------------------------

K0 = 8
LENGTHS = (64, 128, 256)
SYNTH = [("constant", "constant"), ("alpha ln n", "alpha ln n"), ("alpha n^0.5", "alpha n^0.5"),
         ("sink+recent", "sink+recent")]


def _synthetic(factor_log, factor_power, seeds=40, mode="cross", sigma=1.0, seed=0, jitter=0.01):
    """(cell, result) pairs shaped like run_cell's: the adaptive strategies' errors
    are the constant window's times a factor (one, or one per length), with the
    same per-seed noise (a paired comparison), and the constant window's error
    persists in n."""
    factor_log = np.broadcast_to(factor_log, len(LENGTHS))
    factor_power = np.broadcast_to(factor_power, len(LENGTHS))
    rng = np.random.default_rng(seed)
    pairs = []
    for i, n in enumerate(LENGTHS):
        windows = {"constant": K0, "alpha ln n": 6 + i, "alpha n^0.5": 4 + 4 * i, "sink+recent": K0}
        cell = {"suite": "strategies", "mode": mode, "score_scale": sigma, "n": n, "d": 4, "rows": 4,
                "seeds": seeds, "seed_base": 1000 * i, "oracle_eps": 0.1,
                "strategies": [{"name": f"k0={K0}: {label}", "kind": kind, "k0": K0,
                                "sinks": 2 if kind == "sink+recent" else None, "window": windows[kind]}
                               for label, kind in SYNTH]}
        base = np.log(0.3) + 0.1 * rng.normal(size=seeds)
        noise = jitter * rng.normal(size=seeds)
        logs = {"constant": base, "alpha ln n": base + math.log(factor_log[i]) + noise,
                "alpha n^0.5": base + math.log(factor_power[i]) - noise, "sink+recent": base + 0.5,
                strategies.ORACLE: base - 2.0 - 0.5 * math.log(n)}
        result = {"strategies": {}, "oracle_mean_window": (3.0 * n ** 0.5 * np.exp(noise)).tolist()}
        for kind, log in list(logs.items()):
            name = kind if kind == strategies.ORACLE else f"k0={K0}: {kind}"
            result["strategies"][name] = {
                metric: (log + 0.5 * math.log(n) if metric == "frobenius" else log).tolist()
                for metric in strategies.METRICS}
        pairs.append((cell, result))
    return pairs


def _verdicts(analysis):
    return {(p["metric"], p["reading"]): p for p in analysis["proposition72"]}


def test_analyse_adaptive_lower(fast_bootstrap):
    analysis = strategy_analysis.analyse(_synthetic(0.5, 0.7))
    props = _verdicts(analysis)
    readings = {"grid average", f"largest n = {LENGTHS[-1]}"}
    assert set(props) == {(m, r) for m in strategies.METRICS for r in readings}
    for p in props.values():
        assert p["verdict"] == "adaptive lower", p
        assert sorted(p["better"]) == [f"k0={K0}: alpha ln n", f"k0={K0}: alpha n^0.5"]
        assert p["differences"][f"k0={K0}: alpha ln n"]["high"] < 0
        assert p["k0"] == K0 and p["mode"] == "cross" and p["sigma"] == 1.0
    # Table 1: grid averages, paired differences to the constant window, cost ratios.
    rows = {r["strategy"]: r for r in analysis["table1"]}
    assert set(rows) == {f"k0={K0}: {label}" for label, _ in SYNTH} | {strategies.ORACLE}
    const, power = rows[f"k0={K0}: constant"], rows[f"k0={K0}: alpha n^0.5"]
    assert "diff" not in const["rms"] and power["rms"]["diff"] < 0
    assert power["rms"]["mean"] == pytest.approx(0.7 * const["rms"]["mean"], rel=0.02)
    assert const["cost_ratio"] == 1.0 and rows[f"k0={K0}: sink+recent"]["cost_ratio"] == 1.0
    n = np.array(LENGTHS)
    assert power["cost_ratio"] == pytest.approx(np.sum(n * [4, 8, 12]) / np.sum(n * K0))
    assert rows[strategies.ORACLE]["cost_ratio"] is None and rows[strategies.ORACLE]["k0"] is None
    assert power["windows"] == [4, 8, 12]
    # Slopes: one per strategy and metric; the constant window's error persists,
    # the oracle's falls like n^-1/2, the oracle window grows like n^1/2.
    slopes = {(s["strategy"], s["metric"]): s for s in analysis["slopes"]}
    assert len(slopes) == len(rows) * len(strategies.METRICS)
    assert abs(slopes[(f"k0={K0}: constant", "rms")]["slope"]) < 0.05
    assert slopes[(strategies.ORACLE, "rms")]["slope"] == pytest.approx(-0.5, abs=0.05)
    assert slopes[(f"k0={K0}: constant", "frobenius")]["slope"] == pytest.approx(0.5, abs=0.05)
    (oracle,) = analysis["oracle"]
    assert oracle["slope"] == pytest.approx(0.5, abs=0.02) and oracle["lengths"] == list(LENGTHS)
    # The report renders all of it.
    text = strategy_analysis.report(analysis)
    assert "### Table 1" in text and "adaptive lower" in text and "alpha n^0.5" in text


def test_analyse_constant_lower(fast_bootstrap):
    props = _verdicts(strategy_analysis.analyse(_synthetic(1.6, 1.3)))
    assert len(props) == 2 * len(strategies.METRICS)
    for p in props.values():
        assert p["verdict"] == "constant lower", p
        assert p["better"] == []
        assert all(d["low"] > 0 for d in p["differences"].values())


def test_analyse_mixed_and_equal(fast_bootstrap):
    # One adaptive strategy lower is enough for "adaptive lower".
    for p in _verdicts(strategy_analysis.analyse(_synthetic(0.5, 1.5))).values():
        assert p["verdict"] == "adaptive lower" and p["better"] == [f"k0={K0}: alpha ln n"]
    # Identical errors: no interval excludes 0.
    for p in _verdicts(strategy_analysis.analyse(_synthetic(1.0, 1.0, jitter=0.0))).values():
        assert p["verdict"] == "inconclusive", p
    # Noisy differences around 0: every interval straddles 0, so neither way.
    for p in _verdicts(strategy_analysis.analyse(_synthetic(1.0, 1.0, jitter=0.1))).values():
        assert all(d["low"] < 0 < d["high"] for d in p["differences"].values()), p
        assert p["verdict"] == "inconclusive" and p["better"] == [], p


def test_analyse_two_readings_differ(fast_bootstrap):
    """Adaptive windows worse at the short end and better at the long end: lower on
    the grid average and at the largest n; better on the grid average only when
    the long end is where they lose."""
    late = _verdicts(strategy_analysis.analyse(_synthetic((1.3, 0.5, 0.5), (1.3, 0.5, 0.5))))
    early = _verdicts(strategy_analysis.analyse(_synthetic((0.5, 0.5, 1.3), (0.5, 0.5, 1.3))))
    largest = f"largest n = {LENGTHS[-1]}"
    for metric in strategies.METRICS:
        assert late[(metric, "grid average")]["verdict"] == "adaptive lower"
        assert late[(metric, largest)]["verdict"] == "adaptive lower"
        assert early[(metric, "grid average")]["verdict"] == "adaptive lower"
        assert early[(metric, largest)]["verdict"] == "constant lower"
    # The grid average is the mean over the lengths of the paired differences
    # (rms: the constant window's error is about 0.3 at every n).
    d = late[("rms", "grid average")]["differences"][f"k0={K0}: alpha ln n"]["diff"]
    assert d == pytest.approx(0.3 * (0.3 - 0.5 - 0.5) / 3, rel=0.05)


def test_analyse_groups_modes_and_scales(fast_bootstrap):
    pairs = _synthetic(0.5, 0.7) + _synthetic(1.6, 1.3, mode="self", seed=1) \
        + _synthetic(1.6, 1.3, sigma=2.0, seed=2)
    props = strategy_analysis.analyse(pairs)["proposition72"]
    verdicts = {(p["mode"], p["sigma"], p["verdict"]) for p in props}
    assert verdicts == {("cross", 1.0, "adaptive lower"), ("self", 1.0, "constant lower"),
                        ("cross", 2.0, "constant lower")}


# --------------------------------------------------------------------------
# Ledger
# --------------------------------------------------------------------------

LEMMA42 = "Lemma 4.2: score concentration (Parts 1-3)"
T61 = "Theorem 6.1 / E.1: upper bound on the top-k error"
T62 = "Theorem 6.2 / E.2: lower bound on the top-k error"


def _row(suite, claim, verdict):
    return {"suite": suite, "claim": claim, "verdict": verdict, "violations": 3, "checked": 600,
            "ci_high": 0.012, "delta": 0.05, "median_of_cell_medians": 0.4, "worst_ratio": 0.97}


def _results(lemma=None, t61=None, suites=("lemma42", "theorem61"), analysis=None):
    lemma = {"L4.2-P1": "HOLDS", "L4.2-P2": "HOLDS", "L4.2-P3": "HOLDS", "L4.2-P1-wrong": "CAUGHT",
             "L4.2-P3-wrong": "CAUGHT", **(lemma or {})}
    t61 = {"T6.1": "HOLDS", "T6.1-tail": "HOLDS", "T6.1-F": "HOLDS", "T6.1-output": "HOLDS",
           "T6.1-wrong": "CAUGHT", "T6.2": "HOLDS", "T6.2-F": "HOLDS", "T6.2-wrong": "CAUGHT",
           **(t61 or {})}
    verdicts = [_row("lemma42", c, v) for c, v in lemma.items()]
    verdicts += [_row("theorem61", c, v) for c, v in t61.items()]
    results = {"suites": list(suites), "verdicts": [v for v in verdicts if v["suite"] in suites],
               "cells": {}, "rules": rules.record(list(suites) + ["strategies"])}  # a run made today
    if analysis is not None:
        results["analysis"] = {"strategies": analysis}
    return results


def _entries(results):
    return {e["claim"]: e for e in ledger.build(results)}


def test_ledger_bound_verdicts():
    good = _entries(_results())
    assert good[LEMMA42]["verdict"] == "SUPPORTED"
    assert good[T61]["verdict"] == "SUPPORTED" and good[T62]["verdict"] == "SUPPORTED"
    assert "L4.2-P1: 3/600 failures" in good[LEMMA42]["evidence"]
    assert "L4.2-P3-wrong CAUGHT" in good[LEMMA42]["evidence"]
    # A violated claim.
    bad = _entries(_results(lemma={"L4.2-P2": "VIOLATED"}))
    assert bad[LEMMA42]["verdict"] == "NOT SUPPORTED"
    # A planted wrong bound that was not caught: the check has no power.
    missed = _entries(_results(lemma={"L4.2-P3-wrong": "MISSED"}))
    assert missed[LEMMA42]["verdict"] == "NOT SUPPORTED"
    # Theorems 6.1 and 6.2 are judged separately from the same suite.
    split = _entries(_results(t61={"T6.2-F": "VIOLATED"}))
    assert split[T61]["verdict"] == "SUPPORTED" and split[T62]["verdict"] == "NOT SUPPORTED"
    split = _entries(_results(t61={"T6.1-wrong": "MISSED"}))
    assert split[T61]["verdict"] == "NOT SUPPORTED" and split[T62]["verdict"] == "SUPPORTED"


def test_ledger_not_run_and_not_checked():
    entries = _entries(_results(suites=("lemma42",)))
    assert entries[LEMMA42]["verdict"] == "SUPPORTED"
    assert entries[T61]["verdict"] == entries[T62]["verdict"] == "NOT RUN"
    assert entries["Theorem 4.3: attention is naturally sparse"]["verdict"] == "NOT RUN"
    assert entries["Theorem 5.1: attention collapse"]["verdict"] == "NOT RUN"
    figure1 = next(e for c, e in entries.items() if c.startswith("Figure 1"))
    assert figure1["verdict"] == "NOT RUN"
    strategy = next(e for c, e in entries.items() if c.startswith("Section 6.3, Table 1"))
    assert strategy["verdict"] == "NOT RUN" and "strategies" in strategy["evidence"]
    table2 = next(e for c, e in entries.items() if "Table 2" in c)
    assert table2["verdict"] == "NOT CHECKED" and table2["evidence"]
    nothing = _entries({"suites": [], "verdicts": []})
    assert {e["verdict"] for e in nothing.values()} == {"NOT RUN", "NOT CHECKED"}
    text = ledger.markdown(_results(suites=("lemma42",)))
    assert "**NOT RUN**" in text and "**NOT CHECKED**" in text and "**SUPPORTED**" in text


def test_ledger_strategy_claims_from_the_analysis(fast_bootstrap):
    lower = _entries(_results(analysis=strategy_analysis.analyse(_synthetic(0.5, 0.7))))
    props = [e for c, e in lower.items() if c.startswith("Proposition 7.2")]
    assert len(props) == 2 and all(e["verdict"] == "SUPPORTED" for e in props)
    cost = next(e for c, e in lower.items() if c.startswith("Claim 7.1"))
    assert cost["verdict"] == "NOT SUPPORTED"  # the synthetic windows are not cost aligned
    higher = _entries(_results(analysis=strategy_analysis.analyse(_synthetic(1.6, 1.3))))
    props = [e for c, e in higher.items() if c.startswith("Proposition 7.2")]
    assert len(props) == 2 and all(e["verdict"] == "NOT SUPPORTED" for e in props)
    assert next(e for c, e in higher.items() if "Table 2" in c)["verdict"] == "NOT CHECKED"
    # n^C lowest in Table 1 in the first case, not in the second.
    table1 = "Section 6.3 / Table 1: the n^C strategy has the smallest mean error at aligned cost"
    assert lower[table1]["verdict"] == "NOT SUPPORTED"  # alpha ln n (0.5) beats n^0.5 (0.7)
    assert _entries(_results(analysis=strategy_analysis.analyse(_synthetic(0.7, 0.5))))[
        table1]["verdict"] == "SUPPORTED"
    assert higher[table1]["verdict"] == "NOT SUPPORTED"


# --------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------

def test_runner_end_to_end(tiny, fast_bootstrap, tmp_path):
    out = str(tmp_path / "run")
    results = runner.run(["strategies"], "quick", None, out, progress=False)
    cells = strategies.cells("quick")
    assert len(results["cells"]["strategies"]) == len(cells)
    assert results["verdicts"] == []  # no probabilistic claims of its own
    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)
    analysis = saved["analysis"]["strategies"]
    assert {"table1", "slopes", "proposition72", "oracle"} <= set(analysis)
    assert len(analysis["table1"]) == len(st.MODES) * (len(cells[0]["strategies"]) + 1)
    assert len(analysis["proposition72"]) == len(st.MODES) * len(strategies.METRICS) * 2
    assert {o["mode"] for o in analysis["oracle"]} == set(st.MODES)
    report = open(os.path.join(out, "report.md")).read()
    assert "Table 1" in report and "Claims ledger" in report and "Proposition 7.2" in report
    claims = open(os.path.join(out, "claims.md")).read()
    assert claims.startswith("# Claims ledger") and "Proposition 7.2" in claims
    assert "**NOT CHECKED**" in claims
    paths = sorted(f["path"] for f in saved["figures"])
    assert paths == sorted(os.path.join("figures", f"figure2_{m}.png") for m in st.MODES)
    for fig in saved["figures"]:
        assert fig["suite"] == "strategies"
        with open(os.path.join(out, fig["path"]), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"]({fig['path']})" in report
    # The cells are deterministic: run_cell again gives what the runner stored.
    cell, result = saved["cells"]["strategies"][0]["cell"], saved["cells"]["strategies"][0]["result"]
    assert strategies.run_cell(cell) == result


# --------------------------------------------------------------------------
# Each ledger rule of the suite, on both sides of its boundary
# --------------------------------------------------------------------------

def _slope(kind, low, high, metric="rms"):
    return {"kind": kind, "metric": metric, "mode": "cross", "sigma": 1.0, "k0": 16,
            "slope": (low + high) / 2, "low": low, "high": high}


def _ledger_rows(slopes, oracle=None, cost=(1.0, 1.0)):
    analysis = {"slopes": slopes, "table1": [{"cost_ratio": c, "k0": None, "kind": "constant"} for c in cost],
                "proposition72": [], "oracle": oracle or []}
    return {e["claim"].split(":")[0]: e for e in strategy_analysis.ledger_entries(
        {"analysis": {"strategies": analysis}})}


@pytest.mark.parametrize("high, verdict", [(-0.01, "SUPPORTED"), (0.01, "NOT SUPPORTED")])
def test_ledger_decreasing_rule_needs_the_interval_below_zero(high, verdict):
    rows = _ledger_rows([_slope("alpha n^0.5", high - 0.1, high)])
    assert rows["Theorem 6.1"]["verdict"] == verdict


@pytest.mark.parametrize("low, verdict", [(strategy_analysis.PERSIST_SLOPE + 0.01, "SUPPORTED"),
                                          (strategy_analysis.PERSIST_SLOPE - 0.01, "NOT SUPPORTED")])
def test_ledger_persist_rule_needs_the_interval_above_its_threshold(low, verdict):
    rows = _ledger_rows([_slope("constant", low, low + 0.2)])
    assert rows["Theorem 6.2"]["verdict"] == verdict


@pytest.mark.parametrize("low, verdict", [(0.01, "SUPPORTED"), (-0.01, "NOT SUPPORTED")])
def test_ledger_increasing_rule_needs_the_interval_above_zero(low, verdict):
    rows = _ledger_rows([_slope("alpha ln n", low, low + 0.2, metric="frobenius")])
    assert rows["Theorem 6.2 (sketch)"]["verdict"] == verdict


def test_ledger_regimes_follow_the_grouping_rule():
    """One regime per (metric, kind): a failing slope in one regime leaves the other."""
    rows = _ledger_rows([_slope("alpha n^0.5", -0.3, -0.1), _slope("alpha n^0.5", -0.3, -0.1, "output"),
                         _slope("alpha n^0.5", -0.1, 0.1, "output")])
    assert rows["Theorem 6.1"]["verdict"] == "SUPPORTED ONLY IN REGIME rms / alpha n^0.5"


@pytest.mark.parametrize("high, verdict", [(strategy_analysis.ORACLE_SUBLINEAR - 0.01, "SUPPORTED"),
                                           (strategy_analysis.ORACLE_SUBLINEAR + 0.01, "NOT SUPPORTED")])
def test_ledger_sublinear_window_rule(high, verdict):
    oracle = [{"mode": "cross", "sigma": 1.0, "slope": high - 0.05, "low": high - 0.1, "high": high}]
    rows = _ledger_rows([], oracle=oracle)
    assert rows["Title / abstract"]["verdict"] == verdict


@pytest.mark.parametrize("cost, verdict", [((0.91, 1.09), "SUPPORTED"), ((0.89, 1.0), "NOT SUPPORTED"),
                                           ((1.0, 1.11), "NOT SUPPORTED")])
def test_ledger_cost_band_rule(cost, verdict):
    assert _ledger_rows([], cost=cost)["Claim 7.1"]["verdict"] == verdict


def test_ledger_rules_never_support_from_no_evidence():
    rows = _ledger_rows([], cost=())
    for claim in ("Theorem 6.1", "Theorem 6.2", "Title / abstract", "Claim 7.1", "Section 6.3 / Table 1"):
        assert rows[claim]["verdict"] == "NOT CHECKED", claim
