"""Markdown tables of a benchmark result and the report ``docs/benchmarks.md``."""

from __future__ import annotations

import math
import os
from typing import Optional


def profile_table(result: dict) -> str:
    lines = ["| n | score matmul | lax.top_k alone | pipeline, window 1, no values | "
             "pipeline, no values | full pipeline |", "|---:|---:|---:|---:|---:|---:|"]
    for r in result["sizes"]:
        if "profile" not in r:
            continue
        p = r["profile"]
        cells = [r["matmul"]["scores_per_s"], p["top_k"]["scores_per_s"],
                 p["light"]["scores_per_s"], p["no_values"]["scores_per_s"],
                 r["pipeline"]["scores_per_s"]]
        lines.append(f"| {r['n']} | " + " | ".join(f"{c / 1e6:,.0f}" for c in cells) + " |")
    return "\n".join(lines)


DENSE_PARTS = (("scores", "score matmul"), ("certified_window", "certified windows"),
               ("num_small", "small-entry counts"), ("errors", "top-K, tails and errors"))


def dense_profile_table(result: dict) -> str:
    """Milliseconds per part of the dense engine and each part's share of the
    dense engine's own time ("" when no size measured the dense engine)."""
    sizes = [s for s in result["sizes"] if (s.get("dense") or {}).get("profile")]
    if not sizes:
        return ""
    lines = ["| n | rows | dense engine ms | " + " | ".join(f"{label} ms (share)"
                                                          for _, label in DENSE_PARTS) + " |",
             "|---:|---:|---:|" + "---:|" * len(DENSE_PARTS)]
    for s in sizes:
        total = s["dense"]["median_s"]
        p = s["dense"]["profile"]
        cells = [f"{p[name] * 1e3:,.1f} ({p[name] / total:.0%})" for name, _ in DENSE_PARTS]
        lines.append(f"| {s['n']} | {s['rows']} | {total * 1e3:,.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(x, spec=",.0f") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return format(x, spec)


def _fmt_measured(t: dict) -> str:
    m = t["measured"]
    if m is None:
        return "-"
    if t["id"] == "peak-memory":
        return f"{m / 1e9:.2f} GB"
    if t["id"] == "sampled-rows":
        return f"{m:.1f} s"
    return f"{m:.2f}x" if "matmul" in t["id"] else f"{m:.2f}"


def size_table(result: dict) -> str:
    dense = any(s.get("dense") for s in result["sizes"])
    lines = [
        "| n | rows timed | pipeline rows/s | pipeline scores/s | NumPy rows/s "
        "| matmul scores/s | matmul GFLOP/s | pipeline / NumPy speed | pipeline time / matmul time |"
        + (" dense rows/s | dense / NumPy speed | dense time / matmul time |" if dense else ""),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|" if dense else ""),
    ]
    for s in result["sizes"]:
        line = (
            f"| {s['n']} | {s['rows']} | {_fmt(s['pipeline']['rows_per_s'])} "
            f"| {_fmt(s['pipeline']['scores_per_s'], '.3g')} | {_fmt(s['numpy']['rows_per_s'])} "
            f"| {_fmt(s['matmul']['scores_per_s'], '.3g')} | {_fmt(s['matmul']['gflops'], '.1f')} "
            f"| {s['ratios']['pipeline_over_numpy_speed']:.2f} "
            f"| {s['ratios']['pipeline_time_over_matmul_time']:.1f}x |")
        if dense:
            d = s.get("dense") or {}
            line += (f" {_fmt(d.get('rows_per_s'))} | {_fmt(d.get('speed_over_numpy'), '.2f')} "
                     f"| {_fmt(d.get('time_over_matmul'), '.1f')}x |")
        lines.append(line)
    return "\n".join(lines)


def selection_table(result: dict) -> str:
    lines = ["| n | window | float32 lax.top_k | float64 lax.top_k | float64 selection.top_k "
             "| same indices as lax.top_k |", "|---:|---:|---:|---:|---:|---|"]
    for r in result.get("selection") or []:
        lines.append(f"| {r['n']} | {r['window']} | {r['float32_top_k_per_s'] / 1e6:,.1f} "
                     f"| {r['float64_top_k_per_s'] / 1e6:,.1f} "
                     f"| {r['float64_selection_per_s'] / 1e6:,.1f} "
                     f"| {'yes' if r['float64_selection_equals_lax_top_k'] else 'NO'} |")
    return "\n".join(lines)


def targets_table(targets: list) -> str:
    lines = ["| target | measured | threshold | status |", "|---|---:|---:|---|"]
    for t in targets:
        lines.append(f"| {t['target']} | {_fmt_measured(t)} | {t['threshold']} | **{t['status']}** |")
    return "\n".join(lines)


def _gpu_table(result: dict) -> str:
    peaks = result.get("peak_flops")
    if result["machine"]["backend"] == "cpu":
        return ""
    if not peaks:
        return (f"\nFraction of peak FLOP/s: unknown (no peak on record for "
                f"{result['machine']['device_kind']}).\n")
    key = "float64" if result["config"]["dtype"] == "float64" else "tf32"
    lines = [f"\nFraction of peak FLOP/s ({peaks['name']}; score FLOPs 2 m n d; peak {key} "
             f"{peaks[key] / 1e12:g} TFLOP/s, float32 non-tensor {peaks['float32'] / 1e12:g}):\n",
             "| n | matmul | pipeline |", "|---:|---:|---:|"]
    for s in result["sizes"]:
        lines.append(f"| {s['n']} | {s['matmul']['fraction_of_peak'][key]:.3f} "
                     f"| {s['pipeline']['fraction_of_peak'][key]:.3f} |")
    return "\n".join(lines) + "\n"


def fmt_load(load) -> str:
    return "unknown" if not load else ", ".join(f"{x:.2f}" for x in load)


def _child_summary(c: Optional[dict], what: str) -> str:
    if c is None:
        return f"{what}: not run."
    if not c.get("ok"):
        return f"{what}: FAILED ({c.get('error')})."
    return ""


def render_markdown(result: dict) -> str:
    cfg, mach, prov = result["config"], result["machine"], result["provenance"]
    all_rows, sampled = result.get("all_rows"), result.get("sampled")
    n_met = sum(t["status"] == "MET" for t in result["targets"])
    parts = [
        "# Benchmarks",
        "",
        "Generated by `python -m verify.bench` (`verify/bench/`); do not edit by hand.",
        "",
        f"- Machine: {mach['platform']}; CPU {mach['cpu_model']}, {mach['cpu_count']} cores "
        f"({mach['cpus_usable']} usable)",
        f"- Device: {mach['backend']} ({mach['device_kind']}, {mach['device_count']} device(s))",
        f"- jax {mach['jax']}, numpy {prov['versions'].get('numpy')}, "
        f"Python {prov['versions'].get('python')}",
        f"- Commit: `{prov['git_commit']}`; run at {prov['time_utc']}; total {result['total_s']:.0f} s",
        f"- Load average (1, 5, 15 min) at start: {fmt_load(mach.get('loadavg_start'))}; at end: "
        f"{fmt_load(mach.get('loadavg_end'))} (other processes on the machine slow the timings)",
        f"- Command: `{result['command']}`",
        f"- Engine: `st.{result['engine']}`; inputs: Gaussian X, Y (cross mode), Gaussian "
        f"weights, d = {cfg['d']}, {cfg['dtype']}, score scale {cfg['scale']:.4g}, windows "
        f"{', '.join(map(str, cfg['windows']))}, eps {', '.join(f'{e:g}' for e in cfg['eps'])}",
        "",
        "## Throughput per n",
        "",
        f"Median of {cfg['repeats']} calls after a compile call. Pipeline: the engine on the timed "
        "query rows against n keys with values (scores, softmax normaliser, top-k, tail masses, "
        "l1/l2/linf/output errors, sparse counts). NumPy: `verify/numpy_reference.py` on the same "
        "inputs. Matmul: `jax.jit(lambda q, k: q @ k.T)` of the same shape (the roofline).",
        "",
        size_table(result),
        _gpu_table(result),
        "",
        f"## Targets ({n_met} of {len(result['targets'])} met)",
        "",
        targets_table(result["targets"]),
        "",
        "## Float64 selection",
        "",
        "Million scores per second of the top-k selection alone (64 rows of Gaussian scores, "
        "k = the largest window). XLA's CPU `lax.top_k` is fast only in float32; float64 falls "
        "back to a sort. `selection.top_k` preselects float64 rows on their float32 rounding and "
        "finishes exactly in float64 (its indices are compared with `lax.top_k`'s here); the "
        "dense engine (`window_profile`, so `evaluate_rows`, `log_tail_mass`, "
        "`sparse_attention_errors` and every dense suite) uses it.",
        "",
        selection_table(result),
        "",
        "## Where the time goes",
        "",
        "Million scores per second, same rows and keys as above (`measure_profile`). "
        "`lax.top_k` alone: the selection primitive on blocks of 64 rows x (4096 keys + K), "
        "scaled to the same number of scores. Window 1 without values: "
        "the scores, the normaliser and a top-1 merge. Without values: every window and eps but "
        "no output error. The full pipeline adds the value products of the output error.",
        "",
        profile_table(result),
        "",
    ]
    dense_profile = dense_profile_table(result)
    if dense_profile:
        parts += [
            "Dense engine (`evaluate_rows`), milliseconds on the same rows: each part on its "
            "own, block by block (the engine's default block size) over the score matrix, "
            "through the public function whose code the engine runs (`measure_dense_profile`); "
            "share: of the dense engine's time. The engine runs the parts together per block, "
            "so they need not add up to its time.",
            "",
            dense_profile,
            "",
        ]
    if result.get("notes"):
        parts += ["Not the issue's configuration: " + "; ".join(result["notes"]) + ".", ""]
    parts += [
        "## All rows and sampled rows",
        "",
    ]
    line = _child_summary(all_rows, "All rows")
    if not line:
        dev = all_rows.get("device_peak_bytes")
        line = (f"All {all_rows['rows']} rows of n = {all_rows['n']} in a fresh process: "
                f"{all_rows['seconds']:.1f} s ({all_rows['rows_per_s']:,.0f} rows/s"
                f"{', includes compiling' if all_rows['seconds_includes_compile'] else ', second call'}"
                f"), peak RSS {all_rows['peak_rss_bytes'] / 1e9:.2f} GB"
                + (f", device peak {dev / 1e9:.2f} GB" if dev is not None else "") + ".")
    parts.append(line)
    parts.append("")
    line = _child_summary(sampled, "Sampled rows")
    if not line:
        times = ", ".join(f"{t:.1f}" for t in sampled["seed_times_s"])
        line = (f"n = {sampled['n']} with {sampled['rows']} sampled query rows (draw inputs, "
                f"project, engine), per seed: {times} s (the first includes compiling); "
                f"judged: {sampled['seconds_per_seed']:.1f} s (the slowest seed after the first, "
                f"or the first when only one ran); peak RSS "
                f"{sampled['peak_rss_bytes'] / 1e9:.2f} GB. `sample_inputs(rows=...)` "
                f"{'used' if sampled['sample_inputs_rows'] else 'not available: full draw, sliced'}.")
    parts.append(line)
    checks = [s["check"] for s in result["sizes"]]
    bad64 = [s["n"] for s in result["sizes"] if not s["check"]["float64"]["agree"]]
    parts += [
        "",
        "## Cross-check against the NumPy reference",
        "",
        f"In {cfg['dtype']}: largest |difference| of log tail masses "
        f"{max(c['max_abs_diff_log_tail'] for c in checks):.2g}; sparse-count entries that "
        f"differ: {sum(c['fields']['num_small']['mismatches'] for c in checks)} of "
        f"{sum(c['fields']['num_small']['entries'] for c in checks)} (rounding at the threshold). "
        f"In float64 on {cfg['check_rows']} rows per n: "
        + ("agree (relative 1e-9, counts exactly) at every n." if not bad64
           else f"DISAGREE at n = {', '.join(map(str, bad64))}."),
        "",
        "## How to reproduce",
        "",
        "```bash",
        "sparsity-verify bench            # or: python -m verify.bench",
        "python -m verify.bench --quick --no-docs --out /tmp/bench   # smoke run",
        "```",
        "",
        f"Results: `{os.path.join(cfg['out'], 'bench.json')}` (every timing, the cross-checks, "
        "provenance).",
        "",
    ]
    return "\n".join(parts)
