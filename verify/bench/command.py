"""The ``sparsity-verify bench`` command (``python -m verify.bench``): its
options and configurations, the whole run, and the files it writes."""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import sys
import time

from verify.bench.machine import loadavg, machine_info
from verify.bench.measure import (MARK, REPO, child, log, measure_selection, measure_size,
                                  resolve_engine, run_child)
from verify.bench.render import fmt_load, render_markdown, size_table, targets_table
from verify.bench.targets import ISSUE_MEMORY_N, ISSUE_SAMPLE_N, evaluate_targets, peak_flops

DESCRIPTION = "Throughput benchmark of the per-row pipeline: ``python -m verify.bench``."
DEFAULT_DOCS = os.path.join(REPO, "docs", "benchmarks.md")
SCHEMA = "sparsity-bench/1"

FULL = dict(
    sizes=(1024, 4096, 16384, 65536), d=64, rows=256, min_scores=2**22, windows=(1, 4, 16, 64),
    eps=(1e-2, 1e-3, 1e-4), dtype="float32", repeats=5, check_rows=16, memory_n=ISSUE_MEMORY_N,
    sample_n=ISSUE_SAMPLE_N, sample_rows=256, sample_seeds=2, child_timeout=1800.0,
    warm_repeat_below=120.0,
)
QUICK = dict(
    sizes=(256,), d=16, rows=32, min_scores=0, windows=(1, 4), eps=(1e-2, 1e-3),
    dtype="float32", repeats=2, check_rows=8, memory_n=512, sample_n=1024, sample_rows=32,
    sample_seeds=1, child_timeout=300.0, warm_repeat_below=0.0,
)


def _parse_list(text: str, kind):
    try:
        out = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsity-verify bench", description=DESCRIPTION)
    p.add_argument("--sizes", type=lambda s: _parse_list(s, int), help="n values (default "
                   "1024,4096,16384,65536)")
    p.add_argument("--d", type=int, help="head dimension (default 64)")
    p.add_argument("--rows", type=int, help="query rows timed per n (default 256; raised to "
                   "min(n, min-scores / n) for small n)")
    p.add_argument("--min-scores", type=int, help="at least this many scores per timed call "
                   "where n allows (default 2^22)")
    p.add_argument("--windows", type=lambda s: _parse_list(s, int), help="default 1,4,16,64")
    p.add_argument("--eps", type=lambda s: _parse_list(s, float), help="default 1e-2,1e-3,1e-4")
    p.add_argument("--dtype", choices=("float32", "float64"))
    p.add_argument("--scale", type=float, help="score scale (default 1/sqrt(d))")
    p.add_argument("--repeats", type=int, help="timed calls per measurement (default 5)")
    p.add_argument("--check-rows", type=int, help="rows of the float64 cross-check (default 16)")
    p.add_argument("--memory-n", type=int, help="n of the all-rows run (default 65536; 0 skips)")
    p.add_argument("--sample-n", type=int, help="n of the sampled-rows run (default 2^20; 0 skips)")
    p.add_argument("--sample-rows", type=int, help="sampled query rows (default 256)")
    p.add_argument("--sample-seeds", type=int, help="seeds of the sampled run (default 2)")
    p.add_argument("--child-timeout", type=float, help="seconds per subprocess run (default 1800)")
    p.add_argument("--engine", default="auto", help="auto (stream_rows if present, else "
                   "evaluate_rows) or a function name of sparsity_theory")
    p.add_argument("--out", default="results/bench", help="output directory")
    p.add_argument("--docs", default=None, help=f"Markdown report (default {DEFAULT_DOCS})")
    p.add_argument("--no-docs", action="store_true", help="do not write the Markdown report")
    p.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    return p


