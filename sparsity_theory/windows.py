"""Window strategies k(n) and their cost (paper Section 7, Claim 7.1).

A window strategy assigns a top-k window size to each context length n. The
paper compares a constant window k0 with windows growing like ``alpha ln n`` and
``alpha n^C`` at equal compute. Claim 7.1: k-sparse attention over n queries and
keys of dimension d costs Theta(n k d), so over a grid of lengths n_1..n_m a
strategy spends ``sum_i n_i k(n_i) d``. Compute alignment picks alpha so that
``sum_i n_i alpha f(n_i) = sum_i n_i k0`` (the constant window's spend); windows
are then rounded to integers in [1, n_i], so the spend actually incurred is
reported beside the target.

These are host (NumPy) planning functions: window sizes are static shapes in
JAX, so they are fixed before anything is traced.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from sparsity_theory import _checks

GROWTH = ("constant", "log", "power")


class WindowPlan(NamedTuple):
    """Windows for a grid of lengths, with their cost.

    Attributes:
        lengths: the context lengths n_i (int64).
        windows: the integer window k(n_i), in [1, n_i] (int64).
        growth: ``constant``, ``log`` or ``power``.
        alpha: the scale of the window before rounding (k0 for ``constant``).
        exponent: C for ``power`` (None otherwise).
        cost: ``sum_i n_i k(n_i)`` actually spent (Claim 7.1's cost over d).
        target_cost: the cost the plan was aligned to (its own for ``constant``).
    """

    lengths: np.ndarray
    windows: np.ndarray
    growth: str
    alpha: float
    exponent: float | None
    cost: int
    target_cost: int


def _check_lengths(lengths: Sequence[int]) -> np.ndarray:
    values = [_checks.check_int(n, "lengths") for n in np.atleast_1d(np.asarray(lengths)).tolist()]
    if not values or min(values) < 1:
        raise ValueError(f"lengths must be a non-empty sequence of integers >= 1, got {lengths!r}.")
    return np.asarray(values, dtype=np.int64)


def growth_profile(lengths: Sequence[int], growth: str, exponent: float | None = None) -> np.ndarray:
    """``f(n)``: 1 (constant), ``ln n`` (log) or ``n^C`` (power, C in (0, 1])."""
    n = _check_lengths(lengths).astype(np.float64)
    if growth == "constant":
        return np.ones_like(n)
    if growth == "log":
        return np.log(n)
    if growth == "power":
        if exponent is None or not 0 < float(exponent) <= 1:
            raise ValueError(f"power growth needs an exponent C in (0, 1], got {exponent!r}.")
        return n ** float(exponent)
    raise ValueError(f"growth must be one of {GROWTH}, got {growth!r}.")


def attention_cost(lengths: Sequence[int], windows: Sequence[int], d: int = 1) -> int:
    """Claim 7.1: ``sum_i n_i k_i d``, the multiply-adds of k-sparse attention
    (scores against k keys and the weighted sum of k values per query), up to
    the constant factor."""
    n = _check_lengths(lengths)
    k = np.asarray(windows, dtype=np.int64)
    if k.shape != n.shape or np.any(k < 1) or np.any(k > n):
        raise ValueError("windows must match lengths and lie in [1, n] for each length.")
    d = _checks.check_int(d, "d")
    return int(np.sum(n * k)) * d


def _plan(n: np.ndarray, alpha: float, growth: str, exponent, target: int) -> WindowPlan:
    raw = alpha * growth_profile(n, growth, exponent)
    windows = np.clip(np.rint(raw), 1, n).astype(np.int64)
    return WindowPlan(n, windows, growth, float(alpha), exponent if growth == "power" else None,
                      attention_cost(n, windows), int(target))


def constant_windows(lengths: Sequence[int], k0: int) -> WindowPlan:
    """``k(n) = min(k0, n)``: the fixed window of Theorem 6.2's regime."""
    n = _check_lengths(lengths)
    k0 = _checks.check_int(k0, "k0")
    if k0 < 1:
        raise ValueError(f"k0 must be >= 1, got {k0}.")
    windows = np.minimum(k0, n)
    return WindowPlan(n, windows, "constant", float(k0), None, attention_cost(n, windows),
                      int(np.sum(n * k0)))


def aligned_windows(lengths: Sequence[int], k0: int, growth: str,
                    exponent: float | None = None) -> WindowPlan:
    """Compute-aligned strategy ``k(n) = round(alpha f(n))`` with
    ``alpha = k0 sum_i n_i / sum_i n_i f(n_i)``, so that before rounding it spends
    what the constant window k0 would (``sum_i n_i k0``); ``cost`` is what the
    rounded windows spend. ``growth``: ``log`` (f = ln n) or ``power`` (f = n^C).
    """
    n = _check_lengths(lengths)
    k0 = _checks.check_int(k0, "k0")
    if k0 < 1:
        raise ValueError(f"k0 must be >= 1, got {k0}.")
    if growth == "constant":
        return constant_windows(n, k0)
    f = growth_profile(n, growth, exponent)
    weight = float(np.sum(n * f))
    if not weight > 0:
        raise ValueError(f"{growth} growth is zero on every length (ln 1 = 0): add longer lengths.")
    target = int(np.sum(n * k0))
    return _plan(n, k0 * float(np.sum(n)) / weight, growth, exponent, target)


def scaled_windows(lengths: Sequence[int], alpha: float, growth: str,
                   exponent: float | None = None) -> WindowPlan:
    """``k(n) = round(alpha f(n))`` in [1, n] for a given alpha (no alignment);
    ``target_cost`` is the unrounded spend ``sum_i n_i alpha f(n_i)``, rounded."""
    n = _check_lengths(lengths)
    alpha = _checks.check_positive(alpha, "alpha")
    target = math.floor(float(np.sum(n * alpha * growth_profile(n, growth, exponent))) + 0.5)
    return _plan(n, alpha, growth, exponent, target)


def sink_recent_windows(lengths: Sequence[int], k0: int, sinks: int = 4) -> WindowPlan:
    """StreamingLLM-style baseline (Xiao et al. 2023): keep the first ``sinks``
    keys (attention sinks) and the most recent ``min(k0, n) - sinks`` keys, the
    same positions for every query. It keeps ``min(k0, n)`` keys, so it costs
    what the constant window k0 costs (Claim 7.1); :func:`sink_recent_mask` gives
    the kept set. ``growth`` is ``sink-recent``, ``exponent`` holds ``sinks``.
    """
    plan = constant_windows(lengths, k0)
    sinks = _checks.check_int(sinks, "sinks")
    if not 0 <= sinks <= k0:
        raise ValueError(f"sinks must lie in [0, k0] = [0, {k0}], got {sinks}.")
    return plan._replace(growth="sink-recent", exponent=sinks)


def sink_recent_mask(n: int, window: int, sinks: int) -> np.ndarray:
    """Boolean (n,) mask of the keys a sink-plus-recent window keeps: positions
    ``0..s-1`` and ``n-(window-s)..n-1`` with ``s = min(sinks, window)``."""
    n = _checks.check_int(n, "n")
    window = _checks.check_window(window, n, "window")
    sinks = min(_checks.check_int(sinks, "sinks"), window)
    if sinks < 0:
        raise ValueError(f"sinks must be >= 0, got {sinks}.")
    mask = np.zeros(n, dtype=bool)
    mask[:sinks] = True
    mask[n - (window - sinks):] = True
    return mask


def causal_windows(context: int, k0: int, growth: str = "constant",
                   exponent: float | None = None) -> WindowPlan:
    """Claim 7.1 for one causal context of N tokens: query i sees ``n = i + 1``
    keys and keeps ``k(n) = min(n, round(alpha f(n)))`` of them, so the context
    costs ``sum_{n=1}^N k(n)`` (times d). ``constant``: ``k(n) = min(n, k0)``; ``log``
    and ``power``: alpha is chosen (bisection: the unrounded cost is
    nondecreasing in alpha) so that ``sum_n min(n, alpha f(n)) = sum_n min(n, k0)``,
    the constant window's cost. ``lengths`` is 1..N, ``cost`` the rounded
    windows' ``sum_n k(n)`` and ``target_cost`` the constant window's.
    """
    context = _checks.check_int(context, "context")
    k0 = _checks.check_int(k0, "k0")
    if context < 1 or k0 < 1:
        raise ValueError(f"context and k0 must be >= 1, got {context} and {k0}.")
    n = np.arange(1, context + 1, dtype=np.int64)
    target = int(np.sum(np.minimum(n, k0)))
    if growth == "constant":
        windows, alpha = np.minimum(n, k0), float(k0)
    else:
        f = growth_profile(n, growth, exponent)

        def spent(a: float) -> float:
            return float(np.sum(np.minimum(n, a * f)))

        # alpha beyond max(n / f) keeps every key; f(1) = ln 1 = 0 keeps one key there.
        full = float(np.max(n[f > 0] / f[f > 0])) if np.any(f > 0) else float(k0)
        if spent(full) <= target:  # the constant window already keeps (nearly) everything
            alpha = full
        else:
            lo, hi = 0.0, full
            for _ in range(200):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if spent(mid) < target else (lo, mid)
            alpha = hi
        windows = np.clip(np.rint(alpha * f), 1, n).astype(np.int64)
    return WindowPlan(n, windows.astype(np.int64), growth, alpha,
                      exponent if growth == "power" else None, int(np.sum(windows)), target)
