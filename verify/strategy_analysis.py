"""Analysis of suite ``strategies``: Figure 2, Table 1, log-log slopes and
Proposition 7.2, from the per-seed metrics of its cells.

Statistics used:

* a mean over seeds with a normal-approximation 95% interval
  (mean +- 1.96 sd / sqrt(seeds); the per-seed values are independent);
* Table 1's grid average: per seed, the metric averaged over the length grid,
  then the mean over seeds; paired differences between strategies are taken per
  seed (every strategy saw the same inputs), which removes the seed-to-seed
  variation they share;
* slopes: least squares of ``log(mean metric)`` on ``log n`` over the grid, with
  a percentile bootstrap interval (seeds resampled independently at each n,
  B = 400, fixed generator seed), so "decreasing in n" is judged by whether the
  interval lies below zero, not by eye;
* Proposition 7.2: for each constant window k0, metric, mode and score scale,
  each adaptive strategy's paired difference to the constant window, with
  Bonferroni-adjusted 95% intervals over the adaptive strategies; in two
  readings: the error averaged over the grid, and the error at the largest n.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy import stats

from verify.strategies import METRICS, ORACLE

BOOTSTRAP = 400
Z95 = 1.959963984540054
ADAPTIVE_PREFIXES = ("alpha ln n", "alpha n^")


def collect(cell_results) -> dict:
    """``{(mode, sigma): {"lengths", "strategies": {name: {"kind", "k0", "windows",
    metric: array (lengths, seeds)}}, "oracle_window": array (lengths, seeds)}}``
    with metrics on their natural scale (not logs)."""
    groups: dict = defaultdict(list)
    for cell, result in cell_results:
        groups[(cell["mode"], float(cell["score_scale"]))].append((cell, result))
    out = {}
    for key, pairs in groups.items():
        pairs.sort(key=lambda p: p[0]["n"])
        info = {s["name"]: s for s in pairs[0][0]["strategies"]}
        names = list(pairs[0][1]["strategies"])
        seeds = min(len(r["oracle_mean_window"]) for _, r in pairs)
        strategies = {}
        for name in names:
            entry = {"kind": info.get(name, {}).get("kind", ORACLE), "k0": info.get(name, {}).get("k0"),
                     "windows": [next((s["window"] for s in c["strategies"] if s["name"] == name), None)
                                 for c, _ in pairs]}
            for metric in METRICS:
                entry[metric] = np.exp(np.array([r["strategies"][name][metric][:seeds] for _, r in pairs]))
            strategies[name] = entry
        out[key] = {"lengths": np.array([c["n"] for c, _ in pairs]), "strategies": strategies,
                    "oracle_window": np.array([r["oracle_mean_window"][:seeds] for _, r in pairs])}
    return out


def mean_interval(x: np.ndarray, z: float = Z95) -> tuple[float, float, float]:
    """Mean over the last axis and its normal-approximation interval."""
    x = np.asarray(x, dtype=float)
    mean = float(np.mean(x))
    half = z * float(np.std(x, ddof=1)) / math.sqrt(x.size) if x.size > 1 else float("nan")
    return mean, mean - half, mean + half


def loglog_slope(lengths: np.ndarray, values: np.ndarray, seed: int = 0) -> dict:
    """Slope of ``log mean(values[i])`` against ``log lengths[i]`` (values:
    (lengths, seeds)) with a percentile bootstrap 95% interval."""
    x = np.log(np.asarray(lengths, dtype=float))
    means = np.mean(values, axis=1)
    slope = float(np.polyfit(x, np.log(means), 1)[0])
    rng = np.random.default_rng(seed)
    seeds = values.shape[1]
    boot = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        idx = rng.integers(0, seeds, size=values.shape)
        boot[b] = np.polyfit(x, np.log(np.mean(np.take_along_axis(values, idx, 1), axis=1)), 1)[0]
    low, high = np.percentile(boot, [2.5, 97.5])
    return {"slope": slope, "low": float(low), "high": float(high)}


def _cost_ratio(lengths: np.ndarray, windows: list, k0) -> float | None:
    """Claim 7.1's spend ``sum_n n k(n)`` over the constant window's ``sum_n n min(k0, n)``."""
    if k0 is None or any(w is None for w in windows):
        return None
    return float(np.sum(lengths * np.asarray(windows)) / np.sum(lengths * np.minimum(k0, lengths)))


def analyse(cell_results) -> dict:
    """Table 1, slopes, Proposition 7.2 and the oracle window's growth, as JSON-ready
    records."""
    table, slopes, prop, oracle = [], [], [], []
    for (mode, sigma), data in sorted(collect(cell_results).items()):
        lengths, strategies = data["lengths"], data["strategies"]
        for name, entry in strategies.items():
            row = {"mode": mode, "sigma": sigma, "strategy": name, "kind": entry["kind"],
                   "k0": entry["k0"], "windows": entry["windows"],
                   "cost_ratio": _cost_ratio(lengths, entry["windows"], entry["k0"])}
            base = next((n for n, e in strategies.items()
                         if e["kind"] == "constant" and e["k0"] == entry["k0"]), None)
            for metric in METRICS:
                avg = np.mean(entry[metric], axis=0)  # per seed, over the length grid
                mean, lo, hi = mean_interval(avg)
                row[metric] = {"mean": mean, "low": lo, "high": hi}
                if base is not None and base != name:
                    d, dlo, dhi = mean_interval(avg - np.mean(strategies[base][metric], axis=0))
                    row[metric].update(diff=d, diff_low=dlo, diff_high=dhi)
                if len(lengths) >= 2:
                    slopes.append({"mode": mode, "sigma": sigma, "strategy": name, "kind": entry["kind"],
                                   "k0": entry["k0"], "metric": metric,
                                   **loglog_slope(lengths, entry[metric])})
            table.append(row)
        if len(lengths) >= 2:
            oracle.append({"mode": mode, "sigma": sigma, "lengths": lengths.tolist(),
                           "mean_window": np.mean(data["oracle_window"], axis=1).tolist(),
                           **loglog_slope(lengths, data["oracle_window"])})
        for k0 in sorted({e["k0"] for e in strategies.values() if e["k0"] is not None}):
            base = next(n for n, e in strategies.items() if e["kind"] == "constant" and e["k0"] == k0)
            adaptive = [n for n, e in strategies.items()
                        if e["k0"] == k0 and e["kind"].startswith(ADAPTIVE_PREFIXES)]
            z = stats.norm.isf(0.025 / max(len(adaptive), 1))
            # Two readings: the error averaged over the grid (Table 1's), and the
            # error at the largest n (the asymptotic one).
            readings = {"grid average": lambda v: np.mean(v, axis=0),
                        f"largest n = {lengths[-1]}": lambda v: v[-1]}
            for metric in METRICS:
                for reading, reduce in readings.items():
                    base_val = reduce(strategies[base][metric])
                    diffs = {n: mean_interval(reduce(strategies[n][metric]) - base_val, z)
                             for n in adaptive}
                    better = [n for n, (_, _, hi) in diffs.items() if hi < 0]
                    worse = [n for n, (_, lo, _) in diffs.items() if lo > 0]
                    verdict = ("adaptive lower" if better else
                               "constant lower" if len(worse) == len(adaptive) else "inconclusive")
                    prop.append({"mode": mode, "sigma": sigma, "k0": k0, "metric": metric,
                                 "reading": reading, "verdict": verdict, "better": better,
                                 "differences": {n: {"diff": d, "low": lo, "high": hi}
                                                 for n, (d, lo, hi) in diffs.items()}})
    return {"table1": table, "slopes": slopes, "proposition72": prop, "oracle": oracle}


# --- report -------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{x:.4g}"


def table1_markdown(analysis: dict) -> str:
    blocks = []
    groups = defaultdict(list)
    for row in analysis["table1"]:
        groups[(row["mode"], row["sigma"])].append(row)
    for (mode, sigma), rows in groups.items():
        head = "| strategy | windows over the grid | cost / constant's | " + " | ".join(METRICS) + " |"
        lines = [f"**{mode} attention, sigma = {sigma:g}** (mean over seeds of the grid average; "
                 "in brackets the paired difference to the constant window of the same k0, 95% CI)",
                 "", head, "|" + "---|" * (3 + len(METRICS))]
        for r in rows:
            cells = []
            for metric in METRICS:
                m = r[metric]
                text = _num(m["mean"])
                if "diff" in m:
                    text += f" ({m['diff']:+.3g} [{m['diff_low']:+.3g}, {m['diff_high']:+.3g}])"
                cells.append(text)
            cost = "-" if r["cost_ratio"] is None else f"{r['cost_ratio']:.4f}"
            wins = ", ".join("-" if w is None else str(w) for w in r["windows"])
            lines.append(f"| {r['strategy']} | {wins} | {cost} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def slopes_markdown(analysis: dict) -> str:
    groups = defaultdict(dict)
    for s in analysis["slopes"]:
        groups[(s["mode"], s["sigma"], s["strategy"])][s["metric"]] = s
    head = "| mode | sigma | strategy | " + " | ".join(METRICS) + " |"
    lines = [head, "|" + "---|" * (3 + len(METRICS))]
    for (mode, sigma, name), per in groups.items():
        lines.append(f"| {mode} | {sigma:g} | {name} | " + " | ".join(
            f"{per[m]['slope']:+.3f} [{per[m]['low']:+.3f}, {per[m]['high']:+.3f}]" for m in METRICS) + " |")
    oracle = ["| mode | sigma | mean certified window per n | slope of log k_eps on log n [95% CI] |",
              "|---|---|---|---|"]
    for o in analysis["oracle"]:
        oracle.append(f"| {o['mode']} | {o['sigma']:g} | "
                      + ", ".join(f"{w:.4g}" for w in o["mean_window"])
                      + f" | {o['slope']:+.3f} [{o['low']:+.3f}, {o['high']:+.3f}] |")
    return "\n".join(lines) + "\n\nOracle (certified window k_eps per row):\n\n" + "\n".join(oracle)


def proposition72_markdown(analysis: dict) -> str:
    lines = ["| mode | sigma | k0 | metric | reading | verdict | paired difference to constant, per "
             "adaptive strategy (Bonferroni 95% CI) |", "|---|---|---|---|---|---|---|"]
    for p in analysis["proposition72"]:
        diffs = "; ".join(f"{n.split(': ', 1)[-1]}: {d['diff']:+.3g} [{d['low']:+.3g}, {d['high']:+.3g}]"
                          for n, d in p["differences"].items())
        lines.append(f"| {p['mode']} | {p['sigma']:g} | {p['k0']} | {p['metric']} | {p['reading']} | "
                     f"{p['verdict']} | {diffs} |")
    return "\n".join(lines)


def report(analysis: dict) -> str:
    return f"""### Table 1: errors averaged over the length grid, at aligned cost

