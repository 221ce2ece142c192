"""The NumPy reference (verify/numpy_reference.py) and the benchmark driver (verify/bench/)."""

import json

import numpy as np
import pytest

import sparsity_theory as st
from verify import bench
from verify.bench import render
from verify.numpy_reference import reference_rows, top_k_sorted

WINDOWS = (1, 3, 8, 40)
EPS = (1e-2, 1e-3, 1e-30)
N, M, D = 40, 11, 4


def _inputs(case: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    if case == "continuous":
        q, k, scale = rng.standard_normal((M, D)), rng.standard_normal((N, D)), 1.0
    elif case == "ties":  # integer scores: many ties, also across the top-k boundary
        q = rng.integers(-1, 2, (M, D)).astype(float)
        k = rng.integers(-1, 2, (N, D)).astype(float)
        scale = 1.0
    elif case == "tiny-tails":  # large scale: tails far below the float64 epsilon
        q = rng.integers(-2, 3, (M, D)).astype(float)
        k = rng.integers(-2, 3, (N, D)).astype(float)
        scale = 60.0
    else:
        raise ValueError(case)
    return q, k, rng.standard_normal((N, 3)), scale


def _assert_agree(engine_stats, ref, max_window, rtol=1e-12):
    for name in ref._fields:
        a, b = getattr(engine_stats, name), getattr(ref, name)
        if b is None:
            assert a is None, name
            continue
        a = np.asarray(a)
        if name == "certified_window":
            a = np.minimum(a, max_window + 1)
        if name in ("num_small", "certified_window"):
            np.testing.assert_array_equal(a, b, err_msg=name)
            continue
        np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), err_msg=name)
        fin = np.isfinite(b)
        np.testing.assert_array_equal(a[~fin], b[~fin], err_msg=name)
        np.testing.assert_allclose(a[fin], b[fin], rtol=rtol, atol=rtol, err_msg=name)


_EVALUATED = {}


def _evaluate(case):
    """evaluate_rows with values, once per case (one compilation for all cases:
    without values its other fields are the same, so the values=None reference
    is checked against them too)."""
    if case not in _EVALUATED:
        q, k, v, scale = _inputs(case)
        _EVALUATED[case] = st.evaluate_rows(q, k, v, windows=WINDOWS, eps=EPS, scale=scale,
                                            block_size=4)
    return _EVALUATED[case]


@pytest.mark.parametrize("with_values", [False, True])
@pytest.mark.parametrize("case", ["continuous", "ties", "tiny-tails"])
def test_reference_matches_evaluate_rows(case, with_values):
    q, k, v, scale = _inputs(case)
    got = _evaluate(case)
    if not with_values:
        v = None
        got = got._replace(log_output_error=None)
    ref = reference_rows(q, k, v, windows=WINDOWS, eps=EPS, scale=scale, block_rows=3)
    assert ref.log_tail_mass.shape == (M, len(WINDOWS))
    assert ref.num_small.shape == (M, len(EPS))
    if case == "tiny-tails":
        assert np.min(ref.log_tail_mass) < -200  # tails below 1e-87: kept exactly
    _assert_agree(got, ref, max(WINDOWS))


@pytest.mark.skipif(not hasattr(st, "stream_rows"), reason="stream_rows not there yet")
def test_reference_matches_stream_rows():
    q, k, v, scale = _inputs("ties", seed=1)
    got = st.stream_rows(q, k, v, windows=WINDOWS, eps=EPS, scale=scale)
    ref = reference_rows(q, k, v, windows=WINDOWS, eps=EPS, scale=scale)
    _assert_agree(got, ref, max(WINDOWS), rtol=1e-10)


def test_reference_float32_stays_float32():
    q, k, v, _ = _inputs("continuous")
    ref = reference_rows(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32),
                         windows=(1, 4), eps=(1e-2,))
    assert ref.log_tail_mass.dtype == np.float32
    assert ref.log_output_error.dtype == np.float32
    ref64 = reference_rows(q, k, v, windows=(1, 4), eps=(1e-2,))
    np.testing.assert_allclose(ref.log_tail_mass, ref64.log_tail_mass, rtol=1e-4, atol=1e-4)


def test_top_k_sorted_ties_to_lower_index():
    u = np.array([[3.0, 1.0, 3.0, 3.0, 0.0],
                  [0.0, 2.0, 2.0, 5.0, 2.0],
                  [1.0, 1.0, 1.0, 1.0, 1.0]])
    idx, nxt = top_k_sorted(u, 2)
    np.testing.assert_array_equal(idx, [[0, 2], [3, 1], [0, 1]])
    np.testing.assert_array_equal(nxt, [3.0, 2.0, 1.0])
    idx, nxt = top_k_sorted(u, 5)
    np.testing.assert_array_equal(idx[1], [3, 1, 2, 4, 0])
    assert np.all(nxt == -np.inf)


def test_reference_rejects_bad_arguments():
    q, k, v, _ = _inputs("continuous")
    with pytest.raises(ValueError):
        reference_rows(q, k, windows=(N + 1,))
    with pytest.raises(ValueError):
        reference_rows(q, k, eps=(0.0,))
    with pytest.raises(ValueError):
        reference_rows(q, k[:, :2])


def _statuses(targets):
    return {t["id"]: t["status"] for t in targets}


