"""Throughput benchmark of the per-row pipeline: ``python -m verify.bench``.

One run measures, on the default JAX backend, for each n (default 1024, 4096,
16384, 65536; d = 64; float32):

* the pipeline engine (``st.stream_rows`` when the package has it, else
  ``st.evaluate_rows``) on a block of query rows against n keys with values:
  median wall time after a compile call, rows/s and scores/s;
* the bare XLA score matmul ``jax.jit(lambda q, k: q @ k.T)`` of the same shape
  (the roofline: the pipeline computes these scores and more);
* the NumPy reference (:mod:`verify.numpy_reference`: materialised scores,
  argpartition) on the same inputs, and a cross-check of the engine against it
  (in the benchmark's dtype, and in float64 on a few rows, where they must agree);

and, each in a fresh subprocess so that its peak resident memory is its own:

* all n rows of n = 65536 through the engine (time, rows/s, peak RSS; on a GPU
  also the device's peak bytes in use);
* n = 2^20 with 256 sampled query rows per seed: drawing the inputs, projection
  and the engine, timed per seed.

Targets (issue text) are judged by :func:`evaluate_targets` from ratios taken
in the same run. Writes ``OUT/bench.json`` and regenerates ``docs/benchmarks.md``.
Exit status 0 when the run completed (targets not met are reported, not an
error), 1 when the float64 cross-check found a disagreement, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DOCS = os.path.join(REPO, "docs", "benchmarks.md")
SCHEMA = "sparsity-bench/1"

# Targets of the issue.
TARGET_NUMPY_SPEED_RATIO = 1.0      # pipeline speed / NumPy speed >= this
TARGET_MATMUL_FACTOR = 3.0          # pipeline time / matmul time <= this
TARGET_MATMUL_MIN_N_CPU = 16384     # ... for n >= this on CPU (every n on a GPU)
TARGET_PEAK_BYTES = 4e9             # all rows of n = 65536: peak memory < 4 GB
TARGET_SAMPLE_SECONDS = 60.0        # n = 2^20, 256 sampled rows: < 60 s per seed
ISSUE_MEMORY_N = 65536
ISSUE_SAMPLE_N = 2**20

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

# Dense (no structured sparsity) peak FLOP/s from NVIDIA's datasheets, keyed by
# a substring of jax's device_kind. "tf32" is the tensor-core rate that XLA uses
# for float32 matmuls at JAX's default precision on these GPUs.
PEAK_FLOPS = {
    "H200 NVL": {"float32": 60e12, "tf32": 417.5e12, "float64": 60e12},
    "H200": {"float32": 67e12, "tf32": 494.7e12, "float64": 67e12},
    "H100 NVL": {"float32": 60e12, "tf32": 417.5e12, "float64": 60e12},
    "H100 PCIe": {"float32": 51e12, "tf32": 378e12, "float64": 51e12},
    "H100": {"float32": 67e12, "tf32": 494.7e12, "float64": 67e12},  # SXM (HBM3)
}


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def peak_flops(device_kind: str) -> Optional[dict]:
    """Known peak FLOP/s of a GPU by its jax ``device_kind`` (None if unknown)."""
    kind = device_kind.lower()
    for name, peaks in PEAK_FLOPS.items():  # most specific names first
        if all(part.lower() in kind for part in name.split()):
            return {"name": name, **peaks}
    return None


# --------------------------------------------------------------------------
# Targets (pure: tested on synthetic numbers)
# --------------------------------------------------------------------------

def _status(ok: Optional[bool]) -> str:
    return "NOT MEASURED" if ok is None else ("MET" if ok else "NOT MET")


def evaluate_targets(per_n: list, memory: Optional[dict] = None, sampled: Optional[dict] = None,
                     backend: str = "cpu") -> list:
    """Pass/fail of the issue's targets from measured numbers.

    Args:
      per_n: one dict per n: ``n``, ``pipeline_s`` (time of the pipeline on the
        timed rows), ``matmul_s`` (bare score matmul, same shape) and
        ``numpy_s`` (NumPy reference, same rows; None if not measured).
      memory: ``n``, ``rows``, ``peak_bytes`` (None if the run failed) of the
        all-rows run.
      sampled: ``n``, ``rows``, ``seconds_per_seed`` (None if it failed).
      backend: ``"cpu"`` or a GPU backend.

    Returns:
      A list of dicts ``id``, ``target``, ``measured``, ``threshold``, ``status``
      (MET / NOT MET / NOT MEASURED). On CPU: pipeline at least as fast as NumPy
      at every n; pipeline time within 3x of the matmul for n >= 16384; peak
      memory < 4 GB; sampled rows < 60 s per seed. On a GPU: within 3x of the
      matmul at every n (the other numbers are reported, not judged).
    """
    out = []
    cpu = backend == "cpu"
    for row in per_n:
        n = int(row["n"])
        t_pipe, t_mm, t_np = row.get("pipeline_s"), row.get("matmul_s"), row.get("numpy_s")
        if cpu:
            ratio = None if not (t_pipe and t_np) else t_np / t_pipe
            out.append(dict(
                id=f"numpy-speed-n{n}", target=f"pipeline speed / NumPy speed at n={n}",
                measured=ratio, threshold=f">= {TARGET_NUMPY_SPEED_RATIO:g}",
                status=_status(None if ratio is None else ratio >= TARGET_NUMPY_SPEED_RATIO)))
        if not cpu or n >= TARGET_MATMUL_MIN_N_CPU:
            factor = None if not (t_pipe and t_mm) else t_pipe / t_mm
            out.append(dict(
                id=f"matmul-factor-n{n}", target=f"pipeline time / score-matmul time at n={n}",
                measured=factor, threshold=f"<= {TARGET_MATMUL_FACTOR:g}",
                status=_status(None if factor is None else factor <= TARGET_MATMUL_FACTOR)))
    if cpu and memory is not None:
        peak = memory.get("peak_bytes")
        out.append(dict(
            id="peak-memory", target=f"peak memory, all {memory['rows']} rows of n={memory['n']}",
            measured=peak, threshold=f"< {TARGET_PEAK_BYTES / 1e9:g} GB",
            status=_status(None if peak is None else peak < TARGET_PEAK_BYTES)))
    if cpu and sampled is not None:
        sec = sampled.get("seconds_per_seed")
        out.append(dict(
            id="sampled-rows", target=f"n={sampled['n']} with {sampled['rows']} sampled rows, "
            "time per seed", measured=sec, threshold=f"< {TARGET_SAMPLE_SECONDS:g} s",
            status=_status(None if sec is None else sec < TARGET_SAMPLE_SECONDS)))
    return out


# --------------------------------------------------------------------------
# Inputs, engines, timing
# --------------------------------------------------------------------------

def resolve_engine(name: str = "auto"):
    """The engine under test: ``stream_rows`` when the package has it, else
    ``evaluate_rows`` (``name`` "auto"), or the named function of the package."""
    import sparsity_theory as st
    if name == "auto":
        name = "stream_rows" if hasattr(st, "stream_rows") else "evaluate_rows"
    fn = getattr(st, name, None)
    if fn is None or not callable(fn):
        raise ValueError(f"sparsity_theory has no engine {name!r}.")
    return name, fn


def _sample_inputs_has_rows() -> bool:
    import sparsity_theory as st
    try:
        return "rows" in inspect.signature(st.sample_inputs).parameters
    except (TypeError, ValueError):
        return False


_DRAW_CACHE: dict = {}


def _drawer(n: int, d: int, rows: int, dtype: str):
    """A jitted ``key, weights -> (q, k, v)``: Gaussian inputs in cross mode
    (keys and values from an independent Y), only ``rows`` query rows kept
    (drawn directly when ``sample_inputs`` takes ``rows``, else sliced)."""
    import jax
    import sparsity_theory as st
    cache_key = (n, d, rows, dtype)
    if cache_key not in _DRAW_CACHE:
        model = st.Gaussian(1.0)
        with_rows = _sample_inputs_has_rows() and rows < n

        def draw(key, weights):
            if with_rows:
                inp = st.sample_inputs(key, n, d, model, "cross", dtype, rows=rows)
            else:
                inp = st.sample_inputs(key, n, d, model, "cross", dtype)
                inp = st.AttentionInputs(inp.x[:rows], inp.y)
            return st.project(inp, weights)

        _DRAW_CACHE[cache_key] = jax.jit(draw)
    return _DRAW_CACHE[cache_key]


def _weights(d: int, dtype: str, seed: int = 0):
    import jax
    import sparsity_theory as st
    return st.gaussian_weights(jax.random.fold_in(jax.random.PRNGKey(seed), 0), d, dtype=dtype)


def draw_qkv(n: int, d: int, rows: int, dtype: str, seed: int = 0, weights=None):
    """Query rows (rows, d), keys (n, d), values (n, d) of one seed."""
    import jax
    weights = _weights(d, dtype, seed) if weights is None else weights
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1)
    return jax.block_until_ready(_drawer(n, d, rows, dtype)(key, weights))


def _timed(fn, repeats: int) -> list:
    import jax
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return times


def compare_statistics(engine_stats, ref, max_window: int) -> dict:
    """Engine output against the NumPy reference: per field the largest absolute
    and relative (to max(1, |ref|)) difference where both are finite and the
    number of entries finite in one only; counts: entries that differ. The
    engine's certified window is censored at max_window + 1 first."""
    import numpy as np
    out = {}
    for name in ref._fields:
        a, b = getattr(engine_stats, name), getattr(ref, name)
        if a is None or b is None:
            continue
        a = np.asarray(a)
        b = np.asarray(b)
        if name in ("num_small", "certified_window"):
            if name == "certified_window":
                a = np.minimum(a, max_window + 1)
            diff = np.abs(a.astype(np.int64) - b.astype(np.int64))
            out[name] = {"mismatches": int(np.count_nonzero(diff)),
                         "max_abs_diff": int(diff.max(initial=0)), "entries": int(diff.size)}
            continue
        a = a.astype(np.float64)
        b = b.astype(np.float64)
        fa, fb = np.isfinite(a), np.isfinite(b)
        both = fa & fb
        same_inf = (~fa & ~fb) & (a == b)
        diff = np.abs(a[both] - b[both])
        out[name] = {
            "max_abs_diff": float(diff.max(initial=0.0)),
            "max_rel_diff": float((diff / np.maximum(1.0, np.abs(b[both]))).max(initial=0.0)),
            "finite_mismatches": int(np.count_nonzero(~both & ~same_inf)),
        }
    return out


