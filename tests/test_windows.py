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
