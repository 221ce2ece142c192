"""Suite ``strategies``: the paper's Section 6.3 experiment (Figure 2, Table 1)
and Proposition 7.2, with window strategies at equal compute (Claim 7.1).

Setting (Section 6.3): Gaussian input N(0, 1), one attention layer, context
lengths n over a grid. Weights are Haar orthogonal and the score scale is
``lambda = sigma / sqrt(d)``, so every row's score scale sigma_i = lambda ||x_i||
is close to the target sigma (the paper leaves the weights open; sigma is the
quantity the theory depends on, so the suite sweeps it). Both self attention
(keys = queries' rows) and cross attention are run.

Strategies, for each constant window k0 of the preset:

* ``constant``: k = k0;
* ``log``: k = alpha ln n and ``n^C``: k = alpha n^C, with alpha aligned so that
  the spend ``sum_n n k(n)`` equals the constant window's (Claim 7.1;
  ``sparsity_theory.windows.aligned_windows``, the cost after rounding is
  recorded);
* ``sink+recent``: StreamingLLM's positional window, the first 4 keys and the
  last k0 - 4, the same cost as the constant window;

and, outside the cost alignment, the ``oracle``: the per-row certified window,
the smallest k whose tail mass is at most eps (its mean window is recorded: it
measures how fast the window a row needs grows with n).

Each seed draws fresh inputs; ``rows`` query rows spread evenly over the
positions are evaluated against all n keys (rows are exchangeable in self and
cross mode, so the row average estimates the all-rows average; positions matter
only to sink+recent). Every strategy sees the same inputs (paired comparison).
Per seed and strategy it records four metrics, as natural logs:

* ``rms``: attention-matrix RMS row error ``sqrt(mean_i ||s_i - s^_i||_2^2)``;
* ``frobenius``: total ``||S - S^||_F``, estimated as ``sqrt(n) rms``;
* ``output``: relative output error ``||O - O^||_F / ||O||_F`` with values
  ``V = Y W_V`` (correlated with the keys through the shared input rows);
* ``output-independent``: the same with values drawn independently of the keys.

All errors come from the exact factorised forms (``sparse_attention_errors``,
``masked_attention_errors``), never from subtracting two attention matrices.
The analysis (Table 1 with paired confidence intervals, log-log slopes with
bootstrap intervals, Proposition 7.2) is in ``verify.suites.strategy_analysis``.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import sparsity_theory as st
from sparsity_theory import windows as window_plans
from sparsity_theory.errors import log_norm
from sparsity_theory.inputs import drawn_flat
from verify import progress
from verify.claims import ClaimVerdict
from verify.sampling import trial_keys
from verify.suite import Suite, register, with_seeds
from verify.suites import strategy_analysis
from verify.suites.strategy_analysis import METRICS, ORACLE

NAME = "strategies"


# No probabilistic claims of its own: the ledger (verify.report.ledger) judges the
# section's statements from this suite's measurements.
CLAIMS: dict[str, str] = {}

PRESETS = {
    "quick": {"lengths": (128, 256, 512, 1024, 2048), "seeds": 48, "rows": 32, "d": 16,
              "k0": (16,), "exponents": (0.5,), "score_scales": (1.0, 2.0), "sinks": 4,
              "oracle_eps": 0.1},
    "paper": {"lengths": (256, 512, 1024, 2048, 4096, 8192), "seeds": 1000, "rows": 32, "d": 64,
              "k0": (16, 64), "exponents": (0.25, 0.5), "score_scales": (0.5, 1.0, 2.0), "sinks": 4,
              "oracle_eps": 0.1},
    "large": {"lengths": (1024, 2048, 4096, 8192, 16384, 32768, 65536), "seeds": 200, "rows": 32,
              "d": 64, "k0": (16, 64), "exponents": (0.25, 0.5), "score_scales": (0.5, 1.0, 2.0),
              "sinks": 4, "oracle_eps": 0.1},
}

GAUSSIAN = st.Gaussian(1.0)


def strategy_plans(preset: dict) -> list[dict]:
    """Every strategy of the preset with its windows over the length grid and
    its cost (Claim 7.1: spent after rounding, and the target it was aligned to)."""
    lengths = preset["lengths"]
    out = []
    for k0 in preset["k0"]:
        plans = [("constant", window_plans.constant_windows(lengths, k0)),
                 ("alpha ln n", window_plans.aligned_windows(lengths, k0, "log"))]
        plans += [(f"alpha n^{c:g}", window_plans.aligned_windows(lengths, k0, "power", c))
                  for c in preset["exponents"]]
        plans.append(("sink+recent", window_plans.sink_recent_windows(lengths, k0, preset["sinks"])))
        for label, plan in plans:
            out.append({
                "name": f"k0={k0}: {label}", "k0": k0, "kind": label,
                "sinks": preset["sinks"] if label == "sink+recent" else None,
                "windows": {int(n): int(k) for n, k in zip(plan.lengths, plan.windows)},
                "alpha": plan.alpha, "exponent": plan.exponent if label.startswith("alpha n^") else None,
                "cost": plan.cost, "target_cost": plan.target_cost,
            })
    return out


def cells(preset: str, seeds: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    plans = strategy_plans(p)
    combos = [(mode, sigma, n) for mode in st.MODES for sigma in p["score_scales"]
              for n in p["lengths"]]
    return with_seeds(NAME, [
        {"suite": NAME, "mode": mode, "score_scale": sigma, "n": n, "d": p["d"],
         "rows": min(p["rows"], n), "seeds": seeds or p["seeds"],
         "oracle_eps": p["oracle_eps"],
         "strategies": [{"name": s["name"], "kind": s["kind"], "k0": s["k0"], "sinks": s["sinks"],
                         "window": s["windows"][n]} for s in plans]}
        for (mode, sigma, n) in combos
    ])


def cell_id(cell: dict) -> str:
    return (f"{cell['mode']}-sigma{cell['score_scale']:g}-n{cell['n']}-d{cell['d']}"
            f"-m{cell['rows']}-s{cell['seeds']}")


def _metrics(log_l2, log_out, log_out_ind, log_exact, log_exact_ind, n):
    """Per-seed log metrics from per-row logs (last axis: rows)."""
    m = log_l2.shape[-1]
    log_rms = 0.5 * (jax.nn.logsumexp(2 * log_l2, axis=-1) - math.log(m))
    rel = 0.5 * (jax.nn.logsumexp(2 * log_out, axis=-1) - jax.nn.logsumexp(2 * log_exact, axis=-1))
    rel_ind = 0.5 * (jax.nn.logsumexp(2 * log_out_ind, axis=-1)
                     - jax.nn.logsumexp(2 * log_exact_ind, axis=-1))
    return jnp.stack([log_rms, log_rms + 0.5 * math.log(n), rel, rel_ind], axis=-1)


@functools.partial(jax.jit, static_argnames=("n", "d", "mode", "rows"))
def _chunk_inputs(keys, weights, scale, n: int, d: int, mode: str, rows: tuple[int, ...]):
    """Per seed: the sampled rows' scores u (seeds, m, n), the values V and
    independent values (seeds, n, d). Apart from :func:`_chunk_metrics` so that
    the larger program, which does not depend on the mode, is compiled once per
    (n, windows) rather than once per (n, mode, windows). Quick preset, 2 cores:
    10 fused programs took 39.5 s to compile; 10 input programs (1.6 s each) and
    5 metrics programs (2.3 s each) take 29 s, with every cell the same."""
    row_index = np.asarray(rows)

    def one(key):
        inp = st.sample_inputs(key, n, d, GAUSSIAN, mode)
        q, k, v = st.project(inp, weights)
        v_ind = drawn_flat(jax.random.normal, jax.random.fold_in(key, 17), v.shape, v.dtype)
        return scale * q[row_index] @ k.T, v, v_ind

    return jax.vmap(one)(keys)


@functools.partial(jax.jit, static_argnames=("n", "windows"))
def _chunk_metrics(scores, values, values_ind, masks, log_eps, n: int, windows: tuple[int, ...]):
    """(seeds, top-k windows + masks + oracle, 4) log metrics and the oracle's
    mean window per seed, from :func:`_chunk_inputs`' arrays."""

    def one(u, v, v_ind):
        s = jax.nn.softmax(u, axis=-1)
        exact, exact_ind = log_norm(s @ v), log_norm(s @ v_ind)
        # Both value matrices and every kept set through one vmapped trace each:
        # unrolled copies made the program (and its compile time) several times larger.
        both = jnp.stack([v, v_ind])
        topk = jax.vmap(lambda values: st.sparse_attention_errors(u, windows, values))(both)
        oracle_k = st.certified_window(u, jnp.exp(log_eps))
        threshold = jax.vmap(st.kth_largest)(u, oracle_k)
        kept = jnp.concatenate([jnp.broadcast_to(masks[:, None, :], (masks.shape[0],) + u.shape),
                                (u >= threshold[:, None])[None]])
        masked = jax.vmap(lambda mask: jax.vmap(
            lambda values: st.masked_attention_errors(u, mask, values))(both))(kept)
        # (strategies, rows): top-k windows first, then the masks, the oracle last.
        l2 = jnp.concatenate([topk.log_l2[0].T, masked.log_l2[:, 0]])
        out = jnp.concatenate([topk.log_output[0].T, masked.log_output[:, 0]])
        out_ind = jnp.concatenate([topk.log_output[1].T, masked.log_output[:, 1]])
        return _metrics(l2, out, out_ind, exact, exact_ind, n), jnp.mean(oracle_k.astype(u.dtype))

    return jax.vmap(one)(scores, values, values_ind)


