"""Suite ``sharp_laws`` (verify/suites/sharp_laws.py), its analysis
(verify/suites/sharp_analysis.py) and its claims-ledger entries (verify/report/ledger.py).

* The suite draws ``sigma Z`` directly instead of running the full pipeline:
  ``verify.sampling.sample_row_scores`` rows (Gaussian keys, cross mode),
  standardised by their sigma_i and mu_i, are N(0, 1) (KS test, with power
  against a 10% wrong scale) and equal in law to the direct draw.
* ``sample_statistics`` against a NumPy recomputation (extended precision, sort
  based) from the same keys; chunking with padding changes nothing.
* ``run_cell`` (fixed and rem cells, n = 256, 24 seeds): structure, the law
  values are the ``gaussian_laws`` functions, failures of Theorems 4.3 / 5.1
  recounted from the per-seed statistics.
* The analysis rules and the ledger on synthetic inputs whose answer is known,
  planted wrong laws included.
* The runner end to end on a tiny preset, re-run reusing every cell.

Speed: ``_chunk_statistics`` compiles once per (n, chunk shape, kind), a few
seconds each on two cores; the unit cells share one shape.
"""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import sparsity_theory as st
from sparsity_theory import bounds
from sparsity_theory import gaussian_laws as gl
from verify import runner, statistics
from verify.report import ledger
from verify.suites import sharp_analysis, sharp_laws
from verify.sampling import sample_row_scores

# Unit cells: n = 256 with the tiny preset's 24 seeds, so that the end-to-end run
# finds _chunk_statistics compiled for that shape (a compilation is seconds here).
UNIT = {"sigmas": (1.3,), "lengths": (256,), "seeds": 24, "c_grid": (1.0,),
        "rem_lengths": (256,), "rem_seeds": 24}
TINY = {"sigmas": (0.5, 2.0), "lengths": (256, 1024, 4096), "seeds": 24, "c_grid": (0.75, 2.0),
        "rem_lengths": (256, 1024, 4096), "rem_seeds": 24}
REF = np.longdouble


@pytest.fixture(scope="module")
def unit_cells():
    saved = dict(sharp_laws.PRESETS)
    sharp_laws.PRESETS["unit"] = UNIT
    try:
        cells = sharp_laws.cells("unit")
    finally:
        sharp_laws.PRESETS.clear()
        sharp_laws.PRESETS.update(saved)
    fixed = next(c for c in cells if c["kind"] == "fixed")
    rem = next(c for c in cells if c["kind"] == "rem")
    return fixed, rem


@pytest.fixture(scope="module")
def unit_statistics(unit_cells):
    fixed, rem = unit_cells
    return sharp_laws.sample_statistics(fixed), sharp_laws.sample_statistics(rem)


# --------------------------------------------------------------------------
# The direct draw against the full pipeline
# --------------------------------------------------------------------------


def _direct_scores(cell) -> np.ndarray:
    """The suite's draw, reproduced outside jit: ``sigma * N(0, I_n)`` per seed key."""
    keys = jax.random.split(jax.random.PRNGKey(cell["seed_base"]), cell["seeds"])
    z = jax.vmap(lambda k: jax.random.normal(k, (cell["n"],), jnp.float64))(keys)
    return cell["sigma"] * np.asarray(z)


def test_pipeline_rows_are_gaussian_with_their_sigma():
    rows = sample_row_scores(st.Gaussian(1.0), n=512, d=16, mode="cross", seeds=64,
                             seed_base=9100, weights="orthogonal")
    assert rows.scores.shape == (64, 512) and rows.diagonal is None
    assert np.all(rows.sigma > 0) and np.ptp(rows.sigma) > 0  # sigma_i varies with the query
    z = ((rows.scores - rows.mean[:, None]) / rows.sigma[:, None]).ravel()
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # Power: a 10% error in the scale is rejected.
    assert stats.kstest(1.1 * z, "norm").pvalue < 1e-6
    # Equal in law to the suite's direct draw sigma Z (standardised the same way).
    cell = {"seed_base": 9200, "seeds": 64, "n": 512, "sigma": 1.7}
    direct = (_direct_scores(cell) / cell["sigma"]).ravel()
    assert stats.ks_2samp(z, direct).pvalue > 1e-3
    assert stats.kstest(direct, "norm").pvalue > 1e-3


# --------------------------------------------------------------------------
# sample_statistics against a NumPy recomputation
# --------------------------------------------------------------------------


