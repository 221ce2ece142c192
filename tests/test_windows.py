"""sparsity_theory/windows.py: window strategies and Claim 7.1's compute alignment."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from sparsity_theory import windows as W
from _shared import SETTINGS

GRID = [2**i for i in range(8, 15)]


def test_cost_is_sum_of_n_k_d():
    assert W.attention_cost([10, 20], [2, 3], d=4) == (10 * 2 + 20 * 3) * 4


def test_constant_windows_clip_to_n():
    plan = W.constant_windows([4, 16, 64], 8)
    np.testing.assert_array_equal(plan.windows, [4, 8, 8])
    assert plan.cost == 4 * 4 + 16 * 8 + 64 * 8 and plan.target_cost == (4 + 16 + 64) * 8


@pytest.mark.parametrize("growth,exponent", [("log", None), ("power", 0.5), ("power", 0.25)])
def test_aligned_windows_spend_what_the_constant_window_spends(growth, exponent):
    k0 = 32
    plan = W.aligned_windows(GRID, k0, growth, exponent)
    f = np.log(GRID) if growth == "log" else np.asarray(GRID, float) ** exponent
    alpha = k0 * sum(GRID) / float(np.sum(np.asarray(GRID) * f))
    assert plan.alpha == pytest.approx(alpha, rel=1e-12)
    np.testing.assert_array_equal(plan.windows, np.clip(np.rint(alpha * f), 1, GRID))
    assert plan.target_cost == k0 * sum(GRID)
    # Rounding moves each window by at most 1/2, so the spend by at most sum(n)/2.
    assert abs(plan.cost - plan.target_cost) <= sum(GRID) / 2
    # Growing windows: smaller than k0 at the short end, larger at the long end.
    assert plan.windows[0] < k0 < plan.windows[-1]
    assert np.all(np.diff(plan.windows) >= 0)


@settings(max_examples=200, **SETTINGS)
@given(lengths=hs.lists(hs.integers(2, 10**6), min_size=1, max_size=8),
       k0=hs.integers(1, 512), growth=hs.sampled_from(["log", "power"]),
       exponent=hs.floats(0.05, 1.0))
def test_alignment_property(lengths, k0, growth, exponent):
    plan = W.aligned_windows(lengths, k0, growth, exponent)
    n = np.asarray(lengths)
    assert np.all((1 <= plan.windows) & (plan.windows <= n))
    assert plan.cost == int(np.sum(n * plan.windows))
    unrounded = plan.alpha * W.growth_profile(lengths, growth, exponent)
    assert float(np.sum(n * unrounded)) == pytest.approx(k0 * float(np.sum(n)), rel=1e-9)
    # Without clipping, the rounded spend is within sum(n)/2 of the target.
    if np.all((unrounded >= 1) & (unrounded <= n)):
        assert abs(plan.cost - plan.target_cost) <= float(np.sum(n)) / 2 + 1e-6


def test_scaled_windows():
    plan = W.scaled_windows([16, 256], 2.0, "log")
    np.testing.assert_array_equal(plan.windows, [round(2 * math.log(16)), round(2 * math.log(256))])
    assert plan.target_cost == round(16 * 2 * math.log(16) + 256 * 2 * math.log(256))


def test_bad_input():
    with pytest.raises(ValueError, match="lengths"):
        W.constant_windows([], 4)
    with pytest.raises(ValueError, match="lengths"):
        W.constant_windows([0, 4], 4)
    with pytest.raises(ValueError, match="lengths"):
        W.aligned_windows([16.5], 4, "log")
    with pytest.raises(ValueError, match="k0"):
        W.aligned_windows([16], 0, "log")
    with pytest.raises(ValueError, match="exponent"):
        W.aligned_windows([16], 4, "power", 1.5)
    with pytest.raises(ValueError, match="growth"):
        W.aligned_windows([16], 4, "cubic")
    with pytest.raises(ValueError, match="ln 1"):
        W.aligned_windows([1], 4, "log")
    with pytest.raises(ValueError, match="windows"):
        W.attention_cost([4], [5])
    with pytest.raises(ValueError, match="alpha"):
        W.scaled_windows([16], -1.0, "log")


# --- sink-plus-recent (StreamingLLM) windows ---------------------------------


@settings(max_examples=200, **SETTINGS)
@given(lengths=hs.lists(hs.integers(1, 10**6), min_size=1, max_size=8),
       k0=hs.integers(1, 512), data=hs.data())
def test_sink_recent_windows_spend_what_the_constant_window_spends(lengths, k0, data):
    sinks = data.draw(hs.integers(0, k0))
    plan = W.sink_recent_windows(lengths, k0, sinks)
    const = W.constant_windows(lengths, k0)
    np.testing.assert_array_equal(plan.lengths, const.lengths)
    np.testing.assert_array_equal(plan.windows, np.minimum(k0, np.asarray(lengths)))
    np.testing.assert_array_equal(plan.windows, const.windows)
    assert plan.cost == const.cost == W.attention_cost(lengths, const.windows)
    assert plan.target_cost == const.target_cost
    assert plan.alpha == const.alpha == float(k0)
    assert plan.growth == "sink-recent" and plan.exponent == sinks


def test_sink_recent_windows_default_sinks():
    plan = W.sink_recent_windows([16, 64], 8)
    assert plan.exponent == 4
    np.testing.assert_array_equal(plan.windows, [8, 8])


def _expected_mask(n, window, sinks):
    s = min(sinks, window)
    return np.array([j < s or j >= n - (window - s) for j in range(n)])


@settings(max_examples=300, **SETTINGS)
@given(n=hs.integers(1, 300), data=hs.data())
def test_sink_recent_mask_keeps_the_sinks_and_the_most_recent(n, data):
    window = data.draw(hs.integers(1, n))
    sinks = data.draw(hs.integers(0, window + 3))
    mask = W.sink_recent_mask(n, window, sinks)
    assert mask.dtype == np.bool_ and mask.shape == (n,)
    assert int(mask.sum()) == min(window, n) == window
    s = min(sinks, window)
    assert mask[:s].all()
    assert mask[n - (window - s):].all()
    # Nothing else is kept.
    assert not mask[s:n - (window - s)].any()
    np.testing.assert_array_equal(mask, _expected_mask(n, window, sinks))


@pytest.mark.parametrize("n,window,sinks,kept", [
    (8, 3, 0, [5, 6, 7]),                   # no sinks: only the most recent
    (8, 3, 3, [0, 1, 2]),                   # sinks = window: only the sinks
    (8, 3, 5, [0, 1, 2]),                   # sinks beyond the window are clipped to it
    (8, 3, 1, [0, 6, 7]),
    (8, 8, 2, list(range(8))),              # window = n keeps everything
    (8, 8, 0, list(range(8))),
    (8, 8, 8, list(range(8))),
    (1, 1, 0, [0]),
    (1, 1, 1, [0]),
    (5, 1, 0, [4]),
    (5, 1, 1, [0]),
])
def test_sink_recent_mask_edge_cases(n, window, sinks, kept):
    mask = W.sink_recent_mask(n, window, sinks)
    assert np.flatnonzero(mask).tolist() == kept


def test_sink_recent_mask_costs_what_its_plan_says():
    """The mask of each length keeps exactly the plan's window of keys."""
    plan = W.sink_recent_windows([3, 16, 200], 8, sinks=4)
    for n, k in zip(plan.lengths, plan.windows):
        assert int(W.sink_recent_mask(int(n), int(k), plan.exponent).sum()) == min(8, n)