def evenly_spaced_rows(n: int, m: int) -> tuple[int, ...]:
    """m query positions spread over 0..n-1 (all rows when m = n)."""
    return tuple(int(i) for i in np.round(np.linspace(0, n - 1, m)).astype(int))


def run_cell(cell: dict) -> dict[str, Any]:
    n, d, mode = cell["n"], cell["d"], cell["mode"]
    strategies = cell["strategies"]
    topk = [s for s in strategies if s["kind"] != "sink+recent"]
    positional = [s for s in strategies if s["kind"] == "sink+recent"]
    windows = tuple(sorted({s["window"] for s in topk}))
    masks = np.stack([window_plans.sink_recent_mask(n, s["window"], s["sinks"]) for s in positional]) \
        if positional else np.zeros((0, n), bool)
    base = jax.random.PRNGKey(cell["seed_base"])
    weights = st.orthogonal_weights(jax.random.fold_in(base, 0), d)
    keys = trial_keys(cell["seed_base"], cell["seeds"], stream=1)
    scale = cell["score_scale"] / math.sqrt(d)
    rows = evenly_spaced_rows(n, cell["rows"])
    chunk = min(cell["seeds"], max(1, 2**21 // (len(rows) * n)))

    def metrics(start):
        # The last chunk is padded to the full chunk (repeating its last key) and
        # trimmed again: one compiled program per cell instead of two.
        part = keys[start:start + chunk]
        size = part.shape[0]
        part = jnp.concatenate([part, jnp.repeat(part[-1:], chunk - size, axis=0)])
        inputs = _chunk_inputs(part, weights, scale, n=n, d=d, mode=mode, rows=rows)
        out = _chunk_metrics(*inputs, jnp.asarray(masks), math.log(cell["oracle_eps"]),
                             n=n, windows=windows)
        return jax.tree.map(lambda a: np.asarray(a)[:size], out)

    # Fetched chunk by chunk (np.asarray waits for it): progress is reported per chunk.
    parts = [metrics(i) for i in progress.chunk_starts(cell["seeds"], chunk)]
    log_metrics = np.concatenate([np.asarray(p[0]) for p in parts])  # (seeds, W + P + 1, 4)
    oracle_window = np.concatenate([np.asarray(p[1]) for p in parts])
    column = {w: j for j, w in enumerate(windows)}
    order = [column[s["window"]] for s in topk] + [len(windows) + i for i in range(len(positional))]
    names = [s["name"] for s in topk] + [s["name"] for s in positional] + [ORACLE]
    order.append(len(windows) + len(positional))
    result = {"strategies": {}, "oracle_mean_window": np.round(oracle_window, 3).tolist()}
    for name, j in zip(names, order):
        result["strategies"][name] = {
            metric: np.round(log_metrics[:, j, i], 6).tolist() for i, metric in enumerate(METRICS)
        }
    return result


def summarise(cell_results: list[tuple[dict, dict]]) -> list[ClaimVerdict]:
    return []  # judged in the ledger and the report's tables (verify.suites.strategy_analysis)


SUITE = register(Suite(
    name=NAME, summary=__doc__.strip().splitlines()[0], claims=CLAIMS, presets=PRESETS,
    cells=cells, cell_id=cell_id, run_cell=run_cell, summarise=summarise, order=6.3,
    analysis=strategy_analysis.analyse, report_sections=strategy_analysis.report,
    figures=strategy_analysis.figure2, ledger_entries=strategy_analysis.ledger_entries))