def test_targets_cpu():
    per_n = [
        dict(n=1024, pipeline_s=1.0, matmul_s=0.1, numpy_s=1.6),     # 1.6x NumPy's speed
        dict(n=4096, pipeline_s=1.0, matmul_s=0.1, numpy_s=1.4),     # 1.4x: below 1.5
        dict(n=16384, pipeline_s=2.0, matmul_s=0.5, numpy_s=3.0),    # exactly 1.5 and 4x: met
        dict(n=65536, pipeline_s=4.1, matmul_s=1.0, numpy_s=None),   # 4.1x the matmul
        dict(n=65536, engine="evaluate_rows", pipeline_s=1.0, matmul_s=1.0, numpy_s=2.0),
    ]
    selection = [dict(n=1024, float64_selection_per_s=5.0, float32_top_k_per_s=10.0),  # exactly 1/2
                 dict(n=4096, float64_selection_per_s=4.9, float32_top_k_per_s=10.0)]
    out = _statuses(bench.evaluate_targets(
        per_n, dict(n=65536, rows=65536, peak_bytes=3.9e9),
        dict(n=2**20, rows=256, seconds_per_seed=59.0), "cpu", selection))
    assert out == {
        "numpy-speed-n1024": "MET", "numpy-speed-n4096": "NOT MET",
        "numpy-speed-n16384": "MET", "matmul-factor-n16384": "MET",
        "numpy-speed-n65536": "NOT MEASURED", "matmul-factor-n65536": "NOT MET",
        "evaluate_rows-numpy-speed-n65536": "MET", "evaluate_rows-matmul-factor-n65536": "MET",
        "float64-selection-n1024": "MET", "float64-selection-n4096": "NOT MET",
        "peak-memory": "MET", "sampled-rows": "MET",
    }
    out = _statuses(bench.evaluate_targets(
        [], dict(n=65536, rows=65536, peak_bytes=4.1e9),
        dict(n=2**20, rows=256, seconds_per_seed=60.0), "cpu"))
    assert out == {"peak-memory": "NOT MET", "sampled-rows": "NOT MET"}
    out = _statuses(bench.evaluate_targets(
        [], dict(n=65536, rows=65536, peak_bytes=None),
        dict(n=2**20, rows=256, seconds_per_seed=None), "cpu"))
    assert out == {"peak-memory": "NOT MEASURED", "sampled-rows": "NOT MEASURED"}


def test_targets_gpu_judge_matmul_at_every_n():
    per_n = [dict(n=1024, pipeline_s=3.0, matmul_s=1.0, numpy_s=0.1),
             dict(n=65536, pipeline_s=3.1, matmul_s=1.0, numpy_s=0.1)]
    selection = [dict(n=1024, float64_selection_per_s=1.0, float32_top_k_per_s=10.0)]
    targets = bench.evaluate_targets(per_n, dict(n=65536, rows=65536, peak_bytes=1e12), None, "gpu",
                                     selection)
    assert _statuses(targets) == {"matmul-factor-n1024": "MET", "matmul-factor-n65536": "NOT MET"}
    assert targets[1]["measured"] == 3.1


def test_peak_flops_lookup():
    assert bench.peak_flops("NVIDIA H100 80GB HBM3")["name"] == "H100"
    assert bench.peak_flops("NVIDIA H100 PCIe")["name"] == "H100 PCIe"
    assert bench.peak_flops("NVIDIA H200")["name"] == "H200"
    assert bench.peak_flops("NVIDIA H200 NVL")["name"] == "H200 NVL"
    assert bench.peak_flops("cpu") is None


def test_main_quick(tmp_path):
    docs = tmp_path / "bench.md"
    assert bench.main(["--quick", "--out", str(tmp_path), "--docs", str(docs)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())
    for key in ("schema", "command", "config", "engine", "machine", "provenance", "sizes",
                "all_rows", "sampled", "targets", "all_targets_met", "total_s"):
        assert key in result, key
    assert result["engine"] in ("stream_rows", "evaluate_rows")
    assert [s["n"] for s in result["sizes"]] == list(bench.QUICK["sizes"])
    for s in result["sizes"]:
        for part in ("pipeline", "matmul", "numpy", "ratios", "check"):
            assert part in s
        assert s["pipeline"]["rows_per_s"] > 0 and s["matmul"]["gflops"] > 0
        assert s["check"]["float64"]["agree"]
        assert s["check"]["max_abs_diff_log_tail"] < 1e-3
        if result["engine"] == "stream_rows":  # the dense engine side by side
            assert s["dense"]["rows_per_s"] > 0 and s["dense"]["check"]["float64_agree"]
            assert set(s["dense"]["profile"]) == {name for name, _ in render.DENSE_PARTS}
            assert all(t > 0 for t in s["dense"]["profile"].values())
    assert [r["n"] for r in result["selection"]] == list(bench.QUICK["sizes"])
    assert all(r["float64_selection_equals_lax_top_k"] for r in result["selection"])
    assert result["all_rows"]["ok"] and result["all_rows"]["peak_rss_bytes"] > 0
    assert result["sampled"]["ok"] and result["sampled"]["seconds_per_seed"] > 0
    assert {t["status"] for t in result["targets"]} <= {"MET", "NOT MET", "NOT MEASURED"}
    text = docs.read_text()
    machine = result["machine"]
    assert machine["backend"] in text and machine["device_kind"] in text
    assert "| target |" in text and "How to reproduce" in text
    if result["engine"] == "stream_rows":
        assert "| n | rows | dense engine ms |" in text