def _agrees(cmp: dict, rtol: float) -> bool:
    for name, c in cmp.items():
        if "mismatches" in c:
            if c["mismatches"]:
                return False
        elif c["max_rel_diff"] > rtol or c["finite_mismatches"]:
            return False
    return True


def measure_size(n: int, cfg: dict, engine_name: str, engine) -> dict:
    """Pipeline, matmul and NumPy timings at one n, and the cross-checks."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from verify.numpy_reference import reference_rows

    d, dtype = cfg["d"], cfg["dtype"]
    rows = min(n, max(cfg["rows"], -(-cfg["min_scores"] // n)))
    windows = tuple(k for k in cfg["windows"] if k <= n)
    eps, scale, repeats = cfg["eps"], cfg["scale"], cfg["repeats"]
    q, k, v = draw_qkv(n, d, rows, dtype, seed=n)

    def pipeline():
        return engine(q, k, v, windows=windows, eps=eps, scale=scale)

    matmul = jax.jit(lambda a, b: a @ b.T)
    qn, kn, vn = (np.asarray(a) for a in (q, k, v))

    def numpy_ref():
        return reference_rows(qn, kn, vn, windows=windows, eps=eps, scale=scale)

    _log(f"n={n}: {rows} rows, compiling {engine_name}")
    t0 = time.perf_counter()
    stats = jax.block_until_ready(pipeline())
    first = time.perf_counter() - t0
    jax.block_until_ready(matmul(q, k))
    ref = numpy_ref()  # warm-up (page faults, BLAS threads)
    _log(f"n={n}: timing pipeline, matmul and NumPy reference, interleaved")
    # Interleaved so that a change in the machine's other load hits all three.
    t_pipe, t_mm, t_np = [], [], []
    for _ in range(repeats):
        t_pipe += _timed(pipeline, 1)
        t_mm += _timed(lambda: matmul(q, k), 3)
        t_np += _timed(numpy_ref, 1)

    profile = measure_profile(q, k, windows, eps, scale, repeats, engine)
    check = compare_statistics(stats, ref, max(windows))
    # float64 on a few rows: the engine and the reference must agree.
    m64 = min(rows, cfg["check_rows"])
    q64, k64, v64 = (jnp.asarray(a, jnp.float64) for a in (q[:m64], k, v))
    stats64 = jax.block_until_ready(engine(q64, k64, v64, windows=windows, eps=eps, scale=scale))
    ref64 = reference_rows(np.asarray(q64), np.asarray(k64), np.asarray(v64), windows=windows,
                           eps=eps, scale=scale)
    check64 = compare_statistics(stats64, ref64, max(windows))

    med_pipe, med_mm, med_np = (statistics.median(t) for t in (t_pipe, t_mm, t_np))
    flops = 2.0 * rows * n * d
    result = dict(
        n=n, rows=rows, d=d, windows=list(windows),
        pipeline=dict(median_s=med_pipe, times_s=t_pipe, min_s=min(t_pipe), first_call_s=first,
                      rows_per_s=rows / med_pipe, scores_per_s=rows * n / med_pipe,
                      score_gflops=flops / med_pipe / 1e9),
        matmul=dict(median_s=med_mm, times_s=t_mm, min_s=min(t_mm), scores_per_s=rows * n / med_mm,
                    gflops=flops / med_mm / 1e9),
        numpy=dict(median_s=med_np, times_s=t_np, min_s=min(t_np), rows_per_s=rows / med_np,
                   scores_per_s=rows * n / med_np),
        profile={name: dict(median_s=t, scores_per_s=rows * n / t) for name, t in profile.items()},
        ratios=dict(pipeline_over_numpy_speed=med_np / med_pipe,
                    matmul_time_over_pipeline_time=med_mm / med_pipe,
                    pipeline_time_over_matmul_time=med_pipe / med_mm),
        check=dict(
            dtype=dtype, rows=rows, fields=check,
            max_abs_diff_log_tail=check["log_tail_mass"]["max_abs_diff"],
            counts_equal=check["num_small"]["mismatches"] == 0,
            float64=dict(rows=m64, fields=check64, rtol=1e-9, agree=_agrees(check64, 1e-9),
                         max_rel_diff_log_tail=check64["log_tail_mass"]["max_rel_diff"]),
        ),
    )
    _log(f"n={n}: pipeline {med_pipe * 1e3:.1f} ms ({rows / med_pipe:,.0f} rows/s), matmul "
         f"{med_mm * 1e3:.2f} ms, NumPy {med_np * 1e3:.1f} ms; float64 check "
         f"{'agrees' if result['check']['float64']['agree'] else 'DISAGREES'}")
    return result


def measure_profile(q, k, windows, eps, scale, repeats: int, engine) -> dict:
    """Where the pipeline's time goes, as median seconds for the same rows:

    * ``light``: the engine with window 1, the largest eps and no values (scores,
      normaliser, a top-1 merge, no second counting pass in practice);
    * ``no_values``: the full windows and eps without values (no output error);
    * ``top_k``: ``lax.top_k`` alone on the blocks one merge sees (64 rows x
      (4096 keys + K)), scaled to the same number of scores: the selection
      primitive's own cost, which the pipeline pays at least once per score.
    """
    import jax
    from jax import lax

    rows, n = q.shape[0], k.shape[0]
    window = max(windows)
    width = min(n, 4096) + window
    block = jax.random.normal(jax.random.PRNGKey(0), (64, width), q.dtype)
    top_k = jax.jit(lambda a: lax.top_k(a, window + 1))
    jax.block_until_ready(top_k(block))
    scale_to_rows = (rows * n) / (64 * width)
    light = lambda: engine(q, k, None, windows=(1,), eps=(max(eps),), scale=scale)  # noqa: E731
    no_values = lambda: engine(q, k, None, windows=windows, eps=eps, scale=scale)  # noqa: E731
    for f in (light, no_values):
        jax.block_until_ready(f())
    return {
        "light": statistics.median(_timed(light, repeats)),
        "no_values": statistics.median(_timed(no_values, repeats)),
        "top_k": statistics.median(_timed(lambda: top_k(block), max(repeats, 5))) * scale_to_rows,
    }


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


# --------------------------------------------------------------------------
# Subprocess runs (peak memory of their own)
# --------------------------------------------------------------------------

def _self_peak_bytes() -> int:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _children_peak_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def _device_peak_bytes() -> Optional[int]:
    import jax
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return None
    try:
        stats = dev.memory_stats() or {}
    except Exception:  # not every backend implements it
        return None
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else int(peak)


def _child(spec: dict) -> dict:
    """Body of a subprocess run (``--child JSON``)."""
    import jax

    engine_name, engine = resolve_engine(spec["engine"])
    n, d, rows, dtype = spec["n"], spec["d"], spec["rows"], spec["dtype"]
    windows, eps, scale = tuple(spec["windows"]), tuple(spec["eps"]), spec["scale"]
    out = dict(task=spec["task"], engine=engine_name, n=n, d=d, rows=rows,
               backend=jax.default_backend(), sample_inputs_rows=_sample_inputs_has_rows())
    if spec["task"] == "all_rows":
        q, k, v = draw_qkv(n, d, rows, dtype, seed=n)
        out["rss_after_inputs_bytes"] = _self_peak_bytes()
        _log(f"all rows: n={n}, {rows} rows through {engine_name} (first call includes compiling)")
        t0 = time.perf_counter()
        jax.block_until_ready(engine(q, k, v, windows=windows, eps=eps, scale=scale))
        out["cold_s"] = time.perf_counter() - t0
        _log(f"all rows: cold call {out['cold_s']:.1f} s")
        if out["cold_s"] < spec["warm_repeat_below"]:
            t0 = time.perf_counter()
            jax.block_until_ready(engine(q, k, v, windows=windows, eps=eps, scale=scale))
            out["warm_s"] = time.perf_counter() - t0
            _log(f"all rows: warm call {out['warm_s']:.1f} s")
        t = out.get("warm_s", out["cold_s"])
        out.update(seconds=t, seconds_includes_compile="warm_s" not in out, rows_per_s=rows / t,
                   scores_per_s=rows * n / t)
    elif spec["task"] == "sampled":
        weights = _weights(d, dtype, seed=n)
        times = []
        for seed in range(spec["seeds"]):
            t0 = time.perf_counter()
            q, k, v = _drawer(n, d, rows, dtype)(
                jax.random.fold_in(jax.random.PRNGKey(n), 1 + seed), weights)
            jax.block_until_ready(engine(q, k, v, windows=windows, eps=eps, scale=scale))
            times.append(time.perf_counter() - t0)
            _log(f"sampled rows: n={n}, seed {seed}: {times[-1]:.1f} s"
                 + (" (includes compiling)" if seed == 0 else ""))
        warm = times[1:]
        out.update(seed_times_s=times, cold_s=times[0], warm_max_s=max(warm) if warm else None,
                   seconds_per_seed=max(warm) if warm else times[0],
                   seconds_includes_compile=not warm)
    else:
        raise ValueError(f"unknown child task {spec['task']!r}")
    out["peak_rss_bytes"] = _self_peak_bytes()
    out["device_peak_bytes"] = _device_peak_bytes()
    return out


_MARK = "BENCH-CHILD-RESULT "


def run_child(spec: dict, timeout: float) -> dict:
    """Run :func:`_child` in a fresh interpreter; its own peak RSS comes back in
    its result, and the parent's ``RUSAGE_CHILDREN`` maximum is recorded too."""
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "verify.bench", "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=None,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(ok=False, error=f"timed out after {timeout:g} s",
                    wall_s=time.perf_counter() - t0,
                    rusage_children_maxrss_bytes=_children_peak_bytes())
    wall = time.perf_counter() - t0
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(_MARK):
            result = json.loads(line[len(_MARK):])
    if proc.returncode != 0 or result is None:
        return dict(ok=False, error=f"exit status {proc.returncode}", wall_s=wall,
                    rusage_children_maxrss_bytes=_children_peak_bytes())
    result.update(ok=True, wall_s=wall, rusage_children_maxrss_bytes=_children_peak_bytes())
    return result