def _reference_statistics(cell) -> dict:
    u = _direct_scores(cell).astype(REF)
    n = cell["n"]
    out = {k: [] for k in ("k_eps", "log_normaliser_offset", "effective", "log_tail",
                           "log_median_entry", "log_max_entry")}
    tail_window = max(1, round(cell.get("tail_fraction", 0.1) * n))
    for row in u:
        m = row.max()
        lse = m + np.log(np.sum(np.exp(row - m)))
        s = np.exp(row - lse)
        asc = np.sort(s)
        below = np.cumsum(asc)  # below[i] = mass of the i + 1 smallest entries
        # tail(k) = mass outside the top k = below[n - k - 1] (0 at k = n).
        tail = np.concatenate([below[::-1][1:], [REF(0)]])  # tail[k - 1] for k = 1..n
        out["k_eps"].append([1 + int(np.argmax(tail <= eps)) for eps in cell["window_eps"]])
        out["log_normaliser_offset"].append(float(lse - np.log(REF(n))))
        out["effective"].append([int(np.sum(s > eps)) for eps in cell.get("effective_eps", [0.5])])
        out["log_tail"].append(float(np.log(tail[tail_window - 1])))
        out["log_median_entry"].append(float(np.log(asc[n // 2 - 1])))
        out["log_max_entry"].append(float(m - lse))
    return {k: np.asarray(v) for k, v in out.items()}


def test_sample_statistics_match_numpy_reference(unit_cells, unit_statistics):
    fixed, rem = unit_cells
    got, got_rem = unit_statistics
    want = _reference_statistics(fixed)
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.shape[0] == fixed["seeds"], name
    np.testing.assert_array_equal(got["k_eps"], want["k_eps"])
    np.testing.assert_array_equal(got["effective"], want["effective"])
    for name in ("log_normaliser_offset", "log_tail", "log_median_entry", "log_max_entry"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # The counts are not degenerate: the comparison can fail.
    assert len(np.unique(got["k_eps"][:, 0])) > 1 and np.all(got["effective"] > 0)
    # rem cells: certified windows only, same draw at the REM sigma.
    assert set(got_rem) == {"k_eps"}
    np.testing.assert_array_equal(got_rem["k_eps"], _reference_statistics(rem)["k_eps"])


def test_sample_statistics_chunking_with_padding(unit_cells, unit_statistics, monkeypatch):
    """40 seeds in chunks of 24 (the shape compiled for the unit cells): the last
    chunk is padded with repeated keys and the padding dropped; every seed's
    windows equal the NumPy reference of its own key."""
    _, rem = unit_cells
    monkeypatch.setattr(sharp_laws, "CHUNK_ELEMENTS", rem["n"] * 24)
    cell = dict(rem, seeds=40)
    chunked = sharp_laws.sample_statistics(cell)
    assert chunked["k_eps"].shape == (40, len(rem["window_eps"]))
    np.testing.assert_array_equal(chunked["k_eps"], _reference_statistics(cell)["k_eps"])
    assert len({tuple(r) for r in chunked["k_eps"][24:]}) > 1  # not a repeated padding key


# --------------------------------------------------------------------------
# run_cell
# --------------------------------------------------------------------------


def test_run_cell_fixed(unit_cells, unit_statistics):
    cell = unit_cells[0]
    s = unit_statistics[0]
    n, sigma, delta = cell["n"], cell["sigma"], cell["delta"]
    r = sharp_laws.run_cell(cell)
    json.dumps(r)  # JSON-ready
    assert r["kind"] == "fixed" and r["n"] == n and r["sigma"] == sigma and r["seeds"] == cell["seeds"]
    assert [w["eps"] for w in r["window"]] == list(sharp_laws.WINDOW_EPS)
    for j, w in enumerate(r["window"]):
        assert w["law"] == pytest.approx(float(gl.window_fraction_law(sigma, w["eps"])), rel=1e-14)
        assert w["mean_fraction"] == pytest.approx(np.mean(s["k_eps"][:, j] / n), rel=1e-12)
        assert w["se"] == pytest.approx(np.std(s["k_eps"][:, j] / n, ddof=1) / math.sqrt(cell["seeds"]),
                                        rel=1e-12)
    for j, e in enumerate(r["effective"]):
        assert e["law"] == pytest.approx(float(gl.effective_entries_law(n, sigma, e["eps"])), rel=1e-14)
        assert e["mean"] == pytest.approx(np.mean(s["effective"][:, j]), rel=1e-12)
        assert e["fraction_positive"] == pytest.approx(np.mean(s["effective"][:, j] > 0))
    assert r["normaliser"]["law"] == pytest.approx(0.5 * sigma**2)
    assert r["normaliser"]["mean_offset"] == pytest.approx(np.mean(s["log_normaliser_offset"]), rel=1e-12)
    assert r["tail"]["fraction"] == cell["tail_fraction"]
    assert r["tail"]["law"] == pytest.approx(math.exp(float(gl.log_tail_mass_law(0.1, sigma))), rel=1e-14)
    assert r["tail"]["mean"] == pytest.approx(np.mean(np.exp(s["log_tail"])), rel=1e-12)

    k = n // 2
    t43, t51 = r["theorem43"], r["theorem51"]
    bound43 = float(bounds.small_entry_log_bound(sigma, n, k, delta / 2, delta / 2))
    assert t43["k"] == k and t43["bound"] == pytest.approx(bound43, rel=1e-14)
    p = bounds.count_exceedance_probability(n, k, delta)
    assert t43["gaussian"] == pytest.approx(float(gl.small_entry_log_bound_gaussian(sigma, n, p)), rel=1e-14)
    assert t43["law"] == pytest.approx(float(gl.log_kth_smallest_entry_law(n, k, sigma)), rel=1e-14)
    assert t43["failures"] == int(np.sum(s["log_median_entry"] > bound43))
    assert t43["measured_quantile"] == pytest.approx(np.quantile(s["log_median_entry"], 1 - delta))
    bound51 = float(bounds.largest_entry_log_bound(sigma, n, delta / 2, delta / 2))
    assert t51["bound"] == pytest.approx(bound51, rel=1e-14)
    assert t51["gaussian"] == pytest.approx(float(gl.largest_entry_log_quantile_gaussian(sigma, n, delta)),
                                            rel=1e-14)
    assert t51["failures"] == int(np.sum(s["log_max_entry"] > bound51))
    assert t51["measured_quantile"] == pytest.approx(np.quantile(s["log_max_entry"], 1 - delta))
    for value in (t43["measured_quantile"], t43["measured_mean"], t51["measured_quantile"],
                  t51["measured_mean"], r["normaliser"]["mean_offset"], r["tail"]["mean"]):
        assert math.isfinite(value)
    # Sanity of the measured quantities against the laws at this small n.
    assert t43["gaussian"] < t43["bound"] and t51["gaussian"] < t51["bound"]
    assert abs(r["normaliser"]["mean_offset"] - 0.5 * sigma**2) < 5 * r["normaliser"]["se"] + 0.05


def test_run_cell_fixed_failures_are_counted(unit_cells, monkeypatch):
    """The failure counts react to the bound: a bound below every seed's entry
    fails on every seed (the count is not a constant)."""
    cell = unit_cells[0]
    monkeypatch.setattr(st.bounds, "small_entry_log_bound", lambda *a, **k: np.asarray(-1e9))
    monkeypatch.setattr(st.bounds, "largest_entry_log_bound", lambda *a, **k: np.asarray(-1e9))
    r = sharp_laws.run_cell(cell)
    assert r["theorem43"]["failures"] == cell["seeds"] and r["theorem51"]["failures"] == cell["seeds"]


def test_run_cell_rem(unit_cells, unit_statistics):
    cell = unit_cells[1]
    r = sharp_laws.run_cell(cell)
    json.dumps(r)
    n, c = cell["n"], cell["c"]
    assert r["kind"] == "rem" and r["n"] == n and r["c"] == c
    assert r["sigma"] == pytest.approx(c * math.sqrt(math.log(n)), rel=1e-14)
    assert r["window_eps"] == list(sharp_laws.WINDOW_EPS)
    k = np.asarray(r["k_eps"])
    assert k.shape == (len(cell["window_eps"]), cell["seeds"])
    np.testing.assert_array_equal(k, unit_statistics[1]["k_eps"].T)
    assert np.all((k >= 1) & (k <= n))
    for j, eps in enumerate(cell["window_eps"]):
        assert r["law"][j] == pytest.approx(float(gl.window_size_law(n, r["sigma"], eps)), rel=1e-14)
        # Smaller eps keeps more.
        if j:
            assert np.all(k[j] >= k[j - 1])


def test_cells_and_ids():
    cells = sharp_laws.cells("quick")
    p = sharp_laws.PRESETS["quick"]
    fixed = [c for c in cells if c["kind"] == "fixed"]
    rem = [c for c in cells if c["kind"] == "rem"]
    assert len(fixed) == len(p["sigmas"]) * len(p["lengths"])
    assert len(rem) == len(p["c_grid"]) * len(p["rem_lengths"])
    ids = [sharp_laws.cell_id(c) for c in cells]
    assert len(set(ids)) == len(ids)
    for c in rem:
        assert c["sigma"] == pytest.approx(float(gl.rem_score_scale(c["c"], c["n"])))
    assert sharp_laws.cells("quick", seeds=7)[0]["seeds"] == 7
    assert sharp_laws.summarise([]) == []


@pytest.mark.parametrize("preset", ("quick", "paper"))
def test_cells_draw_independent_scores(preset):
    bases = [c["seed_base"] for c in sharp_laws.cells(preset)]
    assert len(set(bases)) == len(bases)


# --------------------------------------------------------------------------
# Analysis rules on synthetic inputs
# --------------------------------------------------------------------------


def _rows(rels, se=1e-4, lengths=(256, 1024, 4096, 16384)):
    return [{"n": n, "rel": r, "rel_se": se} for n, r in zip(lengths, rels)]


def test_law_check_rule():
    ok = sharp_analysis._law_check(_rows([0.2, 0.05, 0.01, 0.001]))
    assert ok["holds"] and ok["close"] and ok["shrinks"]
    assert ok["n_first"] == 256 and ok["n_last"] == 16384 and ok["rel_last"] == 0.001
    constant = sharp_analysis._law_check(_rows([0.1, 0.1, 0.1, 0.1]))
    assert not constant["close"] and not constant["holds"]
    negative = sharp_analysis._law_check(_rows([-0.1, -0.1, -0.1, -0.1]))
    assert not negative["holds"]
    # Close at the largest n but growing from (nearly) exact: not a law that converges.
    growing = sharp_analysis._law_check(_rows([0.0, 0.005, 0.01, 0.015]))
    assert growing["close"] and not growing["shrinks"] and not growing["holds"]
    # A large standard error widens the tolerance: 3% with SE 1% is close.
    noisy = sharp_analysis._law_check(_rows([0.03, 0.03], se=0.01, lengths=(256, 4096)))
    assert noisy["holds"]


def _fixed_result(sigma, n, rel_window, rel_offset=0.0, rel_tail=0.0):
    """A synthetic fixed-cell result whose measured means are the laws times (1 + rel)."""
    window = [{"eps": eps, "mean_fraction": float(gl.window_fraction_law(sigma, eps)) * (1 + rel_window),
               "se": 1e-5, "law": float(gl.window_fraction_law(sigma, eps))} for eps in (0.1, 0.01)]
    tail_law = math.exp(float(gl.log_tail_mass_law(0.1, sigma)))
    return {"kind": "fixed", "n": n, "sigma": sigma, "seeds": 100, "delta": 0.05, "window": window,
            "normaliser": {"mean_offset": 0.5 * sigma**2 + rel_offset, "se": 1e-4, "law": 0.5 * sigma**2},
            "effective": [{"eps": 1e-3, "mean": 1.0, "se": 0.1, "fraction_positive": 0.5, "law": 1.0}],
            "tail": {"fraction": 0.1, "mean": tail_law * (1 + rel_tail), "se": 1e-5, "law": tail_law}}


def test_window_and_other_laws_on_synthetic_results():
    lengths = (256, 1024, 4096)
    good = [_fixed_result(1.0, n, rel) for n, rel in zip(lengths, (0.05, 0.01, 0.002))]
    out = sharp_analysis.window_laws(good)
    assert [(w["sigma"], w["eps"]) for w in out] == [(1.0, 0.01), (1.0, 0.1)]
    for w in out:
        assert w["check"]["holds"] and not w["wrong_check"]["holds"]
        assert w["wrong_law"] == pytest.approx(float(gl.window_fraction_law(0.5, w["eps"])))
        assert [r["n"] for r in w["rows"]] == list(lengths)
    bad = [_fixed_result(1.0, n, 0.1) for n in lengths]
    assert not any(w["check"]["holds"] for w in sharp_analysis.window_laws(bad))

    other = sharp_analysis.other_laws([_fixed_result(1.0, n, 0.0, rel_offset=d, rel_tail=d)
                                       for n, d in zip(lengths, (0.03, 0.005, 0.0))])
    (o,) = other
    assert o["normaliser_check"]["holds"] and o["tail_check"]["holds"]
    assert not o["normaliser_wrong_check"]["holds"]  # Jensen's offset 0 is rejected at sigma = 1
    drifting = sharp_analysis.other_laws([_fixed_result(1.0, n, 0.0, rel_offset=0.1, rel_tail=-0.1)
                                          for n in lengths])
    assert not drifting[0]["normaliser_check"]["holds"] and not drifting[0]["tail_check"]["holds"]


REM_LENGTHS = (2**8, 2**10, 2**12, 2**14, 2**16)


def _rem_results(c, k_of_n=None, seeds=32, noise=1e-3, seed=0):
    """Synthetic rem results: per seed, k_eps is the finite-n law (or k_of_n(n, eps))
    times (1 + tiny noise), rounded up (a window is the smallest integer that
    reaches the level)."""
    rng = np.random.default_rng(seed)
    out = []
    for n in REM_LENGTHS:
        sigma = float(gl.rem_score_scale(c, n))
        law = [float(gl.window_size_law(n, sigma, eps)) for eps in sharp_laws.WINDOW_EPS]
        # The continuous law before its floor at one entry.
        continuous = [n * float(gl.window_fraction_law(sigma, eps)) for eps in sharp_laws.WINDOW_EPS]
        centre = continuous if k_of_n is None else [k_of_n(n, eps) for eps in sharp_laws.WINDOW_EPS]
        k = [np.maximum(1, np.ceil(m * (1 + noise * rng.standard_normal(seeds)))).astype(int).tolist()
             for m in centre]
        out.append({"kind": "rem", "n": n, "c": c, "sigma": sigma, "window_eps": list(sharp_laws.WINDOW_EPS),
                    "k_eps": k, "law": law})
    return out


@pytest.fixture
def fast_bootstrap(monkeypatch):
    monkeypatch.setattr(statistics, "BOOTSTRAP", 100)


def test_phase_diagram_on_the_law_itself(fast_bootstrap):
    phase = sharp_analysis.phase_diagram(_rem_results(1.0) + _rem_results(2.0)
                                         + _rem_results(gl.REM_COLLAPSE_C))
    by = {(round(p["c"], 6), p["eps"]): p for p in phase}
    assert len(phase) == 3 * len(sharp_laws.WINDOW_EPS)
    for eps in sharp_laws.WINDOW_EPS:
        p = by[(1.0, eps)]
        assert p["regime"] == "sparse" and p["limit"] == pytest.approx(0.5)
        assert p["law_agrees"], p
        assert not p["wrong_law_agrees"], p  # the planted c / sqrt 2 law is rejected
        assert abs(p["fitted"]["slope"] - p["law_slope"]) < 0.01
        assert p["toward_limit"]  # the law's local slopes fall toward 1 - c^2/2
        assert not p["collapsed"]
        assert abs(p["rel_last"]) < 0.01
        assert p["lengths"] == list(REM_LENGTHS)
        assert by[(round(gl.REM_COLLAPSE_C, 6), eps)]["regime"] == "boundary"
        q = by[(2.0, eps)]
        assert q["regime"] == "collapse" and q["limit"] == 0.0
    # c = 2, eps = 0.1: the law is the floor k = 1 over the whole grid: flat, collapsed.
    flat = by[(2.0, 0.1)]
    assert flat["mean_k"] == [1.0] * len(REM_LENGTHS) and flat["collapsed"]


def test_phase_diagram_rejects_a_wrong_measurement_and_judges_the_trend(fast_bootstrap):
    # Windows growing like n^0.9 at c = 1: the law (slope ~0.65-0.8) must not agree.
    (p, _) = sharp_analysis.phase_diagram(_rem_results(1.0, lambda n, eps: n**0.9))
    assert p["fitted"]["slope"] == pytest.approx(0.9, abs=0.01)
    assert not p["law_agrees"] and not p["collapsed"]
    # Local slopes moving away from the limit 0.5 (0.6 -> 0.9) and toward it (0.9 -> 0.6).
    def piecewise(slopes):
        def k(n, eps):
            i = REM_LENGTHS.index(n)
            return 1000.0 * math.exp(sum(s * math.log(4) for s in slopes[:i]))
        return k
    away = sharp_analysis.phase_diagram(_rem_results(1.0, piecewise([0.6, 0.7, 0.8, 0.9])))[0]
    toward = sharp_analysis.phase_diagram(_rem_results(1.0, piecewise([0.9, 0.8, 0.7, 0.6])))[0]
    np.testing.assert_allclose(away["local_slopes"], [0.6, 0.7, 0.8, 0.9], atol=0.01)
    assert not away["toward_limit"] and toward["toward_limit"]
    # A flat window at c = 1 is "condensed" by the rule (no growth detected).
    flat = sharp_analysis.phase_diagram(_rem_results(1.0, lambda n, eps: 3.0, noise=0.0))[0]
    assert flat["collapsed"] and flat["fitted"]["high"] == pytest.approx(0.0, abs=1e-12)
    # A window growing like n^0.05: growth detected, not condensed.
    slow = sharp_analysis.phase_diagram(_rem_results(2.0, lambda n, eps: 5.0 * n**0.05))[0]
    assert slow["fitted"]["low"] > 0 and not slow["collapsed"]


def test_slope_band_rule_on_both_sides_of_its_edges():
    fit = {"slope": 0.64, "low": 0.63, "high": 0.65}
    assert sharp_analysis.band_meets(fit, (0.649, 0.633))       # band inside
    assert sharp_analysis.band_meets(fit, (0.65, 0.70))         # touches the upper end
    assert sharp_analysis.band_meets(fit, (0.60, 0.63))         # touches the lower end
    assert not sharp_analysis.band_meets(fit, (0.6501, 0.70))   # just above
    assert not sharp_analysis.band_meets(fit, (0.60, 0.6299))   # just below


def test_drift_rule_on_both_sides():
    falling = {"curvature": -0.01, "low": -0.02, "high": -1e-6}
    rising = {"curvature": 0.01, "low": 1e-6, "high": 0.02}
    unclear = {"curvature": -0.01, "low": -0.02, "high": 1e-6}
    # Above the limit the local exponent must fall, below it rise; 0 inside the interval: no drift.
    assert sharp_analysis.drifts_toward(falling, 0.8, 0.5)
    assert not sharp_analysis.drifts_toward(rising, 0.8, 0.5)
    assert not sharp_analysis.drifts_toward(unclear, 0.8, 0.5)
    assert sharp_analysis.drifts_toward(rising, 0.3, 0.5)
    assert not sharp_analysis.drifts_toward(falling, 0.3, 0.5)
    assert not sharp_analysis.drifts_toward(falling, 0.5, 0.5)


def test_condensed_rule_on_both_sides():
    assert sharp_analysis.condensed({"slope": 0.01, "low": 0.0, "high": 0.02})
    assert sharp_analysis.condensed({"slope": 0.01, "low": -0.01, "high": 0.03})
    assert not sharp_analysis.condensed({"slope": 0.02, "low": 1e-6, "high": 0.04})


def test_loglog_curvature_recovers_a_known_curvature(fast_bootstrap):
    lengths = np.array(REM_LENGTHS, dtype=float)
    x = np.log(lengths) - np.log(lengths).mean()
    rng = np.random.default_rng(3)
    for q in (-0.02, 0.0, 0.03):
        mean = np.exp(1.0 + 0.7 * x + q * x**2)
        values = mean[:, None] * (1 + 1e-3 * rng.standard_normal((len(lengths), 64)))
        fit = statistics.loglog_curvature(lengths, values)
        assert fit["curvature"] == pytest.approx(q, abs=1e-3)
        assert fit["low"] <= q <= fit["high"] or abs(fit["curvature"] - q) < 1e-3
    with pytest.raises(ValueError, match="3 lengths"):
        statistics.loglog_curvature(lengths[:2], np.ones((2, 4)))


def test_quenched_reading_of_the_window_law():
    lengths = np.array([2.0**8, 2.0**16, 2.0**40, 2.0**200])
    sigma = np.asarray(gl.rem_score_scale(1.0, lengths))
    level = sharp_analysis._quenched_eps(lengths, sigma, 0.1)
    # Below eps (the truncated normaliser is smaller), rising to eps for c < sqrt 2.
    assert np.all(level < 0.1) and np.all(np.diff(level) > 0) and level[-1] == pytest.approx(0.1, rel=1e-3)
    # At c = 1 the quenched window is larger and grows more slowly over a preset grid.
    grid = np.array(REM_LENGTHS, dtype=float)
    annealed = sharp_analysis._law_slope(grid, 1.0, 0.1)
    quenched = sharp_analysis._law_slope(grid, 1.0, 0.1, quenched=True)
    assert quenched < annealed and annealed - quenched < 0.05
    low, high = sharp_analysis.law_band(grid, 1.0, 0.1)
    assert low <= quenched < annealed <= high and high - low < 0.05


# --------------------------------------------------------------------------
# Ledger entries
# --------------------------------------------------------------------------

HOLDS = sharp_analysis._law_check(_rows([0.05, 0.001]))
FAILS = sharp_analysis._law_check(_rows([0.1, 0.1]))


def _synthetic_analysis(window=(True, True), planted_window=(False, False), other=(True, True),
                        jensen=(False, False), phase_agrees=(True, True), planted_phase=(False, False),
                        collapsed=True, drift=(True, True)):
    assert HOLDS["holds"] and not FAILS["holds"]
    sigmas = (0.5, 2.0)
    a = {"window_laws": [{"sigma": s, "eps": 0.1, "check": HOLDS if ok else FAILS,
                          "wrong_check": HOLDS if wrong else FAILS}
                         for s, ok, wrong in zip(sigmas, window, planted_window)],
         "other_laws": [{"sigma": s, "normaliser_check": HOLDS if ok else FAILS, "tail_check": HOLDS,
                         "normaliser_wrong_check": HOLDS if wrong else FAILS}
                        for s, ok, wrong in zip(sigmas, other, jensen)]}
    phase = []
    for c, agrees, planted, toward in zip((0.75, 1.0), phase_agrees, planted_phase, drift):
        phase.append({"c": c, "eps": 0.1, "regime": "sparse", "fitted": {"slope": 0.6, "low": 0.55, "high": 0.65},
                      "law_slope": 0.6, "law_band": [0.6, 0.59], "wrong_law_slope": 0.8,
                      "wrong_law_band": [0.8, 0.79], "limit": 1 - c**2 / 2,
                      "curvature": {"curvature": -0.01, "low": -0.02, "high": -0.001 if toward else 0.001},
                      "law_curvature": -0.01, "local_slopes": [0.7, 0.6], "law_local_slopes": [0.72, 0.61],
                      "lengths": [256, 4096], "mean_k": [10.0, 100.0],
                      "rel_last": 0.01, "law_agrees": agrees, "wrong_law_agrees": planted,
                      "toward_limit": toward, "collapsed": False})
    phase.append({"c": 2.0, "eps": 0.1, "regime": "collapse",
                  "fitted": {"slope": 0.0, "low": -0.01 if collapsed else 0.1, "high": 0.3},
                  "curvature": {"curvature": -0.01, "low": -0.02, "high": -0.001}, "law_curvature": 0.0,
                  "law_slope": 0.0, "law_band": [0.0, 0.1], "wrong_law_slope": 0.2,
                  "wrong_law_band": [0.2, 0.3], "limit": 0.0, "local_slopes": [0.0, 0.0],
                  "law_local_slopes": [0.0, 0.0],
                  "lengths": [256, 4096], "mean_k": [1.0, 1.0], "rel_last": 0.0, "law_agrees": True,
                  "wrong_law_agrees": False, "toward_limit": False, "collapsed": collapsed})
    a["phase"] = phase
    return a


ROWS = {"window": "Sharp law (THEORY_NOTES", "other": "Sharp laws:", "rem": "Sharp law, REM",
        "title": "Title in the REM regime", "drift": "REM exponent", "condensed": "Theorem 5.1 Part 2"}


def _verdicts(a):
    entries = sharp_analysis.sharp_law_entries(a)
    assert len(entries) == 6
    out = {key: [e["verdict"] for e in entries if e["claim"].startswith(start)] for key, start in ROWS.items()}
    assert all(len(v) == 1 for v in out.values()), out
    return {key: v[0] for key, v in out.items()}


def test_ledger_all_supported():
    v = _verdicts(_synthetic_analysis())
    assert set(v.values()) == {"SUPPORTED"}, v


def test_ledger_supported_only_in_regime():
    v = _verdicts(_synthetic_analysis(window=(True, False), other=(False, True),
                                      phase_agrees=(False, True), collapsed=False, drift=(True, False)))
    assert v["window"] == "SUPPORTED ONLY IN REGIME sigma=0.5 eps=0.1"
    assert v["other"] == "SUPPORTED ONLY IN REGIME sigma=2"
    assert v["rem"] == "SUPPORTED ONLY IN REGIME c=1 eps=0.1"
    assert v["drift"] == "SUPPORTED ONLY IN REGIME c=0.75 eps=0.1"
    assert v["condensed"] == "NOT SUPPORTED"
    # Nothing fails: a failing regime of one law does not leak into the others.
    assert v["title"] == "SUPPORTED"


def test_ledger_regime_with_accepted_planted_law_is_not_supported():
    v = _verdicts(_synthetic_analysis(planted_window=(False, True), jensen=(True, True),
                                      planted_phase=(True, False)))
    assert v["window"] == "SUPPORTED ONLY IN REGIME sigma=0.5 eps=0.1"
    assert v["other"] == "NOT SUPPORTED"
    assert v["rem"] == "SUPPORTED ONLY IN REGIME c=1 eps=0.1"
    entries = sharp_analysis.sharp_law_entries(_synthetic_analysis(planted_window=(False, True)))
    assert "accepted (no power)" in entries[0]["evidence"]


def test_ledger_without_the_suite_says_not_run():
    entries = ledger.build({"suites": [], "analysis": {}})
    (sharp,) = [e for e in entries if "Sharp Gaussian laws" in e["claim"]]
    assert sharp["verdict"] == "NOT RUN"


# --------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------


def test_runner_end_to_end_tiny_preset(monkeypatch, tmp_path):
    """The tiny preset through the runner, report, figures and ledger; a re-run
    reuses every cell.

    ``gaussian_laws.collapse_length_law`` evaluates ``log_phibar`` op by op about
    400 times a call (1-3 s each here) and the analysis calls it 4 times, twice
    per run (``figures`` re-runs ``analyse``): 20 s of a 45 s run. ``log_phibar``
    is jitted here (same computation, compiled once: 0.05 s a call)."""
    monkeypatch.setitem(sharp_laws.PRESETS, "tiny", TINY)
    monkeypatch.setattr(gl, "log_phibar", jax.jit(gl.log_phibar))
    out = str(tmp_path / "run")
    results = runner.run(["sharp_laws"], "tiny", None, out, progress=False)
    cells = sharp_laws.cells("tiny")
    assert len(cells) == 12
    assert len(results["cells"]["sharp_laws"]) == len(cells) and results["cells_reused"] == 0
    assert results["verdicts"] == []

    with open(os.path.join(out, "results.json")) as f:
        saved = json.load(f)
    a = saved["analysis"]["sharp_laws"]
    assert {"window_laws", "other_laws", "bounds", "phase", "rules"} <= set(a)
    assert len(a["window_laws"]) == len(TINY["sigmas"]) * len(sharp_laws.WINDOW_EPS)
    assert len(a["phase"]) == len(TINY["c_grid"]) * len(sharp_laws.WINDOW_EPS)
    assert {p["regime"] for p in a["phase"]} == {"sparse", "collapse"}
    for w in a["window_laws"]:
        assert [r["n"] for r in w["rows"]] == list(TINY["lengths"])
        assert not w["wrong_check"]["holds"]  # the planted half-tilt law is rejected even here
    for p in a["phase"]:
        assert p["lengths"] == list(TINY["rem_lengths"])
        assert all(math.isfinite(x) for x in (p["fitted"]["slope"], p["law_slope"]))

    report = open(os.path.join(out, "report.md")).read()
    for heading in ("## Suite `sharp_laws`: analysis",
                    "### Window law k_eps / n → Phibar(sigma + Phi^{-1}(eps)) (fixed sigma)",
                    "### Normaliser, tail mass and effective entries",
                    "### The paper's bounds against the sharp laws",
                    "### Phase diagram: k_eps ~ n^C at sigma = c sqrt(ln n)"):
        assert heading in report, heading
    names = sorted(os.path.basename(f["path"]) for f in saved["figures"])
    assert names == ["bounds_vs_sharp_laws.png", "phase_diagram.png", "sharp_window_law.png"]
    for f in saved["figures"]:
        assert f["suite"] == "sharp_laws" and f["caption"]
        assert os.path.getsize(os.path.join(out, f["path"])) > 1000, f["path"]
        assert f"]({f['path']})" in report  # embedded in the report

    claims = open(os.path.join(out, "claims.md")).read()
    assert claims.startswith("# Claims ledger")
    for claim in ("Sharp law (THEORY_NOTES, beyond the paper): k_eps / n",
                  "Sharp laws: normaliser ln n + sigma^2/2",
                  "Sharp law, REM scaling sigma = c sqrt(ln n)",
                  "Title in the REM regime", "REM exponent (ours)",
                  "Theorem 5.1 Part 2 as THEORY_NOTES read it"):
        assert claim in claims, claim
    assert "**NOT RUN**" in claims  # the other suites

    again = runner.run(["sharp_laws"], "tiny", None, out, progress=False)
    assert again["cells_reused"] == len(cells)
    assert again["analysis"]["sharp_laws"]["phase"] == json.loads(json.dumps(a["phase"]))


@pytest.mark.parametrize("rel_last, close", [(sharp_analysis.LAW_TOLERANCE - 1e-4, True),
                                             (sharp_analysis.LAW_TOLERANCE + 1e-4, False),
                                             (-sharp_analysis.LAW_TOLERANCE - 1e-4, False)])
def test_law_check_tolerance_on_both_sides(rel_last, close):
    """The 2% + 2 SE rule at its boundary (SE 0 here), above and below the law."""
    check = sharp_analysis._law_check(_rows([0.5, rel_last], se=0.0, lengths=(256, 4096)))
    assert check["close"] is close and check["shrinks"]