def config_from_args(args) -> dict:
    base = dict(QUICK if args.quick else FULL)
    for name in ("sizes", "d", "rows", "min_scores", "windows", "eps", "dtype", "repeats",
                 "check_rows", "memory_n", "sample_n", "sample_rows", "sample_seeds",
                 "child_timeout"):
        value = getattr(args, name)
        if value is not None:
            base[name] = value
    base["scale"] = args.scale if args.scale is not None else 1.0 / math.sqrt(base["d"])
    base["sizes"] = tuple(sorted(set(base["sizes"])))
    base["windows"] = tuple(sorted(set(base["windows"])))
    base.update(engine=args.engine, out=args.out, quick=args.quick)
    for name in ("d", "rows", "repeats", "check_rows", "sample_rows", "sample_seeds"):
        if base[name] < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {base[name]}.")
    if min(base["sizes"]) < 1 or min(base["windows"]) < 1:
        raise ValueError("sizes and windows must be >= 1.")
    if any(not 0 < e <= 1 for e in base["eps"]):
        raise ValueError("eps must lie in (0, 1].")
    return base


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def run(cfg: dict, argv: list) -> dict:
    """The whole benchmark for a configuration (see :func:`config_from_args`)."""
    t_start = time.perf_counter()
    # The float64 cross-check needs JAX's 64-bit mode: on, explicitly, before
    # anything runs (the benchmark's own dtype is always passed explicitly).
    importlib.import_module("sparsity_theory").enable_x64()
    from verify.provenance import provenance

    engine_name, engine = resolve_engine(cfg["engine"])
    mach = machine_info()
    mach["loadavg_start"] = loadavg()
    log(f"engine st.{engine_name}; backend {mach['backend']} ({mach['device_kind']}); "
         f"sizes {', '.join(map(str, cfg['sizes']))}")
    peaks = peak_flops(mach["device_kind"]) if mach["backend"] != "cpu" else None
    sizes = []
    for n in cfg["sizes"]:
        s = measure_size(n, cfg, engine_name, engine)
        if peaks:
            for part, key in (("matmul", "gflops"), ("pipeline", "score_gflops")):
                s[part]["fraction_of_peak"] = {
                    p: s[part][key] * 1e9 / peaks[p] for p in ("float32", "tf32", "float64")}
        sizes.append(s)
    selection = [measure_selection(n, max(k for k in cfg["windows"] if k <= n), cfg["repeats"])
                 for n in cfg["sizes"]]

    common = dict(engine=cfg["engine"], d=cfg["d"], dtype=cfg["dtype"], windows=cfg["windows"],
                  eps=cfg["eps"], scale=cfg["scale"], warm_repeat_below=cfg["warm_repeat_below"])
    all_rows = sampled = None
    if cfg["memory_n"]:
        n = cfg["memory_n"]
        log(f"all rows of n={n} in a subprocess")
        all_rows = run_child(dict(common, task="all_rows", n=n, rows=n,
                                  windows=[k for k in cfg["windows"] if k <= n]),
                             cfg["child_timeout"])
    if cfg["sample_n"]:
        n = cfg["sample_n"]
        log(f"n={n} with {cfg['sample_rows']} sampled rows in a subprocess")
        sampled = run_child(dict(common, task="sampled", n=n, rows=min(n, cfg["sample_rows"]),
                                 seeds=cfg["sample_seeds"],
                                 windows=[k for k in cfg["windows"] if k <= n]),
                            cfg["child_timeout"])

    per_n = [dict(n=s["n"], engine=engine_name, pipeline_s=s["pipeline"]["median_s"],
                  matmul_s=s["matmul"]["median_s"], numpy_s=s["numpy"]["median_s"]) for s in sizes]
    per_n += [dict(n=s["n"], engine=s["dense"]["engine"], pipeline_s=s["dense"]["median_s"],
                   matmul_s=s["matmul"]["median_s"], numpy_s=s["numpy"]["median_s"])
              for s in sizes if s.get("dense")]
    memory = None if all_rows is None else dict(
        n=cfg["memory_n"], rows=cfg["memory_n"],
        peak_bytes=all_rows.get("peak_rss_bytes") if all_rows.get("ok") else None)
    sample = None if sampled is None else dict(
        n=cfg["sample_n"], rows=min(cfg["sample_n"], cfg["sample_rows"]),
        seconds_per_seed=sampled.get("seconds_per_seed") if sampled.get("ok") else None)
    targets = evaluate_targets(per_n, memory, sample, mach["backend"], selection)
    mach["loadavg_end"] = loadavg()
    notes = []
    if cfg["sizes"] != FULL["sizes"] or cfg["d"] != FULL["d"]:
        notes.append("sizes or d differ from the issue's (1024..65536, d = 64)")
    if cfg["memory_n"] not in (0, ISSUE_MEMORY_N) or cfg["sample_n"] not in (0, ISSUE_SAMPLE_N):
        notes.append("memory or sampled-rows n differs from the issue's")
    return dict(
        schema=SCHEMA,
        command="python -m verify.bench" + ("" if not argv else " " + " ".join(argv)),
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
        engine=engine_name,
        engine_certified_window="censored at max(windows) + 1" if engine_name == "stream_rows"
        else "exact",
        machine=mach,
        provenance=provenance(),
        peak_flops=peaks,
        sizes=sizes,
        selection=selection,
        all_rows=all_rows,
        sampled=sampled,
        targets=targets,
        all_targets_met=all(t["status"] == "MET" for t in targets),
        notes=notes,
        total_s=time.perf_counter() - t_start,
    )


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.child is not None:  # a fresh interpreter: 64-bit mode on, as in run()
        importlib.import_module("sparsity_theory").enable_x64()
        print(MARK + json.dumps(_jsonable(child(json.loads(args.child)))), flush=True)
        return 0
    try:
        cfg = config_from_args(args)
        resolve_engine(cfg["engine"])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    result = run(cfg, argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench.json")
    with open(path, "w") as f:
        json.dump(_jsonable(result), f, indent=1)
    print(size_table(result))
    print()
    print(targets_table(result["targets"]))
    print(f"\nengine st.{result['engine']}; total {result['total_s']:.0f} s; load average "
          f"{fmt_load(result['machine']['loadavg_start'])} at start, "
          f"{fmt_load(result['machine']['loadavg_end'])} at end; wrote {path}")
    if not args.no_docs:
        docs = args.docs or DEFAULT_DOCS
        os.makedirs(os.path.dirname(os.path.abspath(docs)), exist_ok=True)
        tmp = docs + ".tmp"
        with open(tmp, "w") as f:
            f.write(render_markdown(result))
        os.replace(tmp, docs)
        print(f"wrote {docs}")
    ok64 = all(s["check"]["float64"]["agree"] and (not s.get("dense") or s["dense"]["check"]["float64_agree"])
               for s in result["sizes"]) and all(r["float64_selection_equals_lax_top_k"]
                                                  for r in result["selection"])
    if not ok64:
        print("error: an engine disagrees with the NumPy reference in float64 (or selection.top_k "
              "with lax.top_k)", file=sys.stderr)
    return 0 if ok64 else 1