# --------------------------------------------------------------------------
# Machine, report
# --------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> Optional[list]:
    """1, 5 and 15 minute load averages: other work on the machine slows every
    timing (the ratios are taken in the same run, but not at the same instant)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict:
    import jax
    dev = jax.devices()[0]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return dict(platform=platform.platform(), cpu_model=cpu_model(), cpu_count=os.cpu_count(),
                cpus_usable=usable, backend=jax.default_backend(), device_kind=dev.device_kind,
                device_count=jax.device_count(), jax=jax.__version__)


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
    return f"{m:.2f}x" if t["id"].startswith("matmul") else f"{m:.2f}"


def size_table(result: dict) -> str:
    lines = [
        "| n | rows timed | pipeline rows/s | pipeline scores/s | NumPy rows/s "
        "| matmul scores/s | matmul GFLOP/s | pipeline / NumPy speed | matmul time / pipeline time |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in result["sizes"]:
        lines.append(
            f"| {s['n']} | {s['rows']} | {_fmt(s['pipeline']['rows_per_s'])} "
            f"| {_fmt(s['pipeline']['scores_per_s'], '.3g')} | {_fmt(s['numpy']['rows_per_s'])} "
            f"| {_fmt(s['matmul']['scores_per_s'], '.3g')} | {_fmt(s['matmul']['gflops'], '.1f')} "
            f"| {s['ratios']['pipeline_over_numpy_speed']:.2f} "
            f"| {s['ratios']['matmul_time_over_pipeline_time']:.3f} |")
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


def _fmt_load(load) -> str:
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
        "Generated by `python -m verify.bench` (`verify/bench.py`); do not edit by hand.",
        "",
        f"- Machine: {mach['platform']}; CPU {mach['cpu_model']}, {mach['cpu_count']} cores "
        f"({mach['cpus_usable']} usable)",
        f"- Device: {mach['backend']} ({mach['device_kind']}, {mach['device_count']} device(s))",
        f"- jax {mach['jax']}, numpy {prov['versions'].get('numpy')}, "
        f"Python {prov['versions'].get('python')}",
        f"- Commit: `{prov['git_commit']}`; run at {prov['time_utc']}; total {result['total_s']:.0f} s",
        f"- Load average (1, 5, 15 min) at start: {_fmt_load(mach.get('loadavg_start'))}; at end: "
        f"{_fmt_load(mach.get('loadavg_end'))} (other processes on the machine slow the timings)",
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
        "## Where the time goes",
        "",
        "Million scores per second, same rows and keys as above (`measure_profile`). The "
        "selection is the bottleneck: XLA's CPU `lax.top_k` (float32; float64 falls back to a "
        "sort about 30x slower, so float64 rows are preselected on their float32 rounding) runs "
        "several times slower than the score matmul on the same scores, and the streamed "
        "pipeline must run one top-k merge over every score, so it cannot come within 3x of the "
        "matmul on this backend; NumPy's `argpartition` (introselect) is the faster selection "
        "primitive here. Window 1 without values shows the cost of the scores, the normaliser "
        "and a top-1 merge; the difference to the full pipeline is the top-64 merge, the "
        "per-window finishing work, the second counting pass for the smallest eps and the "
        "value products of the output error.",
        "",
        profile_table(result),
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


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

def _parse_list(text: str, kind):
    try:
        out = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
    if not out:
        raise argparse.ArgumentTypeError("empty list")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sparsity-verify bench", description=__doc__.splitlines()[0])
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
    importlib.import_module("sparsity_theory")  # enables float64 before anything runs
    from verify.provenance import provenance

    engine_name, engine = resolve_engine(cfg["engine"])
    mach = machine_info()
    mach["loadavg_start"] = _loadavg()
    _log(f"engine st.{engine_name}; backend {mach['backend']} ({mach['device_kind']}); "
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

    common = dict(engine=cfg["engine"], d=cfg["d"], dtype=cfg["dtype"], windows=cfg["windows"],
                  eps=cfg["eps"], scale=cfg["scale"], warm_repeat_below=cfg["warm_repeat_below"])
    all_rows = sampled = None
    if cfg["memory_n"]:
        n = cfg["memory_n"]
        _log(f"all rows of n={n} in a subprocess")
        all_rows = run_child(dict(common, task="all_rows", n=n, rows=n,
                                  windows=[k for k in cfg["windows"] if k <= n]),
                             cfg["child_timeout"])
    if cfg["sample_n"]:
        n = cfg["sample_n"]
        _log(f"n={n} with {cfg['sample_rows']} sampled rows in a subprocess")
        sampled = run_child(dict(common, task="sampled", n=n, rows=min(n, cfg["sample_rows"]),
                                 seeds=cfg["sample_seeds"],
                                 windows=[k for k in cfg["windows"] if k <= n]),
                            cfg["child_timeout"])

    per_n = [dict(n=s["n"], pipeline_s=s["pipeline"]["median_s"], matmul_s=s["matmul"]["median_s"],
                  numpy_s=s["numpy"]["median_s"]) for s in sizes]
    memory = None if all_rows is None else dict(
        n=cfg["memory_n"], rows=cfg["memory_n"],
        peak_bytes=all_rows.get("peak_rss_bytes") if all_rows.get("ok") else None)
    sample = None if sampled is None else dict(
        n=cfg["sample_n"], rows=min(cfg["sample_n"], cfg["sample_rows"]),
        seconds_per_seed=sampled.get("seconds_per_seed") if sampled.get("ok") else None)
    targets = evaluate_targets(per_n, memory, sample, mach["backend"])
    mach["loadavg_end"] = _loadavg()
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
    if args.child is not None:
        importlib.import_module("sparsity_theory")
        print(_MARK + json.dumps(_jsonable(_child(json.loads(args.child)))), flush=True)
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
          f"{_fmt_load(result['machine']['loadavg_start'])} at start, "
          f"{_fmt_load(result['machine']['loadavg_end'])} at end; wrote {path}")
    if not args.no_docs:
        docs = args.docs or DEFAULT_DOCS
        os.makedirs(os.path.dirname(os.path.abspath(docs)), exist_ok=True)
        tmp = docs + ".tmp"
        with open(tmp, "w") as f:
            f.write(render_markdown(result))
        os.replace(tmp, docs)
        print(f"wrote {docs}")
    ok64 = all(s["check"]["float64"]["agree"] for s in result["sizes"])
    if not ok64:
        print("error: the engine disagrees with the NumPy reference in float64", file=sys.stderr)
    return 0 if ok64 else 1


if __name__ == "__main__":
    sys.exit(main())