{table1_markdown(analysis)}

### Log-log slopes of the mean error against n (bootstrap 95% CI)

{slopes_markdown(analysis)}

### Proposition 7.2: adaptive against fixed windows at equal cost

{proposition72_markdown(analysis)}
"""


def figure2(cell_results, out_dir: str) -> list[dict]:
    """Paper Figure 2: error against n per strategy (the first k0 of the preset and
    the oracle, dashed), mean and 95% band over seeds; one PNG per mode, rows =
    score scales, columns = metrics."""
    from verify.figures import _pyplot, _save

    plt = _pyplot()
    data = collect(cell_results)
    out = []
    for mode in sorted({m for m, _ in data}):
        sigmas = sorted(s for m, s in data if m == mode)
        fig, axes = plt.subplots(len(sigmas), len(METRICS), figsize=(4.2 * len(METRICS), 3.4 * len(sigmas)),
                                 squeeze=False)
        for i, sigma in enumerate(sigmas):
            d = data[(mode, sigma)]
            k0s = sorted({e["k0"] for e in d["strategies"].values() if e["k0"] is not None})
            for j, metric in enumerate(METRICS):
                ax = axes[i][j]
                for name, e in d["strategies"].items():
                    if e["k0"] not in (k0s[0], None):
                        continue
                    vals = e[metric]
                    mean = vals.mean(axis=1)
                    half = Z95 * vals.std(axis=1, ddof=1) / math.sqrt(vals.shape[1])
                    style = "--" if e["kind"] == ORACLE else "o-"
                    line, = ax.plot(d["lengths"], mean, style, ms=3, label=name)
                    ax.fill_between(d["lengths"], mean - half, mean + half, color=line.get_color(), alpha=0.2)
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_title(f"{metric}, sigma = {sigma:g}", fontsize=9)
                ax.set_xlabel("n")
                if i == 0 and j == 0:
                    ax.legend(fontsize=7)
        fig.suptitle(f"Figure 2 ({mode} attention): sparse-attention error against n at aligned cost")
        caption = (f"Figure 2, {mode} attention: error of each window strategy against n "
                   f"(k0 = {k0s[0]}; compute-aligned; oracle = certified window at eps, dashed, not "
                   "cost-aligned), mean and 95% band over seeds, Gaussian input")
        out.append(_save(fig, out_dir, f"figure2_{mode}.png", caption))
    return out