def test_sink_recent_bad_input():
    with pytest.raises(ValueError, match="sinks"):
        W.sink_recent_windows([16, 32], 4, sinks=5)  # sinks > k0
    with pytest.raises(ValueError, match="sinks"):
        W.sink_recent_windows([16, 32], 4, sinks=-1)
    with pytest.raises(ValueError, match="sinks"):
        W.sink_recent_windows([16, 32], 4, sinks=1.5)
    with pytest.raises(ValueError, match="k0"):
        W.sink_recent_windows([16, 32], 0, sinks=0)
    with pytest.raises(ValueError, match="lengths"):
        W.sink_recent_windows([], 4, sinks=1)
    with pytest.raises(ValueError, match="window"):
        W.sink_recent_mask(8, 0, 0)  # window below 1
    with pytest.raises(ValueError, match="window"):
        W.sink_recent_mask(8, 9, 1)  # window above n
    with pytest.raises(ValueError, match="window"):
        W.sink_recent_mask(8, 2.0, 1)
    with pytest.raises(ValueError, match="sinks"):
        W.sink_recent_mask(8, 4, -1)
    with pytest.raises(ValueError, match="sinks"):
        W.sink_recent_mask(8, 4, None)
    with pytest.raises(ValueError, match="n"):
        W.sink_recent_mask(8.0, 4, 1)
